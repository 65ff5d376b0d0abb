// e3relax_fast._neighbors: the periodic radius graph for numpy callers (data-loader workers that never
// touch torch tensors). A pybind11 module, separate from the op library because pybind11 cannot use the
// limited Python API that the op library is built with. It wraps the caller's arrays without copying,
// runs the registered e3relax::radius_graph_pbc (CPU kernel) with the GIL released, and returns numpy
// arrays. The op library must be loaded first (e3relax_fast.neighbors does that).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <tuple>

namespace py = pybind11;

namespace {

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using BoolArray = py::array_t<bool, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> to_numpy(const at::Tensor& t) {
  std::vector<py::ssize_t> shape(t.sizes().begin(), t.sizes().end());
  py::array_t<T> out(shape);
  if (t.numel() > 0) std::memcpy(out.mutable_data(), t.data_ptr<T>(), sizeof(T) * t.numel());
  return out;
}

// Caps the OpenMP threads of parallel regions this thread starts, for its lifetime. Worker threads that
// build graphs while the model runs pass 1, so that they do not take the model's cores. ATen sets each
// thread's count on its first parallel region (once per library that inlines it): that happens first,
// or it would undo the cap.
class ThreadCap {
 public:
  explicit ThreadCap(int threads) {
#ifdef _OPENMP
    if (threads > 0) {
      (void)at::get_num_threads();
      at::internal::lazy_init_num_threads();
      previous_ = omp_get_max_threads();
      omp_set_num_threads(threads);
    }
#endif
  }
  ~ThreadCap() {
#ifdef _OPENMP
    if (previous_ > 0) omp_set_num_threads(previous_);
#endif
  }
  ThreadCap(const ThreadCap&) = delete;
  ThreadCap& operator=(const ThreadCap&) = delete;

 private:
  int previous_ = 0;
};

py::tuple neighbors(const DoubleArray& positions, const DoubleArray& cell, const BoolArray& pbc, double cutoff,
                    int64_t max_neighbors, int64_t self_image_mode, int threads) {
  if (positions.ndim() != 2 || positions.shape(1) != 3) {
    throw py::value_error("neighbors: field 'positions' must have shape (n, 3)");
  }
  if (cell.ndim() != 2 || cell.shape(0) != 3 || cell.shape(1) != 3) {
    throw py::value_error("neighbors: field 'cell' must have shape (3, 3) (lattice vectors as rows)");
  }
  if (pbc.ndim() != 1 || pbc.shape(0) != 3) throw py::value_error("neighbors: field 'pbc' must have 3 entries");
  const int64_t n = positions.shape(0);
  // from_blob views of the caller's buffers: no copy, and the arrays outlive the call.
  auto pos = at::from_blob(const_cast<double*>(positions.data()), {n, 3}, at::kDouble);
  auto lattice = at::from_blob(const_cast<double*>(cell.data()), {1, 3, 3}, at::kDouble);
  auto periodic = at::from_blob(const_cast<bool*>(pbc.data()), {1, 3}, at::kBool);
  at::Tensor edge_index, shifts, distances;
  {
    py::gil_scoped_release release;
    const ThreadCap cap(threads);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("e3relax::radius_graph_pbc", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                             int64_t, int64_t)>();
    auto ptr = at::tensor({int64_t(0), n}, at::kLong);
    auto result = op.call(pos, lattice, periodic, ptr, cutoff, max_neighbors, self_image_mode);
    edge_index = std::get<0>(result);
    shifts = std::get<1>(result);
    // the distances as the model sees them: |pos[j] + shift @ cell - pos[i]|
    auto r = pos.index_select(0, edge_index[0]) + at::matmul(shifts.to(at::kDouble), lattice[0]) -
             pos.index_select(0, edge_index[1]);
    distances = r.norm(2, {1}).contiguous();
  }
  return py::make_tuple(to_numpy<int64_t>(edge_index.contiguous()), to_numpy<int64_t>(shifts.contiguous()),
                        to_numpy<double>(distances));
}

}  // namespace

PYBIND11_MODULE(_neighbors, m) {
  m.doc() = "Periodic radius graph on numpy arrays (the GIL is released while it runs).";
  m.def("neighbors", &neighbors, py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("cutoff"),
        py::arg("max_neighbors") = 0, py::arg("self_image_mode") = 0, py::arg("threads") = 0);
}
