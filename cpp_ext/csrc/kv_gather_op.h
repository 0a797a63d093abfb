// Shape checks and output allocation shared by the CPU and CUDA torch kernels, so both
// reject the same inputs with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace tav {

inline void check_kv_input(const at::Tensor& x, int64_t num_frames, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 3, "kv_gather: ", name, " must be [B*F, N, C], got ", x.sizes());
  TORCH_CHECK_VALUE(num_frames >= 1 && x.size(0) % num_frames == 0, "kv_gather: batch*frames=", x.size(0),
                    " is not a multiple of num_frames=", num_frames);
}

inline void check_kv_pair(const at::Tensor& k, const at::Tensor& v, int64_t num_frames) {
  check_kv_input(k, num_frames, "k");
  check_kv_input(v, num_frames, "v");
  TORCH_CHECK_VALUE(k.size(0) == v.size(0), "kv_gather: k and v have different batch*frames: ", k.size(0),
                    " vs ", v.size(0));
  TORCH_CHECK(k.device() == v.device(), "kv_gather: k and v are on different devices");
}

// [B*F, N, C] -> empty [B*F, 2N, C]
inline at::Tensor gathered_like(const at::Tensor& x) {
  return at::empty({x.size(0), 2 * x.size(1), x.size(2)}, x.options());
}

// [B*F, 2N, C] -> empty [B*F, N, C]
inline at::Tensor scattered_like(const at::Tensor& grad) {
  TORCH_CHECK_VALUE(grad.size(1) % 2 == 0, "kv_gather_backward: token axis ", grad.size(1), " is not even");
  return at::empty({grad.size(0), grad.size(1) / 2, grad.size(2)}, grad.options());
}

inline int64_t frame_elems(const at::Tensor& x) { return x.size(0) == 0 ? 0 : x.numel() / x.size(0); }

}  // namespace tav
