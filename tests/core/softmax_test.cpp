// Tests of attnkit/core/softmax.hpp: the toolkit's statements as properties,
// each against an independent long-double computation, with tolerances
// derived from the error model below.

#include "attnkit/core/softmax.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;
using LD = long double;

template <typename Scalar>
class SoftmaxTest : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxTest, test::Scalars);

// --- the error model ---------------------------------------------------------
//
// Every tolerance in this file is derived from these assumptions, to first
// order in eps (second-order terms are below 1e-4 of each bound here):
//  (a) u = eps / 2 is the unit roundoff: +, -, *, / and sqrt of Scalars are
//      correctly rounded (relative error <= u); a product by a power of two
//      is exact; a sum of n non-negative terms, in any order, has relative
//      error <= (n - 1) u.
//  (b) exp(t) for -87 <= t <= 88 (normal float results) and log(x), scalar
//      (libm) or vectorised (Eigen's pexp / plog), have relative error
//      <= (2 + |t| / 32) eps and <= 2 eps. Measured (2^22 arguments each):
//      exp <= 1.0 eps for float with SSE2, growing linearly to 2.5 eps at
//      t = -88 with AVX-512/FMA, <= 1.2 eps for double; log <= 1.0 eps
//      (float), 1.1 eps (double). ErrorModelHoldsForExpAndLog re-checks this
//      in every build.
//  (c) exp(0) = 1 and log(1) = 0 exactly (checked there too).
//  (d) The long-double references carry relative errors of a few 2^-64 per
//      operation (below eps<double> / 1000); they are ignored, and written
//      without cancellation where that matters.

template <typename Scalar>
constexpr double unit_roundoff() {
  return eps<Scalar>() / 2;
}

// (b) in units of eps.
double exp_budget(double t) {
  return 2 + std::fabs(t) / 32;
}
constexpr double log_budget = 2;

bool is_power_of_two(double x) {
  int e = 0;
  return std::frexp(x, &e) == 0.5;
}

// The relative error carried by the argument t = (z - max) * beta of exp,
// per unit |t|, in eps: one rounding (the subtraction, u = eps / 2) when
// beta is a power of two, two otherwise, plus the |t| / 32 of exp's budget.
double argument_rate(double beta) {
  return (is_power_of_two(beta) ? 0.5 : 1.0) + 1.0 / 32;
}

// Bound on the relative error of softmax entry j of row z at inverse
// temperature beta, computed in Scalar as softmax_row does: t_k = (z_k - max)
// beta, e_k = exp(t_k), S = sum e_k, p_j = e_j / S.
//  - e_j: argument_rate * |t_j| + 2 (exp's own error);
//  - S: the e_k errors weighted by e_k / S: argument_rate * sum_k e^t_k |t_k|
//    / S + 2, where e^t |t| <= 1/e for t <= 0 and S >= 1 (the max term is
//    e^0), so <= argument_rate (n - 1) / e + 2; plus the summation (n - 1) u;
//  - the division: u.
// In all: eps (argument_rate (|t_j| + (n - 1) / e) + 4 + n / 2).
template <typename Scalar, typename Derived>
double softmax_rel_bound(const Eigen::MatrixBase<Derived>& z_row, Index j, double beta) {
  const double n = test::as_double(z_row.size());
  const double t = beta * (static_cast<double>(z_row(j)) - static_cast<double>(z_row.maxCoeff()));
  return eps<Scalar>() * (argument_rate(beta) * (std::fabs(t) + (n - 1) / std::exp(1.0)) + 4 + n / 2);
}

// The largest softmax_rel_bound over a row.
template <typename Scalar, typename Derived>
double softmax_row_rel_bound(const Eigen::MatrixBase<Derived>& z_row, double beta) {
  double worst = 0;
  for (Index j = 0; j < z_row.size(); ++j)
    worst = std::max(worst, softmax_rel_bound<Scalar>(z_row, j, beta));
  return worst;
}

// Bound on the absolute error of lse = beta max + log(S) computed in Scalar:
// beta max rounds (u |beta max|, exact when beta is a power of two); log S
// carries S's relative error (as in softmax_rel_bound, argument_rate (n - 1)
// / e + 2 eps for the exps, (n - 1) u for the sum) plus log's own 2 eps |log
// S| <= 2 eps log n (1 <= S <= n); the final addition u |lse|.
template <typename Scalar, typename Derived>
double lse_abs_bound(const Eigen::MatrixBase<Derived>& z_row, double beta, double lse) {
  const double n = test::as_double(z_row.size());
  const double u = unit_roundoff<Scalar>();
  const double beta_max =
      is_power_of_two(beta) ? 0.0 : u * std::fabs(beta * static_cast<double>(z_row.maxCoeff()));
  const double sum_rel = eps<Scalar>() * (argument_rate(beta) * (n - 1) / std::exp(1.0) + 2) + (n - 1) * u;
  return beta_max + sum_rel + log_budget * eps<Scalar>() * std::log(n) + u * std::fabs(lse);
}

