#pragma once

// Shared helpers of the key-dimension pruning tests: correlated random
// queries and keys, brute-force objectives in long double, and an independent
// naive attention over explicit (effective) keys.

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/prune/selection.hpp"
#include "test_util.hpp"

namespace attnkit::test {

using LD = long double;

/// (rows x d) Gaussian rows with correlated columns of unequal scale and a
/// common mean: x = mean + z L, L (d x d) random with column scales spread
/// over [0.2, 5]. Enough structure that edges W_ij matter. Fixed seed.
template <typename Scalar>
RowMatrix<Scalar> correlated_rows(Index rows, Index d, std::uint64_t seed, double mean_scale = 1.0) {
  detail::Random rng(seed);
  RowMatrix<double> mix = rng.normal_matrix(d, d, 1.0);
  for (Index c = 0; c < d; ++c)
    mix.col(c) *= 0.2 * std::pow(25.0, rng.uniform());
  mix += 2.0 * RowMatrix<double>::Identity(d, d);
  const Eigen::RowVectorXd mean = rng.normal_matrix(1, d, mean_scale);
  RowMatrix<double> x = rng.normal_matrix(rows, d, 1.0) * mix;
  x.rowwise() += mean;
  return x.cast<Scalar>();
}

/// A random symmetric PSD weight matrix W = (Q^T Q) o (K^T K) of size d.
inline RowMatrix<double> random_weights(Index d, std::uint64_t seed) {
  const RowMatrix<double> q = correlated_rows<double>(24, d, seed);
  const RowMatrix<double> k = correlated_rows<double>(80, d, seed + 7777);
  return (q.transpose() * q).cwiseProduct(k.transpose() * k);
}

/// F(B) for the dropped set given as a mask over dimensions, in long double.
template <typename Derived>
LD objective_of_mask(const Eigen::MatrixBase<Derived>& w, const std::vector<bool>& dropped) {
  LD f = 0;
  for (Index i = 0; i < w.rows(); ++i)
    for (Index j = 0; j < w.cols(); ++j)
      if (dropped[static_cast<std::size_t>(i)] && dropped[static_cast<std::size_t>(j)])
        f += static_cast<LD>(w(i, j));
  return f;
}

template <typename Derived>
LD objective_ld(const Eigen::MatrixBase<Derived>& w, const DimSelection& s) {
  std::vector<bool> dropped(static_cast<std::size_t>(s.dim()), false);
  for (const Index i : s.dropped())
    dropped[static_cast<std::size_t>(i)] = true;
  return objective_of_mask(w, dropped);
}

/// max_i sum_j |W_ij|: the scale of rounding errors in sums of W entries.
template <typename Derived>
double row_abs_max(const Eigen::MatrixBase<Derived>& w) {
  return w.template cast<double>().cwiseAbs().rowwise().sum().maxCoeff();
}

/// A selection with a random kept set of size `kept` (fixed seed).
inline DimSelection random_selection(Index d, Index kept, std::uint64_t seed) {
  detail::Random rng(seed);
  std::vector<Index> all(static_cast<std::size_t>(d));
  for (Index i = 0; i < d; ++i)
    all[static_cast<std::size_t>(i)] = i;
  for (Index i = d - 1; i > 0; --i)
    std::swap(all[static_cast<std::size_t>(i)], all[static_cast<std::size_t>(rng.index(i + 1))]);
  return DimSelection(d, std::vector<Index>(all.begin(), all.begin() + kept));
}

/// Naive attention in long double over explicit keys: query i (position
/// first_position + i) sees keys j <= first_position + i (causal) or all.
struct NaiveResult {
  RowMatrix<LD> output;
  RowMatrix<LD> logits;  // (n_q x n_k), scaled, unmasked
};

inline NaiveResult naive_attention(const RowMatrix<LD>& q, const RowMatrix<LD>& k, const RowMatrix<LD>& v,
                                   LD scale, bool causal, Index first_position) {
  NaiveResult r{RowMatrix<LD>::Zero(q.rows(), v.cols()), RowMatrix<LD>(q.rows(), k.rows())};
  for (Index i = 0; i < q.rows(); ++i) {
    for (Index j = 0; j < k.rows(); ++j) {
      LD dot = 0;
      for (Index c = 0; c < q.cols(); ++c)
        dot += q(i, c) * k(j, c);
      r.logits(i, j) = scale * dot;
    }
    const Index end = causal ? std::min<Index>(k.rows(), first_position + i + 1) : k.rows();
    if (end <= 0) continue;
    LD m = -std::numeric_limits<LD>::infinity();
    for (Index j = 0; j < end; ++j)
      m = std::max(m, r.logits(i, j));
    LD sum = 0;
    std::vector<LD> e(static_cast<std::size_t>(end));
    for (Index j = 0; j < end; ++j) {
      e[static_cast<std::size_t>(j)] = std::exp(r.logits(i, j) - m);
      sum += e[static_cast<std::size_t>(j)];
    }
    for (Index j = 0; j < end; ++j)
      for (Index c = 0; c < v.cols(); ++c)
        r.output(i, c) += e[static_cast<std::size_t>(j)] / sum * v(j, c);
  }
  return r;
}

/// Passes when |a_ij - b_ij| <= rel * |b_ij| + abs for every entry.
template <typename DA, typename DB>
::testing::AssertionResult entries_near(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b,
                                        double rel, double abs) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    return ::testing::AssertionFailure()
           << "shape (" << a.rows() << " x " << a.cols() << ") vs (" << b.rows() << " x " << b.cols() << ")";
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(b(i, j));
      if (!(std::fabs(x - y) <= rel * std::fabs(y) + abs))
        return ::testing::AssertionFailure()
               << "entry (" << i << ", " << j << "): " << x << " vs " << y
               << ", |diff| = " << std::fabs(x - y) << " > " << rel * std::fabs(y) + abs;
    }
  return ::testing::AssertionSuccess();
}

/// Column Gram in long double, optionally of centred columns.
template <typename Scalar>
RowMatrix<LD> gram_ld(const RowMatrix<Scalar>& x, bool centre) {
  RowMatrix<LD> y = x.template cast<LD>();
  if (centre && y.rows() > 0) {
    const Eigen::Matrix<LD, 1, Eigen::Dynamic> mean = y.colwise().sum() / static_cast<LD>(y.rows());
    y.rowwise() -= mean;
  }
  return y.transpose() * y;
}

}  // namespace attnkit::test
