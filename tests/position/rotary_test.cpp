// Tests of attnkit/position/rotary.hpp: against a long-double brute-force
// rotation (both layouts, partial rotary, base, linear scaling, offsets), the
// relative-position property with a derived bound, hand-computed partial
// rotations in the Hugging Face layout, in place = out of place, and bad input.

#include "attnkit/position/rotary.hpp"

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

template <typename Scalar>
class RotaryTest : public ::testing::Test {};
TYPED_TEST_SUITE(RotaryTest, test::Scalars);

constexpr long double u_double = std::numeric_limits<double>::epsilon() / 2;

/// Brute-force RoPE in long double, written from the definition in the
/// header's file comment (not from its code), plus a per-entry bound on how
/// far the implementation may be from it.
struct BruteRotation {
  RowMatrix<long double> value;  // exact rotation of the (Scalar) input
  RowMatrix<long double> bound;  // derived bound on |implementation - value|
};

template <typename Scalar>
BruteRotation brute_rotation(const RowMatrix<Scalar>& x, Index first, const RotaryOptions& o) {
  const Index d = x.cols(), r = o.rotary_dims.value_or(d);
  const long double base = static_cast<long double>(o.base);
  const long double u_scalar = static_cast<long double>(std::numeric_limits<Scalar>::epsilon()) / 2;
  BruteRotation out{x.template cast<long double>(), RowMatrix<long double>::Zero(x.rows(), d)};
  for (Index i = 0; i < x.rows(); ++i) {
    const long double m = static_cast<long double>(first + o.position_offset + i);
    for (Index p = 0; p < r / 2; ++p) {
      const Index a = o.layout == RotaryLayout::interleaved ? 2 * p : p;
      const Index b = o.layout == RotaryLayout::interleaved ? 2 * p + 1 : p + r / 2;
      const long double theta =
          std::pow(base, -2.0L * static_cast<long double>(p) / static_cast<long double>(r));
      const long double angle = m / static_cast<long double>(o.factor) * theta;
      const long double xa = x(i, a), xb = x(i, b);
      out.value(i, a) = xa * std::cos(angle) - xb * std::sin(angle);
      out.value(i, b) = xa * std::sin(angle) + xb * std::cos(angle);
      // The implementation works in double: theta from pow (< 1 ulp, plus the
      // rounded exponent -2p/r, which moves theta by ln(base) u relative),
      // m / factor and m * theta (1 rounding each) give |angle error| <=
      // |angle| (4 + ln base) u_d; cos and sin add <= 2 u_d each, the two
      // products and the difference 2 u_d (|xa| + |xb|); the final rounding
      // to Scalar u_S |x'| <= u_S (|xa| + |xb|).
      const long double err = (std::fabs(xa) + std::fabs(xb)) *
                              (u_scalar + u_double * (std::fabs(angle) * (4 + std::log(base)) + 4));
      out.bound(i, a) = out.bound(i, b) = err;
    }
  }
  return out;
}

template <typename Scalar>
::testing::AssertionResult within_brute_force(const RowMatrix<Scalar>& got, const RowMatrix<Scalar>& x,
                                              Index first, const RotaryOptions& o) {
  const BruteRotation want = brute_rotation(x, first, o);
  for (Index i = 0; i < x.rows(); ++i)
    for (Index c = 0; c < x.cols(); ++c) {
      const long double diff = std::fabs(static_cast<long double>(got(i, c)) - want.value(i, c));
      if (diff > want.bound(i, c))  // pass-through dims have bound 0: exact copies
        return ::testing::AssertionFailure()
               << "entry (" << i << ", " << c << "): " << static_cast<double>(got(i, c)) << " vs "
               << static_cast<double>(want.value(i, c)) << ", |diff| " << static_cast<double>(diff)
               << " > bound " << static_cast<double>(want.bound(i, c));
    }
  return ::testing::AssertionSuccess();
}

std::vector<RotaryOptions> option_grid(Index d) {
  std::vector<RotaryOptions> grid;
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half})
    for (const std::optional<Index> r :
         {std::optional<Index>{}, std::optional<Index>{d / 2}, std::optional<Index>{2}})
      for (const double base : {10000.0, 500.0})
        for (const double factor : {1.0, 2.5})
          for (const Index offset : {Index{0}, Index{1000}})
            grid.push_back({base, layout, r, factor, offset});
  return grid;
}

TYPED_TEST(RotaryTest, MatchesLongDoubleBruteForce) {
  using Scalar = TypeParam;
  const Index d = 12;  // d / 2 = 6: a partial width whose half split differs from d's
  const RowMatrix<Scalar> x = random_matrix<Scalar>(5, d, 11);
  for (const RotaryOptions& o : option_grid(d))
    for (const Index first : {Index{-3}, Index{0}, Index{7}}) {
      EXPECT_TRUE(within_brute_force<Scalar>(apply_rotary(x, first, o), x, first, o))
          << to_string(o.layout) << " r = " << o.rotary_dims.value_or(d) << " base " << o.base << " factor "
          << o.factor << " offset " << o.position_offset << " first " << first;
    }
}

