#pragma once

/// \file attnkit/core/metrics.hpp
/// Error metrics between an approximate and a reference output (or between two
/// attention distributions). All accumulate in long double and return double;
/// O(size) time. A NaN in either input propagates to the result (it is never
/// silently skipped), so a broken kernel cannot report a small error.

#include <cmath>
#include <limits>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// max_ij |a_ij - b_ij|; NaN if any difference is NaN.
/// \throws std::invalid_argument if the shapes differ or are empty.
template <typename DA, typename DB>
double max_abs_error(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  detail::require_non_empty("max_abs_error", "a", a);
  detail::require_same_shape("max_abs_error", "a", a, "b", b);
  long double worst = 0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const long double diff =
          std::fabs(static_cast<long double>(a(i, j)) - static_cast<long double>(b(i, j)));
      if (std::isnan(diff)) return std::numeric_limits<double>::quiet_NaN();
      if (diff > worst) worst = diff;
    }
  return static_cast<double>(worst);
}

/// ||approx - reference||_F / ||reference||_F. When the reference is all zero
/// the result is 0 if approx is too and +inf otherwise.
/// \throws std::invalid_argument if the shapes differ or are empty.
template <typename DA, typename DB>
double relative_frobenius_error(const Eigen::MatrixBase<DA>& approx, const Eigen::MatrixBase<DB>& reference) {
  detail::require_non_empty("relative_frobenius_error", "approx", approx);
  detail::require_same_shape("relative_frobenius_error", "approx", approx, "reference", reference);
  long double num = 0, den = 0;
  for (Index i = 0; i < approx.rows(); ++i)
    for (Index j = 0; j < approx.cols(); ++j) {
      const long double r = static_cast<long double>(reference(i, j));
      const long double d = static_cast<long double>(approx(i, j)) - r;
      num += d * d;
      den += r * r;
    }
  if (den == 0 && !std::isnan(num)) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return static_cast<double>(std::sqrt(num / den));
}

/// Per-row ||approx_i - reference_i||_2 / ||reference_i||_2 (same zero-row rule
/// as relative_frobenius_error). \returns (rows).
template <typename DA, typename DB>
Eigen::VectorXd row_relative_error(const Eigen::MatrixBase<DA>& approx,
                                   const Eigen::MatrixBase<DB>& reference) {
  detail::require_non_empty("row_relative_error", "approx", approx);
  detail::require_same_shape("row_relative_error", "approx", approx, "reference", reference);
  Eigen::VectorXd out(approx.rows());
  for (Index i = 0; i < approx.rows(); ++i) {
    long double num = 0, den = 0;
    for (Index j = 0; j < approx.cols(); ++j) {
      const long double r = static_cast<long double>(reference(i, j));
      const long double d = static_cast<long double>(approx(i, j)) - r;
      num += d * d;
      den += r * r;
    }
    out(i) = (den == 0 && !std::isnan(num)) ? (num == 0 ? 0.0 : std::numeric_limits<double>::infinity())
                                            : static_cast<double>(std::sqrt(num / den));
  }
  return out;
}

/// Per-row Kullback-Leibler divergence KL(p_i || q_i) = sum_j p_ij log(p_ij / q_ij)
/// between two attention distributions (rows of probabilities), in nats.
/// Terms with p_ij = 0 contribute 0; p_ij > 0 with q_ij = 0 gives +inf.
/// \returns (rows), each >= 0 up to rounding.
/// \throws std::invalid_argument if the shapes differ, are empty, or an entry
///         is negative (not a probability).
template <typename DP, typename DQ>
Eigen::VectorXd kl_divergence(const Eigen::MatrixBase<DP>& p, const Eigen::MatrixBase<DQ>& q) {
  detail::require_non_empty("kl_divergence", "p", p);
  detail::require_same_shape("kl_divergence", "p", p, "q", q);
  Eigen::VectorXd out(p.rows());
  for (Index i = 0; i < p.rows(); ++i) {
    long double kl = 0;
    for (Index j = 0; j < p.cols(); ++j) {
      const long double pj = static_cast<long double>(p(i, j));
      const long double qj = static_cast<long double>(q(i, j));
      if (pj < 0 || qj < 0)
        detail::fail("kl_divergence: entry (", i, ", ", j, ") is negative (p = ", static_cast<double>(pj),
                     ", q = ", static_cast<double>(qj), "); both inputs must be probability rows");
      if (pj == 0) continue;
      kl += qj == 0 ? std::numeric_limits<long double>::infinity() : pj * std::log(pj / qj);
    }
    out(i) = static_cast<double>(kl);
  }
  return out;
}

}  // namespace attnkit