// Naive softmax of beta * z in long double, without max subtraction (safe for
// the moderate logits these tests use).
template <typename Derived>
RowMatrix<LD> naive_softmax(const Eigen::MatrixBase<Derived>& z, LD beta) {
  RowMatrix<LD> p = (beta * z.template cast<LD>().array()).exp().matrix();
  for (Index i = 0; i < p.rows(); ++i)
    p.row(i) /= p.row(i).sum();
  return p;
}

// The assumptions (b) and (c) of the error model, in this build: exp and log
// of Scalar through Eigen's arrays (vectorised where the size allows) and
// libm, against long double.
TYPED_TEST(SoftmaxTest, ErrorModelHoldsForExpAndLog) {
  using Scalar = TypeParam;
  const Index n = 1 << 16;
  Eigen::Array<Scalar, Eigen::Dynamic, 1> t(n), x(n);
  for (Index i = 0; i < n; ++i) {
    // t spans [-87, 88] (normal results in float), x spans [2^-100, 2).
    t(i) = static_cast<Scalar>(-87.0 + 175.0 * (static_cast<double>(i) + 0.5) / static_cast<double>(n));
    x(i) = static_cast<Scalar>(
        std::ldexp(1.0 + static_cast<double>(i % 4096) / 4096.0, -static_cast<int>(i % 101)));
  }
  const Eigen::Array<Scalar, Eigen::Dynamic, 1> et = t.exp(), lx = x.log();
  for (Index i = 0; i < n; ++i) {
    const LD e_ref = std::exp(static_cast<LD>(t(i))), l_ref = std::log(static_cast<LD>(x(i)));
    const double tt = static_cast<double>(t(i));
    ASSERT_LE(static_cast<double>(std::fabs(et(i) - e_ref) / e_ref), exp_budget(tt) * eps<Scalar>())
        << "exp " << tt;
    ASSERT_LE(static_cast<double>(std::fabs(std::exp(t(i)) - e_ref) / e_ref), exp_budget(tt) * eps<Scalar>())
        << "std::exp " << tt;
    if (l_ref != 0) {
      ASSERT_LE(static_cast<double>(std::fabs(lx(i) - l_ref) / std::fabs(l_ref)), log_budget * eps<Scalar>())
          << "log " << x(i);
      ASSERT_LE(static_cast<double>(std::fabs(std::log(x(i)) - l_ref) / std::fabs(l_ref)),
                log_budget * eps<Scalar>())
          << "std::log " << x(i);
    }
  }
  const Eigen::Array<Scalar, 32, 1> zeros = Eigen::Array<Scalar, 32, 1>::Zero(), ones = zeros + Scalar(1);
  EXPECT_TRUE((zeros.exp() == Scalar(1)).all());
  EXPECT_TRUE((ones.log() == Scalar(0)).all());
  EXPECT_EQ(std::exp(Scalar(0)), Scalar(1));
  EXPECT_EQ(std::log(Scalar(1)), Scalar(0));
}

TYPED_TEST(SoftmaxTest, MatchesLongDoubleWithAndWithoutTemperature) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(7, 13, 1, 2.0);
  const double u = unit_roundoff<Scalar>(), n = test::as_double(z.cols());
  for (const double beta : {1.0, 0.25, 3.0}) {
    const RowMatrix<Scalar> p = softmax(z, static_cast<Scalar>(beta));
    const RowMatrix<LD> ref = naive_softmax(z, static_cast<LD>(static_cast<Scalar>(beta)));
    for (Index i = 0; i < z.rows(); ++i) {
      for (Index j = 0; j < z.cols(); ++j)
        EXPECT_NEAR(static_cast<double>(p(i, j)), static_cast<double>(ref(i, j)),
                    softmax_rel_bound<Scalar>(z.row(i), j, beta) * static_cast<double>(ref(i, j)))
            << "beta " << beta << " at (" << i << ", " << j << ")";
      // The computed p_j = e_j / S (1 + d_j) sum exactly to (sum e_j / S) (1 +
      // average d) with S = sum e_j (1 + s), |s| <= (n - 1) u: within n u of 1,
      // whatever the exp errors; summing them here adds (n - 1) u.
      EXPECT_NEAR(static_cast<double>(p.row(i).sum()), 1.0, (2 * n - 1) * u);
    }
  }
}

