// Input checks of vector_message shared by the CPU and CUDA bindings: shapes, dtypes, graph sizes and
// index ranges (e3relax/index_checks.h), raised as ValueError with the field and its shape.
#pragma once

#include <ATen/ATen.h>

#include "e3relax/index_checks.h"

namespace e3relax {

inline void check_vector_message_inputs(const at::Tensor& phi, const at::Tensor& w, const at::Tensor& vec,
                                        const at::Tensor& unit, const at::Tensor& rowptr, const at::Tensor& source,
                                        const at::Tensor& target, const at::Tensor& perm,
                                        const at::Tensor& source_ptr) {
  TORCH_CHECK_VALUE(vec.dim() == 3 && vec.size(1) == 3, "vector_message: vec must be [N, 3, F], got ", vec.sizes());
  const int64_t n = vec.size(0), f = vec.size(2), e = source.numel();
  TORCH_CHECK_VALUE(phi.dim() == 2 && phi.size(0) == n && phi.size(1) == 3 * f,
                    "vector_message: phi must be [N, 3F] = [", n, ", ", 3 * f, "], got ", phi.sizes());
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(0) == e && w.size(1) == 3 * f,
                    "vector_message: w must be [E, 3F] = [", e, ", ", 3 * f, "], got ", w.sizes());
  TORCH_CHECK_VALUE(unit.dim() == 2 && unit.size(0) == e && unit.size(1) == 3,
                    "vector_message: unit must be [E, 3], got ", unit.sizes());
  TORCH_CHECK_VALUE(rowptr.numel() == n + 1 && source_ptr.numel() == n + 1,
                    "vector_message: rowptr and source_ptr must have N + 1 = ", n + 1, " entries");
  TORCH_CHECK_VALUE(target.numel() == e && perm.numel() == e, "vector_message: target and perm need E entries");
  for (const auto* t : {&rowptr, &source, &target, &perm, &source_ptr}) {
    TORCH_CHECK_VALUE(t->scalar_type() == at::kLong, "vector_message: graph tensors must be int64");
  }
  TORCH_CHECK_VALUE(phi.scalar_type() == w.scalar_type() && phi.scalar_type() == vec.scalar_type() &&
                        phi.scalar_type() == unit.scalar_type(),
                    "vector_message: phi, w, vec and unit must share a dtype");
  check_index_range(source, n, "vector_message", "source");
  check_index_range(target, n, "vector_message", "target");
  check_index_range(perm, e, "vector_message", "perm");
  check_row_pointer(rowptr, e, "vector_message", "rowptr");
  check_row_pointer(source_ptr, e, "vector_message", "source_ptr");
}

}  // namespace e3relax
