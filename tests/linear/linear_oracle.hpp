#pragma once

// Long-double brute force of kernelized linear attention for the tests of
// attnkit/linear/: the features from their definitions (not from the
// library's maps), every (query, key) weight phi(q_i) . phi(k_j) formed
// explicitly, summed over the visible keys of the mask, and the derived error
// bound of the library's chunked evaluation.

#include <cmath>
#include <limits>

#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "test_util.hpp"

namespace attnkit::test {

using LD = long double;

template <typename Scalar>
RowMatrix<LD> elu_features_ld(const RowMatrix<Scalar>& x) {
  RowMatrix<LD> phi(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i)
    for (Index c = 0; c < x.cols(); ++c) {
      const LD t = x(i, c);
      phi(i, c) = t > 0 ? t + 1 : std::exp(t);
    }
  return phi;
}

template <typename Scalar>
RowMatrix<LD> relu_features_ld(const RowMatrix<Scalar>& x) {
  return x.template cast<LD>().cwiseMax(LD(0));
}

/// exp(w_f . x' - |x'|^2 / 2) / sqrt(m), x' = sqrt(scale) x, unstabilised
/// (long double's range holds exp(E) for every E these tests produce).
template <typename Scalar>
RowMatrix<LD> favor_features_ld(const RowMatrix<Scalar>& x, const PositiveRandomFeatures<Scalar>& map) {
  const RowMatrix<LD> w = map.projection().template cast<LD>();
  const LD root = std::sqrt(static_cast<LD>(map.scale()));
  const RowMatrix<LD> xs = root * x.template cast<LD>();
  RowMatrix<LD> e = xs * w.transpose();
  for (Index i = 0; i < x.rows(); ++i)
    e.row(i).array() -= xs.row(i).squaredNorm() / 2;
  return (e.array().exp() / std::sqrt(static_cast<LD>(w.rows()))).matrix();
}

/// Bound on the FAVOR+ exponents |w_f . x' - |x'|^2/2| over the rows of x.
template <typename Scalar>
double favor_max_exponent(const RowMatrix<Scalar>& x, const PositiveRandomFeatures<Scalar>& map) {
  const double s = map.scale();
  const double max_w = map.projection().rowwise().norm().maxCoeff();
  const double max_x = static_cast<double>(x.rowwise().norm().maxCoeff());
  return std::sqrt(s) * max_w * max_x + s * max_x * max_x / 2;
}

/// The FAVOR+ per-feature relative error bound for inputs x in Scalar.
template <typename Scalar>
double favor_feature_error(const RowMatrix<Scalar>& x, const PositiveRandomFeatures<Scalar>& map) {
  const double u = eps<Scalar>() / 2, d = as_double(x.cols());
  const double max_e = favor_max_exponent(x, map);
  // sqrt(scale) W rounded to Scalar (u per entry) and the d-term GEMM dot:
  // (d + 1) u sqrt(s) |w||x|; s/2 |x|^2 by a d-term sum and two products:
  // (d + 2) u s |x|^2 / 2; the subtraction of |x'|^2/2, then of the
  // stabiliser (|E - E_max| <= 2 max |E|): 3 u max |E|; Eigen's exp within
  // 2 ulp = 4 u; the final product by 1/sqrt(m) (itself rounded): 2 u.
  return (d + 2) * u * max_e + 3 * u * max_e + 6 * u;
}

struct LinearOracle {
  RowMatrix<LD> out;
  Vector<LD> lse;
};

/// O_i = sum_{j visible} a_ij v_j / sum_{j visible} a_ij, a_ij = phi_q_i . phi_k_j;
/// a row with no visible weight is zero with lse = -inf.
template <typename Scalar>
LinearOracle linear_oracle(const RowMatrix<LD>& phi_q, const RowMatrix<LD>& phi_k, const RowMatrix<Scalar>& v,
                           const Mask& mask) {
  const MaskLayout layout = resolve_mask(mask, phi_q.rows(), phi_k.rows());
  const RowMatrix<LD> vw = v.template cast<LD>();
  LinearOracle r{RowMatrix<LD>::Zero(phi_q.rows(), v.cols()), Vector<LD>(phi_q.rows())};
  for (Index i = 0; i < phi_q.rows(); ++i) {
    LD den = 0;
    for (Index j = 0; j < layout.key_end(i); ++j) {
      const LD a = phi_q.row(i).dot(phi_k.row(j));
      den += a;
      r.out.row(i) += a * vw.row(j);
    }
    if (den > 0) r.out.row(i) /= den;
    r.lse(i) = den > 0 ? std::log(den) : -std::numeric_limits<LD>::infinity();
  }
  return r;
}

/// Bound on |out - exact| / max|v| of the library's evaluation (the
/// derivation of attnkit/linear/linear_attention.hpp, "Accuracy"): computed
/// weights carry a relative error e_w <= 2 e_phi (both features) + 2 u (the
/// product and its use) + (m + n_k + C + R) u (the m-term feature sums, the
/// key sums in the state and the intra-chunk block, R rescalings of the state:
/// at most one per key block, plus with T threads at most 2 (T - 1) merges of
/// two roundings each, so R <= n_k / C + 2 + 4 T), the same for numerator and
/// denominator; a
/// ratio of sums of non-negative weights then moves by at most
/// 2 e_w / (1 - e_w) max|v|, and the final division adds u |out| <= u max|v|.
template <typename Scalar>
double linear_bound(double e_phi, Index m, Index n_k, Index chunk, int threads = 1) {
  const double u = eps<Scalar>() / 2;
  const double rescales = as_double(n_k / chunk + 2 + 4 * threads);
  const double e_w = 2 * e_phi + (as_double(m + n_k + chunk) + rescales + 2) * u;
  return 2 * e_w / (1 - e_w) + u;
}

/// |a - b| <= tol entrywise (a in Scalar, b the long-double oracle), with
/// the worst entry reported.
template <typename Scalar>
::testing::AssertionResult near_oracle(const RowMatrix<Scalar>& a, const RowMatrix<LD>& b, double tol) {
  return matrices_near(a.template cast<LD>(), b, tol);
}

}  // namespace attnkit::test
