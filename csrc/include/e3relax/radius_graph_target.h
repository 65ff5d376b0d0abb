// Per-target work of the periodic radius graph that the CUDA kernel runs (one thread per target atom),
// written once as host/device functions so that a CPU harness (e3relax_testing::radius_graph_targets,
// csrc/testing/radius_graph_targets_cpu.cpp) runs the very same code in the test suite. Torch-free.
//
// The cell lists are those of the CPU kernel (csrc/cpu/radius_graph_cpu.cpp), built with ATen ops on the
// tensors' own device by radius_graph_targets_plan.h: every periodic image within rho_k = cutoff |b_k|
// of the unit box, binned over that padded box in bins at least rho_k wide, so a target's neighbours lie
// in at most 3 x 3 runs of consecutive images, and the work is linear in the number of atoms. For target
// i:
//   count:    images in its runs that pass the prefilter (wrapped positions, double, 1% wider than the
//             cutoff) and then the exact test d2 < cutoff^2 (pair_distance_sq, radius_graph_common.h) on
//             the caller's positions, the target itself at shift 0 excluded
//   fill:     the same scan, writing Candidates to the target's segment of a buffer
//   sort:     insertion_sort_candidates of the segment (distance, source, shift; radius_graph_common.h)
//   finalize: keep the first max_neighbors (0: all) and the rest of the last kept shell (capped_count,
//             radius_graph_common.h); self_images == paper drops self-image edges and adds
//             the six fixed shifts allowed by pbc, merged in the same order.
#pragma once

#include <math.h>

#include <cstdint>

#include "e3relax/host_device.h"
#include "e3relax/radius_graph_common.h"

namespace e3relax {

// Device pointers of the plan (radius_graph_targets_plan.h) that every per-target launch reads.
struct TargetGraphArgs {
  const int64_t* ptr;          // [B+1]
  const int64_t* structure;    // [N] structure of each atom
  const bool* pbc;             // [B,3]
  const double* place;         // [N,3] wrapped position in bin widths from the structure's grid origin
  const double* cart;          // [N,3] wrapped Cartesian position (Å)
  const int32_t* wrap;         // [N,3] integer part of the fractional position removed on periodic axes
  const double* reach;         // [B,3] rho in bin widths
  const int64_t* bins;         // [B,3] bins per axis
  const int64_t* first_bin;    // [B] the structure's first bin in bin_start
  const int64_t* bin_start;    // [total bins + 1] first image of each bin
  const double* image_cart;    // [I,3] image positions (Å), in bin order
  const int32_t* image_atom;   // [I] local atom of each image
  const int32_t* image_shift;  // [I,3] image shift minus its atom's wrap
  int64_t num_atoms;
  int64_t max_neighbors;
  int64_t self_images;
};

// Scans target i's runs; returns its candidate count and, with kWrite, writes them to `out` (sources
// as local indices). pos and cell are the whole batch's.
template <bool kWrite, typename scalar_t>
E3R_HOST_DEVICE int64_t scan_target(const TargetGraphArgs& g, const scalar_t* pos, const scalar_t* cell, int64_t i,
                                    scalar_t cutoff_sq, Candidate<scalar_t>* out) {
  const int64_t b = g.structure[i], start = g.ptr[b], local = i - start;
  const scalar_t* lattice = cell + 9 * b;
  const double* place = g.place + 3 * i;
  const double* t = g.cart + 3 * i;
  const int32_t* wi = g.wrap + 3 * i;
  const double* reach = g.reach + 3 * b;
  const int64_t* bins = g.bins + 3 * b;
  // Generous margin (1%, above float32 rounding of large coordinates): the prefilter may only let
  // through more pairs than the exact test, never fewer.
  const double prefilter_sq = static_cast<double>(cutoff_sq) * 1.01 + 1e-6;
  int64_t lo[3], hi[3];
  for (int k = 0; k < 3; ++k) {
    lo[k] = static_cast<int64_t>(floor(place[k] - reach[k]));
    hi[k] = static_cast<int64_t>(floor(place[k] + reach[k]));
    lo[k] = lo[k] < 0 ? 0 : lo[k];
    hi[k] = hi[k] > bins[k] - 1 ? bins[k] - 1 : hi[k];
  }
  int64_t count = 0;
  for (int64_t b0 = lo[0]; b0 <= hi[0]; ++b0) {
    for (int64_t b1 = lo[1]; b1 <= hi[1]; ++b1) {
      const int64_t column = g.first_bin[b] + (b0 * bins[1] + b1) * bins[2];
      const int64_t end = g.bin_start[column + hi[2] + 1];
      for (int64_t k = g.bin_start[column + lo[2]]; k < end; ++k) {
        const double dx = g.image_cart[3 * k] - t[0], dy = g.image_cart[3 * k + 1] - t[1],
                     dz = g.image_cart[3 * k + 2] - t[2];
        if (dx * dx + dy * dy + dz * dz > prefilter_sq) continue;
        const int32_t* s = g.image_shift + 3 * k;
        const int s0 = s[0] + wi[0], s1 = s[1] + wi[1], s2 = s[2] + wi[2];
        const int64_t source = g.image_atom[k];
        if (source == local && s0 == 0 && s1 == 0 && s2 == 0) continue;
        const scalar_t d2 = pair_distance_sq(pos + 3 * (start + source), pos + 3 * i, lattice, s0, s1, s2);
        if (!(d2 < cutoff_sq)) continue;
        if (kWrite) {
          out[count].d2 = d2;
          out[count].source = source;
          out[count].shift[0] = s0;
          out[count].shift[1] = s1;
          out[count].shift[2] = s2;
        }
        ++count;
      }
    }
  }
  return count;
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
  insertion_sort_candidates(out, k);
  return k;
}

// Edges target i keeps from its sorted candidates; with out_* non-null they are written there too
// (source and target as global indices: local + atom_offset).
template <typename scalar_t>
E3R_HOST_DEVICE int64_t finalize_target(const Candidate<scalar_t>* sorted, int64_t count, int64_t max_neighbors,
                                        int64_t self_images, const scalar_t* pos, int64_t i, const scalar_t* cell,
                                        const bool* pbc, int64_t atom_offset, int64_t* out_source,
                                        int64_t* out_target, int64_t* out_shift) {
  const int64_t kept = capped_count(sorted, count, max_neighbors);  // whole shells (radius_graph_common.h)
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
