// Tests of attnkit/similarity/rotary.hpp: relative-position property, norm
// preservation, pair layouts, against hand-computed rotations.

#include "attnkit/similarity/rotary.hpp"

#include <cmath>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class RotaryTest : public ::testing::Test {};
TYPED_TEST_SUITE(RotaryTest, test::Scalars);

TYPED_TEST(RotaryTest, ScoreDependsOnRelativePositionOnly) {
  using Scalar = TypeParam;
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const RowMatrix<Scalar> q = random_matrix<Scalar>(1, 16, 1), k = random_matrix<Scalar>(1, 16, 2);
    const RotaryOptions opt{10000.0, layout};
    // (R_m q) . (R_n k) for (m, n) = (7, 3), (104, 100), (4, 0): all m - n = 4.
    const double s0 = static_cast<double>(apply_rotary(q, 7, opt).row(0).dot(apply_rotary(k, 3, opt).row(0)));
    const double s1 =
        static_cast<double>(apply_rotary(q, 104, opt).row(0).dot(apply_rotary(k, 100, opt).row(0)));
    const double s2 = static_cast<double>(apply_rotary(q, 4, opt).row(0).dot(k.row(0)));
    // Each rotated entry is rounded once (eps/2 relative to the vector norm);
    // the dot product of 16 terms adds 16 eps.
    const double tol = (2 + 16) * eps<Scalar>() * static_cast<double>(q.norm() * k.norm());
    EXPECT_NEAR(s0, s1, tol) << to_string(layout);
    EXPECT_NEAR(s0, s2, tol) << to_string(layout);
    // ...and it does depend on it.
    const double s3 = static_cast<double>(apply_rotary(q, 9, opt).row(0).dot(apply_rotary(k, 3, opt).row(0)));
    EXPECT_GT(std::fabs(s3 - s0), 100 * tol);
  }
}

TYPED_TEST(RotaryTest, PreservesNormsAndIsIdentityAtPositionZero) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(5, 8, 3);
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const RowMatrix<Scalar> r = apply_rotary(x, 1000, {10000.0, layout});
    for (Index i = 0; i < 5; ++i)
      EXPECT_NEAR(static_cast<double>(r.row(i).norm()), static_cast<double>(x.row(i).norm()),
                  8 * eps<Scalar>() * static_cast<double>(x.row(i).norm()));
    EXPECT_TRUE(matrices_near(apply_rotary(x.topRows(1), 0, {10000.0, layout}), x.topRows(1), 0.0));
  }
}

TYPED_TEST(RotaryTest, HandComputedRotationForBothLayouts) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> x(1, 4);
  x << 1, 2, 3, 4;
  // d = 4, base 100: pair 0 turns at 1 rad per position, pair 1 at 0.1 rad.
  const double c0 = std::cos(2.0), s0 = std::sin(2.0), c1 = std::cos(0.2), s1 = std::sin(0.2);
  RowMatrix<double> inter(1, 4), half(1, 4);
  inter << 1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1;
  half << 1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 1 * s0 + 3 * c0, 2 * s1 + 4 * c1;
  EXPECT_TRUE(
      matrices_near(apply_rotary(x, 2, {100.0, RotaryLayout::interleaved}), inter, 8 * eps<Scalar>()));
  EXPECT_TRUE(matrices_near(apply_rotary(x, 2, {100.0, RotaryLayout::half}), half, 8 * eps<Scalar>()));
}

TEST(RotaryPairs, PartnersAndPairsAreConsistent) {
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half})
    for (const Index d : {2, 8, 64}) {
      for (Index i = 0; i < d; ++i) {
        const Index j = rotary_partner(i, d, layout);
        EXPECT_NE(i, j);
        EXPECT_EQ(rotary_partner(j, d, layout), i);
        EXPECT_EQ(rotary_pair(i, d, layout), rotary_pair(j, d, layout));
      }
      for (Index p = 0; p < d / 2; ++p) {
        const auto [a, b] = rotary_pair_dims(p, d, layout);
        EXPECT_EQ(rotary_pair(a, d, layout), p);
        EXPECT_EQ(rotary_partner(a, d, layout), b);
      }
    }
  EXPECT_EQ(rotary_partner(1, 8, RotaryLayout::half), 5);
  EXPECT_EQ(rotary_partner(1, 8, RotaryLayout::interleaved), 0);
}

TEST(RotaryPairs, BadInputThrows) {
  const RowMatrix<double> odd = RowMatrix<double>::Ones(2, 3), empty(0, 4),
                          ok = RowMatrix<double>::Ones(2, 4);
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(odd, 0); }, {"apply_rotary", "(2 x 3)", "even"}));
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(empty, 0); }, {"empty"}));
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(ok, 0, {1.0, RotaryLayout::half}); }, {"base"}));
}

}  // namespace
}  // namespace attnkit