TYPED_TEST(SoftmaxTest, LogSumExpMatchesLongDouble) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(5, 9, 2, 3.0);
  for (const double beta : {1.0, 0.5, 4.0}) {
    const Vector<Scalar> lse = log_sum_exp(z, static_cast<Scalar>(beta));
    for (Index i = 0; i < z.rows(); ++i) {
      const LD b = static_cast<LD>(static_cast<Scalar>(beta));
      const LD ref = std::log((b * z.row(i).template cast<LD>().array()).exp().sum());
      EXPECT_NEAR(static_cast<double>(lse(i)), static_cast<double>(ref),
                  lse_abs_bound<Scalar>(z.row(i), beta, static_cast<double>(ref)))
          << "beta " << beta << " row " << i;
    }
  }
}

// Scaling the logits by k raises every probability ratio to the k-th power,
// i.e. log p_k(a) - log p_k(b) = k (log p(a) - log p(b)).
TYPED_TEST(SoftmaxTest, ScalingLogitsRaisesRatiosToThePower) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(4, 6, 3);
  const RowMatrix<Scalar> p1 = softmax(z);
  for (const Scalar k : {Scalar(0.5), Scalar(2), Scalar(3)}) {
    const RowMatrix<Scalar> pk = softmax(z, k);
    const double kd = static_cast<double>(k);
    for (Index i = 0; i < z.rows(); ++i) {
      // L bounds every |log p| involved; the four logs taken in double (2
      // eps_d |log p| each), the two subtractions (u_d on values <= 2 L) and
      // the product by k (u_d) add (5 + 6 k) L eps_d.
      double big_log = 0;
      for (Index j = 0; j < z.cols(); ++j)
        big_log = std::max({big_log, std::fabs(std::log(static_cast<double>(pk(i, j)))),
                            std::fabs(std::log(static_cast<double>(p1(i, j))))});
      const double in_double = (5 + 6 * kd) * big_log * eps<double>();
      for (Index a = 0; a < z.cols(); ++a)
        for (Index b = 0; b < z.cols(); ++b) {
          // A relative error r of p is an absolute error r of log p; the
          // right-hand side's is multiplied by k.
          const double bound = softmax_rel_bound<Scalar>(z.row(i), a, kd) +
                               softmax_rel_bound<Scalar>(z.row(i), b, kd) +
                               kd * (softmax_rel_bound<Scalar>(z.row(i), a, 1.0) +
                                     softmax_rel_bound<Scalar>(z.row(i), b, 1.0)) +
                               in_double;
          const double lhs =
              std::log(static_cast<double>(pk(i, a))) - std::log(static_cast<double>(pk(i, b)));
          const double rhs =
              kd * (std::log(static_cast<double>(p1(i, a))) - std::log(static_cast<double>(p1(i, b))));
          EXPECT_NEAR(lhs, rhs, bound) << "k = " << k << " row " << i << " pair " << a << ", " << b;
        }
    }
  }
}

// The softmax of k z in long double, the max entry's complement 1 - p_max
// summed from the other entries and ||J||_F from the closed form in
// non-negative terms, so that neither cancels near one-hot:
//   ||J||_F^2 = p_m^2 r^2 + 2 p_m^2 sum_o p_o^2 + sum_o p_o^2 (1 - p_o)^2
//             + sum_{o != o'} p_o^2 p_o'^2,      r = 1 - p_m = sum_o p_o,
// (J_mm = p_m r, J_mo = -p_m p_o, J_oo = p_o (1 - p_o), J_oo' = -p_o p_o').
struct NearOneHot {
  LD p_max, rest, jnorm;
};
template <typename Derived>
NearOneHot near_one_hot(const Eigen::MatrixBase<Derived>& z_row, LD k) {
  Index top = 0;
  z_row.maxCoeff(&top);
  std::vector<LD> w;
  LD sum = 1, others = 0;
  for (Index j = 0; j < z_row.size(); ++j)
    if (j != top) {
      w.push_back(std::exp(k * (static_cast<LD>(z_row(j)) - static_cast<LD>(z_row(top)))));
      sum += w.back();
      others += w.back();
    }
  const LD pm = 1 / sum, r = others / sum;
  LD sq = 0, f2 = 0;
  for (const LD x : w) {
    const LD po = x / sum;
    sq += po * po;
    f2 += po * po * (1 - po) * (1 - po);
  }
  f2 += pm * pm * r * r + 2 * pm * pm * sq;
  for (std::size_t a = 0; a < w.size(); ++a)
    for (std::size_t b = 0; b < w.size(); ++b)
      if (a != b) f2 += (w[a] / sum) * (w[a] / sum) * (w[b] / sum) * (w[b] / sum);
  return {pm, r, std::sqrt(f2)};
}

