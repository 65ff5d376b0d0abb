// vector_message CUDA kernels bound to torch tensors (the kernels: vector_message_kernels.cu).
// Input checks and output allocation happen here; the launch runs on the current stream with no host
// synchronisation. Compiled only in CUDA builds of the op library.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include "e3relax/vector_message_checks.h"

#include <tuple>

namespace e3relax {
namespace cuda {
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*,
                           const int64_t*, int64_t, int64_t, scalar_t*, scalar_t*, cudaStream_t);
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,
                            const scalar_t*, const int64_t*, const int64_t*, const int64_t*, int64_t, int64_t,
                            scalar_t*, scalar_t*, scalar_t*, scalar_t*, cudaStream_t);
}  // namespace cuda

namespace {

template <typename T>
struct DeviceType {
  using type = T;
  using acc = T;
};
template <>
struct DeviceType<at::Half> {
  using type = __half;
  using acc = float;
};
template <>
struct DeviceType<at::BFloat16> {
  using type = __nv_bfloat16;
  using acc = float;
};

template <typename T>
const typename DeviceType<T>::type* device_ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename DeviceType<T>::type*>(t.data_ptr<T>());
}
template <typename T>
typename DeviceType<T>::type* device_ptr_mut(at::Tensor& t) {
  return reinterpret_cast<typename DeviceType<T>::type*>(t.data_ptr<T>());
}

void check_cuda(const at::Tensor& phi, const at::Tensor& w, const at::Tensor& vec, const at::Tensor& unit,
                const at::Tensor& rowptr, const at::Tensor& source, const at::Tensor& target, const at::Tensor& perm,
                const at::Tensor& source_ptr) {
  check_vector_message_inputs(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  TORCH_CHECK_VALUE(vec.size(2) <= 1024, "vector_message (CUDA): at most 1024 channels, got ", vec.size(2));
}

std::tuple<at::Tensor, at::Tensor> vector_message_forward_cuda(
    const at::Tensor& phi, const at::Tensor& w, const at::Tensor& vec, const at::Tensor& unit,
    const at::Tensor& rowptr, const at::Tensor& source, const at::Tensor& target, const at::Tensor& perm,
    const at::Tensor& source_ptr) {
  check_cuda(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  const c10::cuda::CUDAGuard guard(phi.device());
  const int64_t n = vec.size(0), f = vec.size(2);
  auto phi_c = phi.contiguous(), w_c = w.contiguous(), vec_c = vec.contiguous(), unit_c = unit.contiguous();
  auto rowptr_c = rowptr.contiguous(), source_c = source.contiguous();
  auto dh = at::empty({n, f}, phi.options());
  auto dvec = at::empty({n, 3, f}, phi.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, phi.scalar_type(), "vector_message_forward_cuda", [&] {
    using D = DeviceType<scalar_t>;
    const auto status = cuda::launch_forward<typename D::type, typename D::acc>(
        device_ptr<scalar_t>(phi_c), device_ptr<scalar_t>(w_c), device_ptr<scalar_t>(vec_c),
        device_ptr<scalar_t>(unit_c), rowptr_c.data_ptr<int64_t>(), source_c.data_ptr<int64_t>(), n, f,
        device_ptr_mut<scalar_t>(dh), device_ptr_mut<scalar_t>(dvec), stream);
    TORCH_CHECK(status == cudaSuccess, "vector_message forward launch failed: ", cudaGetErrorString(status));
  });
  return {dh, dvec};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vector_message_backward_cuda(
    const at::Tensor& grad_dh, const at::Tensor& grad_dvec, const at::Tensor& phi, const at::Tensor& w,
    const at::Tensor& vec, const at::Tensor& unit, const at::Tensor& rowptr, const at::Tensor& source,
    const at::Tensor& target, const at::Tensor& perm, const at::Tensor& source_ptr) {
  check_cuda(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  const c10::cuda::CUDAGuard guard(phi.device());
  const int64_t n = vec.size(0), f = vec.size(2);
  auto phi_c = phi.contiguous(), w_c = w.contiguous(), vec_c = vec.contiguous(), unit_c = unit.contiguous();
  auto gdh = grad_dh.to(phi.scalar_type()).contiguous(), gdvec = grad_dvec.to(phi.scalar_type()).contiguous();
  auto target_c = target.contiguous(), perm_c = perm.contiguous(), source_ptr_c = source_ptr.contiguous();
  auto grad_phi = at::empty_like(phi_c), grad_vec = at::empty_like(vec_c);
  auto grad_w = at::zeros_like(w_c), grad_unit = at::zeros_like(unit_c);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, phi.scalar_type(), "vector_message_backward_cuda", [&] {
    using D = DeviceType<scalar_t>;
    const auto status = cuda::launch_backward<typename D::type, typename D::acc>(
        device_ptr<scalar_t>(gdh), device_ptr<scalar_t>(gdvec), device_ptr<scalar_t>(phi_c),
        device_ptr<scalar_t>(w_c), device_ptr<scalar_t>(vec_c), device_ptr<scalar_t>(unit_c),
        target_c.data_ptr<int64_t>(), perm_c.data_ptr<int64_t>(), source_ptr_c.data_ptr<int64_t>(), n, f,
        device_ptr_mut<scalar_t>(grad_phi), device_ptr_mut<scalar_t>(grad_w), device_ptr_mut<scalar_t>(grad_vec),
        device_ptr_mut<scalar_t>(grad_unit), stream);
    TORCH_CHECK(status == cudaSuccess, "vector_message backward launch failed: ", cudaGetErrorString(status));
  });
  return {grad_phi, grad_w, grad_vec, grad_unit};
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, CUDA, m) {
  m.impl("vector_message_forward", &e3relax::vector_message_forward_cuda);
  m.impl("vector_message_backward", &e3relax::vector_message_backward_cuda);
}
