#pragma once

/// \file attnkit/prune/compensation.hpp
/// What the dropped dimensions B still contribute to a compressed key's logit.
/// Dropping B from key k leaves the error q_B . k_B on its logit; a compensation
/// predicts k_B from what is stored (the kept part k_A) and adds q_B . prediction:
///
///  - none:       prediction 0 (ThinK);
///  - mean:       prediction mu_B, the mean of the dropped dimensions over the
///                compressed keys. The error becomes q_B . (k_B - mu_B), the
///                centred residual: the per-row shift q_B . mu_B that the note
///                warns about (compressed keys moving against the uncompressed
///                recent ones) is cancelled;
///  - regression: prediction mu_B + M (k_A - mu_A), M ((D - D') x D') the ridge
///                least-squares fit of the centred k_B on the centred k_A over the
///                compressed keys:  M = S_BA (S_AA + rho I)^-1,  S the centred
///                scatter. The error becomes q_B . r_B, r_B the regression residual.
///
/// Every prediction is affine in k_A, so it folds into the query and the
/// per-key cost and memory do not change (the cache still stores only k_A):
///
///   z~ = scale * ( q'_A . k_A + q_B . offset ),   q'_A = c q_A + M^T q_B,
///   offset = mu_B (mean) or mu_B - M mu_A (regression),
///
/// with c = sqrt(D / D') under scale correction and 1 otherwise.
///
/// Guarantees: on the fitted keys, each dropped dimension's regression residual
/// has a sum of squares no larger than its mean residual (M = 0 is feasible for
/// the ridge problem, whose data term is then no larger). A singular S_AA
/// (constant or duplicated kept dimensions) is handled by the ridge term
/// rho = ridge * tr(S) / D > 0; with ridge = 0 the minimum-norm least-squares
/// solution is used; when tr(S) = 0 (all fitted keys equal) M = 0. The result
/// is finite whenever the statistics are.

#include <cmath>
#include <cstddef>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/QR>

#include "attnkit/prune/config.hpp"
#include "attnkit/prune/selection.hpp"
#include "attnkit/prune/statistics.hpp"

namespace attnkit {

/// Options of the compensation fit.
struct CompensationOptions {
  /// Relative ridge: rho = ridge * tr(S) / D, S the centred scatter of the
  /// fitted keys, so it is invariant to scaling the keys. Finite and >= 0.
  double ridge = 1e-6;
};

/// A fitted compensation for one selection (see the file comment).
template <typename Scalar>
struct Compensation {
  PruneCompensation kind = PruneCompensation::none;
  /// (|B| x D') M; (0 x 0) unless kind == regression.
  RowMatrix<Scalar> coefficients;
  /// (|B|) mu_B (mean) or mu_B - M mu_A (regression); empty for none.
  Vector<Scalar> offset;
  /// The absolute ridge rho used (0 unless regression).
  double ridge = 0;

  /// Bytes of the stored coefficients and offset.
  std::size_t bytes() const {
    return sizeof(Scalar) * static_cast<std::size_t>(coefficients.size() + offset.size());
  }
};

namespace detail {

inline RowMatrix<double> submatrix(const RowMatrix<double>& m, const std::vector<Index>& rows,
                                   const std::vector<Index>& cols) {
  RowMatrix<double> out(static_cast<Index>(rows.size()), static_cast<Index>(cols.size()));
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < cols.size(); ++j)
      out(static_cast<Index>(i), static_cast<Index>(j)) = m(rows[i], cols[j]);
  return out;
}

inline Eigen::VectorXd subvector(const Eigen::VectorXd& v, const std::vector<Index>& idx) {
  Eigen::VectorXd out(static_cast<Index>(idx.size()));
  for (std::size_t i = 0; i < idx.size(); ++i)
    out(static_cast<Index>(i)) = v(idx[i]);
  return out;
}

inline void check_ridge(const char* where, double ridge) {
  if (!(std::isfinite(ridge) && ridge >= 0)) fail(where, ": ridge = ", ridge, " must be finite and >= 0");
}

/// The absolute ridge rho = ridge * tr(S) / D.
inline double absolute_ridge(const KeyStatistics& stats, double ridge) {
  return ridge * stats.scatter.trace() / static_cast<double>(stats.dim());
}

/// Ridge least squares in double: M = S_BA (S_AA + rho I)^-1, (|B| x D').
inline RowMatrix<double> regression_coefficients(const KeyStatistics& stats, const DimSelection& sel,
                                                 double rho) {
  const auto& a = sel.kept();
  const auto& b = sel.dropped();
  if (b.empty() || !(stats.count > 0 && stats.scatter.trace() > 0))
    return RowMatrix<double>::Zero(static_cast<Index>(b.size()), static_cast<Index>(a.size()));
  RowMatrix<double> saa = submatrix(stats.scatter, a, a);
  const RowMatrix<double> sab = submatrix(stats.scatter, a, b);
  Eigen::MatrixXd x;  // (D' x |B|) = (S_AA + rho I)^-1 S_AB
  if (rho > 0) {
    saa.diagonal().array() += rho;
    x = Eigen::LDLT<Eigen::MatrixXd>(saa).solve(Eigen::MatrixXd(sab));
  } else {
    x = Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd>(saa).solve(Eigen::MatrixXd(sab));
  }
  return x.transpose();
}

}  // namespace detail

