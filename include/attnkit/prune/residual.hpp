#pragma once

/// \file attnkit/prune/residual.hpp
/// The regression-aware selector. With regression compensation the logit
/// error of window query q on a fitted key is q_B . r_B, r_B the residual of
/// predicting k_B from k_A, so the natural objective is not sum_{B x B} W but
///
///   E(A) = sum_n sum_m (q_{n,B} . r_{m,B})^2 = tr(G_BB R_B^T R_B),   G = Q_w^T Q_w,
///
/// and R_B^T R_B is the Schur complement of S_AA in the centred key scatter S:
/// E(A) = <G, S / A>, with S / A = S - S_{.A} S_AA^-1 S_{A.} (zero on A). Forward
/// selection adds, one at a time, the dimension (or rotary pair) P with the
/// largest decrease
///
///   gain(P) = tr( (S/A)_PP^-1 ((S/A) G (S/A))_PP ),
///
/// and updates S/A by one block step of pivoted Cholesky. Each step costs one
/// D x D product, O(D^3); D' steps. The selection uses S + rho I (rho the
/// compensation's ridge) so that every pivot is >= rho; with rho = 0 a pivot
/// below 1e-14 tr(S)/D counts as "already predicted" (gain 0). When tr(S) = 0
/// (all keys equal, every selection has zero residual) it keeps the largest
/// diagonal entries of the pair-reduced G.
///
/// E without A (A = {}) is the centred objective sum_{B x B} (G o S), which is
/// mean compensation's logit error: regression can only lower it.
/// Thread safety: pure functions.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Cholesky>

#include "attnkit/prune/compensation.hpp"
#include "attnkit/prune/detail/groups.hpp"
#include "attnkit/prune/selection.hpp"
#include "attnkit/prune/statistics.hpp"

namespace attnkit {

namespace detail {

inline void check_residual_inputs(const char* where, const RowMatrix<double>& g, const KeyStatistics& stats) {
  if (stats.dim() < 1) fail(where, ": key statistics are empty");
  if (g.rows() != stats.dim() || g.cols() != stats.dim())
    fail(where, ": query Gram ", shape(g), " does not match keys of width ", stats.dim());
  if (!g.allFinite() || !stats.scatter.allFinite() || !stats.mean.allFinite())
    fail(where, ": the query Gram or the key statistics have a NaN or infinite entry");
}

/// Smallest eigenvalue of a symmetric 1 x 1 or 2 x 2 block.
template <typename M>
double min_eigenvalue_small(const M& m) {
  if (m.rows() == 1) return m(0, 0);
  const double half_trace = 0.5 * (m(0, 0) + m(1, 1));
  const double half_gap = 0.5 * (m(0, 0) - m(1, 1));
  return half_trace - std::sqrt(half_gap * half_gap + m(0, 1) * m(1, 0));
}

}  // namespace detail

/// Forward selection of D' (= `kept`) dimensions on E(A) (see the file comment).
/// \param query_gram G = Q_w^T Q_w (D x D), e.g. from query_gram().
/// \param stats statistics of the keys that will be compressed.
/// \throws std::invalid_argument for mismatched sizes, non-finite input, a bad
///         ridge, or kept outside [1, D] (see SelectOptions::rope_pairs).
inline DimSelection select_residual(const RowMatrix<double>& query_gram, const KeyStatistics& stats,
                                    Index kept, const CompensationOptions& fit = {},
                                    const SelectOptions& options = {}) {
  const char* where = "select_residual";
  detail::check_residual_inputs(where, query_gram, stats);
  detail::check_ridge(where, fit.ridge);
  const Index d = stats.dim();
  const detail::DimGroups g = detail::make_groups(where, d, options.rope_pairs);
  const Index k = detail::kept_groups(where, g, kept);
  const Index n = g.size();
  std::vector<bool> keep(static_cast<std::size_t>(n), false);
  const double trace = stats.scatter.trace();
  if (!(stats.count > 0 && trace > 0)) {
    const RowMatrix<double> gg = detail::group_matrix(query_gram, g);
    std::vector<Index> order(static_cast<std::size_t>(n));
    for (Index a = 0; a < n; ++a)
      order[static_cast<std::size_t>(a)] = a;
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return gg(a, a) > gg(b, b); });
    for (Index t = 0; t < k; ++t)
      keep[static_cast<std::size_t>(order[static_cast<std::size_t>(t)])] = true;
    return detail::expand_groups(g, keep);
  }
  const double rho = detail::absolute_ridge(stats, fit.ridge);
  const double tiny = std::max(rho, 1e-14 * trace / static_cast<double>(d));
  RowMatrix<double> s = stats.scatter;
  s.diagonal().array() += rho;
  RowMatrix<double> h;
  for (Index step = 0; step < k; ++step) {
    h.noalias() = query_gram * s;  // G (S/A); (S/A) G (S/A) block P = S_{P.} H_{.P}
    Index best = -1;
    double best_gain = -std::numeric_limits<double>::infinity();
    for (Index a = 0; a < n; ++a) {
      if (keep[static_cast<std::size_t>(a)]) continue;
      const auto& m = g.members[static_cast<std::size_t>(a)];
      double gain = 0;
      if (m.size() == 1) {
        const Index i = m[0];
        const double pivot = s(i, i);
        if (pivot > 0.5 * tiny) gain = s.row(i).dot(h.col(i)) / pivot;
      } else {
        Eigen::Matrix2d spp, t;
        for (int u = 0; u < 2; ++u)
          for (int v = 0; v < 2; ++v) {
            spp(u, v) = s(m[static_cast<std::size_t>(u)], m[static_cast<std::size_t>(v)]);
            t(u, v) = s.row(m[static_cast<std::size_t>(u)]).dot(h.col(m[static_cast<std::size_t>(v)]));
          }
        if (detail::min_eigenvalue_small(spp) > 0.5 * tiny) gain = spp.ldlt().solve(t).trace();
      }
      if (gain > best_gain) {
        best_gain = gain;
        best = a;
      }
    }
    keep[static_cast<std::size_t>(best)] = true;
    // Block pivoted-Cholesky step: S <- S - S_{.P} S_PP^-1 S_{P.} (skipped if P is already predicted).
    const auto& m = g.members[static_cast<std::size_t>(best)];
    const Index w = static_cast<Index>(m.size());
    Eigen::MatrixXd cols(d, w), spp(w, w);
    for (Index u = 0; u < w; ++u) {
      cols.col(u) = s.col(m[static_cast<std::size_t>(u)]);
      for (Index v = 0; v < w; ++v)
        spp(u, v) = s(m[static_cast<std::size_t>(u)], m[static_cast<std::size_t>(v)]);
    }
    if (detail::min_eigenvalue_small(spp) > 0.5 * tiny) {
      const Eigen::MatrixXd x = spp.ldlt().solve(cols.transpose());  // S_PP^-1 S_{P.}
      s.noalias() -= cols * x;
      s = (0.5 * (s + s.transpose())).eval();
    }
  }
  return detail::expand_groups(g, keep);
}

