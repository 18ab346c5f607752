// Tests of attnkit/core/metrics.hpp on hand-computed cases.

#include "attnkit/core/metrics.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::throws_invalid_argument;

template <typename Scalar>
class MetricsTest : public ::testing::Test {};
TYPED_TEST_SUITE(MetricsTest, test::Scalars);

TYPED_TEST(MetricsTest, HandComputedValues) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> ref(2, 2), approx(2, 2);
  ref << 3, 0, 0, 4;
  approx << 3, 1, 0, 2;
  EXPECT_DOUBLE_EQ(max_abs_error(approx, ref), 2.0);
  // ||diff|| = sqrt(1 + 4), ||ref|| = 5.
  EXPECT_NEAR(relative_frobenius_error(approx, ref), std::sqrt(5.0) / 5.0, 1e-15);
  const Eigen::VectorXd rows = row_relative_error(approx, ref);
  EXPECT_NEAR(rows(0), 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(rows(1), 0.5, 1e-15);
  EXPECT_EQ(relative_frobenius_error(ref, ref), 0.0);
}

TYPED_TEST(MetricsTest, ZeroReferenceRows) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> ref = RowMatrix<Scalar>::Zero(2, 3), approx = RowMatrix<Scalar>::Zero(2, 3);
  EXPECT_EQ(relative_frobenius_error(approx, ref), 0.0);
  approx(1, 2) = Scalar(1e-3);
  EXPECT_EQ(relative_frobenius_error(approx, ref), std::numeric_limits<double>::infinity());
  const Eigen::VectorXd rows = row_relative_error(approx, ref);
  EXPECT_EQ(rows(0), 0.0);
  EXPECT_EQ(rows(1), std::numeric_limits<double>::infinity());
}

TYPED_TEST(MetricsTest, NaNIsNeverHidden) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> ref = RowMatrix<Scalar>::Ones(3, 3), approx = ref;
  approx(2, 1) = std::numeric_limits<Scalar>::quiet_NaN();
  EXPECT_TRUE(std::isnan(max_abs_error(approx, ref)));
  EXPECT_TRUE(std::isnan(relative_frobenius_error(approx, ref)));
  const Eigen::VectorXd rows = row_relative_error(approx, ref);
  EXPECT_EQ(rows(0), 0.0);
  EXPECT_TRUE(std::isnan(rows(2)));
  RowMatrix<Scalar> zero = RowMatrix<Scalar>::Zero(3, 3), nan_approx = zero;
  nan_approx(0, 0) = std::numeric_limits<Scalar>::quiet_NaN();
  EXPECT_TRUE(std::isnan(relative_frobenius_error(nan_approx, zero)));
}

TYPED_TEST(MetricsTest, KlDivergence) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> p(3, 2), q(3, 2);
  p << Scalar(0.5), Scalar(0.5), 1, 0, Scalar(0.25), Scalar(0.75);
  q << Scalar(0.9), Scalar(0.1), Scalar(0.5), Scalar(0.5), 1, 0;
  const Eigen::VectorXd kl = kl_divergence(p, q);
  const double q0 = static_cast<double>(Scalar(0.9)), q1 = static_cast<double>(Scalar(0.1));
  EXPECT_NEAR(kl(0), 0.5 * std::log(0.5 / q0) + 0.5 * std::log(0.5 / q1), 1e-15);
  EXPECT_NEAR(kl(1), std::log(2.0), 1e-15);  // 0 log 0 = 0
  EXPECT_EQ(kl(2), std::numeric_limits<double>::infinity());
  EXPECT_EQ(kl_divergence(p, p).cwiseAbs().maxCoeff(), 0.0);
  RowMatrix<Scalar> bad = p;
  bad(0, 1) = Scalar(-0.1);
  EXPECT_TRUE(
      throws_invalid_argument([&] { kl_divergence(bad, q); }, {"kl_divergence", "(0, 1)", "negative"}));
}

TYPED_TEST(MetricsTest, BadShapesThrow) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> a = RowMatrix<Scalar>::Ones(2, 3), b = RowMatrix<Scalar>::Ones(3, 2), e(0, 0);
  EXPECT_TRUE(throws_invalid_argument([&] { max_abs_error(a, b); }, {"max_abs_error", "(2 x 3)", "(3 x 2)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { relative_frobenius_error(a, b); }, {"relative_frobenius_error"}));
  EXPECT_TRUE(throws_invalid_argument([&] { row_relative_error(a, b); }, {"row_relative_error"}));
  EXPECT_TRUE(throws_invalid_argument([&] { kl_divergence(a, b); }, {"kl_divergence"}));
  EXPECT_TRUE(throws_invalid_argument([&] { max_abs_error(e, e); }, {"empty"}));
}

}  // namespace
}  // namespace attnkit
