// CUDA kernels of tav::kv_gather registered with the dispatcher. Built only where
// torch has CUDA and nvcc exists; the schema lives in kv_gather.cpp (same library).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that drags in cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include "kv_gather_kernels.h"
#include "kv_gather_op.h"

namespace tav {
namespace {

std::tuple<at::Tensor, at::Tensor> kv_gather_cuda(const at::Tensor& k, const at::Tensor& v, int64_t num_frames) {
  check_kv_pair(k, v, num_frames);
  const c10::cuda::CUDAGuard guard(k.device());
  const at::Tensor kc = k.contiguous(), vc = v.contiguous();
  at::Tensor k2 = gathered_like(kc), v2 = gathered_like(vc);
  KVGatherParams p{};
  p.tensor[0] = {kc.const_data_ptr(), k2.mutable_data_ptr(), frame_elems(kc) * kc.element_size()};
  p.tensor[1] = {vc.const_data_ptr(), v2.mutable_data_ptr(), frame_elems(vc) * vc.element_size()};
  p.batch_frames = kc.size(0);
  p.num_frames = num_frames;
  launch_kv_gather(p, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {k2, v2};
}

at::Tensor scatter_one_cuda(const at::Tensor& grad, int64_t num_frames) {
  const at::Tensor g = grad.contiguous();
  at::Tensor out = scattered_like(g);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "kv_gather_backward_cuda", [&] {
    launch_kv_gather_backward<scalar_t, at::opmath_type<scalar_t>>(
        g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g.size(0), num_frames, frame_elems(out),
        c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> kv_gather_backward_cuda(const at::Tensor& grad_k2, const at::Tensor& grad_v2,
                                                           int64_t num_frames) {
  check_kv_pair(grad_k2, grad_v2, num_frames);
  const c10::cuda::CUDAGuard guard(grad_k2.device());
  return {scatter_one_cuda(grad_k2, num_frames), scatter_one_cuda(grad_v2, num_frames)};
}

}  // namespace
}  // namespace tav

TORCH_LIBRARY_IMPL(tav, CUDA, m) {
  m.impl("kv_gather", &tav::kv_gather_cuda);
  m.impl("kv_gather_backward", &tav::kv_gather_backward_cuda);
}