// As k grows the output approaches one-hot: the largest probability increases
// monotonically to 1, the entropy decreases monotonically (dH/dk = -k Var_p(z)),
// and ||J||_F, bounded by 2 (1 - p_max), goes to 0.
//   The bound: with r = 1 - p_m, q = sum_o p_o^2 <= r^2 and c = sum_o p_o^3 >= 0,
//   ||J||_F^2 = sum s^2 - 2 sum s^3 + (sum s^2)^2 = p_m^2 r^2 + q (1 + 2 p_m^2 + q) - 2 c
//            <= r^2 (p_m^2 + 1 + 2 p_m^2 + r^2) = r^2 (4 - 6 r + 4 r^2) <= 4 r^2.
TYPED_TEST(SoftmaxTest, LargeInverseTemperatureApproachesOneHot) {
  using Scalar = TypeParam;
  // Distinct logits with a unique maximum.
  RowMatrix<Scalar> z(1, 5);
  z << Scalar(0.3), Scalar(1.0), Scalar(-0.4), Scalar(0.7), Scalar(0.1);
  const double n = test::as_double(z.cols()), u = unit_roundoff<Scalar>();
  double last_max = 0, last_entropy = std::numeric_limits<double>::infinity();
  for (Scalar k = 1; k <= Scalar(128); k *= 2) {
    const double kd = static_cast<double>(k);
    const RowMatrix<Scalar> p = softmax(z, k);
    const double pmax = static_cast<double>(max_probability(p)(0));
    const double h = static_cast<double>(entropy(p)(0));
    // Successive values differ by far more than their error bounds (<= 200
    // eps relative) until p_max rounds to 1, so the order is exact.
    EXPECT_GE(pmax, last_max) << "k = " << k;
    EXPECT_LT(h, last_entropy) << "k = " << k;
    last_max = pmax;
    last_entropy = h;
    const NearOneHot ref = near_one_hot(z.row(0), static_cast<LD>(k));
    // The computed ||J||_F: the entries of p are each within rho relatively
    // (rho = the row's softmax bound); every term of ||J||_F^2 is a product
    // of four such factors (1 - s_top and sum_{j != i} s_j^2 are summed from
    // the entries, not subtracted), so ||J||_F moves by <= 2 rho, and its own
    // arithmetic adds (1.5 n + 3) u (see ClosedFormsAgreeWithExplicitJacobian).
    // Entries that underflow (float, k >= 64: e^-89.6 and below, which
    // Eigen's exp clamps at e^-88.72) are below Scalar's smallest normal
    // number and move ||J||_F by at most twice their sum: 8 min().
    const double rho = softmax_row_rel_bound<Scalar>(z.row(0), kd);
    const double rel = 2 * rho + (1.5 * n + 3) * u;
    const double tiny = 8 * static_cast<double>(std::numeric_limits<Scalar>::min());
    const double jnorm = static_cast<double>(jacobian_frobenius_norm(p)(0));
    EXPECT_NEAR(jnorm, static_cast<double>(ref.jnorm), rel * static_cast<double>(ref.jnorm) + tiny)
        << "k = " << k;
    EXPECT_LE(jnorm, 2 * static_cast<double>(ref.rest) * (1 + rel) + tiny) << "k = " << k;
    EXPECT_GT(jnorm, 0.0) << "k = " << k;
    if (k == Scalar(128)) {
      // The gap 0.3 between the top two logits makes 1 - p_max ~ e^-38.
      Index top = 0;
      z.row(0).maxCoeff(&top);
      EXPECT_NEAR(pmax, 1.0, static_cast<double>(ref.rest) + softmax_rel_bound<Scalar>(z.row(0), top, kd));
      EXPECT_LT(static_cast<double>(ref.rest), 1e-16);
    }
  }
}

