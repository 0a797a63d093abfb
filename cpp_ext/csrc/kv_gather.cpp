// tav::kv_gather: the op schema and its CPU twin of the CUDA kernel.
//
// The forward pass is a pure copy, so it is dtype-agnostic: each output half is one
// contiguous block of N*C elements of a single source frame, copied with memcpy.
// The backward pass (a scatter-add) is written as a gather of sums: every input
// element sums the output slots that copied it, so there are no write conflicts.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "kv_gather_index.h"
#include "kv_gather_op.h"

namespace tav {
namespace {

// Copies of this many bytes are the unit of parallel work: large enough to amortise
// scheduling, small enough that one clip of two frames still spreads over all cores.
constexpr int64_t kCopyChunk = int64_t(1) << 18;

void gather_frames_cpu(const at::Tensor& src, const at::Tensor& dst, int64_t num_frames) {
  const int64_t batch_frames = src.size(0);
  const int64_t frame_bytes = frame_elems(src) * src.element_size();
  if (batch_frames == 0 || frame_bytes == 0) return;
  const int64_t chunks = (frame_bytes + kCopyChunk - 1) / kCopyChunk;
  const int64_t grain = std::max<int64_t>(1, kCopyChunk / std::min(frame_bytes, kCopyChunk));
  const char* s = static_cast<const char*>(src.const_data_ptr());
  char* d = static_cast<char*>(dst.mutable_data_ptr());
  at::parallel_for(0, 2 * batch_frames * chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t half = unit / chunks;  // 2 * output frame + (0: frame 0, 1: previous frame)
      const int64_t offset = (unit % chunks) * kCopyChunk;
      const int64_t source = kv_source_frame(half / 2, num_frames, half % 2);
      std::memcpy(d + half * frame_bytes + offset, s + source * frame_bytes + offset,
                  std::min(kCopyChunk, frame_bytes - offset));
    }
  });
}

template <typename T>
void scatter_frames_cpu(const T* grad, T* grad_in, int64_t batch_frames, int64_t num_frames, int64_t m) {
  using Acc = at::opmath_type<T>;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(m, 1));
  at::parallel_for(0, batch_frames, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* out = grad_in + i * m;
      for (int64_t e = 0; e < m; ++e) out[e] = static_cast<T>(kv_gather_grad_element<Acc>(grad, i, e, num_frames, m));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> kv_gather_cpu(const at::Tensor& k, const at::Tensor& v, int64_t num_frames) {
  check_kv_pair(k, v, num_frames);
  const at::Tensor kc = k.contiguous(), vc = v.contiguous();
  at::Tensor k2 = gathered_like(kc), v2 = gathered_like(vc);
  gather_frames_cpu(kc, k2, num_frames);
  gather_frames_cpu(vc, v2, num_frames);
  return {k2, v2};
}

at::Tensor scatter_one_cpu(const at::Tensor& grad, int64_t num_frames) {
  const at::Tensor g = grad.contiguous();
  at::Tensor out = scattered_like(g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "kv_gather_backward_cpu", [&] {
    scatter_frames_cpu<scalar_t>(g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g.size(0),
                                 num_frames, frame_elems(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> kv_gather_backward_cpu(const at::Tensor& grad_k2, const at::Tensor& grad_v2,
                                                          int64_t num_frames) {
  check_kv_pair(grad_k2, grad_v2, num_frames);
  return {scatter_one_cpu(grad_k2, num_frames), scatter_one_cpu(grad_v2, num_frames)};
}

}  // namespace
}  // namespace tav

// The Python side (tav/cpp_ext/op.py) defines these same schemas itself only when this
// library is not loaded, so there is exactly one definition per process.
TORCH_LIBRARY(tav, m) {
  m.def("kv_gather(Tensor k, Tensor v, int num_frames) -> (Tensor, Tensor)");
  m.def("kv_gather_backward(Tensor grad_k2, Tensor grad_v2, int num_frames) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tav, CPU, m) {
  m.impl("kv_gather", &tav::kv_gather_cpu);
  m.impl("kv_gather_backward", &tav::kv_gather_backward_cpu);
}
