// Tests of attnkit/distributed/kv_cache.hpp (DistributedKVCache), run on
// P = 1 .. 4 ranks: decoding token by token and in chunks, with appends
// landing on every rank, against the single-process fused kernel over the
// same keys and the long-double oracle, for the decode masks (causal,
// strict with the next position, window + sinks, none), several queries at
// once and grouped-query heads; the cache started from a ring-attention
// prefill; bad input, which must throw the same error on every rank.
//
// Tolerances: the kernel's worst-case bound (tests/attention/flash_bounds.hpp)
// plus that of the cross-rank merge, a tree of depth at most P - 1
// (mpi_test_util.hpp, docs/distributed.md); against one process, that plus
// the single-process kernel's own bound.

#include "attnkit/distributed/kv_cache.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/distributed/ring_attention.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "distributed/mpi_test_util.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::merged_bound;
using test::MpiTest;
using test::throws_everywhere;
using namespace test::flash_bounds;

template <typename Scalar>
class DistributedKVCacheTest : public MpiTest {};
TYPED_TEST_SUITE(DistributedKVCacheTest, test::Scalars);

/// Keys and values of n tokens for kv_heads heads and queries for q_heads,
/// stacked by head: q (hq n x d), k (hkv n x d), v (hkv n x d_v).
template <typename Scalar>
struct Sequence {
  RowMatrix<Scalar> q, k, v;
};

template <typename Scalar>
Sequence<Scalar> sequence(HeadLayout heads, Index n, Index d, Index d_v, std::uint64_t seed) {
  Sequence<Scalar> s{RowMatrix<Scalar>(heads.q_heads * n, d), RowMatrix<Scalar>(heads.kv_heads * n, d),
                     RowMatrix<Scalar>(heads.kv_heads * n, d_v)};
  for (Index h = 0; h < heads.q_heads; ++h) {
    const auto w = make_llm_like_workload<Scalar>({n, n, d, d_v}, seed + static_cast<std::uint64_t>(h));
    s.q.middleRows(h * n, n) = w.q;
    if (h < heads.kv_heads) {
      s.k.middleRows(h * n, n) = w.k;
      s.v.middleRows(h * n, n) = w.v;
    }
  }
  return s;
}

/// Rows [a, b) of every head of a stacked array of `heads` heads of n rows.
template <typename Scalar>
RowMatrix<Scalar> token_rows(const RowMatrix<Scalar>& all, Index heads, Index a, Index b) {
  const Index n = all.rows() / heads;
  RowMatrix<Scalar> out(heads * (b - a), all.cols());
  for (Index h = 0; h < heads; ++h)
    out.middleRows(h * (b - a), b - a) = all.middleRows(h * n + a, b - a);
  return out;
}

/// Checks one decode step: queries at positions [qa, qb) (their rows of s.q)
/// over the first `size` tokens with `opt`, on every rank.
template <typename Scalar>
void expect_step(const DistributedKVCache<Scalar>& cache, const Sequence<Scalar>& s, Index qa, Index qb,
                 const AttentionOptions& opt, const char* what) {
  const HeadLayout heads = cache.heads();
  const Index size = cache.size(), n_q = qb - qa, d = s.q.cols();
  const RowMatrix<Scalar> q = token_rows(s.q, heads.q_heads, qa, qb);
  const RowMatrix<Scalar> k = token_rows(s.k, heads.kv_heads, 0, size),
                          v = token_rows(s.v, heads.kv_heads, 0, size);
  const AttentionResult<Scalar> got = cache.attend(q, opt, FlashConfig{1});
  EXPECT_TRUE(test::same_on_every_rank(got.output)) << what;
  EXPECT_TRUE(test::same_on_every_rank(got.lse)) << what;
  const AttentionResult<Scalar> one = flash_attention_heads(q, k, v, heads, opt, FlashConfig{1});

  const double scale = 1.0 / std::sqrt(as_double(d));
  const MaskLayout layout = resolve_mask(opt.mask, n_q, size);
  const test::NaiveMask nm{opt.mask.kind, layout.offset(), opt.mask.window, opt.mask.sinks};
  const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
  const int P = cache.ranks();
  for (Index h = 0; h < heads.q_heads; ++h) {
    const Index g = heads.kv_head(h);
    const RowMatrix<Scalar> qh = q.middleRows(h * n_q, n_q), kh = k.middleRows(g * size, size),
                            vh = v.middleRows(g * size, size);
    const test::NaiveResult naive = test::naive_attention(qh, kh, vh, nm, scale);
    const AttentionResult<Scalar> exact{naive.output.template cast<Scalar>(),
                                        naive.lse.template cast<Scalar>()};
    const Bound flash = error_bound(qh, kh, vh, scale, 128, BoundKind::worst_case);
    const RowMatrix<double> abs_logits =
        scale * qh.template cast<double>().cwiseAbs() * kh.template cast<double>().cwiseAbs().transpose();
    Eigen::VectorXd lambda(n_q);
    for (Index i = 0; i < n_q; ++i)
      lambda(i) = abs_logits.row(i).maxCoeff() + std::log(as_double(size));
    const Bound bound = merged_bound<Scalar>(flash, lambda, max_v, P - 1);
    const AttentionResult<Scalar> mine{got.output.middleRows(h * n_q, n_q), got.lse.segment(h * n_q, n_q)};
    const AttentionResult<Scalar> single{one.output.middleRows(h * n_q, n_q), one.lse.segment(h * n_q, n_q)};
    EXPECT_TRUE(within_bound(mine, exact, bound)) << what << " vs oracle, head " << h << " size " << size;
    EXPECT_TRUE(within_bound(mine, single, Bound{bound.output + flash.output, bound.lse + flash.lse}))
        << what << " vs one process, head " << h << " size " << size;
  }
}

