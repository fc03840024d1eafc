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
  // nms
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "nms_padded(Tensor boxes, Tensor scores, Tensor? labels, float iou_threshold, "
      "float score_threshold, int pre_nms_top_k, int max_detections) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
