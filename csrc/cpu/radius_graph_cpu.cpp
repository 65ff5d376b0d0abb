// radius_graph_pbc on the CPU.
//
// Algorithm: one call for a whole batch, linear in the number of atoms.
// 1. Per structure (parallel over structures): fractional coordinates, wrapped into [0, 1) on periodic
//    axes (the integer part is kept to rebuild the shift). Then the padded image set: every periodic
//    image of every atom whose fractional coordinate lies within rho_k = cutoff * |b_k| of the unit box
//    on each periodic axis (b_k the reciprocal vectors): exactly the images a target in the box can
//    reach, so the scan never wraps around. A lattice vector shorter than the cutoff just brings more
//    layers of images; a skewed cell is covered because rho_k is the cutoff's extent in fractional units.
// 2. The images are binned by a counting sort on a grid over the padded box whose bins are at least
//    rho_k wide, as structure-of-arrays doubles in bin order (axis 2 fastest). The images a target must
//    test then lie in at most 3 x 3 runs, each contiguous in memory along axis 2. (Bins of rho / 2 test
//    fewer images but in 25 shorter runs: slower here on both benchmark workloads.)
// 3. Per target (parallel over chunks of 64 consecutive targets of the flat batch): a branch-free
//    prefilter over each run on the wrapped positions (double, 1% wider than the cutoff), then the exact
//    per-pair test of radius_graph_common.h on the caller's unwrapped positions, which alone decides.
//    The candidates are sorted in the full order (distance, source, shift) by a counting sort on
//    squared distance into ~2 buckets per candidate, a rank sort of any bucket with more than 8 (the
//    shells of equal distances of a perfect lattice) and one insertion pass, so few comparison branches
//    mispredict; the cap and the paper's self-image rule follow.
//
// Memory layout: pos [N,3], cell [B,3,3] row-major (rows are lattice vectors), contiguous. The padded set
// of a structure holds about n * prod_k(1 + 2 rho_k) images (n for a large cell, a few times the
// neighbour count per atom for a small one). Each task writes compact edges (16 bytes) to its own
// buffer, in target order; the buffers are concatenated into the output. No atomics, no shared writes:
// identical output for any number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "e3relax/radius_graph_checks.h"
#include "e3relax/radius_graph_common.h"

namespace e3relax {
namespace {

constexpr double kMaxImages = 200000.0;  // the same bound as the PyTorch reference
constexpr double kBinsPerReach = 1.0;    // bins at least rho wide: at most 3 per axis to scan
constexpr int64_t kTargetsPerTask = 64;
// rho is widened a little so that rounding (float32 inputs included) never hides an image that the
// exact test would accept; extra images only cost a prefilter test.
constexpr double kReachMargin = 1e-4;

struct ImageGrid {
  int64_t start = 0;  // first atom of the structure in the flat batch
  bool periodic[3] = {true, true, true};
  int bins[3] = {1, 1, 1};
  double origin[3] = {0.0, 0.0, 0.0};     // fractional coordinate of the grid's lower corner
  double inv_width[3] = {1.0, 1.0, 1.0};  // bins per unit of fractional coordinate
  double reach[3] = {0.0, 0.0, 0.0};      // rho in bin widths
  std::vector<int> wrap;                  // [count * 3] integer part removed on periodic axes
  std::vector<double> target_cart;        // [count * 3] wrapped Cartesian position of each atom
  std::vector<double> target_place;       // [count * 3] wrapped position in bin widths from the origin
  std::vector<int64_t> bin_start;         // [num_bins + 1] first image of each bin
  std::vector<double> x, y, z;            // [images] Cartesian image positions, in bin order
  std::vector<int32_t> atom;              // [images] local atom index of each image
  std::vector<int32_t> shift;             // [images * 3] image shift minus the atom's wrap
};

// The edges of one task (kTargetsPerTask consecutive targets), until the output is allocated.
struct TaskEdges {
  struct Edge {
    int32_t local_source;  // index within the structure
    int32_t shift[3];
  };
  std::vector<Edge> edges;            // in output order
  int32_t per_target[kTargetsPerTask] = {};  // edges of each target of the task
};

// Builds the ImageGrid of one structure in named steps, in the order of build(): the lattice (inverse,
// reach, bounds), the wrapped atoms, the image count, the bins, the target places, the binned images.
class GridBuilder {
 public:
  GridBuilder(ImageGrid& grid, int64_t structure, double cutoff) : grid_(grid), structure_(structure), cutoff_(cutoff) {}