/// Fits the compensation of `kind` for `selection` from the statistics of the
/// keys it will compress. O(D^3) (one D' x D' solve) for regression, O(D) else.
/// With stats.count == 0 the offset and M are zero.
/// \throws std::invalid_argument if the widths differ or the ridge is invalid.
/// Thread safety: pure function.
template <typename Scalar>
Compensation<Scalar> fit_compensation(const KeyStatistics& stats, const DimSelection& selection,
                                      PruneCompensation kind, const CompensationOptions& options = {}) {
  const char* where = "fit_compensation";
  detail::check_ridge(where, options.ridge);
  if (stats.dim() != selection.dim())
    detail::fail(where, ": key statistics of width ", stats.dim(),
                 " do not match a selection of D = ", selection.dim());
  Compensation<Scalar> c;
  c.kind = kind;
  if (kind == PruneCompensation::none) return c;
  const Eigen::VectorXd mu_b = detail::subvector(stats.mean, selection.dropped());
  if (kind == PruneCompensation::mean) {
    c.offset = mu_b.cast<Scalar>();
    return c;
  }
  c.ridge = detail::absolute_ridge(stats, options.ridge);
  const RowMatrix<double> m = detail::regression_coefficients(stats, selection, c.ridge);
  const Eigen::VectorXd mu_a = detail::subvector(stats.mean, selection.kept());
  c.coefficients = m.cast<Scalar>();
  c.offset = (mu_b - m * mu_a).cast<Scalar>();
  return c;
}

/// Fits the compensation from the key rows themselves (key_statistics + fit).
/// \param keys (n x D) the keys that will be compressed. O(n D^2 + D^3).
template <typename Derived>
Compensation<typename Derived::Scalar> fit_compensation(const Eigen::MatrixBase<Derived>& keys,
                                                        const DimSelection& selection, PruneCompensation kind,
                                                        const CompensationOptions& options = {}) {
  if (keys.cols() != selection.dim())
    detail::fail("fit_compensation: keys ", detail::shape(keys),
                 " do not match a selection of D = ", selection.dim());
  return fit_compensation<typename Derived::Scalar>(key_statistics(keys), selection, kind, options);
}

/// The per-key error that remains in the dropped dimensions: row m is
/// k_{m,B} - prediction(k_{m,A}), in double. (n x |B|). O(n D D').
/// \throws std::invalid_argument if the widths differ or the compensation does
///         not belong to a selection of this size.
template <typename Derived, typename Scalar>
RowMatrix<double> compensation_residual(const Eigen::MatrixBase<Derived>& keys, const DimSelection& selection,
                                        const Compensation<Scalar>& comp) {
  const char* where = "compensation_residual";
  if (keys.cols() != selection.dim())
    detail::fail(where, ": keys ", detail::shape(keys), " do not match a selection of D = ", selection.dim());
  const Index nb = selection.dropped_count(), na = selection.kept_count();
  if ((comp.kind != PruneCompensation::none && comp.offset.size() != nb) ||
      (comp.kind == PruneCompensation::regression &&
       (comp.coefficients.rows() != nb || comp.coefficients.cols() != na)))
    detail::fail(where, ": the compensation does not match a selection with ", na, " kept and ", nb,
                 " dropped dimensions");
  RowMatrix<double> r(keys.rows(), nb);
  const RowMatrix<double> m = comp.coefficients.template cast<double>();
  const Eigen::VectorXd off = comp.offset.template cast<double>();
  Eigen::VectorXd ka(na), kb(nb);
  for (Index row = 0; row < keys.rows(); ++row) {
    for (Index t = 0; t < na; ++t)
      ka(t) = static_cast<double>(keys(row, selection.kept()[static_cast<std::size_t>(t)]));
    for (Index t = 0; t < nb; ++t)
      kb(t) = static_cast<double>(keys(row, selection.dropped()[static_cast<std::size_t>(t)]));
    if (comp.kind != PruneCompensation::none) kb -= off;
    if (comp.kind == PruneCompensation::regression) kb -= m * ka;
    r.row(row) = kb.transpose();
  }
  return r;
}

}  // namespace attnkit
