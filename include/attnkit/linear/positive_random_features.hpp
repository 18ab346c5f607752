#pragma once

/// \file attnkit/linear/positive_random_features.hpp
/// FAVOR+ positive orthogonal random features (Choromanski et al. 2021,
/// "Rethinking Attention with Performers"): an unbiased, always-positive
/// estimator of the softmax kernel, for linear attention that approximates
/// exact softmax attention.
///
/// With x' = sqrt(scale) x (scale defaults to attnkit's 1/sqrt(d)),
///   phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m),   W = [w_1; ...; w_m] (m x d),
/// satisfies E[phi(q) . phi(k)] = exp(scale q . k) for w_f ~ N(0, I_d), so
/// linear attention with phi estimates softmax(scale Q K^T) V.
///
/// Drawing W (in double, from attnkit/detail/random.hpp with the given seed):
///  - orthogonal = true (default): blocks of d rows; each block is the
///    orthogonal factor of the QR decomposition of a d x d Gaussian matrix
///    (signs fixed by the diagonal of R, so the block is Haar-distributed),
///    and each row f is rescaled to the norm of an independent N(0, I_d)
///    vector (chi-distributed with d degrees of freedom), so every w_f is
///    still marginally N(0, I_d) while rows of one block are exactly
///    orthogonal (the paper's "regular" orthogonal random features). The
///    last block contributes its first m mod d rows;
///  - orthogonal = false: iid N(0, 1) entries.
/// Orthogonality lowers the estimator's variance; the mean squared error of
/// phi(q) . phi(k) falls like 1/m either way.
///
/// Numerical stability (max subtraction): for a query block each row's
/// largest exponent E_r = max_f (w_f . x'_r) - |x'_r|^2 / 2 is subtracted
/// (phi_r = exp(E - E_r) / sqrt(m), log_scale_r = E_r): its largest feature
/// is 1/sqrt(m), so no row underflows to all zeros or overflows. For a key
/// block the one maximum over the block is subtracted (a factor shared by
/// all keys cancels between numerator and denominator). Rows with a NaN are
/// left out of that maximum; their own features are NaN.
///
/// Accuracy of one feature (Scalar unit roundoff u): the exponent carries an
/// absolute error of about (d + 2) u (|w||x'| + |x'|^2), the exp a few ulp.
/// The estimator error itself is statistical: O(1/sqrt(m)) relative, larger
/// for large |q|, |k| (its variance grows like exp(2|x'|^2)).
///
/// Cost: O(n m d) per map call (one GEMM, one exp per feature); the object
/// holds W (m x d) in double and sqrt(scale) W in Scalar.
/// Thread safety: map calls are const and safe to run concurrently; redraw
/// must not run concurrently with anything else on the object.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include <Eigen/QR>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"

namespace attnkit {

/// Settings of PositiveRandomFeatures.
struct PositiveRandomFeatureOptions {
  /// Number of random features m, >= 1.
  Index features = 256;
  /// Seed of the draw of W; the same seed gives the same W on every platform
  /// up to the rounding of the QR decomposition.
  std::uint64_t seed = 0;
  /// Orthogonal blocks (default) or iid Gaussian rows.
  bool orthogonal = true;
  /// Scale of the softmax kernel exp(scale q . k) being estimated;
  /// std::nullopt = 1/sqrt(d), attnkit's default logit scale. Finite and > 0.
  std::optional<double> scale{};
};

/// The FAVOR+ feature map (see the file comment); models the FeatureMap
/// concept of attnkit/linear/feature_maps.hpp for inputs of width d.
template <typename Scalar>
class PositiveRandomFeatures {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "PositiveRandomFeatures supports float and double");

 public:
  /// Draws W for inputs of width d.
  /// \throws std::invalid_argument for d < 1, features < 1, a scale that is
  ///         not finite and > 0, or m x d overflowing Index.
  PositiveRandomFeatures(Index d, const PositiveRandomFeatureOptions& options = {})
      : options_(options), d_(d) {
    const char* where = "PositiveRandomFeatures";
    if (d < 1) detail::fail(where, ": d = ", d, " must be >= 1");
    if (options.features < 1) detail::fail(where, ": features = ", options.features, " must be >= 1");
    detail::checked_product(where, "features x d", options.features, d);
    // Read from the stored copy: GCC 12 at -O1 with sanitizers reports a
    // braced temporary's disengaged std::optional as "maybe uninitialized".
    scale_ = options_.scale.has_value() ? *options_.scale : 1.0 / std::sqrt(static_cast<double>(d));
    if (!(std::isfinite(scale_) && scale_ > 0))
      detail::fail(where, ": scale = ", scale_, " must be finite and > 0");
    redraw(options.seed);
  }

