// Tests of attnkit/distributed/sharding.hpp (no MPI): the shardings
// partition the positions, are balanced to a token per part, lay zigzag
// chunks out as chunks r and 2P - 1 - r, balance causal work exactly when 2P
// divides n (and contiguous does not), and extract_shard / insert_shard are
// inverses; bad arguments throw.

#include "attnkit/distributed/sharding.hpp"

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::matrices_near;
using test::throws_invalid_argument;

TEST(ShardingTest, EveryPositionBelongsToExactlyOneRankAndShardsAreBalanced) {
  for (const Sharding s : {Sharding::contiguous, Sharding::zigzag})
    for (int P = 1; P <= 6; ++P)
      for (Index n = P; n <= 41; ++n) {
        std::vector<int> owner(static_cast<std::size_t>(n), -1);
        Index lo = n, hi = 0;
        for (int r = 0; r < P; ++r) {
          const auto ranges = shard_ranges(s, n, P, r);
          EXPECT_LE(ranges.size(), s == Sharding::zigzag ? 2u : 1u);
          Index size = 0, prev_end = -1;
          for (const TokenRange& t : ranges) {
            EXPECT_GT(t.size(), 0);
            EXPECT_GT(t.begin, prev_end) << "sorted, disjoint, not adjacent";
            prev_end = t.end;
            for (Index p = t.begin; p < t.end; ++p) {
              EXPECT_EQ(owner[std::size_t(p)], -1) << "position " << p << " twice";
              owner[std::size_t(p)] = r;
            }
            size += t.size();
          }
          EXPECT_EQ(size, shard_size(s, n, P, r));
          lo = std::min(lo, size);
          hi = std::max(hi, size);
        }
        EXPECT_TRUE(std::find(owner.begin(), owner.end(), -1) == owner.end()) << "n " << n << " P " << P;
        // Parts differ by at most one token: ranks by one (contiguous) or two
        // (zigzag: two chunks).
        EXPECT_LE(hi - lo, s == Sharding::zigzag ? 2 : 1) << to_string(s) << " n " << n << " P " << P;
      }
}

TEST(ShardingTest, ZigzagRankRHoldsChunksRAnd2PMinus1MinusR) {
  // n = 2P c: chunk i is [i c, (i + 1) c).
  const Index c = 5;
  for (int P = 2; P <= 5; ++P)
    for (int r = 0; r < P; ++r) {
      const auto ranges = shard_ranges(Sharding::zigzag, 2 * P * c, P, r);
      if (r == P - 1) {  // chunks P - 1 and P are adjacent: one range
        ASSERT_EQ(ranges.size(), 1u);
        EXPECT_EQ(ranges[0].begin, (P - 1) * c);
        EXPECT_EQ(ranges[0].end, (P + 1) * c);
        continue;
      }
      ASSERT_EQ(ranges.size(), 2u);
      EXPECT_EQ(ranges[0].begin, r * c);
      EXPECT_EQ(ranges[0].end, (r + 1) * c);
      EXPECT_EQ(ranges[1].begin, (2 * P - 1 - r) * c);
      EXPECT_EQ(ranges[1].end, (2 * P - r) * c);
    }
  // One rank: the whole sequence, one range.
  const auto one = shard_ranges(Sharding::zigzag, 9, 1, 0);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].begin, 0);
  EXPECT_EQ(one[0].end, 9);
}

// Causal work of a rank: its queries at positions p see p + 1 keys.
double causal_work(Sharding s, Index n, int P, int r) {
  double w = 0;
  for (const TokenRange& t : shard_ranges(s, n, P, r))
    for (Index p = t.begin; p < t.end; ++p)
      w += static_cast<double>(p + 1);
  return w;
}

TEST(ShardingTest, ZigzagBalancesCausalWorkAndContiguousDoesNot) {
  for (int P = 2; P <= 8; ++P) {
    const Index n = 2 * P * 16;
    double zmax = 0, zmin = 1e300, cmax = 0, sum = 0;
    for (int r = 0; r < P; ++r) {
      const double z = causal_work(Sharding::zigzag, n, P, r), c = causal_work(Sharding::contiguous, n, P, r);
      zmax = std::max(zmax, z);
      zmin = std::min(zmin, z);
      cmax = std::max(cmax, c);
      sum += c;
    }
    EXPECT_EQ(zmax, zmin) << "P " << P;
    // The last contiguous rank: (2P - 1) / P of the mean, up to the diagonal's
    // half-token terms.
    const double imbalance = cmax / (sum / P), c = static_cast<double>(n / P);
    const double expected = (P - 0.5) * c * c + 0.5 * c;
    EXPECT_EQ(cmax, expected);
    EXPECT_GT(imbalance, (2.0 * P - 1) / P - 0.05) << "P " << P;
  }
}

TEST(ShardingTest, ExtractAndInsertAreInverses) {
  for (const Sharding s : {Sharding::contiguous, Sharding::zigzag})
    for (const Index heads : {1, 3})
      for (int P = 1; P <= 4; ++P) {
        const Index n = 13;
        const RowMatrix<float> full = test::random_matrix<float>(heads * n, 4, 71000);
        RowMatrix<float> back = RowMatrix<float>::Zero(heads * n, 4);
        for (int r = 0; r < P; ++r) {
          const RowMatrix<float> shard = extract_shard(full, heads, s, P, r);
          EXPECT_EQ(shard.rows(), heads * shard_size(s, n, P, r));
          // Head h of the shard is the shard of head h.
          const RowMatrix<float> head1 = extract_shard(full.middleRows((heads - 1) * n, n), 1, s, P, r);
          EXPECT_TRUE(matrices_near(shard.bottomRows(head1.rows()), head1, 0.0));
          insert_shard(shard, back, heads, s, P, r);
        }
        EXPECT_TRUE(matrices_near(back, full, 0.0));
      }
}

TEST(ShardingTest, BadArgumentsThrow) {
  EXPECT_TRUE(throws_invalid_argument([] { shard_ranges(Sharding::zigzag, 3, 4, 0); },
                                      {"shard_ranges", "n = 3", "4 ranks"}));
  EXPECT_TRUE(throws_invalid_argument([] { shard_ranges(Sharding::contiguous, 10, 2, 2); }, {"rank = 2"}));
  EXPECT_TRUE(throws_invalid_argument([] { shard_ranges(Sharding::contiguous, 10, 0, 0); }, {"ranks = 0"}));
  const RowMatrix<float> m = RowMatrix<float>::Zero(10, 2);
  EXPECT_TRUE(throws_invalid_argument([&] { extract_shard(m, 3, Sharding::zigzag, 2, 0); }, {"heads = 3"}));
  RowMatrix<float> full = RowMatrix<float>::Zero(10, 2);
  EXPECT_TRUE(throws_invalid_argument([&] { insert_shard(m.topRows(4), full, 1, Sharding::zigzag, 2, 0); },
                                      {"insert_shard", "(4 x 2)", "(5 x 2)"}));
  for (const Sharding s : {Sharding::contiguous, Sharding::zigzag})
    EXPECT_EQ(parse_sharding(to_string(s)), s);
  EXPECT_FALSE(parse_sharding("striped").has_value());
}

}  // namespace
}  // namespace attnkit
