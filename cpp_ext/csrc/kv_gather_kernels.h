// CUDA kernels of the cross-frame KV gather. CUDA-only header (include it from .cu files).
//
// Torch-free on purpose: the torch op (kv_gather_cuda.cu) and the TensorRT plugin
// (kv_gather_trt_plugin.cu) launch these same kernels on raw pointers.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kv_gather_index.h"

namespace tav {

// One gathered tensor: B*F input frames of `frame_bytes` bytes each -> 2*B*F output halves.
struct KVGatherTensor {
  const void* src;
  void* dst;
  int64_t frame_bytes;
};

// K and V travel together so one launch serves both.
struct KVGatherParams {
  KVGatherTensor tensor[2];
  int64_t batch_frames;
  int64_t num_frames;
};

namespace detail {

constexpr int kCopyThreads = 256;
constexpr int kCopyUnroll = 4;  // independent 16-byte loads in flight per thread

// grid.y walks (tensor, output frame, half) rows, grid.x the words of a row: the source
// frame is computed once per row, never per element.
template <typename Word>
__global__ void __launch_bounds__(kCopyThreads) kv_gather_copy_kernel(KVGatherParams p) {
  const int64_t rows_per_tensor = 2 * p.batch_frames;
  for (int64_t row = blockIdx.y; row < 2 * rows_per_tensor; row += gridDim.y) {
    const bool is_v = row >= rows_per_tensor;
    const KVGatherTensor t = is_v ? p.tensor[1] : p.tensor[0];
    const int64_t half = is_v ? row - rows_per_tensor : row;  // 2 * output frame + h
    const int64_t words = t.frame_bytes / static_cast<int64_t>(sizeof(Word));
    const Word* __restrict__ src =
        static_cast<const Word*>(t.src) + kv_source_frame(half / 2, p.num_frames, half % 2) * words;
    Word* __restrict__ dst = static_cast<Word*>(t.dst) + half * words;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kCopyThreads * kCopyUnroll;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * kCopyThreads * kCopyUnroll + threadIdx.x; base < words;
         base += stride) {
      Word w[kCopyUnroll];
#pragma unroll
      for (int u = 0; u < kCopyUnroll; ++u) {
        const int64_t idx = base + u * kCopyThreads;
        if (idx < words) w[u] = __ldg(src + idx);
      }
#pragma unroll
      for (int u = 0; u < kCopyUnroll; ++u) {
        const int64_t idx = base + u * kCopyThreads;
        if (idx < words) dst[idx] = w[u];
      }
    }
  }
}

template <typename T, typename Acc>
__global__ void kv_gather_backward_kernel(const T* __restrict__ grad, T* __restrict__ grad_in, int64_t batch_frames,
                                          int64_t num_frames, int64_t m) {
  const int64_t total = batch_frames * m;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t i = idx / m;
    grad_in[idx] = static_cast<T>(kv_gather_grad_element<Acc>(grad, i, idx - i * m, num_frames, m));
  }
}

// The widest word (16, 8, 4, 2 or 1 bytes) that divides every pointer and frame size:
// 16-byte vector loads/stores when the layout allows it, narrower (scalar) copies otherwise.
inline int copy_word_bytes(const KVGatherParams& p) {
  uint64_t bits = 0;
  for (const KVGatherTensor& t : p.tensor) {
    bits |= reinterpret_cast<uintptr_t>(t.src) | reinterpret_cast<uintptr_t>(t.dst) |
            static_cast<uint64_t>(t.frame_bytes);
  }
  for (int w = 16; w > 1; w /= 2) {
    if (bits % w == 0) return w;
  }
  return 1;
}

}  // namespace detail

// Launches the gather of K and V on `stream`. Returns cudaPeekAtLastError(): the error stays
// set so the torch wrapper's C10_CUDA_KERNEL_LAUNCH_CHECK still sees (and clears) it.
inline cudaError_t launch_kv_gather(const KVGatherParams& p, cudaStream_t stream) {
  using namespace detail;
  const int64_t frame_bytes = std::max(p.tensor[0].frame_bytes, p.tensor[1].frame_bytes);
  if (p.batch_frames == 0 || frame_bytes == 0) return cudaSuccess;
  const int word = copy_word_bytes(p);
  const int64_t per_block = static_cast<int64_t>(kCopyThreads) * kCopyUnroll;
  const int64_t blocks_x = (frame_bytes / word + per_block - 1) / per_block;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(blocks_x, 1 << 16)),
                  static_cast<unsigned>(std::min<int64_t>(4 * p.batch_frames, 65535)));
  switch (word) {
    case 16: kv_gather_copy_kernel<uint4><<<grid, kCopyThreads, 0, stream>>>(p); break;
    case 8: kv_gather_copy_kernel<uint2><<<grid, kCopyThreads, 0, stream>>>(p); break;
    case 4: kv_gather_copy_kernel<unsigned int><<<grid, kCopyThreads, 0, stream>>>(p); break;
    case 2: kv_gather_copy_kernel<unsigned short><<<grid, kCopyThreads, 0, stream>>>(p); break;
    default: kv_gather_copy_kernel<unsigned char><<<grid, kCopyThreads, 0, stream>>>(p); break;
  }
  return cudaPeekAtLastError();
}

// Backward of one tensor: grad [B*F, 2N, C] -> grad_in [B*F, N, C], m = N*C.
template <typename T, typename Acc>
cudaError_t launch_kv_gather_backward(const T* grad, T* grad_in, int64_t batch_frames, int64_t num_frames, int64_t m,
                                      cudaStream_t stream) {
  const int64_t total = batch_frames * m;
  if (total == 0) return cudaSuccess;
  constexpr int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + threads - 1) / threads, 1 << 20));
  detail::kv_gather_backward_kernel<T, Acc><<<blocks, threads, 0, stream>>>(grad, grad_in, batch_frames, num_frames, m);
  return cudaPeekAtLastError();
}

}  // namespace tav
