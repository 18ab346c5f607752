#pragma once

// Shared helpers of the key-dimension pruning tests: correlated random
// queries and keys and brute-force objectives in long double (the naive
// attention oracle is tests/naive_attention.hpp).

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention/flash_bounds.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/prune/selection.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit::test {

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

/// Absolute logit scales of attention through a pruned key cache: the sum of
/// the absolute values of the terms the fused kernel adds up for each logit.
/// For a compressed key j < n_c (folded query q'_a = c q_a + sum_b M_ba q_b):
///   scale (sum_{a in A} (c |q_a| + sum_b |M_ba| |q_b|) |k_ja| + sum_{b in B} |q_b| |offset_b|),
/// for a window key scale sum_c |q_c k_jc|. `m` is (|B| x |A|) or empty (no
/// regression), `offset` (|B|) or empty (no compensation).
template <typename Scalar>
RowMatrix<double> pruned_abs_logits(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& keys,
                                    const DimSelection& s, Index n_c, double kept_scale,
                                    const RowMatrix<double>& m, const Eigen::VectorXd& offset, double scale) {
  const RowMatrix<double> qa = q.template cast<double>().cwiseAbs(),
                          ka = keys.template cast<double>().cwiseAbs();
  RowMatrix<double> out(q.rows(), keys.rows());
  for (Index i = 0; i < q.rows(); ++i)
    for (Index j = 0; j < keys.rows(); ++j) {
      double a = 0;
      if (j < n_c) {
        for (Index t = 0; t < s.kept_count(); ++t) {
          const Index c = s.kept()[static_cast<std::size_t>(t)];
          double folded = kept_scale * qa(i, c);
          if (m.size() > 0)
            for (Index b = 0; b < s.dropped_count(); ++b)
              folded += std::fabs(m(b, t)) * qa(i, s.dropped()[static_cast<std::size_t>(b)]);
          a += folded * ka(j, c);
        }
        for (Index b = 0; b < offset.size(); ++b)
          a += qa(i, s.dropped()[static_cast<std::size_t>(b)]) * std::fabs(offset(b));
      } else {
        a = qa.row(i).dot(ka.row(j));
      }
      out(i, j) = scale * a;
    }
  return out;
}

/// Per-row bound on |O - O_exact| (and |lse - lse_exact|) for attention
/// through the pruned cache: the fused kernel's worst case
/// (attention/flash_bounds.hpp) on those scales with D + 3 + extra_terms
/// roundings per logit (folding the query: |B| + 1 terms, the dot product: D',
/// the constant: |B| + 1, all within D + 3; extra_terms for perturbations of
/// the effective keys, in units of u a_ij), plus the exact merge of the two
/// partials (two weights, their sum and quotients, the combination: five
/// roundings of max|v|) and the addition of the row constant to the lse (one
/// rounding of |lse|, left to the caller).
template <typename Scalar>
flash_bounds::Bound pruned_attention_bound(const RowMatrix<double>& abs_logits, double max_v, Index d,
                                           double extra_terms = 0) {
  flash_bounds::Bound b = flash_bounds::error_bound_from_abs_logits<Scalar>(
      abs_logits, max_v, static_cast<double>(d) + 3 + extra_terms, abs_logits.cols(), 128,
      flash_bounds::BoundKind::worst_case);
  b.output.array() += 5 * 0.5 * eps<Scalar>() * max_v;
  return b;
}

/// |got - want| within `bound` row by row (want in long double); the lse gets
/// three more roundings of |lse| (the row constant and the merge's log).
template <typename Scalar>
::testing::AssertionResult within_row_bound(const RowMatrix<Scalar>& got_output,
                                            const Vector<Scalar>* got_lse, const RowMatrix<LD>& want_output,
                                            const Vector<LD>* want_lse, const flash_bounds::Bound& bound) {
  for (Index i = 0; i < got_output.rows(); ++i) {
    for (Index c = 0; c < got_output.cols(); ++c) {
      const double e =
          std::fabs(static_cast<double>(got_output(i, c)) - static_cast<double>(want_output(i, c)));
      if (!(e <= bound.output(i)))
        return ::testing::AssertionFailure()
               << "row " << i << " col " << c << ": |error| " << e << " > bound " << bound.output(i);
    }
    if (got_lse && want_lse) {
      const double lse = static_cast<double>((*want_lse)(i));
      const double e = std::fabs(static_cast<double>((*got_lse)(i)) - lse);
      if (!(e <= bound.lse(i) + 3 * eps<Scalar>() * std::fabs(lse)))
        return ::testing::AssertionFailure() << "row " << i << ": lse error " << e << " > " << bound.lse(i);
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace attnkit::test
