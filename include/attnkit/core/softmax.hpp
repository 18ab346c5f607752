#pragma once

/// \file attnkit/core/softmax.hpp
/// The softmax toolkit, row-wise over Eigen matrices: softmax, log-sum-exp,
/// the softmax Jacobian, and statistics of probability rows.
///
/// Every function treats each ROW of its input as one distribution (one
/// query's logits or probabilities), works in the input's Scalar type (float,
/// double or long double) and costs O(rows * cols) unless stated.
///
/// Non-finite input, documented once for the whole header (the functions of
/// probability rows, entropy and effective_support, state their own rules:
/// NaN propagates to its row, entries outside [0, 1] are refused):
///  - a -inf logit is a masked entry: probability exactly 0;
///  - a row that is all -inf gives a zero probability row and lse = -inf;
///  - a NaN or a +inf logit makes its whole row NaN (softmax and lse); other
///    rows are unaffected;
///  - finite logits of any magnitude (e.g. +-1e4) never overflow: the row max
///    is subtracted before exponentiation.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

namespace detail {

template <typename Scalar>
void check_inverse_temperature(const char* where, Scalar beta) {
  if (!(std::isfinite(beta) && beta > Scalar(0)))
    fail(where, ": inverse temperature beta = ", beta, " must be finite and > 0");
}

/// Softmax of beta * z written to `out` (may be null); returns
/// lse = log(sum_j exp(beta * z_j)). Conventions as in the file comment.
template <typename Scalar, typename RowIn, typename RowOut>
Scalar softmax_row(const RowIn& z, Scalar beta, RowOut* out) {
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Scalar m = z.template maxCoeff<Eigen::PropagateNaN>();
  if (m == -inf) {
    if (out) out->setZero();
    return -inf;
  }
  // z - m is <= 0 for finite m, so exp never overflows; NaN/+inf give NaN.
  // -inf entries are selected to exactly 0: Eigen's vectorised exp clamps its
  // argument and would return a denormal for them.
  const auto e = (z.array() == -inf).select(Scalar(0), ((z.array() - m) * beta).exp());
  if (!out) return beta * m + std::log(e.sum());  // lazily summed, no temporary
  *out = e;
  const Scalar sum = out->sum();
  *out /= sum;
  return beta * m + std::log(sum);
}

}  // namespace detail

/// Row-wise softmax of `beta * logits`: P(i, j) = exp(beta z_ij) / sum_k exp(beta z_ik).
/// \param logits (n x m), n, m >= 1.
/// \param beta   inverse temperature, finite and > 0 (default 1). Scaling the
///               logits by k raises every probability ratio to the k-th power.
/// \returns      (n x m) probabilities; each finite row sums to 1 within rounding.
/// \throws std::invalid_argument on an empty input or a bad beta.
template <typename Derived>
RowMatrix<typename Derived::Scalar> softmax(const Eigen::MatrixBase<Derived>& logits,
                                            typename Derived::Scalar beta = 1) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "softmax needs a floating-point Scalar");
  detail::require_non_empty("softmax", "logits", logits);
  detail::check_inverse_temperature("softmax", beta);
  RowMatrix<Scalar> p(logits.rows(), logits.cols());
  for (Index i = 0; i < logits.rows(); ++i) {
    auto out = p.row(i);
    detail::softmax_row(logits.row(i), beta, &out);
  }
  return p;
}

/// Row-wise log-sum-exp of `beta * logits`: lse_i = log sum_j exp(beta z_ij).
/// \returns (n) vector; -inf for an all -inf row, NaN for a row with NaN/+inf.
/// \throws std::invalid_argument on an empty input or a bad beta.
template <typename Derived>
Vector<typename Derived::Scalar> log_sum_exp(const Eigen::MatrixBase<Derived>& logits,
                                             typename Derived::Scalar beta = 1) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "log_sum_exp needs a floating-point Scalar");
  detail::require_non_empty("log_sum_exp", "logits", logits);
  detail::check_inverse_temperature("log_sum_exp", beta);
  Vector<Scalar> lse(logits.rows());
  for (Index i = 0; i < logits.rows(); ++i) {
    lse(i) = detail::softmax_row(logits.row(i), beta, static_cast<RowMatrix<Scalar>*>(nullptr));
  }
  return lse;
}

/// The explicit softmax Jacobian J = diag(s) - s s^T, J_ij = ds_i/dz_j.
/// Symmetric, so it serves the forward (J dz) and backward (J^T g) products
/// alike. Meant for small m: O(m^2) memory; prefer softmax_jacobian_product.
/// \param probs a probability vector, (m x 1) or (1 x m), m >= 1.
/// \returns (m x m).
template <typename Derived>
RowMatrix<typename Derived::Scalar> softmax_jacobian(const Eigen::MatrixBase<Derived>& probs) {
  using Scalar = typename Derived::Scalar;
  detail::require_non_empty("softmax_jacobian", "probs", probs);
  if (probs.rows() != 1 && probs.cols() != 1)
    detail::fail("softmax_jacobian: probs ", detail::shape(probs), " must be a single row or column vector");
  const Vector<Scalar> s = probs.reshaped();
  RowMatrix<Scalar> j = -s * s.transpose();
  j.diagonal() += s;
  return j;
}

