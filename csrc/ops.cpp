// The one place where e3relax operator schemas live (TORCH_LIBRARY may appear once per namespace).
// Kernels register per device in csrc/cpu/<op>_cpu.cpp and csrc/cuda/<op>_cuda.cpp (launching the
// kernels of csrc/cuda/<op>_kernels.cu) with
// TORCH_LIBRARY_IMPL, so the dispatcher (not #ifdefs) picks the implementation.
//
// Ops:
//   build_info() -> str   JSON: the torch version the library was compiled against, OpenMP and CUDA
//                         support. The Python loader refuses a library built for another torch.
//   radius_graph_pbc      periodic radius graph of a flat batch (conventions: ops/radius_graph.py):
//                         pos [N,3], cell [B,3,3], pbc [B,3] bool, ptr [B+1] long, cutoff (Å),
//                         max_neighbors (0 = all), self_images (0 = all, 1 = the paper's six) ->
//                         edge_index [2,E] (source, target), shifts [E,3] long, counts [B] long.
//                         E is data-dependent: the fake kernel is registered from Python.
//   vector_message        fused scalar-vector message aggregation (ops/vector_message.py):
//                         phi [N,3F], w [E,3F], vec [N,3,F], unit [E,3] and the graph in CSR form:
//                         rowptr [N+1] (edges sorted by target), source [E], target [E], perm [E] (edge
//                         ids sorted by source), source_ptr [N+1] -> dh [N,F], dvec [N,3,F].
//                         Autograd in csrc/vector_message_autograd.cpp; the device kernels are
//   vector_message_forward / vector_message_backward (grad_dh, grad_dvec, then the inputs above ->
//                         grad_phi, grad_w, grad_vec, grad_unit).
//   radial_filter         the edge filter on the Gaussian basis (ops/radial_filter.py): distance [E] (Å),
//                         weight [O,M], bias [O], cutoff (Å), envelope_exponent -> bias + W phi(d) [E,O],
//                         over the band of basis functions that matter. Autograd in
//                         csrc/radial_filter_autograd.cpp; the device kernels are
//   radial_filter_forward / radial_filter_backward (grad_out, distance, weight, cutoff, exponent ->
//                         grad_distance, grad_weight, grad_bias).
//   radial_vector_message vector_message with w = radial_filter(distance, weight, bias, cutoff,
//                         envelope_exponent) computed inside and never stored (ops/radial_vector_message.py):
//                         phi [N,3F], distance [E] (Å), weight [3F,M], bias [3F], cutoff, exponent,
//                         vec [N,3,F], unit [E,3], rowptr [N+1], source [E] -> dh [N,F], dvec [N,3,F].
//                         Inference only: no autograd kernel (training runs the two ops).

#include <torch/library.h>

#include <string>

#ifndef E3RELAX_TORCH_VERSION
#define E3RELAX_TORCH_VERSION "unknown"
#endif

namespace e3relax {

std::string build_info() {
  std::string info = "{\"torch_version\": \"" E3RELAX_TORCH_VERSION "\"";
#ifdef _OPENMP
  info += ", \"openmp\": true";
#else
  info += ", \"openmp\": false";
#endif
#ifdef E3RELAX_WITH_CUDA
  info += ", \"cuda\": true";
#else
  info += ", \"cuda\": false";
#endif
  return info + "}";
}

}  // namespace e3relax

TORCH_LIBRARY(e3relax, m) {
  m.def("build_info() -> str", &e3relax::build_info);
  m.def(
      "radius_graph_pbc(Tensor pos, Tensor cell, Tensor pbc, Tensor ptr, float cutoff, int max_neighbors, "
      "int self_images) -> (Tensor edge_index, Tensor shifts, Tensor counts)");
  m.def(
      "vector_message(Tensor phi, Tensor w, Tensor vec, Tensor unit, Tensor rowptr, Tensor source, Tensor target, "
      "Tensor perm, Tensor source_ptr) -> (Tensor dh, Tensor dvec)");
  m.def(
      "vector_message_forward(Tensor phi, Tensor w, Tensor vec, Tensor unit, Tensor rowptr, Tensor source, "
      "Tensor target, Tensor perm, Tensor source_ptr) -> (Tensor dh, Tensor dvec)");
  m.def(
      "vector_message_backward(Tensor grad_dh, Tensor grad_dvec, Tensor phi, Tensor w, Tensor vec, Tensor unit, "
      "Tensor rowptr, Tensor source, Tensor target, Tensor perm, Tensor source_ptr) -> (Tensor grad_phi, "
      "Tensor grad_w, Tensor grad_vec, Tensor grad_unit)");
  m.def("radial_filter(Tensor distance, Tensor weight, Tensor bias, float cutoff, int envelope_exponent) -> Tensor");
  m.def(
      "radial_vector_message(Tensor phi, Tensor distance, Tensor weight, Tensor bias, float cutoff, "
      "int envelope_exponent, Tensor vec, Tensor unit, Tensor rowptr, Tensor source) -> (Tensor dh, Tensor dvec)");
  m.def(
      "radial_filter_forward(Tensor distance, Tensor weight, Tensor bias, float cutoff, int envelope_exponent) "
      "-> Tensor");
  m.def(
      "radial_filter_backward(Tensor grad_out, Tensor distance, Tensor weight, float cutoff, int envelope_exponent) "
      "-> (Tensor grad_distance, Tensor grad_weight, Tensor grad_bias)");
}