TYPED_TEST(SoftmaxTest, AddingAConstantToARowChangesNothing) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(6, 8, 4);
  const double u = unit_roundoff<Scalar>();
  const Scalar c = Scalar(16);
  const RowMatrix<Scalar> shifted = z.array() + c;
  const RowMatrix<Scalar> p = softmax(z), q = softmax(shifted);
  const RowMatrix<Scalar> lse_diff = (log_sum_exp(shifted) - log_sum_exp(z)).transpose();
  const Vector<Scalar> lse_z = log_sum_exp(z);
  for (Index i = 0; i < z.rows(); ++i) {
    // Rounding z + c moves each logit by d_k, |d_k| <= u |z_k + c| <= delta;
    // the exact softmax ignores a common shift and moves by exp(d_j - sum_k
    // p_k d_k) - 1, i.e. <= 2 delta relatively, and the exact lse by <= delta.
    const double delta = u * static_cast<double>(shifted.row(i).cwiseAbs().maxCoeff());
    for (Index j = 0; j < z.cols(); ++j) {
      const double bound = softmax_rel_bound<Scalar>(z.row(i), j, 1.0) +
                           softmax_rel_bound<Scalar>(shifted.row(i), j, 1.0) + 2 * delta;
      EXPECT_NEAR(static_cast<double>(q(i, j)), static_cast<double>(p(i, j)),
                  bound * static_cast<double>(p(i, j)));
    }
    // Both lse within their bounds, delta from the shift, and the difference
    // rounded once (u * 16).
    const double lz = static_cast<double>(lse_z(i));
    EXPECT_NEAR(static_cast<double>(lse_diff(0, i)), 16.0,
                lse_abs_bound<Scalar>(z.row(i), 1.0, lz) +
                    lse_abs_bound<Scalar>(shifted.row(i), 1.0, lz + 16) + delta + u * 16);
  }
}

// J = diag(s) - s s^T, checked against central finite differences of softmax
// computed in double at h = 1e-5. The difference quotient errs by
//  - truncation: h^2 / 6 max |d^3 s_i / dz_c^3| <= h^2 / 24: with g = s_c,
//    d^3 s_i / dz_c^3 = s_i g (6 g^2 - 6 g + 1) for i != c and g (1 - g) (1 -
//    6 g + 6 g^2) for i = c, both at most 1/4 in size (s_i g <= 1/4,
//    |6 g^2 - 6 g + 1| <= 1);
//  - rounding: each double softmax entry within R_d (softmax_rel_bound of
//    double, entries <= 1), so the quotient within 2 R_d / (2 h); rounding
//    z_c +- h moves the point by u_d |z_c + h|, s by a quarter of that, the
//    quotient by u_d (|z_c| + h) / (4 h);
// and J itself, built in Scalar from the Scalar softmax s (entries within
// rho relatively), errs by rho s_i + 2 rho s_i s_j + u (s_i s_j + s_i) <=
// 3 rho + 2 u per entry.
TYPED_TEST(SoftmaxTest, JacobianMatchesCentralFiniteDifferences) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(1, 6, 5);
  const RowMatrix<Scalar> s = softmax(z);
  const RowMatrix<Scalar> j = softmax_jacobian(s);
  const RowMatrix<double> zd = z.template cast<double>();
  const double h = 1e-5, u = unit_roundoff<Scalar>(), u_d = unit_roundoff<double>();
  RowMatrix<double> fd(6, 6);
  for (Index c = 0; c < 6; ++c) {
    RowMatrix<double> zp = zd, zm = zd;
    zp(0, c) += h;
    zm(0, c) -= h;
    fd.col(c) = ((softmax(zp) - softmax(zm)) / (2 * h)).transpose();
  }
  // The perturbed rows spread by at most 2 h more than z: their bound is z's
  // with |t| larger by 2 h (negligible) -- use z's plus 2 h eps_d.
  const double r_d = softmax_row_rel_bound<double>(zd.row(0), 1.0) + 2 * h * eps<double>();
  const double rho = softmax_row_rel_bound<Scalar>(z.row(0), 1.0);
  const double max_z = zd.cwiseAbs().maxCoeff();
  const double tol = h * h / 24 + r_d / h + u_d * (max_z + h) / (4 * h) + 3 * rho + 2 * u;
  EXPECT_TRUE(matrices_near(j, fd, tol));
  EXPECT_TRUE(matrices_near(j, j.transpose(), 0.0)) << "J must be symmetric";
  // Rows of J sum to zero: row i sums to s_i (1 - sum_j s_j) (|1 - sum| <= n u,
  // see MatchesLongDouble) plus the rounding of the n products and the
  // diagonal addition (<= 2 u s_i) and of the summation here ((n - 1) u over
  // terms of total size <= 2 s_i): <= 3 n u s_i.
  const double n = test::as_double(s.cols());
  EXPECT_LE(static_cast<double>(j.rowwise().sum().cwiseAbs().maxCoeff()),
            3 * n * u * static_cast<double>(s.maxCoeff()));
}