/// Convenience: select_residual from the window queries and the keys that
/// will be compressed. O((n + w) D^2 + D' D^3).
template <typename DQ, typename DK>
DimSelection select_residual(const Eigen::MatrixBase<DQ>& window_queries, const Eigen::MatrixBase<DK>& keys,
                             Index kept, const CompensationOptions& fit = {},
                             const SelectOptions& options = {}) {
  detail::require_non_empty("select_residual", "window queries", window_queries);
  if (window_queries.cols() != keys.cols())
    detail::fail("select_residual: window queries ", detail::shape(window_queries), " and keys ",
                 detail::shape(keys), " must have the same width D");
  return select_residual(query_gram(window_queries), key_statistics(keys), kept, fit, options);
}

/// E(A) = tr(G_BB R_B^T R_B) for `selection`, with R the residual of the ridge
/// regression fit_compensation(stats, selection, regression, fit) computes (in
/// double): R_B^T R_B = S_BB - M S_AB - S_BA M^T + M S_AA M^T. This is the
/// squared Frobenius norm of the window queries' logit error on the fitted keys
/// under regression compensation (before the logit scale). O(D^3).
/// \throws std::invalid_argument as select_residual, or for a selection of
///         another width.
inline double residual_objective(const RowMatrix<double>& query_gram, const KeyStatistics& stats,
                                 const DimSelection& selection, const CompensationOptions& fit = {}) {
  const char* where = "residual_objective";
  detail::check_residual_inputs(where, query_gram, stats);
  detail::check_ridge(where, fit.ridge);
  if (selection.dim() != stats.dim())
    detail::fail(where, ": selection of D = ", selection.dim(), " does not match keys of width ",
                 stats.dim());
  const auto& a = selection.kept();
  const auto& b = selection.dropped();
  if (b.empty()) return 0.0;
  const RowMatrix<double> m =
      detail::regression_coefficients(stats, selection, detail::absolute_ridge(stats, fit.ridge));
  const RowMatrix<double> sbb = detail::submatrix(stats.scatter, b, b);
  const RowMatrix<double> sab = detail::submatrix(stats.scatter, a, b);
  const RowMatrix<double> saa = detail::submatrix(stats.scatter, a, a);
  const RowMatrix<double> rr = sbb - m * sab - sab.transpose() * m.transpose() + m * saa * m.transpose();
  const RowMatrix<double> gbb = detail::submatrix(query_gram, b, b);
  return gbb.cwiseProduct(rr).sum();
}

}  // namespace attnkit