  template <typename scalar_t>
  void build(const scalar_t* pos, const scalar_t* cell, const bool* pbc, int64_t start, int64_t count) {
    grid_.start = start;
    count_ = count;
    set_lattice(cell, pbc);
    if (count == 0) {
      grid_.bin_start.assign(2, 0);
      return;
    }
    wrap_atoms(pos + start * 3);
    count_images();
    choose_bins();
    place_targets();
    bin_images();
  }

 private:
  // The cell's inverse (column k is reciprocal vector b_k), refusing singular cells; rho_k, the cutoff in
  // fractional units along axis k with a margin for rounding; the image bound, checked before anything
  // is allocated from these numbers.
  template <typename scalar_t>
  void set_lattice(const scalar_t* cell, const bool* pbc) {
    double* m = m_;
    for (int k = 0; k < 9; ++k) m[k] = static_cast<double>(cell[k]);
    const double c00 = m[4] * m[8] - m[5] * m[7], c01 = m[5] * m[6] - m[3] * m[8], c02 = m[3] * m[7] - m[4] * m[6];
    const double det = m[0] * c00 + m[1] * c01 + m[2] * c02;
    double row_norms = 1.0;
    for (int r = 0; r < 3; ++r) row_norms *= std::sqrt(m[3 * r] * m[3 * r] + m[3 * r + 1] * m[3 * r + 1] + m[3 * r + 2] * m[3 * r + 2]);
    TORCH_CHECK_VALUE(std::isfinite(det) && std::abs(det) >= 1e-6 * row_norms, "structure ", structure_,
                      ": field 'cell' is singular (lattice vectors are linearly dependent or zero)");
    const double inv[9] = {c00 / det, (m[2] * m[7] - m[1] * m[8]) / det, (m[1] * m[5] - m[2] * m[4]) / det,
                           c01 / det, (m[0] * m[8] - m[2] * m[6]) / det, (m[2] * m[3] - m[0] * m[5]) / det,
                           c02 / det, (m[1] * m[6] - m[0] * m[7]) / det, (m[0] * m[4] - m[1] * m[3]) / det};
    std::copy(inv, inv + 9, inv_);
    double images = 1.0;
    for (int k = 0; k < 3; ++k) {
      grid_.periodic[k] = pbc[k];
      const double recip = std::sqrt(inv[k] * inv[k] + inv[3 + k] * inv[3 + k] + inv[6 + k] * inv[6 + k]);
      rho_[k] = cutoff_ * recip * (1.0 + kReachMargin) + 1e-12;
      if (pbc[k]) images *= 2.0 * std::ceil(rho_[k] + 1.0) + 1.0;
    }
    TORCH_CHECK_VALUE(images <= kMaxImages, "structure ", structure_, ": field 'cell' is too small for cutoff ",
                      cutoff_, " Å: the radius graph would need about ", images,
                      " periodic images (a lattice vector is far shorter than the cutoff)");
  }

