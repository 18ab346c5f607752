// Tests of attnkit/core/softmax.hpp: the statements of seed note 002 as
// properties, each against an independent long-double computation.

#include "attnkit/core/softmax.hpp"

#include <cmath>
#include <limits>

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

// Naive softmax of beta * z in long double, without max subtraction (safe for
// the moderate logits these tests use).
template <typename Derived>
RowMatrix<LD> naive_softmax(const Eigen::MatrixBase<Derived>& z, LD beta) {
  RowMatrix<LD> p = (beta * z.template cast<LD>().array()).exp().matrix();
  for (Index i = 0; i < p.rows(); ++i)
    p.row(i) /= p.row(i).sum();
  return p;
}

// Per-entry bound on the relative error of softmax computed in Scalar: the
// argument beta (z - max) carries ~2 eps |beta (z - max)| absolute error, which
// exp turns into relative error; exp itself, the sum of m terms and the
// division add (m + 4) eps.
template <typename Scalar, typename Derived>
double softmax_rel_bound(const Eigen::MatrixBase<Derived>& z_row, double beta) {
  const double spread = beta * static_cast<double>(z_row.maxCoeff() - z_row.minCoeff());
  return (2 * spread + static_cast<double>(z_row.size()) + 4) * eps<Scalar>();
}

TYPED_TEST(SoftmaxTest, MatchesLongDoubleWithAndWithoutTemperature) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(7, 13, 1, 2.0);
  for (const double beta : {1.0, 0.25, 3.0}) {
    const RowMatrix<Scalar> p = softmax(z, static_cast<Scalar>(beta));
    const RowMatrix<LD> ref = naive_softmax(z, static_cast<LD>(static_cast<Scalar>(beta)));
    for (Index i = 0; i < z.rows(); ++i) {
      const double bound = softmax_rel_bound<Scalar>(z.row(i), beta);
      for (Index j = 0; j < z.cols(); ++j)
        EXPECT_NEAR(static_cast<double>(p(i, j)), static_cast<double>(ref(i, j)),
                    bound * static_cast<double>(ref(i, j)))
            << "beta " << beta << " at (" << i << ", " << j << ")";
      EXPECT_NEAR(static_cast<double>(p.row(i).sum()), 1.0, (test::as_double(z.cols()) + 4) * eps<Scalar>());
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
      // beta*max rounds (2 eps |beta max|), log(sum) adds (m + 2) eps.
      const double bound =
          (2 * std::fabs(beta * static_cast<double>(z.row(i).maxCoeff())) + test::as_double(z.cols()) + 2) *
          eps<Scalar>();
      EXPECT_NEAR(static_cast<double>(lse(i)), static_cast<double>(ref), bound);
    }
  }
}

// Note 002, statement 1: scaling the logits by k raises every probability
// ratio to the k-th power, i.e. log p_k(a) - log p_k(b) = k (log p(a) - log p(b)).
TYPED_TEST(SoftmaxTest, ScalingLogitsRaisesRatiosToThePower) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(4, 6, 3);
  const RowMatrix<Scalar> p1 = softmax(z);
  for (const Scalar k : {Scalar(0.5), Scalar(2), Scalar(3)}) {
    const RowMatrix<Scalar> pk = softmax(z, k);
    for (Index i = 0; i < z.rows(); ++i) {
      // Relative errors of the two softmax results become absolute errors of
      // their logs; the k-fold one is multiplied by k.
      const double bound = 2 * (softmax_rel_bound<Scalar>(z.row(i), static_cast<double>(k)) +
                                static_cast<double>(k) * softmax_rel_bound<Scalar>(z.row(i), 1.0));
      for (Index a = 0; a < z.cols(); ++a)
        for (Index b = 0; b < z.cols(); ++b) {
          const double lhs =
              std::log(static_cast<double>(pk(i, a))) - std::log(static_cast<double>(pk(i, b)));
          const double rhs = static_cast<double>(k) * (std::log(static_cast<double>(p1(i, a))) -
                                                       std::log(static_cast<double>(p1(i, b))));
          EXPECT_NEAR(lhs, rhs, bound) << "k = " << k << " row " << i << " pair " << a << ", " << b;
        }
    }
  }
}

