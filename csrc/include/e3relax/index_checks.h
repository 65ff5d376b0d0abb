// Index-range checks of graph inputs, shared by every op that reads through an index (CPU and CUDA
// bindings): an out-of-range source, target, permutation or row pointer would read or write outside
// a tensor (a segfault on the CPU, corrupted memory on a GPU). Each check is one aminmax (or one diff)
// over the index tensor, O(E) against the O(E F) of the op, and on a GPU one host sync per tensor.
// E3RELAX_SKIP_INDEX_CHECKS=1 in the environment (read once) turns them off for speed, for callers
// whose graphs come from our own radius_graph_pbc and message_graph.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>

namespace e3relax {

inline bool index_checks_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("E3RELAX_SKIP_INDEX_CHECKS");
    return !(value != nullptr && std::strcmp(value, "1") == 0);
  }();
  return enabled;
}

// Every entry of `index` in [0, limit).
inline void check_index_range(const at::Tensor& index, int64_t limit, const char* op, const char* field) {
  if (!index_checks_enabled() || index.numel() == 0) return;
  const auto range = at::aminmax(index);
  const int64_t low = std::get<0>(range).item<int64_t>(), high = std::get<1>(range).item<int64_t>();
  TORCH_CHECK_VALUE(low >= 0 && high < limit, op, ": field '", field, "' holds indices from ", low, " to ", high,
                    ", outside [0, ", limit, ")");
}

// A row pointer over `total` entries: starts at 0, ends at total, never decreases.
inline void check_row_pointer(const at::Tensor& ptr, int64_t total, const char* op, const char* field) {
  if (!index_checks_enabled() || ptr.numel() == 0) return;
  const int64_t first = ptr[0].item<int64_t>(), last = ptr[-1].item<int64_t>();
  TORCH_CHECK_VALUE(first == 0 && last == total, op, ": field '", field, "' must run from 0 to ", total,
                    ", got ", first, " to ", last);
  if (ptr.numel() > 1) {
    TORCH_CHECK_VALUE(ptr.diff().min().item<int64_t>() >= 0, op, ": field '", field, "' decreases");
  }
}

}  // namespace e3relax