  // Fractional coordinates wrapped into [0, 1) on periodic axes (the integer part kept in grid.wrap),
  // their range, and the wrapped Cartesian positions. pos: the structure's first atom.
  template <typename scalar_t>
  void wrap_atoms(const scalar_t* pos) {
    const double* m = m_;
    const double* inv = inv_;
    frac_.resize(count_ * 3);
    for (int k = 0; k < 3; ++k) {
      low_[k] = std::numeric_limits<double>::infinity();
      high_[k] = -low_[k];
    }
    grid_.wrap.assign(count_ * 3, 0);
    grid_.target_cart.resize(count_ * 3);
    for (int64_t a = 0; a < count_; ++a) {
      const scalar_t* p = pos + a * 3;
      int* w = &grid_.wrap[a * 3];
      for (int k = 0; k < 3; ++k) {
        double f = static_cast<double>(p[0]) * inv[k] + static_cast<double>(p[1]) * inv[3 + k] +
                   static_cast<double>(p[2]) * inv[6 + k];
        if (grid_.periodic[k]) {
          const double whole = std::floor(f);
          w[k] = static_cast<int>(whole);
          f -= whole;
        }
        frac_[a * 3 + k] = f;
        low_[k] = std::min(low_[k], f);
        high_[k] = std::max(high_[k], f);
      }
      for (int k = 0; k < 3; ++k) {
        grid_.target_cart[a * 3 + k] = static_cast<double>(p[k]) - (w[0] * m[k] + w[1] * m[3 + k] + w[2] * m[6 + k]);
      }
    }
    for (int k = 0; k < 3; ++k) {  // the padded box
      grid_.origin[k] = grid_.periodic[k] ? -rho_[k] : low_[k];
      extent_[k] = grid_.periodic[k] ? 1.0 + 2.0 * rho_[k] : high_[k] - low_[k];
    }
  }

  // The image shifts of atom a along axis k that fall in the padded box: first..last (0..0 when open).
  void image_range(int64_t a, int k, int& first, int& last) const {
    if (!grid_.periodic[k]) {
      first = last = 0;
      return;
    }
    const double f = frac_[a * 3 + k];
    first = static_cast<int>(std::ceil(-rho_[k] - f));
    last = static_cast<int>(std::floor(1.0 + rho_[k] - f));
  }

  void count_images() {
    num_images_ = 0;
    for (int64_t a = 0; a < count_; ++a) {
      int64_t per_atom = 1;
      for (int k = 0; k < 3; ++k) {
        int first, last;
        image_range(a, k, first, last);
        per_atom *= std::max(0, last - first + 1);
      }
      num_images_ += per_atom;
    }
    TORCH_CHECK_VALUE(num_images_ < std::numeric_limits<int32_t>::max() && count_ < std::numeric_limits<int32_t>::max(),
                      "structure ", structure_, ": ", count_, " atoms with ", num_images_,
                      " periodic images within the cutoff is more than this kernel indexes (2^31)");
  }

  // Bins at least rho / kBinsPerReach wide; sparse structures (a few atoms in a huge box) get coarser
  // bins rather than millions of empty ones.
  void choose_bins() {
    double total_bins = 1.0;
    for (int k = 0; k < 3; ++k) {
      const double wanted = std::floor(kBinsPerReach * extent_[k] / rho_[k]);
      grid_.bins[k] = static_cast<int>(std::max(1.0, std::min(wanted, 1024.0)));
      total_bins *= grid_.bins[k];
    }
    const double max_bins = std::max(27.0, 2.0 * static_cast<double>(num_images_));
    while (total_bins > max_bins) {
      const int k = static_cast<int>(std::max_element(grid_.bins, grid_.bins + 3) - grid_.bins);
      total_bins /= grid_.bins[k];
      grid_.bins[k] = std::max(1, grid_.bins[k] / 2);
      total_bins *= grid_.bins[k];
    }
    for (int k = 0; k < 3; ++k) {
      const double width = extent_[k] > 0.0 ? extent_[k] / grid_.bins[k] : 1.0;
      grid_.inv_width[k] = 1.0 / width;
      grid_.reach[k] = rho_[k] / width;
    }
  }

  int bin_coordinate(double f, int k) const {
    const int c = static_cast<int>(std::floor((f - grid_.origin[k]) * grid_.inv_width[k]));
    return std::min(std::max(c, 0), grid_.bins[k] - 1);
  }