/// Row-wise Jacobian-vector product without forming J:
/// (J g)_i = s_i (g_i - <s, g>) for each row s of `probs`, g of `grads`.
/// J is symmetric, so this is also the backward pass through softmax
/// (grads = dL/ds gives dL/dz). O(n m) time, no O(m^2) memory.
/// \param probs (n x m) probability rows; \param grads (n x m).
/// \throws std::invalid_argument if the shapes differ or are empty.
template <typename DP, typename DG>
RowMatrix<typename DP::Scalar> softmax_jacobian_product(const Eigen::MatrixBase<DP>& probs,
                                                        const Eigen::MatrixBase<DG>& grads) {
  using Scalar = typename DP::Scalar;
  static_assert(std::is_same_v<Scalar, typename DG::Scalar>, "probs and grads must share a Scalar type");
  detail::require_non_empty("softmax_jacobian_product", "probs", probs);
  detail::require_same_shape("softmax_jacobian_product", "probs", probs, "grads", grads);
  RowMatrix<Scalar> out(probs.rows(), probs.cols());
  for (Index i = 0; i < probs.rows(); ++i) {
    const Scalar inner = probs.row(i).dot(grads.row(i));
    out.row(i) = probs.row(i).array() * (grads.row(i).array() - inner);
  }
  return out;
}

namespace detail {

/// Entropy rows for entropy() and effective_support(): validates every entry
/// (in [0, 1] or NaN) before computing anything; `where` names the caller.
template <typename Derived>
Vector<typename Derived::Scalar> entropy_rows(const char* where, const Eigen::MatrixBase<Derived>& probs) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "entropy needs a floating-point Scalar");
  require_non_empty(where, "probs", probs);
  for (Index i = 0; i < probs.rows(); ++i)
    for (Index j = 0; j < probs.cols(); ++j) {
      const Scalar x = probs(i, j);
      if (!(x >= Scalar(0) && x <= Scalar(1)) && !std::isnan(x))
        fail(where, ": probs ", shape(probs), " row ", i, " column ", j, " is ", x,
             ": entries must be probabilities in [0, 1] (a NaN entry makes its row NaN)");
    }
  // 0 log 0 = 0; any other entry (a NaN included) enters the sum.
  const auto s = probs.array();
  return -(s == Scalar(0)).select(Scalar(0), s * s.log()).rowwise().sum();
}

}  // namespace detail

/// Row-wise Shannon entropy H_i = -sum_j s_ij log s_ij (nats), with 0 log 0 = 0.
/// 0 for a one-hot row, log m for a uniform row. The row is taken as given
/// (it is not renormalised; softmax rows sum to 1 within rounding).
/// \param probs (n x m), n, m >= 1; every entry a probability in [0, 1] or NaN.
/// \returns (n) vector; NaN for a row with a NaN entry (other rows unaffected).
/// \throws std::invalid_argument on an empty input, or naming the row, the
///         column and the value of an entry outside [0, 1] (negative, above 1,
///         or infinite), before anything is computed.
/// O(n m).
template <typename Derived>
Vector<typename Derived::Scalar> entropy(const Eigen::MatrixBase<Derived>& probs) {
  return detail::entropy_rows("entropy", probs);
}

/// Row-wise largest probability (the "sharpness" of a row): 1/m (uniform) .. 1 (one-hot).
template <typename Derived>
Vector<typename Derived::Scalar> max_probability(const Eigen::MatrixBase<Derived>& probs) {
  detail::require_non_empty("max_probability", "probs", probs);
  Vector<typename Derived::Scalar> out(probs.rows());
  for (Index i = 0; i < probs.rows(); ++i)
    out(i) = probs.row(i).template maxCoeff<Eigen::PropagateNaN>();
  return out;
}

/// Row-wise effective support exp(H_i): the number of keys a row "really"
/// attends to; 1 for one-hot, m for uniform. Input, NaN and errors as for
/// entropy() (messages name effective_support). O(n m).
template <typename Derived>
Vector<typename Derived::Scalar> effective_support(const Eigen::MatrixBase<Derived>& probs) {
  return detail::entropy_rows("effective_support", probs).array().exp().matrix();
}

/// Row-wise Frobenius norm of J = diag(s) - s s^T in closed form, O(m) per row:
///   ||J||_F^2 = sum_i s_i^2 (1 - s_i)^2 + sum_i s_i^2 sum_{j != i} s_j^2
///             = sum s^2 - 2 sum s^3 + (sum s^2)^2   (for rows summing to 1).
/// It tends to 0 as the row approaches one-hot (vanishing gradients).
/// For the largest entry, 1 - s_max and sum_{j != max} s_j^2 are summed from the
/// other entries instead of subtracted, so the result keeps full relative
/// accuracy even when the row is one-hot to within rounding. Assumes each row
/// sums to 1 (a probability row).
template <typename Derived>
Vector<typename Derived::Scalar> jacobian_frobenius_norm(const Eigen::MatrixBase<Derived>& probs) {
  using Scalar = typename Derived::Scalar;
  detail::require_non_empty("jacobian_frobenius_norm", "probs", probs);
  Vector<Scalar> out(probs.rows());
  for (Index i = 0; i < probs.rows(); ++i) {
    const auto s = probs.row(i).array();
    Index top = 0;
    s.maxCoeff(&top);
    const Scalar st = s(top);
    const Scalar sq_sum = s.square().sum();
    Scalar others = 0;     // sum_{j != top} s_j      (= 1 - s_top, without cancellation)
    Scalar others_sq = 0;  // sum_{j != top} s_j^2
    for (Index j = 0; j < s.size(); ++j) {
      if (j == top) continue;
      others += s(j);
      others_sq += s(j) * s(j);
    }
    Scalar acc = st * st * (others * others + others_sq);
    for (Index j = 0; j < s.size(); ++j) {
      if (j == top) continue;
      const Scalar sj = s(j);
      acc += sj * sj * ((Scalar(1) - sj) * (Scalar(1) - sj) + (sq_sum - sj * sj));
    }
    out(i) = std::sqrt(acc);
  }
  return out;
}

}  // namespace attnkit
