#pragma once

/// \file attnkit/approx/options.hpp
/// Settings of the approximate attention (attnkit/approx/approx_attention.hpp)
/// and of the key index it builds, with their checks.

#include <cmath>
#include <optional>

#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// How a summarised node's mass is estimated (its bound is the same).
enum class ApproxEstimator {
  /// n e^{q.mu + min(sigma^2 / 2, upper)} with sigma^2 = sum_c q_c^2 var_c
  /// (the node's per-dimension key variance in its block's basis): the
  /// second-order (Gaussian) term of the node's cumulants, clipped to the
  /// proven interval. Budgeted mode only; certified mode uses the interval's
  /// geometric midpoint, which minimises the bound.
  second_order,
  /// n e^{q.mu}: the centroid-only (monopole) far field, the Jensen lower
  /// bound. Budgeted mode only (a baseline).
  monopole,
};

/// Layout of the key index.
struct ApproxIndexOptions {
  /// Keys per smallest dyadic block (B_0); the blocks have B_0 2^l keys.
  /// Keys after a query's last whole block are attended exactly. >= leaf.
  Index block = 512;
  /// Keys per leaf of a block's tree (G), >= 1.
  Index leaf = 32;
  /// Summarise each block in the orthonormal basis of its keys' principal
  /// axes (the box, the variances and the splits are then along them).
  bool pca = true;
};

/// Options of approx_attention.
struct ApproxOptions {
  /// Which keys each query sees: Mask::none(), Mask::causal(offset) or
  /// Mask::strict_causal(offset); no window, no sinks.
  Mask mask{};
  /// Logit scale; std::nullopt = 1/sqrt(d). Finite and > 0.
  std::optional<double> scale{};
  /// Target: every reported bound_rc <= eps * max_{visible keys j} |V_jc|, in (0, 1).
  double eps = 1e-2;
  /// Budgeted mode when set (>= 1): at most `budget` keys of a query's
  /// indexed prefix are opened exactly (shared among its blocks by size); the
  /// rest are summarised or skipped as the bounds allow, and the bound may
  /// then exceed eps (reported). Unset: certified mode.
  std::optional<Index> budget{};
  /// Budgeted mode's mass estimate for summarised nodes.
  ApproxEstimator estimator = ApproxEstimator::second_order;
  /// Layout of the index approx_attention builds (ApproxKeyIndex::attend
  /// uses its own).
  ApproxIndexOptions index{};
  /// Threads; 0 = OpenMP's default (all cores). Ignored without OpenMP.
  int threads = 0;
  /// Most queries in one group sharing a traversal (>= 1).
  Index group_rows = 64;
};

namespace detail {

inline void check_index_options(const char* where, const ApproxIndexOptions& o) {
  if (o.leaf < 1) fail(where, ": index.leaf = ", o.leaf, " must be >= 1");
  if (o.block < o.leaf) fail(where, ": index.block = ", o.block, " must be >= index.leaf = ", o.leaf);
  if (o.block > (Index(1) << 40)) fail(where, ": index.block = ", o.block, " is too large");
}

inline void check_approx_options(const char* where, const ApproxOptions& o) {
  if (!(std::isfinite(o.eps) && o.eps > 0 && o.eps < 1)) fail(where, ": eps = ", o.eps, " must be in (0, 1)");
  if (o.budget && *o.budget < 1)
    fail(where, ": budget = ", *o.budget, " must be >= 1 (keys opened per query)");
  if (o.threads < 0) fail(where, ": threads = ", o.threads, " must be >= 0 (0 = all)");
  if (o.group_rows < 1) fail(where, ": group_rows = ", o.group_rows, " must be >= 1");
  if (o.mask.window || o.mask.sinks != 0)
    fail(where, ": mask windows and sinks are not supported (mask kind ", to_string(o.mask.kind),
         " with window ", o.mask.window.value_or(0), ", sinks ", o.mask.sinks, ")");
  check_index_options(where, o.index);
}

}  // namespace detail
}  // namespace attnkit
