// What the CUDA half of the extension was built with, for `python -m mlperf_fast.info`.
#include <cuda_runtime_api.h>

#include <string>

namespace mlperf_fast {

#define MF_STR2(...) #__VA_ARGS__  // variadic: an arch list is comma-separated
#define MF_STR(x) MF_STR2(x)

std::string cuda_build_info() {
  std::string info = "cuda=" + std::to_string(CUDART_VERSION / 1000) + "." +
                     std::to_string((CUDART_VERSION % 1000) / 10);
#ifdef __CUDA_ARCH_LIST__
  info += ";arch=" MF_STR(__CUDA_ARCH_LIST__);
#endif
#ifdef MLPERF_FAST_PTX
  info += ";ptx=1";  // PTX of the newest arch: the driver compiles it for any newer GPU
#endif
  return info;
}

}  // namespace mlperf_fast
