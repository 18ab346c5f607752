#pragma once

/// \file attnkit/prune/greedy.hpp
/// Selectors that need only a weight matrix W (D x D, symmetric; only its
/// symmetric part is used) and cost O(D^2) once W is known:
///
///  - select_topk: keep the D' largest diagonal entries W_ii. With the Gram
///    weights (Q_w^T Q_w) o (K^T K), W_ii = ||q_i||^2 ||k_i||^2 is the square of
///    ThinK's score, so this is ThinK. It ignores the edges W_ij.
///  - select_greedy_remove: B = {}; repeatedly drop the dimension i with the
///    smallest marginal cost, until |B| = D - D'.
///  - select_greedy_remain: C = all; repeatedly keep (take out of C) the
///    dimension with the largest marginal, until D' are kept; B = what is left.
///
/// Marginals (GreedyRule):
///  - exact:   the change of F(B) = sum_{i,j in B} W_ij, where an edge appears
///             twice (W_ij and W_ji):
///               remove: F(B + i) - F(B)     = W_ii + 2 sum_{j in B} W_ij,
///               remain: F(C) - F(C - i)     = W_ii + 2 sum_{j in C, j != i} W_ij;
///  - literal: the note's rule, node weight plus each edge once:
///               W_ii + sum_{j in B} W_ij,   W_ii + sum_{j in C, j != i} W_ij.
///    The literal rule is the exact greedy for W' = (W + diag(W)) / 2, i.e. it
///    halves every edge against the node weights.
/// With a diagonal W both exact greedy orders return select_topk's selection.
///
/// Ties go to the lower dimension (group) index, so every selector is
/// deterministic. With SelectOptions::rope_pairs the selectors work on rotary
/// pairs (attnkit/prune/detail/groups.hpp). Thread safety: pure functions.

#include <algorithm>
#include <vector>

#include "attnkit/prune/detail/groups.hpp"
#include "attnkit/prune/selection.hpp"

namespace attnkit {

/// Which marginal the greedy selectors use (see the file comment).
enum class GreedyRule { exact, literal };

/// Keeps the D' (= `kept`) largest diagonal entries of W (of the pair-reduced
/// W with rope_pairs). O(D^2) with pairs, O(D log D) without.
/// \throws std::invalid_argument for a bad W (not square, empty, non-finite)
///         or kept outside [1, D] (see also SelectOptions::rope_pairs).
template <typename Derived>
DimSelection select_topk(const Eigen::MatrixBase<Derived>& w, Index kept, const SelectOptions& options = {}) {
  const char* where = "select_topk";
  detail::require_weight_matrix(where, w);
  const detail::DimGroups g = detail::make_groups(where, w.rows(), options.rope_pairs);
  const Index k = detail::kept_groups(where, g, kept);
  const RowMatrix<double> wg = detail::group_matrix(w, g);
  std::vector<Index> order(static_cast<std::size_t>(g.size()));
  for (Index a = 0; a < g.size(); ++a)
    order[static_cast<std::size_t>(a)] = a;
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return wg(a, a) > wg(b, b); });
  std::vector<bool> keep(static_cast<std::size_t>(g.size()), false);
  for (Index t = 0; t < k; ++t)
    keep[static_cast<std::size_t>(order[static_cast<std::size_t>(t)])] = true;
  return detail::expand_groups(g, keep);
}

/// Greedy "remove" (see the file comment). O(D^2).
/// \throws std::invalid_argument as select_topk.
template <typename Derived>
DimSelection select_greedy_remove(const Eigen::MatrixBase<Derived>& w, Index kept,
                                  GreedyRule rule = GreedyRule::exact, const SelectOptions& options = {}) {
  const char* where = "select_greedy_remove";
  detail::require_weight_matrix(where, w);
  const detail::DimGroups g = detail::make_groups(where, w.rows(), options.rope_pairs);
  const Index k = detail::kept_groups(where, g, kept);
  const RowMatrix<double> wg = detail::group_matrix(w, g);
  const Index n = g.size();
  const double edge = rule == GreedyRule::exact ? 2.0 : 1.0;
  // cost(i) = marginal of adding i to B.
  Eigen::VectorXd cost = wg.diagonal();
  std::vector<bool> dropped(static_cast<std::size_t>(n), false);
  for (Index step = 0; step < n - k; ++step) {
    Index best = -1;
    for (Index i = 0; i < n; ++i)
      if (!dropped[static_cast<std::size_t>(i)] && (best < 0 || cost(i) < cost(best))) best = i;
    dropped[static_cast<std::size_t>(best)] = true;
    cost += edge * wg.col(best);
  }
  std::vector<bool> keep(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i)
    keep[static_cast<std::size_t>(i)] = !dropped[static_cast<std::size_t>(i)];
  return detail::expand_groups(g, keep);
}

/// Greedy "remain" (see the file comment). O(D^2).
/// \throws std::invalid_argument as select_topk.
template <typename Derived>
DimSelection select_greedy_remain(const Eigen::MatrixBase<Derived>& w, Index kept,
                                  GreedyRule rule = GreedyRule::exact, const SelectOptions& options = {}) {
  const char* where = "select_greedy_remain";
  detail::require_weight_matrix(where, w);
  const detail::DimGroups g = detail::make_groups(where, w.rows(), options.rope_pairs);
  const Index k = detail::kept_groups(where, g, kept);
  const RowMatrix<double> wg = detail::group_matrix(w, g);
  const Index n = g.size();
  const double edge = rule == GreedyRule::exact ? 2.0 : 1.0;
  // gain(i) = W_ii + edge * sum_{j in C, j != i} W_ij, C = all groups not yet kept.
  Eigen::VectorXd gain = edge * wg.rowwise().sum() - (edge - 1.0) * wg.diagonal();
  std::vector<bool> keep(static_cast<std::size_t>(n), false);
  for (Index step = 0; step < k; ++step) {
    Index best = -1;
    for (Index i = 0; i < n; ++i)
      if (!keep[static_cast<std::size_t>(i)] && (best < 0 || gain(i) > gain(best))) best = i;
    keep[static_cast<std::size_t>(best)] = true;
    gain -= edge * wg.col(best);
  }
  return detail::expand_groups(g, keep);
}

}  // namespace attnkit
