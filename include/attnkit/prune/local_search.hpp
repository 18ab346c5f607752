#pragma once

/// \file attnkit/prune/local_search.hpp
/// 1-swap local search on F(B) = sum_{i,j in B} W_ij: exchange one kept and one
/// dropped dimension (rotary pair, with SelectOptions::rope_pairs) while that
/// lowers F.
///
/// Swapping kept a into B and dropped b out of B changes F by
///
///   Delta(a, b) = 2 (s_a - s_b) + W_aa + W_bb - 2 W_ab,   s_x = sum_{j in B} W_xj,
///
/// so one pass over all |A| |B| pairs costs O(D^2). Each step applies the best
/// swap (ties: lowest a, then lowest b) and stops when no swap lowers F by more
/// than a rounding tolerance, tol = 8 n eps max_x sum_j |W_xj| (n groups,
/// eps = 2^-52): a swap is applied only when F truly decreases, so the result
/// never has a larger objective than the start, and a returned selection is
/// 1-swap optimal up to tol. Thread safety: pure function.

#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/prune/detail/groups.hpp"
#include "attnkit/prune/selection.hpp"

namespace attnkit {

/// Outcome of local_search_swap.
struct SwapSearchResult {
  /// The refined selection (same size as the start).
  DimSelection selection;
  /// Number of swaps applied.
  Index swaps = 0;
  /// False only if the search stopped at max_swaps with an improving swap left.
  bool converged = true;
};

/// Refines `start` by 1-swaps until none lowers F (see the file comment).
/// \param w (D x D) weights. \param start any selection of D dimensions (with
///        rope_pairs it must not split a pair). \param max_swaps cap on the
///        number of swaps; 0 (default) means 1000 * D. Each swap costs O(D^2).
/// \throws std::invalid_argument for a bad W, a start of another width, or a
///         start that splits a rotary pair.
template <typename Derived>
SwapSearchResult local_search_swap(const Eigen::MatrixBase<Derived>& w, const DimSelection& start,
                                   const SelectOptions& options = {}, Index max_swaps = 0) {
  const char* where = "local_search_swap";
  detail::require_weight_matrix(where, w);
  if (start.dim() != w.rows())
    detail::fail(where, ": start selection of D = ", start.dim(), " does not match W ", detail::shape(w));
  const detail::DimGroups g = detail::make_groups(where, w.rows(), options.rope_pairs);
  std::vector<bool> keep = detail::selection_groups(where, g, start);
  const RowMatrix<double> wg = detail::group_matrix(w, g);
  const Index n = g.size();
  if (max_swaps <= 0) max_swaps = 1000 * w.rows();
  const double tol = 8.0 * static_cast<double>(n) * std::numeric_limits<double>::epsilon() *
                     wg.cwiseAbs().rowwise().sum().maxCoeff();

  SwapSearchResult result;
  result.converged = false;
  while (true) {
    Eigen::VectorXd s = Eigen::VectorXd::Zero(n);
    for (Index j = 0; j < n; ++j)
      if (!keep[static_cast<std::size_t>(j)]) s += wg.col(j);
    double best = -tol;
    Index best_a = -1, best_b = -1;
    for (Index a = 0; a < n; ++a) {
      if (!keep[static_cast<std::size_t>(a)]) continue;
      for (Index b = 0; b < n; ++b) {
        if (keep[static_cast<std::size_t>(b)]) continue;
        const double delta = 2.0 * (s(a) - s(b)) + wg(a, a) + wg(b, b) - 2.0 * wg(a, b);
        if (delta < best) {
          best = delta;
          best_a = a;
          best_b = b;
        }
      }
    }
    if (best_a < 0) {
      result.converged = true;
      break;
    }
    if (result.swaps == max_swaps) break;
    keep[static_cast<std::size_t>(best_a)] = false;
    keep[static_cast<std::size_t>(best_b)] = true;
    ++result.swaps;
  }
  result.selection = detail::expand_groups(g, keep);
  return result;
}

}  // namespace attnkit
