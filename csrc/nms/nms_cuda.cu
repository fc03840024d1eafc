// Non-maximum suppression on the GPU, every image of a batch in the same two launches.
//
// 1. Mask: for boxes sorted by descending score, tile (row block, column block) of 64 x 64 boxes
//    sets bit c of word mask[row][column block] when box `row` would suppress the later box
//    `column block * 64 + c`. Only tiles on or above the diagonal are computed.
// 2. Reduce: one thread block per image walks the rows in 64-row steps, holding the bitmask of
//    suppressed boxes in shared memory. Within a step one thread resolves the 64 x 64 diagonal word
//    (the only serial dependency), then all threads OR the kept rows' words into the later words.
//    Only kept rows are read; the walk stops at max_out kept boxes. Nothing goes to the host.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/checks.h"
#include "nms/nms.h"

namespace mlperf_fast {

namespace {

using word_t = unsigned long long;
constexpr int kReduceThreads = 256;
// Suppressed-bitmask words that the reduce kernel keeps in (static + dynamic) shared memory;
// longer rows (more than 384,000 boxes per image) use a global workspace instead.
constexpr int kSharedWords = 6000;

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

template <typename T>
__device__ __forceinline__ T dmax(T a, T b) {
  using acc_t = typename Acc<T>::type;
  return static_cast<T>(::max(static_cast<acc_t>(a), static_cast<acc_t>(b)));
}
template <typename T>
__device__ __forceinline__ T dmin(T a, T b) {
  using acc_t = typename Acc<T>::type;
  return static_cast<T>(::min(static_cast<acc_t>(a), static_cast<acc_t>(b)));
}

// torchvision's CUDA IoU test, term for term: the overlap's sides in the boxes' dtype, areas and
// the ratio in the accumulation type, compared with the threshold as a float. `a` is the earlier
// (higher-scoring) box.
template <typename T>
__device__ __forceinline__ bool iou_above(const T* a, const T* b, float threshold) {
  using acc_t = typename Acc<T>::type;
  const T left = dmax(a[0], b[0]), right = dmin(a[2], b[2]);
  const T top = dmax(a[1], b[1]), bottom = dmin(a[3], b[3]);
  const T width = dmax(static_cast<T>(right - left), T(0));
  const T height = dmax(static_cast<T>(bottom - top), T(0));
  const acc_t inter = static_cast<acc_t>(width) * static_cast<acc_t>(height);
  const acc_t area_a = (static_cast<acc_t>(a[2]) - static_cast<acc_t>(a[0])) *
                       static_cast<acc_t>(static_cast<T>(a[3] - a[1]));
  const acc_t area_b = (static_cast<acc_t>(b[2]) - static_cast<acc_t>(b[0])) *
                       static_cast<acc_t>(static_cast<T>(b[3] - b[1]));
  return inter / (area_a + area_b - inter) > static_cast<acc_t>(threshold);
}

__device__ __forceinline__ int image_length(const int64_t* n_valid, int b, int m) {
  if (n_valid == nullptr) return m;
  const int64_t v = n_valid[b];
  return static_cast<int>(v < 0 ? 0 : (v > m ? m : v));
}

template <typename T, bool kLabels>
__global__ void __launch_bounds__(kNmsBlock)
    nms_mask_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ labels,
                    const int64_t* __restrict__ n_valid, int m, int col_blocks, float threshold,
                    word_t* __restrict__ mask) {
  const int row_block = blockIdx.y, col_block = blockIdx.x, b = blockIdx.z;
  if (row_block > col_block) return;
  const int n = image_length(n_valid, b, m);
  const int row0 = row_block * kNmsBlock, col0 = col_block * kNmsBlock;
  if (col0 >= n) return;  // row0 <= col0: the whole tile is past the image's candidates
  const int rows = min(kNmsBlock, n - row0), cols = min(kNmsBlock, n - col0);
  const T* image = boxes + static_cast<int64_t>(b) * m * 4;

  __shared__ T col_boxes[kNmsBlock * 4];
  __shared__ int64_t col_labels[kNmsBlock];
  const int t = threadIdx.x;
  if (t < cols) {
#pragma unroll
    for (int k = 0; k < 4; ++k) col_boxes[t * 4 + k] = image[(col0 + t) * 4 + k];
    if (kLabels) col_labels[t] = labels[static_cast<int64_t>(b) * m + col0 + t];
  }
  __syncthreads();
  if (t >= rows) return;
  T row_box[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) row_box[k] = image[(row0 + t) * 4 + k];
  const int64_t row_label = kLabels ? labels[static_cast<int64_t>(b) * m + row0 + t] : 0;
  word_t bits = 0;
  for (int c = (row_block == col_block) ? t + 1 : 0; c < cols; ++c) {
    if (kLabels && col_labels[c] != row_label) continue;
    if (iou_above(row_box, col_boxes + c * 4, threshold)) bits |= 1ULL << c;
  }
  mask[(static_cast<int64_t>(b) * m + row0 + t) * col_blocks + col_block] = bits;
}

__global__ void __launch_bounds__(kReduceThreads)
    nms_reduce_kernel(const word_t* __restrict__ mask, const int64_t* __restrict__ n_valid, int m,
                      int col_blocks, int max_out, word_t* __restrict__ workspace,
                      int64_t* __restrict__ keep, int64_t* __restrict__ counts) {
  extern __shared__ word_t shared_removed[];
  __shared__ word_t diag[kNmsBlock];
  __shared__ word_t kept_bits;
  const int b = blockIdx.x, t = threadIdx.x;
  const int n = image_length(n_valid, b, m);
  const int blocks = (n + kNmsBlock - 1) / kNmsBlock;
  word_t* removed = workspace ? workspace + static_cast<int64_t>(b) * col_blocks : shared_removed;
  const word_t* rows = mask + static_cast<int64_t>(b) * m * col_blocks;
  int64_t* out = keep + static_cast<int64_t>(b) * max_out;

  for (int w = t; w < blocks; w += kReduceThreads) removed[w] = 0;
  __syncthreads();
  int kept = 0;
  for (int blk = 0; blk < blocks && kept < max_out; ++blk) {
    const int row0 = blk * kNmsBlock;
    const int nrows = min(kNmsBlock, n - row0);
    if (t < nrows) diag[t] = rows[static_cast<int64_t>(row0 + t) * col_blocks + blk];
    __syncthreads();
    if (t == 0) {
      word_t rem = removed[blk], bits = 0;
      int room = max_out - kept;
      for (int r = 0; r < nrows; ++r) {
        if (!((rem >> r) & 1ULL)) {
          bits |= 1ULL << r;
          rem |= diag[r];
          if (--room == 0) break;
        }
      }
      kept_bits = bits;
    }
    __syncthreads();
    const word_t bits = kept_bits;
    if (t < kNmsBlock && ((bits >> t) & 1ULL))
      out[kept + __popcll(bits & ((1ULL << t) - 1ULL))] = row0 + t;
    for (int w = blk + 1 + t; w < blocks; w += kReduceThreads) {
      word_t acc = 0;
      for (word_t rest = bits; rest; rest &= rest - 1) {
        const int r = __ffsll(static_cast<long long>(rest)) - 1;
        acc |= rows[static_cast<int64_t>(row0 + r) * col_blocks + w];
      }
      removed[w] |= acc;
    }
    kept += __popcll(bits);
    __syncthreads();
  }
  if (t == 0) counts[b] = kept;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> nms_keep_cuda(const at::Tensor& sorted_boxes,
                                                 const at::Tensor& sorted_labels,
                                                 const at::Tensor& n_valid, double iou_threshold,
                                                 int64_t max_out) {
  const c10::cuda::CUDAGuard guard(sorted_boxes.device());
  const int64_t batch = sorted_boxes.size(0), m = sorted_boxes.size(1);
  const auto long_opts = sorted_boxes.options().dtype(at::kLong);
  at::Tensor keep = at::empty({batch, max_out}, long_opts);
  at::Tensor counts = at::zeros({batch}, long_opts);
  if (batch == 0 || m == 0 || max_out == 0) return {keep, counts};
  const int64_t col_blocks = (m + kNmsBlock - 1) / kNmsBlock;
  MF_CHECK_VALUE(col_blocks <= 65535, "boxes", "has ", m,
                 " boxes per image; at most 4,194,240 are supported");
  MF_CHECK_VALUE(batch <= 65535, "boxes", "has ", batch, " images; at most 65,535 are supported");
  MF_CHECK_VALUE(max_out <= std::numeric_limits<int>::max(), "max_out", "is too large");

  at::Tensor mask = at::empty({batch, m, col_blocks}, long_opts);
  const int64_t* labels = sorted_labels.defined() ? sorted_labels.const_data_ptr<int64_t>() : nullptr;
  const int64_t* valid = n_valid.defined() ? n_valid.const_data_ptr<int64_t>() : nullptr;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const float threshold = static_cast<float>(iou_threshold);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks),
                  static_cast<unsigned>(batch));
  word_t* mask_ptr = reinterpret_cast<word_t*>(mask.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sorted_boxes.scalar_type(),
                                  "nms_mask_cuda", [&] {
    const scalar_t* boxes = sorted_boxes.const_data_ptr<scalar_t>();
    if (labels) {
      nms_mask_kernel<scalar_t, true><<<grid, kNmsBlock, 0, stream>>>(
          boxes, labels, valid, static_cast<int>(m), static_cast<int>(col_blocks), threshold,
          mask_ptr);
    } else {
      nms_mask_kernel<scalar_t, false><<<grid, kNmsBlock, 0, stream>>>(
          boxes, nullptr, valid, static_cast<int>(m), static_cast<int>(col_blocks), threshold,
          mask_ptr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  at::Tensor workspace;
  size_t shared_bytes = 0;
  if (col_blocks > kSharedWords) {
    workspace = at::empty({batch, col_blocks}, long_opts);
  } else {
    shared_bytes = static_cast<size_t>(col_blocks) * sizeof(word_t);
  }
  nms_reduce_kernel<<<static_cast<unsigned>(batch), kReduceThreads, shared_bytes, stream>>>(
      mask_ptr, valid, static_cast<int>(m), static_cast<int>(col_blocks),
      static_cast<int>(max_out),
      workspace.defined() ? reinterpret_cast<word_t*>(workspace.data_ptr<int64_t>()) : nullptr,
      keep.data_ptr<int64_t>(), counts.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {keep, counts};
}

namespace {

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const c10::cuda::CUDAGuard guard(boxes.device());
  return nms_host(boxes, scores, std::nullopt, iou_threshold, &nms_keep_cuda);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                            const at::Tensor& idxs, double iou_threshold) {
  const c10::cuda::CUDAGuard guard(boxes.device());
  return nms_host(boxes, scores, idxs, iou_threshold, &nms_keep_cuda);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nms_padded_cuda(
    const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
    double iou_threshold, double score_threshold, int64_t pre_nms_top_k, int64_t max_detections) {
  const c10::cuda::CUDAGuard guard(boxes.device());
  return nms_padded_host(boxes, scores, labels, iou_threshold, score_threshold, pre_nms_top_k,
                         max_detections, &nms_keep_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
  m.impl("nms_padded", &nms_padded_cuda);
}

}  // namespace mlperf_fast
