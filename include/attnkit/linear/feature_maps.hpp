#pragma once

/// \file attnkit/linear/feature_maps.hpp
/// Feature maps for kernelized linear attention: the FeatureMap concept, the
/// deterministic maps elu + 1 and ReLU, and an adaptor for a user-supplied
/// callable. The random-feature map (FAVOR+) is in
/// attnkit/linear/positive_random_features.hpp.
///
/// Linear attention replaces exp(scale q . k) by phi(q) . phi(k) for a
/// feature map phi: R^d -> R^m, so that
///   O_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)
///       = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j)),
/// which costs O(n m d_v) instead of O(n^2 d) (attnkit/linear/linear_attention.hpp).
///
/// The FeatureMap concept. A type F models it when, for the Scalar in use
/// (float or double), it provides
///
///   Index features(Index d) const;
///     m for inputs of width d, >= 1; throws std::invalid_argument for a d
///     it cannot map.
///   void map_queries(const Eigen::Ref<const RowMatrix<Scalar>>& x,
///                    Eigen::Ref<RowMatrix<Scalar>> phi,
///                    Eigen::Ref<Vector<Scalar>> log_scale) const;
///     phi (n x m), log_scale (n): phi(x_r) = exp(log_scale_r) * phi_r.
///     A per-row factor cancels between numerator and denominator, so a map
///     may pick it per row to keep phi_r in range.
///   Scalar map_keys(const Eigen::Ref<const RowMatrix<Scalar>>& x,
///                   Eigen::Ref<RowMatrix<Scalar>> phi) const;
///     phi (n x m) and a return value c with phi(x_r) = exp(c) * phi_r for
///     EVERY row r: one factor shared by the block (keys are summed, so only a
///     common factor cancels). The algorithms rescale blocks with different c
///     to a common one.
///
/// The methods may be templates over Scalar (as below) or plain functions of
/// one Scalar (as PositiveRandomFeatures<Scalar>). They must be const and
/// safe to call concurrently. Non-negative features make every output row a
/// convex combination of the visible values (the normaliser is a sum of
/// non-negative terms); a map with signed features is accepted, but then the
/// denominator can vanish or change sign and the output is not bounded.

#include <cmath>
#include <type_traits>
#include <utility>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// phi(x) = elu(x) + 1 elementwise: x + 1 for x > 0, exp(x) otherwise
/// (Katharopoulos et al. 2020, "Transformers are RNNs"). m = d. Strictly
/// positive for finite x, so the denominator never vanishes (for |x| below
/// about 87 in float, 708 in double, where exp(x) underflows to 0).
/// Each feature is within one rounding (x + 1) or Eigen's exp error (a few
/// ulp) of the exact value. O(n d). Stateless.
struct EluFeatureMap {
  Index features(Index d) const { return d; }

  template <typename Scalar>
  void map_queries(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi,
                   Eigen::Ref<Vector<Scalar>> log_scale) const {
    map(x, phi);
    log_scale.setZero();
  }

  template <typename Scalar>
  Scalar map_keys(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    map(x, phi);
    return Scalar(0);
  }

  template <typename Scalar>
  static void map(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) {
    // elu(x) + 1 = max(exp(min(x, 0)), x + 1): for x > 0 the exp is 1 < x + 1,
    // for x <= 0 exp(x) >= x + 1 (convexity). max returns one operand
    // exactly, and both sides vectorise (Eigen 3.4's select does not).
    phi = x.array().min(Scalar(0)).exp().max(x.array() + Scalar(1));
  }
};

/// phi(x) = max(x, 0) elementwise. m = d. Exact. A query and a key whose
/// positive parts do not overlap have similarity 0; a query with no
/// overlapping visible key has denominator 0 (its output is then the zero
/// row, see LinearAttentionOptions::denominator_floor). O(n d). Stateless.
struct ReluFeatureMap {
  Index features(Index d) const { return d; }

  template <typename Scalar>
  void map_queries(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi,
                   Eigen::Ref<Vector<Scalar>> log_scale) const {
    phi = x.array().max(Scalar(0));
    log_scale.setZero();
  }

  template <typename Scalar>
  Scalar map_keys(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    phi = x.array().max(Scalar(0));
    return Scalar(0);
  }
};

/// Adapts a callable to the FeatureMap concept: `f(x)` receives
/// `const Eigen::Ref<const RowMatrix<Scalar>>&` (n x d) and returns something
/// assignable to RowMatrix<Scalar> of shape (n x m), the features themselves
/// (no stabilising factor: log_scale = 0, c = 0). The same f serves queries
/// and keys. A generic lambda serves float and double.
/// \throws std::invalid_argument (from the map calls) when f returns a
///         matrix of another shape.
/// Thread safety: as f's operator() const.
///
/// \code
///   auto square = attnkit::make_feature_map(
///       [](const auto& x) { return attnkit::RowMatrix<float>(x.array().square()); }, d);
///   auto r = attnkit::linear_attention(q, k, v, square);
/// \endcode
template <typename F>
class FunctionFeatureMap {
 public:
  /// \param f the map; \param features m, >= 1.
  /// \throws std::invalid_argument for m < 1.
  FunctionFeatureMap(F f, Index features) : f_(std::move(f)), m_(features) {
    if (m_ < 1) detail::fail("FunctionFeatureMap: features = ", m_, " must be >= 1");
  }

  Index features(Index /*d*/) const { return m_; }

  template <typename Scalar>
  void map_queries(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi,
                   Eigen::Ref<Vector<Scalar>> log_scale) const {
    call(x, phi);
    log_scale.setZero();
  }

  template <typename Scalar>
  Scalar map_keys(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    call(x, phi);
    return Scalar(0);
  }

 private:
  template <typename Scalar>
  void call(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    const RowMatrix<Scalar> y = f_(x);
    if (y.rows() != x.rows() || y.cols() != m_)
      detail::fail("FunctionFeatureMap: the callable returned ", detail::shape(y), " for input ",
                   detail::shape(x), ", expected (", x.rows(), " x ", m_, ") (features = ", m_, ")");
    phi = y;
  }

  F f_;
  Index m_;
};

/// FunctionFeatureMap from a callable and its feature count m.
template <typename F>
FunctionFeatureMap<std::decay_t<F>> make_feature_map(F&& f, Index features) {
  return FunctionFeatureMap<std::decay_t<F>>(std::forward<F>(f), features);
}

}  // namespace attnkit