// jg_i = s_i (g_i - <s, g>): the inner product errs by <= n u sum_j s_j |g_j|
// <= n u G (G = max |g|, sum s ~ 1), the subtraction by u |g_i - <s, g>| <=
// 2 u G, the product by u |jg_i| <= 2 u s_i G: <= (n + 4) u G in all. The
// expectation applies J to g exactly (in long double) on the same s.
TYPED_TEST(SoftmaxTest, JacobianProductEqualsExplicitJacobianTimesVector) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(5, 7, 6, 2.0);
  const RowMatrix<Scalar> g = random_matrix<Scalar>(5, 7, 7);
  const RowMatrix<Scalar> s = softmax(z);
  const RowMatrix<Scalar> jg = softmax_jacobian_product(s, g);
  const double n = test::as_double(s.cols()), u = unit_roundoff<Scalar>();
  for (Index i = 0; i < s.rows(); ++i) {
    const RowMatrix<LD> jl = softmax_jacobian(s.row(i).template cast<LD>());
    const RowMatrix<LD> expected = (jl * g.row(i).transpose().template cast<LD>()).transpose();
    EXPECT_TRUE(
        matrices_near(jg.row(i), expected, (n + 4) * u * static_cast<double>(g.cwiseAbs().maxCoeff())));
  }
}

// jacobian_frobenius_norm, first order in u, on the same s: others and
// others_sq (n - 1 terms) within (n - 2) u and (n - 1) u; the top term
// s_t^2 (others^2 + others_sq) within 2 n u; sq_sum within n u, and
// sq_sum - s_j^2 = sum_{k != j} s_k^2 >= sq_sum / 2 within (2 n + 2) u; each
// other term s_j^2 ((1 - s_j)^2 + sq_sum - s_j^2) within (2 n + 5) u; their
// sum of n positive terms within (3 n + 4) u; the square root halves it and
// rounds: (1.5 n + 3) u.
// entropy: each -s log s within (2 eps + u) |s log s| (log, product), the sum
// of n same-signed terms adds (n - 1) u: (2 + n / 2) eps H.
// effective_support: exp(H) carries H's absolute error as relative error,
// plus exp's own exp_budget(H) eps.
TYPED_TEST(SoftmaxTest, ClosedFormsAgreeWithExplicitJacobian) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(6, 9, 8, 2.0);
  const RowMatrix<Scalar> s = softmax(z);
  const Vector<Scalar> norms = jacobian_frobenius_norm(s);
  const Vector<Scalar> h = entropy(s);
  const Vector<Scalar> support = effective_support(s);
  const Vector<Scalar> top = max_probability(s);
  const double n = test::as_double(s.cols()), u = unit_roundoff<Scalar>();
  for (Index i = 0; i < s.rows(); ++i) {
    const RowMatrix<LD> sl = s.row(i).template cast<LD>();
    const LD explicit_norm = softmax_jacobian(sl).norm();
    EXPECT_NEAR(static_cast<double>(norms(i)), static_cast<double>(explicit_norm),
                (1.5 * n + 3) * u * static_cast<double>(explicit_norm));
    LD hl = 0;
    for (Index j = 0; j < sl.cols(); ++j)
      hl -= sl(0, j) * std::log(sl(0, j));
    const double h_err = (2 + n / 2) * eps<Scalar>() * static_cast<double>(hl);
    EXPECT_NEAR(static_cast<double>(h(i)), static_cast<double>(hl), h_err);
    const double support_ref = std::exp(static_cast<double>(hl));
    EXPECT_NEAR(static_cast<double>(support(i)), support_ref,
                (h_err + exp_budget(static_cast<double>(hl)) * eps<Scalar>()) * support_ref);
    EXPECT_EQ(top(i), s.row(i).maxCoeff());
  }
}

TYPED_TEST(SoftmaxTest, EntropyAndSupportOfUniformAndOneHotRows) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> p(2, 4);
  p << Scalar(0.25), Scalar(0.25), Scalar(0.25), Scalar(0.25), 0, 1, 0, 0;
  const Vector<Scalar> h = entropy(p);
  // As in ClosedFormsAgreeWithExplicitJacobian, n = 4: (2 + 2) eps log 4.
  const double h_err = 4 * eps<Scalar>() * std::log(4.0);
  EXPECT_NEAR(static_cast<double>(h(0)), std::log(4.0), h_err);
  // log 1 = 0 and 0 log 0 = 0 exactly: the one-hot row's entropy is exactly 0.
  EXPECT_EQ(h(1), Scalar(0));
  EXPECT_NEAR(static_cast<double>(effective_support(p)(0)), 4.0,
              4 * (h_err + exp_budget(std::log(4.0)) * eps<Scalar>()));
  EXPECT_EQ(effective_support(p)(1), Scalar(1));  // exp(0) = 1 exactly
  EXPECT_EQ(jacobian_frobenius_norm(p)(1), Scalar(0));
  // Uniform over n = 4: ||J||^2 = 1/n - 1/n^2 = 3/16. Every intermediate of
  // the closed form (sums and products of 1/4, 3/4, 1/16, 3/16, ...) is a
  // dyadic number with a few bits, exact in Scalar; only the final square
  // root rounds (u), and the reference in double (u_d).
  const double exact = std::sqrt(0.1875);
  EXPECT_NEAR(static_cast<double>(jacobian_frobenius_norm(p)(0)), exact,
              (unit_roundoff<Scalar>() + unit_roundoff<double>()) * exact);
}

