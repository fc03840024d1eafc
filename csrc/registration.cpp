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
  // nms
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "nms_padded(Tensor boxes, Tensor scores, Tensor? labels, float iou_threshold, "
      "float score_threshold, int pre_nms_top_k, int max_detections) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // fused optimizers (lamb_step, adam_step, sgd_step, lars_step)
  m.def("lamb_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
        "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] master_params, Tensor[] steps, Tensor? lr_t, "
        "float lr, float beta1, float beta2, float eps, float weight_decay, bool bias_correction, "
        "bool adam_w_mode, bool grad_averaging, bool use_nvlamb, Tensor? grad_norm, "
        "float max_grad_norm, Tensor? grad_scale, Tensor? found_inf, int batch_elems=0) -> ()");
  m.def("adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
        "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] master_params, Tensor[] steps, Tensor? lr_t, "
        "float lr, float beta1, float beta2, float eps, float weight_decay, bool bias_correction, "
        "bool adam_w_mode, Tensor? grad_scale, Tensor? found_inf) -> ()");
  m.def("sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
        "Tensor(d!)[] master_params, Tensor? lr_t, float lr, float momentum, float dampening, "
        "float weight_decay, bool nesterov, bool first_run, Tensor? grad_scale, "
        "Tensor? found_inf) -> ()");
  m.def("lars_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
        "Tensor(d!)[] master_params, Tensor param_norms, Tensor grad_norms, Tensor? lr_t, "
        "float lr, float momentum, float weight_decay, float trust_coefficient, float eps, "
        "bool adapt, Tensor? grad_scale, Tensor? found_inf) -> ()");
}
