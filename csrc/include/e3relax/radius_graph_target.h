// Per-target work of the brute-force periodic radius graph that the CUDA kernel runs (one thread per
// target atom), written once as host/device functions so that a CPU harness
// (e3relax::_radius_graph_targets, csrc/cpu/radius_graph_targets_cpu.cpp) runs the very same code in
// the test suite. Torch-free.
//
// For target i of a structure with n atoms, cell rows l0, l1, l2 and image reach (r0, r1, r2):
//   count:    candidates (j, s) with s in [-r, r]^3 (lexicographic), j in 0..n-1, not (j == i and s == 0),
//             d2 < cutoff^2 (pair_distance_sq, radius_graph_common.h)
//   fill:     the same loop, writing Candidates to the target's segment of a buffer
//   sort:     insertion sort of the segment by candidate_less (distance, source, shift)
//   finalize: keep the first max_neighbors (0: all); self_images == paper drops self-image edges and adds
//             the six fixed shifts allowed by pbc, merged in the same order.
#pragma once

#include <cstdint>

#include "e3relax/host_device.h"
#include "e3relax/radius_graph_common.h"

namespace e3relax {

// What every per-target kernel launch needs besides positions and cells (device pointers).
struct TargetGraphArgs {
  const int64_t* ptr;        // [B+1]
  const int64_t* structure;  // [N]
  const int* reach;          // [B,3]
  const bool* pbc;           // [B,3]
  int64_t num_atoms;
  int64_t max_neighbors;
  int64_t self_images;
};

template <typename scalar_t>
E3R_HOST_DEVICE int64_t count_target(const scalar_t* pos, int64_t n, int64_t i, const scalar_t* cell,
                                     const int* reach, scalar_t cutoff_sq) {
  int64_t count = 0;
  for (int s0 = -reach[0]; s0 <= reach[0]; ++s0)
    for (int s1 = -reach[1]; s1 <= reach[1]; ++s1)
      for (int s2 = -reach[2]; s2 <= reach[2]; ++s2)
        for (int64_t j = 0; j < n; ++j) {
          if (j == i && s0 == 0 && s1 == 0 && s2 == 0) continue;
          if (pair_distance_sq(pos + 3 * j, pos + 3 * i, cell, s0, s1, s2) < cutoff_sq) ++count;
        }
  return count;
}

template <typename scalar_t>
E3R_HOST_DEVICE void fill_target(const scalar_t* pos, int64_t n, int64_t i, const scalar_t* cell, const int* reach,
                                 scalar_t cutoff_sq, Candidate<scalar_t>* out) {
  int64_t k = 0;
  for (int s0 = -reach[0]; s0 <= reach[0]; ++s0)
    for (int s1 = -reach[1]; s1 <= reach[1]; ++s1)
      for (int s2 = -reach[2]; s2 <= reach[2]; ++s2)
        for (int64_t j = 0; j < n; ++j) {
          if (j == i && s0 == 0 && s1 == 0 && s2 == 0) continue;
          const scalar_t d2 = pair_distance_sq(pos + 3 * j, pos + 3 * i, cell, s0, s1, s2);
          if (d2 < cutoff_sq) {
            out[k].d2 = d2;
            out[k].source = j;
            out[k].shift[0] = s0;
            out[k].shift[1] = s1;
            out[k].shift[2] = s2;
            ++k;
          }
        }
}

template <typename scalar_t>
E3R_HOST_DEVICE void sort_candidates(Candidate<scalar_t>* c, int64_t count) {
  for (int64_t a = 1; a < count; ++a) {
    const Candidate<scalar_t> key = c[a];
    int64_t b = a - 1;
    while (b >= 0 && candidate_less(key, c[b])) {
      c[b + 1] = c[b];
      --b;
    }
    c[b + 1] = key;
  }
}

// The fixed self-image edges of target i allowed by pbc, sorted; returns how many (at most 6).
template <typename scalar_t>
E3R_HOST_DEVICE int paper_self_edges(const scalar_t* pos, int64_t i, const scalar_t* cell, const bool* pbc,
                                     Candidate<scalar_t>* out) {
  // kPaperSelfShifts spelled out: a namespace-scope array is not visible to device code
  const int shifts[6][3] = {{0, 0, 1}, {0, 1, 0}, {1, 0, 0}, {0, 1, 1}, {1, 0, 1}, {1, 1, 0}};
  int k = 0;
  for (int f = 0; f < 6; ++f) {
    const int* s = shifts[f];
    if ((s[0] && !pbc[0]) || (s[1] && !pbc[1]) || (s[2] && !pbc[2])) continue;
    out[k].d2 = pair_distance_sq(pos + 3 * i, pos + 3 * i, cell, s[0], s[1], s[2]);
    out[k].source = i;
    out[k].shift[0] = s[0];
    out[k].shift[1] = s[1];
    out[k].shift[2] = s[2];
    ++k;
  }
  sort_candidates(out, k);
  return k;
}

// Edges target i keeps from its sorted candidates; with out_* non-null they are written there too
// (source and target as global indices: local + atom_offset).
template <typename scalar_t>
E3R_HOST_DEVICE int64_t finalize_target(const Candidate<scalar_t>* sorted, int64_t count, int64_t max_neighbors,
                                        int64_t self_images, const scalar_t* pos, int64_t i, const scalar_t* cell,
                                        const bool* pbc, int64_t atom_offset, int64_t* out_source,
                                        int64_t* out_target, int64_t* out_shift) {
  const int64_t kept = (max_neighbors > 0 && count > max_neighbors) ? max_neighbors : count;
  Candidate<scalar_t> fixed[6];
  const int num_fixed = self_images == kSelfImagesPaper ? paper_self_edges(pos, i, cell, pbc, fixed) : 0;
  int64_t a = 0, written = 0;
  int f = 0;
  while (true) {
    while (a < kept && self_images == kSelfImagesPaper && sorted[a].source == i) ++a;  // dropped
    const bool have_a = a < kept, have_f = f < num_fixed;
    if (!have_a && !have_f) break;
    const Candidate<scalar_t>& next = (have_a && (!have_f || !candidate_less(fixed[f], sorted[a]))) ? sorted[a++]
                                                                                                    : fixed[f++];
    if (out_source != nullptr) {
      out_source[written] = next.source + atom_offset;
      out_target[written] = i + atom_offset;
      for (int d = 0; d < 3; ++d) out_shift[3 * written + d] = next.shift[d];
    }
    ++written;
  }
  return written;
}

}  // namespace e3relax