  void place_targets() {
    grid_.target_place.resize(count_ * 3);
    for (int64_t a = 0; a < count_; ++a) {
      for (int k = 0; k < 3; ++k) grid_.target_place[a * 3 + k] = (frac_[a * 3 + k] - grid_.origin[k]) * grid_.inv_width[k];
    }
  }

  // body(image, atom, s0, s1, s2, bin) for every image in the order (atom, s0, s1, s2).
  template <typename Body>
  void for_each_image(Body&& body) const {
    int64_t image = 0;
    for (int64_t a = 0; a < count_; ++a) {
      int first[3], last[3];
      for (int k = 0; k < 3; ++k) image_range(a, k, first[k], last[k]);
      const double* f = &frac_[a * 3];
      for (int s0 = first[0]; s0 <= last[0]; ++s0) {
        const int c0 = bin_coordinate(f[0] + s0, 0);
        for (int s1 = first[1]; s1 <= last[1]; ++s1) {
          const int c1 = bin_coordinate(f[1] + s1, 1);
          for (int s2 = first[2]; s2 <= last[2]; ++s2) {
            const int c2 = bin_coordinate(f[2] + s2, 2);
            body(image++, a, s0, s1, s2, (static_cast<int64_t>(c0) * grid_.bins[1] + c1) * grid_.bins[2] + c2);
          }
        }
      }
    }
  }

  // Counting sort of the images by bin; within a bin, images keep the order (atom, s0, s1, s2).
  void bin_images() {
    const double* m = m_;
    const int64_t num_bins = static_cast<int64_t>(grid_.bins[0]) * grid_.bins[1] * grid_.bins[2];
    std::vector<int32_t> image_bin(num_images_);
    grid_.bin_start.assign(num_bins + 1, 0);
    for_each_image([&](int64_t image, int64_t, int, int, int, int64_t bin) {
      image_bin[image] = static_cast<int32_t>(bin);
      grid_.bin_start[bin + 1] += 1;
    });
    for (int64_t bin = 0; bin < num_bins; ++bin) grid_.bin_start[bin + 1] += grid_.bin_start[bin];
    std::vector<int64_t> fill(grid_.bin_start.begin(), grid_.bin_start.end() - 1);
    grid_.x.resize(num_images_);
    grid_.y.resize(num_images_);
    grid_.z.resize(num_images_);
    grid_.atom.resize(num_images_);
    grid_.shift.resize(num_images_ * 3);
    for_each_image([&](int64_t image, int64_t a, int s0, int s1, int s2, int64_t) {
      const int64_t slot = fill[image_bin[image]]++;
      const double* c = &grid_.target_cart[a * 3];
      grid_.x[slot] = c[0] + (s0 * m[0] + s1 * m[3] + s2 * m[6]);
      grid_.y[slot] = c[1] + (s0 * m[1] + s1 * m[4] + s2 * m[7]);
      grid_.z[slot] = c[2] + (s0 * m[2] + s1 * m[5] + s2 * m[8]);
      grid_.atom[slot] = static_cast<int32_t>(a);
      const int* w = &grid_.wrap[a * 3];
      grid_.shift[slot * 3] = s0 - w[0];
      grid_.shift[slot * 3 + 1] = s1 - w[1];
      grid_.shift[slot * 3 + 2] = s2 - w[2];
    });
  }

