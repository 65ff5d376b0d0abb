// Per-pair logic of the periodic radius graph, shared by the CPU and CUDA kernels so that the CPU tests
// exercise the arithmetic the GPU runs. Torch-free on purpose: nvcc compiles it without torch headers.
//
// Every backend must find the same squared distance to the last bit (ordering and the cutoff test depend
// on it), so the arithmetic is fixed here and mirrored by the PyTorch reference:
//   offset = s0 * l0 + s1 * l1 + s2 * l2          (rows of the cell, summed in this order)
//   r      = (pos_j + offset) - pos_i
//   d2     = r.x * r.x + r.y * r.y + r.z * r.z     (summed in this order)
// A pair is an edge iff d2 < cutoff^2, in the dtype of the positions.
#pragma once

#include <math.h>

#include <cstdint>

#include "e3relax/host_device.h"

namespace e3relax {

// self_images argument of the op.
enum SelfImages : int64_t { kSelfImagesAll = 0, kSelfImagesPaper = 1 };

// The six fixed self-image shifts of the research code's graph.
constexpr int kPaperSelfShifts[6][3] = {{0, 0, 1}, {0, 1, 0}, {1, 0, 0}, {0, 1, 1}, {1, 0, 1}, {1, 1, 0}};

template <typename scalar_t>
E3R_HOST_DEVICE scalar_t pair_distance_sq(const scalar_t* pos_j, const scalar_t* pos_i, const scalar_t* cell,
                                          int s0, int s1, int s2) {
  // NOLINTBEGIN: written out so that no compiler reassociates the sums.
  const scalar_t a = static_cast<scalar_t>(s0), b = static_cast<scalar_t>(s1), c = static_cast<scalar_t>(s2);
  const scalar_t ox = a * cell[0] + b * cell[3] + c * cell[6];
  const scalar_t oy = a * cell[1] + b * cell[4] + c * cell[7];
  const scalar_t oz = a * cell[2] + b * cell[5] + c * cell[8];
  const scalar_t rx = (pos_j[0] + ox) - pos_i[0];
  const scalar_t ry = (pos_j[1] + oy) - pos_i[1];
  const scalar_t rz = (pos_j[2] + oz) - pos_i[2];
  return rx * rx + ry * ry + rz * rz;
  // NOLINTEND
}

// Floor division for possibly negative bin coordinates.
E3R_HOST_DEVICE int floor_div(int a, int b) {
  const int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Candidate edge of one target: ordered by distance, then source, then shift (lexicographic).
template <typename scalar_t>
struct Candidate {
  scalar_t d2;
  int64_t source;
  int shift[3];
};

template <typename scalar_t>
E3R_HOST_DEVICE bool candidate_less(const Candidate<scalar_t>& x, const Candidate<scalar_t>& y) {
  if (x.d2 != y.d2) return x.d2 < y.d2;
  if (x.source != y.source) return x.source < y.source;
  if (x.shift[0] != y.shift[0]) return x.shift[0] < y.shift[0];
  if (x.shift[1] != y.shift[1]) return x.shift[1] < y.shift[1];
  return x.shift[2] < y.shift[2];
}

// Insertion sort of candidates by candidate_less, in place. An element already in order costs one
// comparison, so a nearly sorted list (the CPU kernel's after bucketing) costs about one per element.
template <typename scalar_t>
E3R_HOST_DEVICE void insertion_sort_candidates(Candidate<scalar_t>* items, int64_t count) {
  for (int64_t k = 1; k < count; ++k) {
    if (!candidate_less(items[k], items[k - 1])) continue;
    const Candidate<scalar_t> moving = items[k];
    int64_t slot = k;
    do {
      items[slot] = items[slot - 1];
      --slot;
    } while (slot > 0 && candidate_less(moving, items[slot - 1]));
    items[slot] = moving;
  }
}

// The neighbour cap keeps whole shells: the first max_neighbors candidates of a sorted list, and every
// later one whose distance is within kShellTolerance (Å) of the last of those. A cap that cut through a
// shell of equal distances would keep an arbitrary part of it (by source index), so a symmetric crystal
// would get a graph of lower symmetry, and a 1e-6 Å jitter could swap which atoms are kept. The
// comparison is done in double on the distances as computed (d2), the same in every backend and in the
// reference (e3relax_fast/ops/radius_graph.py, SHELL_TOLERANCE). Returns how many candidates stay.
constexpr double kShellTolerance = 1e-3;

template <typename scalar_t>
E3R_HOST_DEVICE int64_t capped_count(const Candidate<scalar_t>* sorted, int64_t count, int64_t max_neighbors) {
  if (max_neighbors <= 0 || count <= max_neighbors) return count;
  const double reach = sqrt(static_cast<double>(sorted[max_neighbors - 1].d2)) + kShellTolerance;
  const double limit = reach * reach;
  int64_t kept = max_neighbors;
  while (kept < count && static_cast<double>(sorted[kept].d2) <= limit) ++kept;
  return kept;
}

}  // namespace e3relax