// As k grows the output approaches one-hot: the largest probability increases
// monotonically to 1, the entropy decreases monotonically (dH/dk = -k Var_p(z)),
// and ||J||_F, bounded by 2 (1 - p_max), goes to 0.
TYPED_TEST(SoftmaxTest, LargeInverseTemperatureApproachesOneHot) {
  using Scalar = TypeParam;
  // Distinct logits with a unique maximum.
  RowMatrix<Scalar> z(1, 5);
  z << Scalar(0.3), Scalar(1.0), Scalar(-0.4), Scalar(0.7), Scalar(0.1);
  double last_max = 0, last_entropy = std::numeric_limits<double>::infinity();
  for (Scalar k = 1; k <= Scalar(128); k *= 2) {
    const RowMatrix<Scalar> p = softmax(z, k);
    const double pmax = static_cast<double>(max_probability(p)(0));
    const double h = static_cast<double>(entropy(p)(0));
    EXPECT_GE(pmax, last_max) << "k = " << k;  // strictly, until it rounds to 1
    EXPECT_LT(h, last_entropy) << "k = " << k;
    last_max = pmax;
    last_entropy = h;
    // 1 - p_max in long double, independent of the Scalar result.
    const RowMatrix<LD> ref = naive_softmax(z, static_cast<LD>(k));
    const double rest = static_cast<double>(1 - ref.maxCoeff());
    const double jnorm = static_cast<double>(jacobian_frobenius_norm(p)(0));
    EXPECT_LE(jnorm, 2 * rest * (1 + 16 * eps<Scalar>())) << "k = " << k;
    EXPECT_GT(jnorm, 0.0) << "k = " << k;
  }
  // k = 128: the gap 0.3 between the top two logits makes 1 - p_max ~ e^-38.
  EXPECT_NEAR(last_max, 1.0, eps<Scalar>());
  EXPECT_LT(static_cast<double>(jacobian_frobenius_norm(softmax(z, Scalar(128)))(0)), 1e-15);
}

TYPED_TEST(SoftmaxTest, AddingAConstantToARowChangesNothing) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(6, 8, 4);
  // A power of two keeps z + c as exact as possible; the rounding of z + c
  // (eps |z + c|) is what remains, doubled for the two results compared.
  const Scalar c = Scalar(16);
  RowMatrix<Scalar> shifted = z.array() + c;
  const RowMatrix<Scalar> p = softmax(z), q = softmax(shifted);
  const RowMatrix<Scalar> lse_diff = (log_sum_exp(shifted) - log_sum_exp(z)).transpose();
  for (Index i = 0; i < z.rows(); ++i) {
    const double bound = 2 * softmax_rel_bound<Scalar>(shifted.row(i), 1.0);
    for (Index j = 0; j < z.cols(); ++j)
      EXPECT_NEAR(static_cast<double>(q(i, j)), static_cast<double>(p(i, j)),
                  bound * static_cast<double>(p(i, j)));
    // Each lse carries (m + 2) eps from log(sum) plus eps |lse| <= 24 eps from
    // the final addition; rounding z + c moves the shifted one by <= 24 eps.
    EXPECT_NEAR(static_cast<double>(lse_diff(0, i)), 16.0,
                (2 * (test::as_double(z.cols()) + 2 + 24) + 24) * eps<Scalar>());
  }
}

// Note 002, statement 2: J = diag(s) - s s^T, checked against central finite
// differences of softmax computed in double. Truncation error h^2/6 |s'''| with
// |s'''| <= 1, rounding eps_double / h: 1e-9 covers both for h = 1e-5; for float
// J is built from float probabilities (3 eps_float per entry).
TYPED_TEST(SoftmaxTest, JacobianMatchesCentralFiniteDifferences) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(1, 6, 5);
  const RowMatrix<Scalar> s = softmax(z);
  const RowMatrix<Scalar> j = softmax_jacobian(s);
  const RowMatrix<double> zd = z.template cast<double>();
  const double h = 1e-5;
  RowMatrix<double> fd(6, 6);
  for (Index c = 0; c < 6; ++c) {
    RowMatrix<double> zp = zd, zm = zd;
    zp(0, c) += h;
    zm(0, c) -= h;
    fd.col(c) = ((softmax(zp) - softmax(zm)) / (2 * h)).transpose();
  }
  EXPECT_TRUE(matrices_near(j, fd, 1e-9 + 3 * eps<Scalar>()));
  EXPECT_TRUE(matrices_near(j, j.transpose(), 0.0)) << "J must be symmetric";
  // Rows of J sum to zero (softmax outputs always sum to 1).
  EXPECT_LT(j.rowwise().sum().cwiseAbs().maxCoeff(), 8 * eps<Scalar>());
}

TYPED_TEST(SoftmaxTest, JacobianProductEqualsExplicitJacobianTimesVector) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(5, 7, 6, 2.0);
  const RowMatrix<Scalar> g = random_matrix<Scalar>(5, 7, 7);
  const RowMatrix<Scalar> s = softmax(z);
  const RowMatrix<Scalar> jg = softmax_jacobian_product(s, g);
  for (Index i = 0; i < s.rows(); ++i) {
    const RowMatrix<LD> jl = softmax_jacobian(s.row(i).template cast<LD>());
    const RowMatrix<LD> expected = (jl * g.row(i).transpose().template cast<LD>()).transpose();
    // Both are sums of 7 products of numbers <= max|g|: (m + 3) eps max|g|.
    EXPECT_TRUE(matrices_near(jg.row(i), expected, (7 + 3) * eps<Scalar>() * g.cwiseAbs().maxCoeff()));
  }
}