  ImageGrid& grid_;
  int64_t structure_;
  double cutoff_;
  double m_[9] = {}, inv_[9] = {}, rho_[3] = {}, low_[3] = {}, high_[3] = {}, extent_[3] = {};
  int64_t count_ = 0, num_images_ = 0;
  std::vector<double> frac_;  // [count * 3] wrapped fractional coordinates
};

// Sorts a group of candidates by rank: each one's place is the number of others before it, counted
// without branches on (squared distance, tie key) pairs of doubles that the compiler vectorises. The tie
// key packs (local source, shift + 512) into 52 bits, exact in a double and ordered as candidate_less;
// a group whose sources or shifts do not fit falls back to std::sort. Quadratic: for groups up to 64.
constexpr size_t kRankSortMax = 64;

#if defined(__x86_64__) && defined(__GNUC__)
#define E3R_RANK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define E3R_RANK_CLONES
#endif

E3R_RANK_CLONES void count_ranks(const double* distance, const double* tie, size_t n, int64_t* rank) {
  for (size_t k = 0; k < n; ++k) {
    const double dk = distance[k], tk = tie[k];
    int64_t r = 0;
    for (size_t j = 0; j < n; ++j) r += static_cast<int64_t>((distance[j] < dk) | ((distance[j] == dk) & (tie[j] < tk)));
    rank[k] = r;
  }
}

template <typename scalar_t>
bool rank_sort(Candidate<scalar_t>* items, size_t n, int64_t first_source, Candidate<scalar_t>* out) {
  double distance[kRankSortMax], tie[kRankSortMax];
  for (size_t k = 0; k < n; ++k) {
    const auto& c = items[k];
    const int64_t local = c.source - first_source;
    if (local >= (int64_t(1) << 22) || std::abs(c.shift[0]) > 511 || std::abs(c.shift[1]) > 511 ||
        std::abs(c.shift[2]) > 511) {
      return false;
    }
    distance[k] = static_cast<double>(c.d2);
    tie[k] = static_cast<double>((local << 30) | (int64_t(c.shift[0] + 512) << 20) |
                                 (int64_t(c.shift[1] + 512) << 10) | int64_t(c.shift[2] + 512));
  }
  int64_t rank[kRankSortMax];
  count_ranks(distance, tie, n, rank);
  for (size_t k = 0; k < n; ++k) out[rank[k]] = items[k];
  return true;
}

// Sorts candidates by candidate_less. A counting sort on squared distance first (a monotone key, so the
// buckets come out in order, about two per candidate) leaves almost every bucket with one or two
// candidates, and the final insertion pass costs about one predictable comparison each, where a
// comparison sort of ~60 random keys mispredicts half its branches. A perfect lattice's shells of equal
// distances land in one bucket each and are sorted by rank_sort (std::sort past kRankSortMax).
template <typename scalar_t>
void sort_candidates(std::vector<Candidate<scalar_t>>& items, std::vector<Candidate<scalar_t>>& scratch,
                     std::vector<int32_t>& bucket_start, double cutoff_sq, int64_t first_source) {
  const auto less = [](const Candidate<scalar_t>& x, const Candidate<scalar_t>& y) { return candidate_less(x, y); };
  const size_t n = items.size();
  if (n <= 8) {
    insertion_sort_candidates(items.data(), static_cast<int64_t>(n));
    return;
  }
  size_t num_buckets = 32;
  while (num_buckets < 2 * n) num_buckets <<= 1;
  const double scale = static_cast<double>(num_buckets) / cutoff_sq;
  const auto bucket_of = [&](scalar_t d2) {
    return std::min(num_buckets - 1, static_cast<size_t>(static_cast<double>(d2) * scale));
  };
  bucket_start.assign(num_buckets + 1, 0);
  for (const auto& c : items) bucket_start[bucket_of(c.d2) + 1] += 1;
  for (size_t k = 0; k < num_buckets; ++k) bucket_start[k + 1] += bucket_start[k];
  scratch.resize(n);
  for (const auto& c : items) scratch[bucket_start[bucket_of(c.d2)]++] = c;  // now bucket_start[k] = end of k
  items.swap(scratch);
  // Large buckets (a perfect lattice's shells of equal distances) are sorted on their own; one
  // insertion pass then orders the rest, almost always one predictable comparison per candidate.
  size_t begin = 0;
  for (size_t k = 0; k < num_buckets && begin < n; ++k) {
    const size_t end = static_cast<size_t>(bucket_start[k]), size = end - begin;
    if (size > 8) {
      Candidate<scalar_t>* group = items.data() + begin;
      if (size <= kRankSortMax && rank_sort(group, size, first_source, scratch.data())) {
        std::copy(scratch.data(), scratch.data() + size, group);
      } else {
        std::sort(group, group + size, less);
      }
    }
    begin = end;
  }
  insertion_sort_candidates(items.data(), static_cast<int64_t>(n));
}

// The prefilter: appends to `hits` every image k in [begin, end) whose wrapped position lies within
// sqrt(limit_sq) of t, and returns how many. Branch-free (most tests fail, unpredictably); measured as
// fast here as an AVX-512 compress version, so it stays portable.
inline int64_t prefilter(const double* xs, const double* ys, const double* zs, int64_t begin, int64_t end,
                         const double t[3], double limit_sq, int64_t* hits) {
  int64_t found = 0;
  for (int64_t k = begin; k < end; ++k) {
    const double dx = xs[k] - t[0], dy = ys[k] - t[1], dz = zs[k] - t[2];
    hits[found] = k;
    found += (dx * dx + dy * dy + dz * dz <= limit_sq);
  }
  return found;
}

struct Workspace {
  std::vector<int64_t> hits;
  std::vector<int32_t> bucket_start;
};

template <typename scalar_t>
struct TargetScratch {
  std::vector<Candidate<scalar_t>> candidates, sorted;
};

template <typename scalar_t>
void target_edges(const ImageGrid& grid, int64_t local_target, const scalar_t* pos, const scalar_t* cell,
                  scalar_t cutoff_sq, int64_t max_neighbors, int64_t self_images, Workspace& work,
                  TargetScratch<scalar_t>& scratch, std::vector<TaskEdges::Edge>& out) {
  auto& candidates = scratch.candidates;
  candidates.clear();
  const int64_t target = grid.start + local_target;
  const scalar_t* pos_i = pos + target * 3;
  const int* wi = &grid.wrap[local_target * 3];
  const double* t = &grid.target_cart[local_target * 3];
  // Generous margin (1%, above float32 rounding of large coordinates): the prefilter may only let
  // through more pairs than the exact test, never fewer.
  const double prefilter_sq = static_cast<double>(cutoff_sq) * 1.01 + 1e-6;
  int lo[3], hi[3];
  for (int k = 0; k < 3; ++k) {
    const double place = grid.target_place[local_target * 3 + k];
    lo[k] = std::max(0, static_cast<int>(std::floor(place - grid.reach[k])));
    hi[k] = std::min(grid.bins[k] - 1, static_cast<int>(std::floor(place + grid.reach[k])));
  }
  const double* xs = grid.x.data();
  const double* ys = grid.y.data();
  const double* zs = grid.z.data();
  for (int b0 = lo[0]; b0 <= hi[0]; ++b0) {
    for (int b1 = lo[1]; b1 <= hi[1]; ++b1) {
      const int64_t column = (static_cast<int64_t>(b0) * grid.bins[1] + b1) * grid.bins[2];
      const int64_t begin = grid.bin_start[column + lo[2]], end = grid.bin_start[column + hi[2] + 1];
      if (static_cast<int64_t>(work.hits.size()) < end - begin) work.hits.resize(2 * (end - begin));
      int64_t* hits = work.hits.data();
      const int64_t found = prefilter(xs, ys, zs, begin, end, t, prefilter_sq, hits);
      for (int64_t h = 0; h < found; ++h) {
        const int64_t k = hits[h];
        const int32_t* s = &grid.shift[k * 3];
        const int s0 = s[0] + wi[0], s1 = s[1] + wi[1], s2 = s[2] + wi[2];
        const int64_t local_source = grid.atom[k];
        if (local_source == local_target && s0 == 0 && s1 == 0 && s2 == 0) continue;
        const int64_t source = grid.start + local_source;
        const scalar_t d2 = pair_distance_sq(pos + source * 3, pos_i, cell, s0, s1, s2);
        if (d2 < cutoff_sq) candidates.push_back({d2, source, {s0, s1, s2}});
      }
    }
  }
  sort_candidates(candidates, scratch.sorted, work.bucket_start, static_cast<double>(cutoff_sq), grid.start);
  // the cap keeps whole shells (capped_count, e3relax/radius_graph_common.h)
  candidates.resize(capped_count(candidates.data(), static_cast<int64_t>(candidates.size()), max_neighbors));
  if (self_images == kSelfImagesPaper) {
    const auto by_distance = [](const Candidate<scalar_t>& x, const Candidate<scalar_t>& y) {
      return candidate_less(x, y);
    };
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [&](const Candidate<scalar_t>& c) { return c.source == target; }),
                     candidates.end());
    const size_t kept = candidates.size();
    for (const auto& s : kPaperSelfShifts) {
      if ((s[0] && !grid.periodic[0]) || (s[1] && !grid.periodic[1]) || (s[2] && !grid.periodic[2])) continue;
      candidates.push_back({pair_distance_sq(pos_i, pos_i, cell, s[0], s[1], s[2]), target, {s[0], s[1], s[2]}});
    }
    std::sort(candidates.begin() + kept, candidates.end(), by_distance);
    std::inplace_merge(candidates.begin(), candidates.begin() + kept, candidates.end(), by_distance);
  }
  for (const auto& c : candidates) {
    out.push_back({static_cast<int32_t>(c.source - grid.start), {c.shift[0], c.shift[1], c.shift[2]}});
  }
}

