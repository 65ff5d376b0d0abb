// Argument checks of radius_graph_pbc shared by every kernel (cell lists on the CPU, the per-target CPU
// harness and CUDA): shapes, dtypes and the scalar arguments, raised as ValueError naming the field.
// Data checks (finite values, ptr monotone, singular cells) stay with each kernel, on its own device.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "e3relax/radius_graph_common.h"

namespace e3relax {

inline void check_radius_graph_args(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                                    const at::Tensor& ptr, double cutoff, int64_t max_neighbors,
                                    int64_t self_images) {
  TORCH_CHECK_VALUE(pos.dim() == 2 && pos.size(1) == 3, "field 'pos' must be [N, 3], got ", pos.sizes());
  TORCH_CHECK_VALUE(pos.scalar_type() == at::kFloat || pos.scalar_type() == at::kDouble,
                    "field 'pos' must be float32 or float64, got ", pos.scalar_type());
  TORCH_CHECK_VALUE(ptr.dim() == 1 && ptr.numel() >= 1 && ptr.scalar_type() == at::kLong,
                    "field 'ptr' must be a 1-D int64 tensor [B+1]");
  const int64_t num_structures = ptr.numel() - 1;
  TORCH_CHECK_VALUE(cell.dim() == 3 && cell.size(0) == num_structures && cell.size(1) == 3 && cell.size(2) == 3 &&
                        cell.scalar_type() == pos.scalar_type(),
                    "field 'cell' must be [B, 3, 3] with B = ", num_structures, " and the dtype of pos, got ",
                    cell.sizes(), " ", cell.scalar_type());
  TORCH_CHECK_VALUE(pbc.dim() == 2 && pbc.size(0) == num_structures && pbc.size(1) == 3 &&
                        pbc.scalar_type() == at::kBool,
                    "field 'pbc' must be a bool tensor [B, 3] with B = ", num_structures);
  TORCH_CHECK_VALUE(cutoff > 0.0 && std::isfinite(cutoff), "cutoff must be positive, got ", cutoff);
  TORCH_CHECK_VALUE(max_neighbors >= 0, "max_neighbors must be >= 0, got ", max_neighbors);
  TORCH_CHECK_VALUE(self_images == kSelfImagesAll || self_images == kSelfImagesPaper,
                    "self_images must be 0 (all) or 1 (paper), got ", self_images);
}

}  // namespace e3relax
