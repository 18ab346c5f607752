#pragma once

/// \file attnkit/prune/optimum.hpp
/// The exact minimiser of F(B) = sum_{i,j in B} W_ij over all dropped sets of
/// size D - D', by enumeration: the oracle the heuristic selectors are tested
/// and measured against.
///
/// Depth-first enumeration of the C(n, n - k) dropped sets (n groups, k kept)
/// in lexicographic order, with the objective updated incrementally
/// (F(B + i) = F(B) + W_ii + 2 sum_{j in B} W_ij), so each tree node costs O(n).
/// There is no pruning bound: for W with negative edges F is not monotone in B.
/// n <= 24 (C(24, 12) = 2.7 million leaves, well under a second). The first
/// minimum found in lexicographic order of B is returned; the objective is
/// accumulated in double and the returned set's F is within 4 n^2 eps max|W|
/// of the true minimum. Thread safety: pure function.

#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/prune/detail/groups.hpp"
#include "attnkit/prune/selection.hpp"

namespace attnkit {

/// The largest number of selection units (dimensions, or rotary pairs with
/// SelectOptions::rope_pairs) select_optimal enumerates.
inline constexpr Index max_optimal_groups = 24;

namespace detail {

struct OptimumSearch {
  const RowMatrix<double>& w;
  Index n;
  Index m;                         // dropped groups
  std::vector<Eigen::VectorXd> s;  // s[depth] = sum_{j in B} W_.j for the current prefix
  std::vector<Index> current;
  std::vector<Index> best_set;
  double best = std::numeric_limits<double>::infinity();

  void run(Index depth, Index first, double f) {
    if (depth == m) {
      if (f < best) {
        best = f;
        best_set = current;
      }
      return;
    }
    for (Index i = first; i <= n - (m - depth); ++i) {
      const double fi = f + w(i, i) + 2.0 * s[static_cast<std::size_t>(depth)](i);
      current[static_cast<std::size_t>(depth)] = i;
      if (depth + 1 < m)
        s[static_cast<std::size_t>(depth + 1)] = s[static_cast<std::size_t>(depth)] + w.col(i);
      run(depth + 1, i + 1, fi);
    }
  }
};

}  // namespace detail

/// The selection of D' (= `kept`) dimensions minimising F exactly.
/// \throws std::invalid_argument for a bad W or kept (as select_topk), or more
///         than max_optimal_groups groups (D > 24, or D > 48 with rope_pairs).
template <typename Derived>
DimSelection select_optimal(const Eigen::MatrixBase<Derived>& w, Index kept,
                            const SelectOptions& options = {}) {
  const char* where = "select_optimal";
  detail::require_weight_matrix(where, w);
  const detail::DimGroups g = detail::make_groups(where, w.rows(), options.rope_pairs);
  const Index k = detail::kept_groups(where, g, kept);
  if (g.size() > max_optimal_groups)
    detail::fail(where, ": ", g.size(), g.width() == 2 ? " rotary pairs" : " dimensions",
                 " exceed the enumeration limit of ", max_optimal_groups, " (W ", detail::shape(w), ")");
  const RowMatrix<double> wg = detail::group_matrix(w, g);
  const Index n = g.size();
  std::vector<bool> keep(static_cast<std::size_t>(n), true);
  if (k < n) {
    detail::OptimumSearch search{wg, n, n - k, {}, {}, {}, std::numeric_limits<double>::infinity()};
    search.s.assign(static_cast<std::size_t>(n - k), Eigen::VectorXd::Zero(n));
    search.current.assign(static_cast<std::size_t>(n - k), 0);
    search.run(0, 0, 0.0);
    for (const Index i : search.best_set)
      keep[static_cast<std::size_t>(i)] = false;
  }
  return detail::expand_groups(g, keep);
}

}  // namespace attnkit