template <typename scalar_t>
std::vector<TaskEdges> find_edges(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                                                 const std::vector<int64_t>& ptr, double cutoff,
                                                 int64_t max_neighbors, int64_t self_images) {
  const int64_t num_structures = static_cast<int64_t>(ptr.size()) - 1;
  const int64_t num_atoms = ptr.back();
  const scalar_t* pos_data = pos.data_ptr<scalar_t>();
  const scalar_t* cell_data = cell.data_ptr<scalar_t>();
  const bool* pbc_data = pbc.data_ptr<bool>();
  std::vector<ImageGrid> grids(num_structures);
  at::parallel_for(0, num_structures, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      GridBuilder(grids[b], b, cutoff).build(pos_data, cell_data + 9 * b, pbc_data + 3 * b, ptr[b], ptr[b + 1] - ptr[b]);
    }
  });
  const int64_t num_tasks = (num_atoms + kTargetsPerTask - 1) / kTargetsPerTask;
  std::vector<TaskEdges> buffers(num_tasks);
  const scalar_t cutoff_sq = static_cast<scalar_t>(cutoff * cutoff);
  at::parallel_for(0, num_tasks, 1, [&](int64_t begin, int64_t end) {
    Workspace work;
    TargetScratch<scalar_t> scratch;
    size_t typical = 0;  // edges of the first task of this range: the reservation of the others
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = task * kTargetsPerTask, last = std::min(num_atoms, first + kTargetsPerTask);
      TaskEdges& edges = buffers[task];
      edges.edges.reserve(typical + typical / 4);
      int64_t b = std::upper_bound(ptr.begin(), ptr.end(), first) - ptr.begin() - 1;
      for (int64_t target = first; target < last; ++target) {
        while (target >= ptr[b + 1]) ++b;
        const size_t before = edges.edges.size();
        target_edges<scalar_t>(grids[b], target - ptr[b], pos_data, cell_data + 9 * b, cutoff_sq, max_neighbors,
                               self_images, work, scratch, edges.edges);
        edges.per_target[target - first] = static_cast<int32_t>(edges.edges.size() - before);
      }
      if (task == begin) typical = edges.edges.size();
    }
  });
  return buffers;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> radius_graph_pbc_cpu(const at::Tensor& pos_in, const at::Tensor& cell_in,
                                                                    const at::Tensor& pbc_in, const at::Tensor& ptr_in,
                                                                    double cutoff, int64_t max_neighbors,
                                                                    int64_t self_images) {
  check_radius_graph_args(pos_in, cell_in, pbc_in, ptr_in, cutoff, max_neighbors, self_images);
  const at::Tensor pos = pos_in.contiguous(), cell = cell_in.contiguous(), pbc = pbc_in.contiguous();
  const at::Tensor ptr_tensor = ptr_in.contiguous();
  const int64_t* ptr_data = ptr_tensor.data_ptr<int64_t>();
  std::vector<int64_t> ptr(ptr_data, ptr_data + ptr_tensor.numel());
  const int64_t num_structures = static_cast<int64_t>(ptr.size()) - 1;
  TORCH_CHECK_VALUE(ptr[0] == 0, "field 'ptr' must start at 0, got ", ptr[0]);
  TORCH_CHECK_VALUE(ptr.back() == pos.size(0), "field 'ptr' ends at ", ptr.back(), " but 'pos' has ", pos.size(0),
                    " atoms");
  for (int64_t b = 0; b < num_structures; ++b) {
    TORCH_CHECK_VALUE(ptr[b + 1] >= ptr[b], "structure ", b, ": field 'ptr' decreases (", ptr[b], " -> ", ptr[b + 1], ")");
  }
  TORCH_CHECK_VALUE(at::isfinite(pos).all().item<bool>(), "field 'pos' is not finite (check the structures)");
  TORCH_CHECK_VALUE(at::isfinite(cell).all().item<bool>(), "field 'cell' is not finite (check the structures)");

  std::vector<TaskEdges> buffers;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "radius_graph_pbc_cpu", [&] {
    buffers = find_edges<scalar_t>(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  });
  std::vector<int64_t> offsets(buffers.size() + 1, 0);
  for (size_t t = 0; t < buffers.size(); ++t) offsets[t + 1] = offsets[t] + static_cast<int64_t>(buffers[t].edges.size());
  const int64_t num_edges = offsets.back();
  const auto long_options = pos.options().dtype(at::kLong);
  at::Tensor edge_index = at::empty({2, num_edges}, long_options);
  at::Tensor shifts = at::empty({num_edges, 3}, long_options);
  at::Tensor counts = at::zeros({num_structures}, long_options);
  int64_t* sources = edge_index.data_ptr<int64_t>();
  int64_t* targets = sources + num_edges;
  int64_t* shift_data = shifts.data_ptr<int64_t>();
  at::parallel_for(0, static_cast<int64_t>(buffers.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t e = offsets[t];
      const int64_t first = t * kTargetsPerTask, last = std::min(ptr.back(), first + kTargetsPerTask);
      const TaskEdges::Edge* edge = buffers[t].edges.data();
      int64_t b = std::upper_bound(ptr.begin(), ptr.end(), first) - ptr.begin() - 1;
      for (int64_t target = first; target < last; ++target) {
        while (target >= ptr[b + 1]) ++b;
        for (int32_t k = 0; k < buffers[t].per_target[target - first]; ++k, ++edge, ++e) {
          sources[e] = ptr[b] + edge->local_source;
          targets[e] = target;
          shift_data[3 * e] = edge->shift[0];
          shift_data[3 * e + 1] = edge->shift[1];
          shift_data[3 * e + 2] = edge->shift[2];
        }
      }
      std::vector<TaskEdges::Edge>().swap(buffers[t].edges);  // give the memory back as the output fills
    }
  });
  // Edges are sorted by target and structures own contiguous atom ranges: count by binary search.
  int64_t* count_data = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < num_structures; ++b) {
    const int64_t lo = std::lower_bound(targets, targets + num_edges, ptr[b]) - targets;
    const int64_t hi = std::lower_bound(targets, targets + num_edges, ptr[b + 1]) - targets;
    count_data[b] = hi - lo;
  }
  return {edge_index, shifts, counts};
}

TORCH_LIBRARY_IMPL(e3relax, CPU, m) { m.impl("radius_graph_pbc", &radius_graph_pbc_cpu); }

}  // namespace e3relax