TYPED_TEST(DistributedKVCacheTest, DecodeAfterAppendsOnEveryRankMatchesOneProcess) {
  using Scalar = TypeParam;
  const int P = test::world_size();
  const Index n = 150, d = 16, d_v = 8;
  for (const HeadLayout heads : {HeadLayout{1, 1}, HeadLayout{4, 2}})
    for (const Index block : {Index(1), Index(3), Index(64)}) {
      const auto s = sequence<Scalar>(heads, n, d, d_v, 41000 + static_cast<std::uint64_t>(block));
      DistributedKVCache<Scalar> cache(MPI_COMM_WORLD, d, d_v, {block, heads});
      // A chunk of 10 tokens, then token by token.
      cache.append(token_rows(s.k, heads.kv_heads, 0, 10), token_rows(s.v, heads.kv_heads, 0, 10));
      for (Index t = 10; t < n; ++t) {
        // The next token's query before its key is appended: strict causal
        // at offset = size.
        if (t % 37 == 0) expect_step(cache, s, t, t + 1, {Mask::strict_causal(t)}, "strict next");
        cache.append(token_rows(s.k, heads.kv_heads, t, t + 1), token_rows(s.v, heads.kv_heads, t, t + 1));
        if (t % 23 == 0 || t == n - 1) {
          expect_step(cache, s, t, t + 1, {Mask::causal()}, "causal");
          expect_step(cache, s, t, t + 1, {Mask::causal().with_window(17).with_sinks(2)}, "window + sinks");
          expect_step(cache, s, t, t + 1, {Mask::none()}, "none");
          expect_step(cache, s, t - 2, t + 1, {Mask::causal()}, "three queries");
          expect_step(cache, s, t - 4, t + 1, {Mask::causal().with_window(5).with_sinks(1)},
                      "five queries, window");
        }
      }
      // Placement: the owners as documented, every rank holding some tokens
      // once the blocks have gone round, and nothing lost.
      Index owned = 0;
      for (Index p = 0; p < n; ++p)
        owned += cache.owner(p) == cache.rank() ? 1 : 0;
      EXPECT_EQ(owned, cache.local_size());
      EXPECT_EQ(cache.owner(5 * block), static_cast<int>(5 % P));
      Index total = 0, mine = cache.local_size();
      MPI_Allreduce(&mine, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      EXPECT_EQ(total, n);
      if (block * P <= n) {
        EXPECT_GT(cache.local_size(), 0) << "block " << block;
      }
    }
}

// The cache started from a ring prefill's shards (zigzag, no rows moved),
// then decoding on: the prompt as the prefill placed it, the new tokens
// round-robin.
TYPED_TEST(DistributedKVCacheTest, DecodeAfterARingPrefill) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const Index n0 = 37, n = 60, d = 16, d_v = 16;
  const HeadLayout heads{2, 1};
  const auto s = sequence<Scalar>(heads, n, d, d_v, 42000);
  for (const Sharding sharding : {Sharding::contiguous, Sharding::zigzag}) {
    const RowMatrix<Scalar> prompt_k = token_rows(s.k, 1, 0, n0), prompt_v = token_rows(s.v, 1, 0, n0);
    const RowMatrix<Scalar> qs = extract_shard(token_rows(s.q, 2, 0, n0), 2, sharding, P, rank),
                            ks = extract_shard(prompt_k, 1, sharding, P, rank),
                            vs = extract_shard(prompt_v, 1, sharding, P, rank);
    ring_attention_heads(MPI_COMM_WORLD, qs, ks, vs, heads, {Mask::causal()}, {sharding, FlashConfig{1}});
    DistributedKVCache<Scalar> cache(MPI_COMM_WORLD, d, d_v, {4, heads});
    cache.assign_prefill(ks, vs, sharding);
    EXPECT_EQ(cache.size(), n0);
    EXPECT_EQ(cache.local_size(), ks.rows());
    for (Index p = 0; p < n0; ++p) {
      bool held = false;
      for (const TokenRange& r : shard_ranges(sharding, n0, P, cache.owner(p)))
        held = held || (p >= r.begin && p < r.end);
      EXPECT_TRUE(held) << "position " << p;
    }
    expect_step(cache, s, n0 - 1, n0, {Mask::causal()}, "after the prefill");
    for (Index t = n0; t < n; ++t) {
      cache.append(token_rows(s.k, 1, t, t + 1), token_rows(s.v, 1, t, t + 1));
      EXPECT_EQ(cache.owner(t), static_cast<int>(((t - n0) / 4) % P));
      if (t % 5 == 0 || t == n - 1) {
        expect_step(cache, s, t, t + 1, {Mask::causal()}, "decode after prefill");
        expect_step(cache, s, t, t + 1, {Mask::causal().with_window(8).with_sinks(3)},
                    "window after prefill");
      }
    }
  }
}