// (R_m q) . (R_n k) = q^T R_{n-m} k for the exact rotation, so the logit of
// positions (m, n) equals that of (m + t, n + t). The computed rotations are
// within the per-entry bound e of brute_rotation, so one computed logit
// (summed in long double from the Scalar outputs) is within
// sum_i e^q_i (|k_i| + e^k_i) + |q_i| e^k_i of the exact one; two logits
// differ by at most the sum of their two bounds.
TYPED_TEST(RotaryTest, LogitDependsOnlyOnRelativePosition) {
  using Scalar = TypeParam;
  const Index d = 16;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(1, d, 1), k = random_matrix<Scalar>(1, d, 2);
  const auto logit = [&](Index m, Index n, RotaryOptions o, long double* bound) {
    const Index split = m / 2;  // half of m via position_offset, half via first_position
    o.position_offset = split;
    const RowMatrix<Scalar> qr = apply_rotary(q, m - split, o);
    o.position_offset = 0;
    const RowMatrix<Scalar> kr = apply_rotary(k, n, o);
    o.position_offset = split;
    const BruteRotation bq = brute_rotation(q, m - split, o);
    o.position_offset = 0;
    const BruteRotation bk = brute_rotation(k, n, o);
    long double s = 0, b = 0;
    for (Index c = 0; c < d; ++c) {
      s += static_cast<long double>(qr(0, c)) * static_cast<long double>(kr(0, c));
      b += bq.bound(0, c) * (std::fabs(bk.value(0, c)) + bk.bound(0, c)) +
           std::fabs(bq.value(0, c)) * bk.bound(0, c);
    }
    *bound = b;
    return s;
  };
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half})
    for (const std::optional<Index> r : {std::optional<Index>{}, std::optional<Index>{6}})
      for (const double factor : {1.0, 3.0}) {
        const RotaryOptions o{10000.0, layout, r, factor, 0};
        long double b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        const long double s0 = logit(7, 3, o, &b0);
        for (const Index t : {Index{-3}, Index{97}, Index{4093}}) {
          const long double s1 = logit(7 + t, 3 + t, o, &b1);
          EXPECT_LE(std::fabs(s1 - s0), b0 + b1) << to_string(layout) << " t = " << t;
        }
        const long double s2 = logit(4, 0, o, &b2);
        EXPECT_LE(std::fabs(s2 - s0), b0 + b2);
        // ...and it does depend on m - n, by far more than the bound.
        const long double s3 = logit(9, 3, o, &b3);
        EXPECT_GT(std::fabs(s3 - s0), 100 * (b0 + b3)) << to_string(layout);
      }
}

TYPED_TEST(RotaryTest, PreservesNormsAndIsIdentityAtPositionZero) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(5, 8, 3);
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const RowMatrix<Scalar> r = apply_rotary(x, 1000, {10000.0, layout});
    // Each entry within (u_S + ~1e-12) (|xa| + |xb|) of an exact rotation,
    // which keeps the norm; 8 eps |x| covers it with room.
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

// Hugging Face partial rotary (GPT-NeoX, Phi): d = 6, r = 4. The rotated
// sub-vector is x[:4]; rotate_half pairs (0, 2) and (1, 3) at frequencies
// base^(-0/4) and base^(-2/4); x[4:] passes through. Interleaved (GPT-J
// rotary_dim = 4): pairs (0, 1) and (2, 3), same frequencies.
TYPED_TEST(RotaryTest, PartialRotaryHandComputedHuggingFaceLayout) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> x(1, 6);
  x << 1, 2, 3, 4, 5, 6;
  // base 100, r = 4: theta_0 = 1, theta_1 = 100^(-1/2) = 0.1; position 2.
  const double c0 = std::cos(2.0), s0 = std::sin(2.0), c1 = std::cos(0.2), s1 = std::sin(0.2);
  RowMatrix<double> half(1, 6), inter(1, 6);
  half << 1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 1 * s0 + 3 * c0, 2 * s1 + 4 * c1, 5, 6;
  inter << 1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1, 5, 6;
  // Entries of magnitude <= 6: one rounding to Scalar (u_S 6 |..|) plus
  // double-level angle error, far below 8 eps.
  EXPECT_TRUE(matrices_near(apply_rotary(x, 2, {100.0, RotaryLayout::half, 4}), half, 8 * eps<Scalar>()));
  EXPECT_TRUE(
      matrices_near(apply_rotary(x, 2, {100.0, RotaryLayout::interleaved, 4}), inter, 8 * eps<Scalar>()));
  // Linear scaling by 2: position 4 rotates as position 2 (4 / 2 is exact).
  EXPECT_TRUE(
      matrices_near(apply_rotary(x, 4, {100.0, RotaryLayout::half, 4, 2.0}), half, 8 * eps<Scalar>()));
}