// entropy and effective_support take probability rows: a NaN entry makes its
// row's result NaN (it used to be skipped: [NaN, 0.5, 0.5] gave log 2), and
// an entry outside [0, 1] (negative, above 1, infinite) is refused naming
// the row, the column and the value (negative entries used to be skipped).
TYPED_TEST(SoftmaxTest, EntropyPropagatesNaNAndRefusesNonProbabilities) {
  using Scalar = TypeParam;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  RowMatrix<Scalar> p(3, 3);
  p << Scalar(0.25), Scalar(0.25), Scalar(0.5),  //
      nan, Scalar(0.5), Scalar(0.5),             //
      Scalar(0.5), Scalar(0.5), nan;
  const Vector<Scalar> h = entropy(p), support = effective_support(p);
  EXPECT_TRUE(std::isnan(h(1))) << h(1);
  EXPECT_TRUE(std::isnan(h(2))) << h(2);
  EXPECT_TRUE(std::isnan(support(1))) << support(1);
  EXPECT_TRUE(std::isnan(support(2))) << support(2);
  // The other row is what it is alone, bit for bit: 1.5 log 2 nats.
  EXPECT_EQ(h(0), entropy(p.topRows(1))(0));
  EXPECT_EQ(support(0), effective_support(p.topRows(1))(0));
  EXPECT_NEAR(static_cast<double>(h(0)), 1.5 * std::log(2.0), 4 * eps<Scalar>());

  struct Bad {
    Scalar value;
    const char* shown;
  };
  for (const Bad bad : {Bad{Scalar(-0.5), "-0.5"}, Bad{inf, "inf"}, Bad{-inf, "-inf"},
                        Bad{Scalar(1.5), "1.5"}, Bad{-std::numeric_limits<Scalar>::denorm_min(), "-"}}) {
    RowMatrix<Scalar> q = RowMatrix<Scalar>::Constant(3, 4, Scalar(0.25));
    q(2, 1) = bad.value;
    EXPECT_TRUE(
        throws_invalid_argument([&] { entropy(q); }, {"entropy", "probs", "row 2", "column 1", bad.shown}))
        << bad.shown;
    EXPECT_TRUE(throws_invalid_argument([&] { effective_support(q); },
                                        {"effective_support", "row 2", "column 1", bad.shown}))
        << bad.shown;
  }
  // Zeros (and -0) are probabilities: 0 log 0 = 0.
  RowMatrix<Scalar> z(1, 3);
  z << Scalar(-0.0), Scalar(1), Scalar(0);
  EXPECT_EQ(entropy(z)(0), Scalar(0));
  EXPECT_EQ(effective_support(z)(0), Scalar(1));
}

TYPED_TEST(SoftmaxTest, NonFiniteLogitsFollowTheDocumentedRules) {
  using Scalar = TypeParam;
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  RowMatrix<Scalar> z(5, 3);
  z << -inf, -inf, -inf,           // all masked
      Scalar(1), -inf, Scalar(1),  // one masked entry
      Scalar(1), nan, Scalar(2),   // NaN
      Scalar(1), inf, Scalar(2),   // +inf
      Scalar(0), Scalar(1), Scalar(2);
  const RowMatrix<Scalar> p = softmax(z);
  const Vector<Scalar> lse = log_sum_exp(z);
  EXPECT_TRUE((p.row(0).array() == 0).all());
  EXPECT_EQ(lse(0), -inf);
  // Row 1: the shifted logits are 0, -inf, 0, so the terms are exactly 1, 0,
  // 1 (exp(0) = 1, the masked one selected to 0), the sum 2 and p = 1/2 exact.
  EXPECT_EQ(p(1, 0), Scalar(0.5));
  EXPECT_EQ(p(1, 1), Scalar(0));
  EXPECT_EQ(p(1, 2), Scalar(0.5));
  // lse = 1 + log 2: log's 2 eps log 2 and the addition's u (1 + log 2).
  EXPECT_NEAR(static_cast<double>(lse(1)), 1 + std::log(2.0),
              (2 * std::log(2.0) + (1 + std::log(2.0)) / 2) * eps<Scalar>());
  EXPECT_TRUE(p.row(2).array().isNaN().all());
  EXPECT_TRUE(std::isnan(lse(2)));
  EXPECT_TRUE(p.row(3).array().isNaN().all());
  EXPECT_TRUE(std::isnan(lse(3)));
  // The last row is untouched by its neighbours.
  EXPECT_TRUE(matrices_near(p.row(4), softmax(z.row(4)), 0.0));
}