TYPED_TEST(DistributedKVCacheTest, BadInputThrowsTheSameErrorOnEveryRank) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const bool last = rank == P - 1;
  EXPECT_TRUE(throws_everywhere(
      [&] {
        DistributedKVCache<Scalar>(MPI_COMM_WORLD, 8, 8, {0, {}});
      },
      {"DistributedKVCache", "block = 0"}));
  DistributedKVCache<Scalar> cache(MPI_COMM_WORLD, 8, 8, {2, {}});
  const RowMatrix<Scalar> q = RowMatrix<Scalar>::Ones(1, 8);
  EXPECT_TRUE(
      throws_everywhere([&] { cache.attend(q); }, {"DistributedKVCache::attend", "the cache is empty"}));
  const RowMatrix<Scalar> k = RowMatrix<Scalar>::Ones(5, 8), wide = RowMatrix<Scalar>::Ones(5, 9);
  EXPECT_TRUE(throws_everywhere([&] { cache.append(k, wide); }, {"DistributedKVCache::append", "(5 x 9)"}));
  EXPECT_EQ(cache.size(), 0);
  cache.append(k, k);
  EXPECT_TRUE(throws_everywhere([&] { cache.attend(RowMatrix<Scalar>::Ones(1, 7)); }, {"queries (1 x 7)"}));
  EXPECT_TRUE(throws_everywhere([&] { cache.attend(q, {Mask::causal(7)}); }, {"offset 7"}));
  EXPECT_TRUE(throws_everywhere([&] { cache.assign_prefill(k, k, Sharding::zigzag); },
                                {"assign_prefill", "a prefill needs an empty cache"}));
  if (P > 1) {
    EXPECT_TRUE(throws_everywhere(
        [&] { cache.append(last ? k.topRows(2) : k.topRows(1), last ? k.topRows(2) : k.topRows(1)); },
        {"ranks disagree on the key rows"}));
    EXPECT_TRUE(throws_everywhere([&] { cache.attend(last ? RowMatrix<Scalar>::Ones(2, 8) : q); },
                                  {"ranks disagree on the query rows", "rank 0 has 1", "has 2"}));
    EXPECT_TRUE(
        throws_everywhere([&] { cache.attend(q, {last ? Mask::causal().with_sinks(1) : Mask::causal()}); },
                          {"ranks disagree on the mask sinks"}));
  }
  EXPECT_EQ(cache.size(), 5);
  // Still usable: the mean of the five equal values.
  const auto r = cache.attend(q);
  EXPECT_NEAR(static_cast<double>(r.output(0, 0)), 1.0, 1e-6);
}

}  // namespace
}  // namespace attnkit
