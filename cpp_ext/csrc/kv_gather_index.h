// The index rule of sparse-causal attention, shared by the CPU twin, the CUDA kernels
// and the TensorRT plugin so that all three agree by construction.
//
// Inputs are [B*F, N, C] with the F frames of a clip adjacent; the output of frame i is
// [frame 0 of its clip ; frame max(i-1, 0) of its clip] along the token axis, i.e. two
// contiguous "halves" of N*C elements each.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TAV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TAV_HOST_DEVICE inline
#endif

namespace tav {

// Source frame (in the flattened B*F axis) for output frame `i`, half `h`
// (0: the clip's first frame, 1: the previous frame, frame 0 for itself).
TAV_HOST_DEVICE int64_t kv_source_frame(int64_t i, int64_t num_frames, int64_t h) {
  const int64_t j = i % num_frames;
  if (h == 0) return i - j;
  return j == 0 ? i : i - 1;
}

}  // namespace tav

namespace tav {

// Gradient of input frame `i`, element `e`: the sum of every output slot that copied it.
// `grad` is the output gradient viewed as [B*F, 2, m] (m = N*C): half 0 of each frame holds
// its clip's frame 0, half 1 its previous frame. Accumulating in `Acc` (float for fp16/bf16)
// keeps the F-term sum of frame 0 accurate.
template <typename Acc, typename T>
TAV_HOST_DEVICE Acc kv_gather_grad_element(const T* grad, int64_t i, int64_t e, int64_t num_frames,
                                           int64_t m) {
  const int64_t j = i % num_frames;
  Acc acc = Acc(0);
  if (j == 0) {
    for (int64_t f = 0; f < num_frames; ++f) acc += static_cast<Acc>(grad[(i + f) * 2 * m + e]);
    acc += static_cast<Acc>(grad[(i * 2 + 1) * m + e]);  // frame 0 is its own "previous" frame
  }
  if (j + 1 < num_frames) acc += static_cast<Acc>(grad[((i + 1) * 2 + 1) * m + e]);
  return acc;
}

}  // namespace tav