TYPED_TEST(SoftmaxTest, ClosedFormsAgreeWithExplicitJacobian) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> z = random_matrix<Scalar>(6, 9, 8, 2.0);
  const RowMatrix<Scalar> s = softmax(z);
  const Vector<Scalar> norms = jacobian_frobenius_norm(s);
  const Vector<Scalar> h = entropy(s);
  const Vector<Scalar> support = effective_support(s);
  const Vector<Scalar> top = max_probability(s);
  for (Index i = 0; i < s.rows(); ++i) {
    const RowMatrix<LD> sl = s.row(i).template cast<LD>();
    const LD explicit_norm = softmax_jacobian(sl).norm();
    EXPECT_NEAR(static_cast<double>(norms(i)), static_cast<double>(explicit_norm),
                4 * 9 * eps<Scalar>() * static_cast<double>(explicit_norm));
    LD hl = 0;
    for (Index j = 0; j < sl.cols(); ++j)
      hl -= sl(0, j) * std::log(sl(0, j));
    EXPECT_NEAR(static_cast<double>(h(i)), static_cast<double>(hl), (9 + 4) * eps<Scalar>() * std::log(9.0));
    EXPECT_NEAR(static_cast<double>(support(i)), std::exp(static_cast<double>(hl)),
                (9 + 6) * eps<Scalar>() * std::exp(static_cast<double>(hl)) * std::log(9.0));
    EXPECT_EQ(top(i), s.row(i).maxCoeff());
  }
}

TYPED_TEST(SoftmaxTest, EntropyAndSupportOfUniformAndOneHotRows) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> p(2, 4);
  p << Scalar(0.25), Scalar(0.25), Scalar(0.25), Scalar(0.25), 0, 1, 0, 0;
  const Vector<Scalar> h = entropy(p);
  EXPECT_NEAR(static_cast<double>(h(0)), std::log(4.0), 4 * eps<Scalar>());
  EXPECT_EQ(h(1), Scalar(0));
  EXPECT_NEAR(static_cast<double>(effective_support(p)(0)), 4.0, 16 * eps<Scalar>());
  EXPECT_EQ(effective_support(p)(1), Scalar(1));
  EXPECT_EQ(jacobian_frobenius_norm(p)(1), Scalar(0));
  // Uniform over m: ||J||^2 = 1/m - 1/m^2.
  EXPECT_NEAR(static_cast<double>(jacobian_frobenius_norm(p)(0)), std::sqrt(0.25 - 0.0625),
              8 * eps<Scalar>());
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
  EXPECT_EQ(p(1, 1), Scalar(0));
  EXPECT_NEAR(static_cast<double>(p(1, 0)), 0.5, eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(lse(1)), 1 + std::log(2.0), 4 * eps<Scalar>());
  EXPECT_TRUE(p.row(2).array().isNaN().all());
  EXPECT_TRUE(std::isnan(lse(2)));
  EXPECT_TRUE(p.row(3).array().isNaN().all());
  EXPECT_TRUE(std::isnan(lse(3)));
  // The last row is untouched by its neighbours.
  EXPECT_TRUE(matrices_near(p.row(4), softmax(z.row(4)), 0.0));
}

TYPED_TEST(SoftmaxTest, HugeFiniteLogitsNeitherOverflowNorGiveNaN) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> z(2, 3);
  z << Scalar(1e4), Scalar(1e4) - 1, Scalar(-1e4),  //
      Scalar(-1e4), Scalar(-1e4) - 1, Scalar(-1e4) - 2;
  const RowMatrix<Scalar> p = softmax(z);
  const Vector<Scalar> lse = log_sum_exp(z);
  ASSERT_TRUE(p.allFinite());
  ASSERT_TRUE(lse.allFinite());
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0);
  // Logit rounding at 1e4 is eps * 1e4 absolute, i.e. relative error in p.
  const double tol = 4 * eps<Scalar>() * 1e4;
  EXPECT_NEAR(static_cast<double>(p(0, 0)), 1 / (1 + e1), tol);
  EXPECT_NEAR(static_cast<double>(p(0, 1)), e1 / (1 + e1), tol);
  EXPECT_EQ(p(0, 2), Scalar(0));
  EXPECT_NEAR(static_cast<double>(p(1, 2)), e2 / (1 + e1 + e2), tol);
  EXPECT_NEAR(static_cast<double>(lse(0)), 1e4 + std::log1p(e1), tol * 1e4);
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