// The logits are integers below 2^24, exact in float and double, and so are
// the shifted logits z - max (0, -1, -2, -20000): nothing is lost to their
// magnitude. What remains is softmax_rel_bound (about 6.2 eps relative here)
// and, for lse = max + log(S), the final addition at magnitude 1e4 (u |lse|:
// 6e-4 in float, 1.1e-12 in double) plus log S's few eps (lse_abs_bound).
// exp(-20000) underflows: libm returns 0, Eigen's vectorised exp clamps its
// argument at -88.72 (float) / -709.78 (double) and returns at most
// e^-88.72 < 2^-126 / e^-709.78 < 2^-1022; divided by S >= 1, the entry is in
// [0, smallest normal).
TYPED_TEST(SoftmaxTest, HugeFiniteLogitsNeitherOverflowNorGiveNaN) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> z(2, 3);
  z << Scalar(1e4), Scalar(1e4) - 1, Scalar(-1e4),  //
      Scalar(-1e4), Scalar(-1e4) - 1, Scalar(-1e4) - 2;
  ASSERT_EQ(static_cast<double>(z(0, 1)), 9999.0);
  ASSERT_EQ(static_cast<double>(z(1, 2)), -10002.0);
  const RowMatrix<Scalar> p = softmax(z);
  const Vector<Scalar> lse = log_sum_exp(z);
  ASSERT_TRUE(p.allFinite());
  ASSERT_TRUE(lse.allFinite());
  const LD e1 = std::exp(LD(-1)), e2 = std::exp(LD(-2));
  const LD row0[] = {1 / (1 + e1), e1 / (1 + e1)};
  const LD row1[] = {1 / (1 + e1 + e2), e1 / (1 + e1 + e2), e2 / (1 + e1 + e2)};
  for (Index j = 0; j < 2; ++j) {
    const double ref = static_cast<double>(row0[j]);
    EXPECT_NEAR(static_cast<double>(p(0, j)), ref, softmax_rel_bound<Scalar>(z.row(0), j, 1.0) * ref) << j;
  }
  EXPECT_GE(p(0, 2), Scalar(0));
  EXPECT_LT(p(0, 2), std::numeric_limits<Scalar>::min());
  for (Index j = 0; j < 3; ++j) {
    const double ref = static_cast<double>(row1[j]);
    EXPECT_NEAR(static_cast<double>(p(1, j)), ref, softmax_rel_bound<Scalar>(z.row(1), j, 1.0) * ref) << j;
  }
  const double lse0 = static_cast<double>(LD(1e4) + std::log1p(e1));
  const double lse1 = static_cast<double>(LD(-1e4) + std::log(1 + e1 + e2));
  EXPECT_NEAR(static_cast<double>(lse(0)), lse0, lse_abs_bound<Scalar>(z.row(0), 1.0, lse0));
  EXPECT_NEAR(static_cast<double>(lse(1)), lse1, lse_abs_bound<Scalar>(z.row(1), 1.0, lse1));
}

TYPED_TEST(SoftmaxTest, BadInputThrowsNamingTheArgument) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> empty(0, 3), wide(2, 0);
  const RowMatrix<Scalar> z = random_matrix<Scalar>(2, 3, 9);
  EXPECT_TRUE(throws_invalid_argument([&] { softmax(empty); }, {"softmax", "logits", "(0 x 3)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { log_sum_exp(wide); }, {"log_sum_exp", "(2 x 0)"}));
  for (const Scalar beta : {Scalar(0), Scalar(-1), std::numeric_limits<Scalar>::quiet_NaN(),
                            std::numeric_limits<Scalar>::infinity()})
    EXPECT_TRUE(throws_invalid_argument([&] { softmax(z, beta); }, {"beta"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { softmax_jacobian(z); }, {"softmax_jacobian", "(2 x 3)", "vector"}));
  const RowMatrix<Scalar> g = random_matrix<Scalar>(3, 2, 10);
  EXPECT_TRUE(throws_invalid_argument([&] { softmax_jacobian_product(z, g); },
                                      {"probs", "(2 x 3)", "grads", "(3 x 2)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { entropy(empty); }, {"entropy"}));
}

}  // namespace
}  // namespace attnkit