  /// Draws a new W from `seed` (replacing the current one).
  void redraw(std::uint64_t seed) {
    options_.seed = seed;
    const Index m = options_.features, d = d_;
    detail::Random rng(seed);
    w_.resize(m, d);
    if (!options_.orthogonal) {
      w_ = rng.normal_matrix(m, d);
    } else {
      for (Index f0 = 0; f0 < m; f0 += d) {
        const Index rows = std::min(d, m - f0);
        const Eigen::MatrixXd g = rng.normal_matrix(d, d);
        const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
        Eigen::MatrixXd q = qr.householderQ();
        const Eigen::MatrixXd& r = qr.matrixQR();
        for (Index c = 0; c < d; ++c)
          if (r(c, c) < 0) q.col(c) = -q.col(c);
        for (Index t = 0; t < rows; ++t) {
          const double norm = rng.normal_matrix(1, d).norm();  // chi_d
          w_.row(f0 + t) = norm * q.col(t).transpose();
        }
      }
    }
    w_scaled_ = (std::sqrt(scale_) * w_).template cast<Scalar>();
  }

  /// Input width d.
  Index dim() const { return d_; }
  /// Feature count m.
  Index features() const { return options_.features; }
  /// m, after checking that inputs of width d are the width W was drawn for.
  /// \throws std::invalid_argument when d differs from dim().
  Index features(Index d) const {
    if (d != d_)
      detail::fail("PositiveRandomFeatures: inputs have width d = ", d, " but W was drawn for d = ", d_);
    return options_.features;
  }
  /// The kernel scale: phi estimates exp(scale q . k).
  double scale() const { return scale_; }
  /// Seed of the current W.
  std::uint64_t seed() const { return options_.seed; }
  /// W (m x d), row f = w_f, as drawn in double (before sqrt(scale)).
  const RowMatrix<double>& projection() const { return w_; }

  /// Query features with per-row max subtraction (FeatureMap concept).
  void map_queries(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi,
                   Eigen::Ref<Vector<Scalar>> log_scale) const {
    exponents(x, phi);
    // A row with a NaN input is NaN in every exponent, so its maximum and its
    // features are NaN too.
    log_scale = phi.rowwise().maxCoeff();
    const Scalar inv_sqrt_m = inverse_sqrt_m();
    for (Index r = 0; r < x.rows(); ++r)
      phi.row(r) = (phi.row(r).array() - log_scale(r)).exp() * inv_sqrt_m;
  }

  /// Key features with one max subtracted over the block (FeatureMap concept).
  Scalar map_keys(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    exponents(x, phi);
    const Vector<Scalar> row_max = phi.rowwise().maxCoeff();
    Scalar c = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < row_max.size(); ++r)
      if (row_max(r) > c) c = row_max(r);  // false for NaN: NaN rows stay out of the shared maximum
    if (!std::isfinite(c)) c = 0;          // every row NaN (or +-inf): nothing to stabilise
    phi = (phi.array() - c).exp() * inverse_sqrt_m();
    return c;
  }

 private:
  Scalar inverse_sqrt_m() const {
    return static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(features())));
  }

  /// phi = x' W^T - |x'|^2 / 2 (the exponents), x' = sqrt(scale) x.
  void exponents(const Eigen::Ref<const RowMatrix<Scalar>>& x, Eigen::Ref<RowMatrix<Scalar>> phi) const {
    phi.noalias() = x * w_scaled_.transpose();
    const Scalar half_scale = static_cast<Scalar>(0.5 * scale_);
    for (Index r = 0; r < x.rows(); ++r)
      phi.row(r).array() -= half_scale * x.row(r).squaredNorm();
  }

  PositiveRandomFeatureOptions options_;
  Index d_;
  double scale_ = 0;
  RowMatrix<double> w_;
  RowMatrix<Scalar> w_scaled_;
};

}  // namespace attnkit
