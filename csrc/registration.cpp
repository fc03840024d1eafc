// Every schema of the mlperf_fast operator library, in one place. Kernels register themselves
// for their dispatch key beside their code (csrc/<op>/<op>.cpp for CPU, <op>_cuda.cu for CUDA);
// fake (meta) implementations and autograd are registered in Python (mlperf_fast/ops/).
#include <torch/library.h>

#include <string>

namespace mlperf_fast {
#ifdef WITH_CUDA
std::string cuda_build_info();  // csrc/common/build_info_cuda.cu
#endif

std::string build_info() {
  std::string info = "backends=cpu";
#ifdef WITH_CUDA
  info += ",cuda;" + cuda_build_info();
#endif
  return info;
}
}  // namespace mlperf_fast

TORCH_LIBRARY(mlperf_fast, m) {
  m.def("build_info() -> str", &mlperf_fast::build_info);
  m.def("multi_tensor_l2norm(Tensor[] tensors, bool per_tensor=False) -> (Tensor, Tensor)");
  // table_batched_embedding
  m.def("tbe_forward(Tensor weights, Tensor weights_offsets, Tensor D_offsets, Tensor indices, "
        "Tensor offsets, int pooling, Tensor? per_sample_weights, int total_D) -> Tensor");
  m.def("tbe_backward_(Tensor grad_output, Tensor(a!) weights, Tensor weights_offsets, "
        "Tensor D_offsets, Tensor hash_size_cumsum, Tensor indices, Tensor offsets, int pooling, "
        "Tensor? per_sample_weights, int update, float lr, float eps, Tensor(b!)? momentum, "
        "Tensor(c!)? grad, int num_rows, int max_D) -> ()");
  m.def("tbe_per_sample_weights_grad(Tensor grad_output, Tensor weights, Tensor weights_offsets, "
        "Tensor D_offsets, Tensor indices, Tensor offsets) -> Tensor");
  m.def("tbe_validate(Tensor hash_size_cumsum, Tensor indices, Tensor offsets) -> Tensor");
  // dot_interaction
  m.def("dot_interaction_forward(Tensor dense, Tensor embeddings) -> Tensor");
  m.def("dot_interaction_backward(Tensor grad_output, Tensor dense, Tensor embeddings) -> "
        "(Tensor, Tensor)");
}
