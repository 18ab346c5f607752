// Tests of attnkit/sparse/lsh_hash.hpp: codes against a long-double
// evaluation of the hash definitions (rows whose decision is within rounding
// of a tie are excluded, and counted), the one-bucket case, seeds, locality
// and bad input.

#include "attnkit/sparse/lsh_hash.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::random_matrix;
using test::throws_invalid_argument;

using LD = long double;

template <typename Scalar>
class LshHashTest : public ::testing::Test {};
TYPED_TEST_SUITE(LshHashTest, test::Scalars);

// The library computes p = x R in Scalar: each entry within
// (d + 1) u |x| |r_a| of the exact product (a d-term dot product). A row's
// code is decided by comparisons of |p_a| (angular) or signs (simhash); when
// every deciding gap exceeds twice that bound the computed and the exact codes
// must agree.
TYPED_TEST(LshHashTest, CodesMatchTheDefinitionInLongDouble) {
  using Scalar = TypeParam;
  const Index n = 300, d = 12;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(n, d, 1);
  const double u = eps<Scalar>() / 2;
  for (const LshHashKind kind : {LshHashKind::angular, LshHashKind::simhash})
    for (const Index buckets : {Index{2}, Index{8}, Index{32}}) {
      const LshHasher<Scalar> h(d, {kind, buckets, 3, 7});
      const LshCodes got = h.codes(x);
      const RowMatrix<LD> p = x.template cast<LD>() * h.projections().template cast<LD>();
      const Index w = h.width();
      Index checked = 0;
      for (Index i = 0; i < n; ++i)
        for (Index r = 0; r < 3; ++r) {
          const auto row = p.row(i).segment(r * w, w);
          const LD err = (as_double(d) + 1) * u * static_cast<LD>(x.row(i).norm()) *
                         static_cast<LD>(h.projections().middleCols(r * w, w).colwise().norm().maxCoeff());
          Index want = 0;
          bool clear = true;
          if (kind == LshHashKind::angular) {
            Index best = 0;
            for (Index a = 1; a < w; ++a)
              if (std::fabs(row(a)) > std::fabs(row(best))) best = a;
            for (Index a = 0; a < w; ++a)
              if (a != best && std::fabs(row(best)) - std::fabs(row(a)) <= 2 * err) clear = false;
            if (std::fabs(row(best)) <= 2 * err) clear = false;
            want = row(best) >= 0 ? best : best + w;
          } else {
            for (Index bit = 0; bit < w; ++bit) {
              if (row(bit) > 0) want |= Index{1} << bit;
              if (std::fabs(row(bit)) <= 2 * err) clear = false;
            }
          }
          EXPECT_GE(got(i, r), 0);
          EXPECT_LT(got(i, r), buckets);
          if (!clear) continue;
          ++checked;
          EXPECT_EQ(got(i, r), want) << to_string(kind) << " B " << buckets << " row " << i << " round " << r;
        }
      EXPECT_GT(checked, 3 * n * 9 / 10);  // near-ties are rare: the test checks almost every code
    }
}

TYPED_TEST(LshHashTest, OneBucketSeedsAndLocality) {
  using Scalar = TypeParam;
  const Index d = 16;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(50, d, 2);
  const LshHasher<Scalar> one(d, {LshHashKind::angular, 1, 5, 3});
  EXPECT_EQ(one.width(), 0);
  EXPECT_TRUE((one.codes(x).array() == 0).all());
  const LshHasher<Scalar> a(d, {LshHashKind::angular, 16, 4, 3}), b(d, {LshHashKind::angular, 16, 4, 3}),
      c(d, {LshHashKind::angular, 16, 4, 4});
  EXPECT_TRUE((a.codes(x).array() == b.codes(x).array()).all());
  EXPECT_FALSE((a.codes(x).array() == c.codes(x).array()).all());
  // Locality: a vector and a small perturbation of it (angle ~ 0.01 rad)
  // collide far more often than two independent vectors (1/16 by chance).
  const RowMatrix<Scalar> near = x + random_matrix<Scalar>(50, d, 3, 0.01);
  const RowMatrix<Scalar> far = random_matrix<Scalar>(50, d, 4);
  const LshHasher<Scalar> many(d, {LshHashKind::simhash, 16, 64, 5});
  const double same_near = (many.codes(x).array() == many.codes(near).array()).template cast<double>().mean();
  const double same_far = (many.codes(x).array() == many.codes(far).array()).template cast<double>().mean();
  // Simhash: P(collide) = (1 - angle/pi)^4, about 0.99 for the near pairs and
  // 1/16 on average for independent ones; 3200 codes each.
  EXPECT_GT(same_near, 0.9);
  EXPECT_LT(same_far, 0.2);
}

TEST(LshHashInput, BadInputThrows) {
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LshHasher<float>(4, {LshHashKind::angular, 0});
      },
      {"buckets = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LshHasher<float>(4, {LshHashKind::angular, 7});
      },
      {"buckets = 7", "even"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LshHasher<float>(4, {LshHashKind::simhash, 12});
      },
      {"buckets = 12", "power of two"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LshHasher<float>(4, {LshHashKind::angular, 8, 0});
      },
      {"rounds = 0"}));
  EXPECT_TRUE(throws_invalid_argument([] { LshHasher<float>(0, {}); }, {"d = 0"}));
  const Index huge = std::numeric_limits<Index>::max() / 4;
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        LshHasher<float>(4, {LshHashKind::angular, 1 << 20, huge});
      },
      {"overflows"}));
  // simhash needs only log2 B projection columns, but the index's bucket tables are rounds x (B + 1).
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        LshHasher<float>(4, {LshHashKind::simhash, 1 << 20, huge});
      },
      {"rounds x (buckets + 1)", "overflows"}));
  const LshHasher<float> h(4, {});
  EXPECT_TRUE(throws_invalid_argument([&] { h.codes(RowMatrix<float>::Ones(2, 5)); }, {"(2 x 5)", "d = 4"}));
}

}  // namespace
}  // namespace attnkit