// Offsets and scaling that land on the same double position give the same
// bits: position_offset adds in Index, and m / factor is exact for factor 2.
TYPED_TEST(RotaryTest, OffsetAndScalingAreExactReparametrisations) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(4, 8, 5);
  const RotaryOptions plain{10000.0, RotaryLayout::interleaved, 6};
  const RotaryOptions shifted{10000.0, RotaryLayout::interleaved, 6, 1.0, 10};
  EXPECT_TRUE(matrices_near(apply_rotary(x, 5, shifted), apply_rotary(x, 15, plain), 0.0));
  EXPECT_TRUE(matrices_near(apply_rotary(x, shifted), apply_rotary(x, 10, plain), 0.0));
  // Rows at positions 2m with factor 2 = rows at m: one row at a time.
  const RotaryOptions scaled{10000.0, RotaryLayout::interleaved, 6, 2.0};
  for (Index m : {Index{0}, Index{3}, Index{501}})
    EXPECT_TRUE(matrices_near(apply_rotary(x.row(0), 2 * m, scaled), apply_rotary(x.row(0), m, plain), 0.0));
}

// The defaults reproduce the formula the library used before partial rotary
// and scaling existed (angle = m * base^(-2p/d) in double), bit for bit, so
// generated workloads and stored results do not move.
TYPED_TEST(RotaryTest, DefaultsKeepTheFullWidthFormulaBitForBit) {
  using Scalar = TypeParam;
  const Index d = 10;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(3, d, 6);
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    RowMatrix<Scalar> want(3, d);
    for (Index p = 0; p < d / 2; ++p) {
      const double theta = std::pow(10000.0, -2.0 * static_cast<double>(p) / static_cast<double>(d));
      const Index a = layout == RotaryLayout::interleaved ? 2 * p : p;
      const Index b = layout == RotaryLayout::interleaved ? 2 * p + 1 : p + d / 2;
      for (Index r = 0; r < 3; ++r) {
        const double angle = static_cast<double>(40 + r) * theta;
        const double c = std::cos(angle), s = std::sin(angle);
        const double xa = static_cast<double>(x(r, a)), xb = static_cast<double>(x(r, b));
        want(r, a) = static_cast<Scalar>(xa * c - xb * s);
        want(r, b) = static_cast<Scalar>(xa * s + xb * c);
      }
    }
    EXPECT_TRUE(matrices_near(apply_rotary(x, 40, {10000.0, layout}), want, 0.0)) << to_string(layout);
  }
}

TYPED_TEST(RotaryTest, InPlaceEqualsOutOfPlace) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(6, 8, 7);
  const RotaryOptions o{500.0, RotaryLayout::half, 6, 1.5, 3};
  RowMatrix<Scalar> y = x;
  apply_rotary_in_place(y, -2, o);
  EXPECT_TRUE(matrices_near(y, apply_rotary(x, -2, o), 0.0));
  // A writable block (rows 2..4 are positions 0, 1, 2 of it) and a
  // column-major matrix.
  RowMatrix<Scalar> z = x;
  apply_rotary_in_place(z.middleRows(2, 3), 0, o);
  EXPECT_TRUE(matrices_near(z.middleRows(2, 3), apply_rotary(x.middleRows(2, 3), 0, o), 0.0));
  EXPECT_TRUE(matrices_near(z.topRows(2), x.topRows(2), 0.0));
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> col = x;
  apply_rotary_in_place(col, 9, o);
  EXPECT_TRUE(matrices_near(col, apply_rotary(x, 9, o), 0.0));
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
  EXPECT_EQ(rotary_dims({}, 8), 8);
  EXPECT_EQ(rotary_dims({10000.0, RotaryLayout::half, 4}, 7), 4);  // odd d is fine when r is even
}

TEST(RotaryPairs, BadInputThrows) {
  const RowMatrix<double> odd = RowMatrix<double>::Ones(2, 3), empty(0, 4),
                          ok = RowMatrix<double>::Ones(2, 4);
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(odd, 0); }, {"apply_rotary", "d = 3", "even"}));
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(empty, 0); }, {"empty"}));
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(ok, 0, {1.0, RotaryLayout::half}); }, {"base = 1"}));
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(ok, 0, {inf}); }, {"base = inf"}));
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(ok, 0, {nan}); }, {"base = nan", "> 1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 3});
      },
      {"rotary_dims = 3", "even"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 0});
      },
      {"rotary_dims = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 6});
      },
      {"rotary_dims = 6", "d = 4"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 4, 0.0});
      },
      {"factor = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 4, -2.0});
      },
      {"factor = -2"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, 0, {10000.0, RotaryLayout::half, 4, nan});
      },
      {"factor = nan"}));
  const Index big = std::numeric_limits<Index>::max();
  EXPECT_TRUE(throws_invalid_argument([&] { apply_rotary(ok, big); }, {"overflow"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary(ok, big - 5, {10000.0, RotaryLayout::half, {}, 1.0, 10});
      },
      {"position_offset = 10"}));
  RowMatrix<double> y = ok;
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        apply_rotary_in_place(y, 0, {10000.0, RotaryLayout::half, 5});
      },
      {"apply_rotary_in_place", "rotary_dims = 5"}));
  EXPECT_TRUE(matrices_near(y, ok, 0.0));  // unchanged when it throws
}

}  // namespace
}  // namespace attnkit
