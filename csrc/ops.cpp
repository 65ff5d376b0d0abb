// The one place where e3relax operator schemas live (TORCH_LIBRARY may appear once per namespace).
// Kernels register per device in csrc/cpu/<op>_cpu.cpp and csrc/cuda/<op>_cuda.cu with
// TORCH_LIBRARY_IMPL, so the dispatcher (not #ifdefs) picks the implementation.
//
// Ops defined so far:
//   build_info() -> str   JSON: the torch version the library was compiled against, OpenMP and CUDA
//                         support. The Python loader refuses a library built for another torch.
// The kernel ops (radius_graph_pbc, vector_message) join here with their CPU/CUDA kernels.

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
}
