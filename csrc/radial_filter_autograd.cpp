// Autograd of radial_filter, in C++ so that scripted models differentiate through the fused kernels
// too. The passes are the device kernels radial_filter_forward / radial_filter_backward (csrc/cpu); this
// file wires them into an autograd::Function and gives radial_filter a below-autograd kernel for
// inference mode, fake tensors and export. First derivatives only (E3Relax needs no more).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace e3relax {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_forward(const at::Tensor& distance, const at::Tensor& weight, const at::Tensor& bias, double cutoff,
                        int64_t envelope_exponent) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("e3relax::radial_filter_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(distance, weight, bias, cutoff, envelope_exponent);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(const at::Tensor& grad_out, const at::Tensor& distance,
                                                             const at::Tensor& weight, double cutoff,
                                                             int64_t envelope_exponent) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("e3relax::radial_filter_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, double, int64_t)>();
  return op.call(grad_out, distance, weight, cutoff, envelope_exponent);
}

class RadialFilterFunction : public torch::autograd::Function<RadialFilterFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& distance, const at::Tensor& weight,
                            const at::Tensor& bias, double cutoff, int64_t envelope_exponent) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({distance, weight});
    ctx->saved_data["cutoff"] = cutoff;
    ctx->saved_data["envelope_exponent"] = envelope_exponent;
    return call_forward(distance, weight, bias, cutoff, envelope_exponent);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_distance, grad_weight, grad_bias] =
        call_backward(grads[0], saved[0], saved[1], ctx->saved_data["cutoff"].toDouble(),
                      ctx->saved_data["envelope_exponent"].toInt());
    return {grad_distance, grad_weight, grad_bias, at::Tensor(), at::Tensor()};
  }
};

at::Tensor radial_filter_autograd(const at::Tensor& distance, const at::Tensor& weight, const at::Tensor& bias,
                                  double cutoff, int64_t envelope_exponent) {
  return RadialFilterFunction::apply(distance, weight, bias, cutoff, envelope_exponent);
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, Autograd, m) {
  m.impl("radial_filter", &e3relax::radial_filter_autograd);
}

// Below autograd (inference mode, fake tensors, export): the forward kernel of whatever device.
TORCH_LIBRARY_IMPL(e3relax, CompositeExplicitAutograd, m) {
  m.impl("radial_filter", &e3relax::call_forward);
}
