#pragma once

/// \file attnkit/prune/statistics.hpp
/// First and second moments of a set of key rows, in double: the only data the
/// Gram-type weights, the compensation fit and the residual selector need from
/// the keys. Computing them is the O(n D^2) part of key-dimension pruning;
/// everything after costs O(D^3) at most.
///
/// The scatter is accumulated from centred rows (two passes), never as
/// sum k k^T - n mu mu^T, so a large common key mean (massive channels) costs
/// no accuracy. Two sets merge exactly (Chan, Golub and LeVeque's pairwise
/// update), which is how attnkit::PrunedKeyCache keeps them current as keys
/// are compressed.

#include <algorithm>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Moments of `count` key rows of width D.
struct KeyStatistics {
  /// Number of rows summarised (0 is allowed: mean and scatter are then zero).
  Index count = 0;
  /// (D) mean row.
  Eigen::VectorXd mean;
  /// (D x D) centred scatter S = sum_m (k_m - mean)(k_m - mean)^T (not divided by count).
  RowMatrix<double> scatter;

  Index dim() const { return mean.size(); }

  /// (D x D) uncentred Gram matrix K^T K = S + count * mean mean^T. O(D^2).
  RowMatrix<double> gram() const {
    // mu_i mu_j first, then the count: keeps the result exactly symmetric.
    const RowMatrix<double> outer = mean * mean.transpose();
    return scatter + static_cast<double>(count) * outer;
  }

  /// Adds the rows summarised by `other` (same D): the result equals the
  /// statistics of both row sets together, up to rounding. O(D^2).
  /// A default-constructed (width 0) object takes `other`'s width.
  /// \throws std::invalid_argument if both have a width and they differ (even
  ///         when one holds no rows); *this is then unchanged.
  void merge(const KeyStatistics& other) {
    if (dim() != 0 && other.dim() != 0 && other.dim() != dim())
      detail::fail("KeyStatistics::merge: widths ", dim(), " and ", other.dim(), " differ");
    if (other.count == 0) return;
    if (count == 0) {
      *this = other;
      return;
    }
    const double na = static_cast<double>(count), nb = static_cast<double>(other.count);
    const double n = na + nb;
    const Eigen::VectorXd delta = other.mean - mean;
    scatter += other.scatter;
    scatter.noalias() += (na * nb / n) * (delta * delta.transpose());
    mean += (nb / n) * delta;
    count += other.count;
  }
};

namespace detail {

/// Rows per block when centring keys in double (bounds the temporary to
/// 4096 x D doubles).
inline constexpr Index statistics_block_rows = 4096;

}  // namespace detail

/// Mean and centred scatter of the rows of `keys` (n x D), in double.
/// Two passes: the mean, then S += X_b^T X_b over blocks X_b of centred rows.
/// \param keys (n x D), n >= 0, D >= 1.
/// \returns statistics with count n. O(n D^2) time, O(4096 D) extra memory.
/// \throws std::invalid_argument if D = 0.
/// Thread safety: pure function.
template <typename Derived>
KeyStatistics key_statistics(const Eigen::MatrixBase<Derived>& keys) {
  if (keys.cols() == 0) detail::fail("key_statistics: keys ", detail::shape(keys), " have no columns");
  const Index n = keys.rows(), d = keys.cols();
  KeyStatistics s;
  s.count = n;
  s.mean = Eigen::VectorXd::Zero(d);
  s.scatter = RowMatrix<double>::Zero(d, d);
  if (n == 0) return s;
  for (Index r = 0; r < n; ++r)
    s.mean += keys.row(r).transpose().template cast<double>();
  s.mean /= static_cast<double>(n);
  RowMatrix<double> block;
  for (Index r0 = 0; r0 < n; r0 += detail::statistics_block_rows) {
    const Index rows = std::min(detail::statistics_block_rows, n - r0);
    block = keys.middleRows(r0, rows).template cast<double>();
    block.rowwise() -= s.mean.transpose();
    s.scatter.noalias() += block.transpose() * block;
  }
  // Exactly symmetric (the GEMM's two triangles may differ in the last bit).
  s.scatter = (0.5 * (s.scatter + s.scatter.transpose())).eval();
  return s;
}

/// The (D x D) Gram matrix G = Q^T Q of a set of query rows, in double. O(n D^2).
/// \throws std::invalid_argument if `queries` is empty.
template <typename Derived>
RowMatrix<double> query_gram(const Eigen::MatrixBase<Derived>& queries) {
  detail::require_non_empty("query_gram", "queries", queries);
  const RowMatrix<double> q = queries.template cast<double>();
  RowMatrix<double> g = q.transpose() * q;
  return (0.5 * (g + g.transpose())).eval();
}

}  // namespace attnkit
