#pragma once

// Error bounds of the fused kernel (attnkit/attention/flash.hpp) against the
// reference, shared by flash_test.cpp and kv_cache_test.cpp. Derivation:
//
// For query row i let
//   a_i = scale * max_j sum_c |q_ic k_jc|   (absolute logit scale),
//   u   = unit roundoff of Scalar,
//   L   = (B_k + 16) + n_k / B_k + 16      the longest rounding chain of the
//         blocked sums: within a tile (B_k requested keys, rounded up to at
//         most 16 more), across tiles, plus the exact merges of key chunks.
// The kernel's logits carry |dz| <= (d + 3) u a_i (a d-term dot product, the
// rounding of scale * log2(e) to Scalar and of the scaled query), exp2 adds
// 1 ulp and u |z - m| <= 2 u a_i, so every weight is off by a relative
//   delta_i <= u (2 (d + 3) a_i + 2 a_i + 2);
// moving the weights by a relative delta moves the output by at most
// 2 delta max|v|. O = N / l with N = sum_j p_j v_j and l = sum_j p_j summed
// separately, each within L u (relative to sum_j p_j |v_j| and l), so the sums
// add 2 L u max|v|. Worst case:
//   |O_ic - O_ref,ic| <= max|v| (2 delta_i + 2 L u) + u max|v|  (reference rounding),
//   |lse_i - lse_ref,i| <= (d + 3) u a_i + delta_i + 2 L u  (+ the rounding of lse).
// The probabilistic form replaces d + 3 by lambda sqrt(d + 3) and 2 L by
// lambda sqrt(2 L) (Higham & Mary 2019: an n-term sum's rounding errors grow
// like lambda sqrt(n) u, with failure probability 2 exp(-lambda^2 / 2) per
// quantity; lambda = 6 gives 3.1e-8).

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/types.hpp"
#include "test_util.hpp"

namespace attnkit::test::flash_bounds {

template <typename Scalar>
double unit_roundoff() {
  return 0.5 * eps<Scalar>();
}

enum class BoundKind { worst_case, probabilistic };

// Per-row bounds (see the file comment): `output` on |O - O_ref| entrywise,
// `lse` on |lse - lse_ref| (the logit error plus the relative error of the
// normaliser l, before the final rounding of lse itself).
struct Bound {
  Eigen::VectorXd output;
  Eigen::VectorXd lse;
};

// The bound from the absolute logit scales: abs_logits(i, j) is the sum of
// the absolute values of the terms that make up logit z_ij (for the default
// policy scale * sum_c |q_ic k_jc|), `dot_terms` the length of the longest
// rounding chain forming one logit (d + 3 for the default policy).
// block_k is the requested tile; the kernel rounds it up to a whole packet
// (at most 16 more keys), and merging key chunks adds a few roundings: both
// are covered by the constants in `chain`.
template <typename Scalar>
Bound error_bound_from_abs_logits(const RowMatrix<double>& abs_logits, double max_v, double dot_terms,
                                  Index n_k, Index block_k, BoundKind kind) {
  const double u = unit_roundoff<Scalar>();
  const double chain = as_double(block_k) + 16 + as_double(n_k) / as_double(block_k) + 16;
  const double lambda = 6.0;
  const double dot = kind == BoundKind::worst_case ? dot_terms : lambda * std::sqrt(dot_terms);
  const double sums = kind == BoundKind::worst_case ? 2 * chain : lambda * std::sqrt(2 * chain);
  Bound b{Eigen::VectorXd(abs_logits.rows()), Eigen::VectorXd(abs_logits.rows())};
  for (Index i = 0; i < abs_logits.rows(); ++i) {
    const double a = abs_logits.row(i).maxCoeff();
    const double weights = u * (2 * dot * a + 2 * a + 2);  // relative error of each weight
    // Last term: the reference's own rounding to Scalar (half an ulp).
    b.output(i) = max_v * (2 * weights + u * sums + u);
    b.lse(i) = dot * u * a + weights + u * sums;
  }
  return b;
}

// The same bound from per-row bounds on the logits themselves (any score
// policy): logit_error(i) >= max_j |z_ij computed - z_ij exact| and
// exp_arg(i) >= max_j |z_ij - max_j' z_ij'| (what the exp2 argument's own
// rounding scales with), natural-log units. Each weight is then off by a
// relative 2 logit_error (the logit and the row maximum) + u (2 exp_arg + 2).
template <typename Scalar>
Bound error_bound_from_logit_errors(const Eigen::VectorXd& logit_error, const Eigen::VectorXd& exp_arg,
                                    double max_v, Index n_k, Index block_k) {
  const double u = unit_roundoff<Scalar>();
  const double chain = as_double(block_k) + 16 + as_double(n_k) / as_double(block_k) + 16;
  Bound b{Eigen::VectorXd(logit_error.size()), Eigen::VectorXd(logit_error.size())};
  for (Index i = 0; i < logit_error.size(); ++i) {
    const double weights = 2 * logit_error(i) + u * (2 * exp_arg(i) + 2);
    b.output(i) = max_v * (2 * weights + 2 * chain * u + u);
    b.lse(i) = logit_error(i) + weights + 2 * chain * u;
  }
  return b;
}

template <typename Scalar>
Bound error_bound(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
                  double scale, Index block_k, BoundKind kind) {
  const RowMatrix<double> abs_logits =
      scale * q.template cast<double>().cwiseAbs() * k.template cast<double>().cwiseAbs().transpose();
  const double max_v = v.template cast<double>().cwiseAbs().maxCoeff();
  return error_bound_from_abs_logits<Scalar>(abs_logits, max_v, as_double(q.cols()) + 3, k.rows(), block_k,
                                             kind);
}

template <typename Scalar>
::testing::AssertionResult within_bound(const AttentionResult<Scalar>& got,
                                        const AttentionResult<Scalar>& ref, const Bound& bound) {
  if (got.output.rows() != ref.output.rows() || got.output.cols() != ref.output.cols())
    return ::testing::AssertionFailure() << "shape mismatch";
  for (Index i = 0; i < ref.output.rows(); ++i) {
    if (std::isinf(static_cast<double>(ref.lse(i)))) {
      if (!(got.lse(i) == ref.lse(i)) || !(got.output.row(i).array() == 0).all())
        return ::testing::AssertionFailure()
               << "row " << i << " sees no key: expected zero row and lse -inf, got lse " << got.lse(i);
      continue;
    }
    for (Index c = 0; c < ref.output.cols(); ++c) {
      const double e =
          std::fabs(static_cast<double>(got.output(i, c)) - static_cast<double>(ref.output(i, c)));
      if (!(e <= bound.output(i)))
        return ::testing::AssertionFailure()
               << "row " << i << " col " << c << ": |error| " << e << " > bound " << bound.output(i)
               << " (got " << got.output(i, c) << ", ref " << ref.output(i, c) << ")";
    }
    const double lse = static_cast<double>(ref.lse(i));
    const double lse_err = std::fabs(static_cast<double>(got.lse(i)) - lse);
    const double lse_bound = bound.lse(i) + 2 * eps<Scalar>() * std::fabs(lse);
    if (!(lse_err <= lse_bound))
      return ::testing::AssertionFailure() << "row " << i << ": lse error " << lse_err << " > " << lse_bound;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace attnkit::test::flash_bounds
