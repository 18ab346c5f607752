// Tests of attnkit/prune/statistics.hpp: the key mean and centred scatter,
// their exact merge, and the query Gram matrix, against two-pass long double
// sums.
//
// Tolerances: every entry is a sum of n products accumulated in double, so its
// rounding error is at most about n u |x|^2 (u = 2^-53, n = 4100: 4.6e-13 times
// the largest |scatter| entry); the bounds below allow 20x that. The float
// inputs are exact in double, so float and double share the bounds.

#include "attnkit/prune/statistics.hpp"

#include <gtest/gtest.h>

#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class StatisticsTest : public ::testing::Test {};
TYPED_TEST_SUITE(StatisticsTest, test::Scalars);

constexpr double kRowsRoundoff = 20 * 4100 * 0x1p-53;  // 20 n u, see above

TYPED_TEST(StatisticsTest, MatchTwoPassLongDouble) {
  using Scalar = TypeParam;
  // 4100 rows cross the 4096-row block boundary of key_statistics; a common
  // mean 20x the fluctuation checks that the scatter is accumulated centred.
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(4100, 6, 3, 20.0);
  const KeyStatistics s = key_statistics(k);
  const RowMatrix<LD> scatter = test::gram_ld(k, true);
  const Eigen::Matrix<LD, 1, Eigen::Dynamic> mean = k.template cast<LD>().colwise().sum() / LD(4100);
  EXPECT_EQ(s.count, 4100);
  EXPECT_EQ(s.dim(), 6);
  const double scale = static_cast<double>(scatter.cwiseAbs().maxCoeff());
  EXPECT_TRUE(test::matrices_near(s.scatter, scatter.template cast<double>(), kRowsRoundoff * scale));
  const double mean_scale = static_cast<double>(k.template cast<LD>().cwiseAbs().maxCoeff());
  EXPECT_TRUE(
      test::matrices_near(s.mean.transpose(), mean.template cast<double>(), kRowsRoundoff * mean_scale));
  EXPECT_EQ(s.scatter, s.scatter.transpose());  // exactly symmetric
  // gram() = K^T K, uncentred.
  const RowMatrix<LD> gram = test::gram_ld(k, false);
  const double gram_scale = static_cast<double>(gram.cwiseAbs().maxCoeff());
  EXPECT_TRUE(test::matrices_near(s.gram(), gram.template cast<double>(), kRowsRoundoff * gram_scale));
  EXPECT_EQ(s.gram(), s.gram().transpose());
}

TYPED_TEST(StatisticsTest, MergeEqualsTheStatisticsOfTheUnion) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(4100, 6, 4, 20.0);
  const KeyStatistics s = key_statistics(k);
  const double scale = s.scatter.cwiseAbs().maxCoeff();
  const double mean_scale = static_cast<double>(k.template cast<double>().cwiseAbs().maxCoeff());
  for (const Index split : {Index(1), Index(1000), Index(4099)}) {
    KeyStatistics a = key_statistics(k.topRows(split));
    a.merge(key_statistics(k.bottomRows(4100 - split)));
    EXPECT_EQ(a.count, 4100);
    EXPECT_TRUE(test::matrices_near(a.scatter, s.scatter, kRowsRoundoff * scale)) << split;
    EXPECT_TRUE(test::matrices_near(a.mean, s.mean, kRowsRoundoff * mean_scale)) << split;
  }
}

TYPED_TEST(StatisticsTest, EmptySetsAreZeroAndMergeAsIdentity) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(50, 5, 5);
  const KeyStatistics s = key_statistics(k);
  KeyStatistics e = key_statistics(k.topRows(0));
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.dim(), 5);
  EXPECT_EQ(e.mean.cwiseAbs().maxCoeff(), 0.0);
  EXPECT_EQ(e.scatter.cwiseAbs().maxCoeff(), 0.0);
  e.merge(s);  // empty + s = s, bit for bit
  EXPECT_EQ(e.count, 50);
  EXPECT_EQ(e.scatter, s.scatter);
  EXPECT_EQ(e.mean, s.mean);
  KeyStatistics t = s;
  t.merge(key_statistics(k.topRows(0)));  // s + empty = s
  EXPECT_EQ(t.scatter, s.scatter);
  EXPECT_EQ(t.mean, s.mean);
  KeyStatistics d;  // default-constructed: no width yet, takes the other's
  d.merge(s);
  EXPECT_EQ(d.scatter, s.scatter);
}

TYPED_TEST(StatisticsTest, QueryGramMatchesLongDouble) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(32, 7, 6, 3.0);
  const RowMatrix<LD> g = test::gram_ld(q, false);
  const RowMatrix<double> got = query_gram(q);
  EXPECT_EQ(got, got.transpose());
  EXPECT_TRUE(test::matrices_near(got, g.template cast<double>(),
                                  20 * 32 * 0x1p-53 * static_cast<double>(g.cwiseAbs().maxCoeff())));
}

TYPED_TEST(StatisticsTest, BadInputThrows) {
  using Scalar = TypeParam;
  EXPECT_TRUE(throws_invalid_argument([] { key_statistics(RowMatrix<Scalar>(3, 0)); },
                                      {"key_statistics", "(3 x 0)", "no columns"}));
  EXPECT_TRUE(
      throws_invalid_argument([] { query_gram(RowMatrix<Scalar>(0, 4)); }, {"query_gram", "queries"}));
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(10, 6, 7);
  KeyStatistics a = key_statistics(k);
  EXPECT_TRUE(throws_invalid_argument([&] { a.merge(key_statistics(RowMatrix<Scalar>::Ones(2, 3))); },
                                      {"KeyStatistics::merge", "widths 6 and 3"}));
  // Widths are checked even when one side holds no rows: nothing is lost.
  EXPECT_TRUE(throws_invalid_argument([&] { a.merge(key_statistics(RowMatrix<Scalar>(0, 3))); },
                                      {"KeyStatistics::merge", "widths 6 and 3"}));
  KeyStatistics empty = key_statistics(RowMatrix<Scalar>(0, 4));
  EXPECT_TRUE(throws_invalid_argument([&] { empty.merge(a); }, {"KeyStatistics::merge", "widths 4 and 6"}));
  EXPECT_EQ(empty.dim(), 4);  // unchanged by the failed merge
  EXPECT_EQ(a.count, 10);
}

}  // namespace
}  // namespace attnkit
