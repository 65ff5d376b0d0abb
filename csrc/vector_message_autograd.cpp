// Autograd of vector_message, in C++ so that scripted models (torch.jit.load, libtorch) differentiate
// through the fused kernels too. The forward and backward passes are the device kernels
// vector_message_forward / vector_message_backward (csrc/cpu, csrc/cuda); this file only wires them into
// an autograd::Function and gives vector_message a below-autograd kernel for inference mode and fake
// tensors. Only first derivatives: the backward is not itself differentiable (E3Relax needs none).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace e3relax {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& phi, const at::Tensor& w, const at::Tensor& vec,
                                                const at::Tensor& unit, const at::Tensor& rowptr,
                                                const at::Tensor& source, const at::Tensor& target,
                                                const at::Tensor& perm, const at::Tensor& source_ptr) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("e3relax::vector_message_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&)>();
  return op.call(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad_dh, const at::Tensor& grad_dvec, const at::Tensor& phi, const at::Tensor& w,
    const at::Tensor& vec, const at::Tensor& unit, const at::Tensor& rowptr, const at::Tensor& source,
    const at::Tensor& target, const at::Tensor& perm, const at::Tensor& source_ptr) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("e3relax::vector_message_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad_dh, grad_dvec, phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
}

class VectorMessageFunction : public torch::autograd::Function<VectorMessageFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& phi, const at::Tensor& w,
                               const at::Tensor& vec, const at::Tensor& unit, const at::Tensor& rowptr,
                               const at::Tensor& source, const at::Tensor& target, const at::Tensor& perm,
                               const at::Tensor& source_ptr) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [dh, dvec] = call_forward(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
    ctx->save_for_backward({phi, w, vec, unit, rowptr, source, target, perm, source_ptr});
    return {dh, dvec};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& vec = saved[2];
    // An output that did not reach the loss arrives undefined: its gradient is zero.
    at::Tensor grad_dh = grads[0].defined() ? grads[0] : at::zeros({vec.size(0), vec.size(2)}, vec.options());
    at::Tensor grad_dvec = grads[1].defined() ? grads[1] : at::zeros_like(vec);
    auto [grad_phi, grad_w, grad_vec, grad_unit] =
        call_backward(grad_dh, grad_dvec, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6],
                      saved[7], saved[8]);
    return {grad_phi, grad_w, grad_vec, grad_unit, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> vector_message_autograd(const at::Tensor& phi, const at::Tensor& w,
                                                           const at::Tensor& vec, const at::Tensor& unit,
                                                           const at::Tensor& rowptr, const at::Tensor& source,
                                                           const at::Tensor& target, const at::Tensor& perm,
                                                           const at::Tensor& source_ptr) {
  auto out = VectorMessageFunction::apply(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, Autograd, m) {
  m.impl("vector_message", &e3relax::vector_message_autograd);
}

// Below autograd (inference mode, fake tensors, export): the forward kernel of whatever device.
TORCH_LIBRARY_IMPL(e3relax, CompositeExplicitAutograd, m) {
  m.impl("vector_message", &e3relax::call_forward);
}
