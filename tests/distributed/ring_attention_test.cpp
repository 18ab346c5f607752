// Tests of attnkit/distributed/ring_attention.hpp, run on P = 1 .. 4 ranks:
// every rank's rows of the ring result against the long-double oracle
// (tests/naive_attention.hpp) and against the single-process fused kernel
// (flash_attention_heads), for n not divisible by P, every mask and offset,
// multi-head and grouped-query layouts, both shardings; bit-for-bit equality
// with one process at P = 1; the work statistics; and bad input, which must
// throw the same error on every rank (no hang).
//
// Tolerances (derived in mpi_test_util.hpp and docs/distributed.md): against
// the oracle, the kernel's worst-case bound over the whole problem
// (tests/attention/flash_bounds.hpp) plus that of a chain of at most
// pieces x P - 1 exact merges; against the single-process kernel, that plus
// the kernel's own bound (both are within their bounds of the exact result).

#include "attnkit/distributed/ring_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "distributed/mpi_test_util.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::LD;
using test::matrices_near;
using test::merged_bound;
using test::MpiTest;
using test::throws_everywhere;
using namespace test::flash_bounds;

template <typename Scalar>
class RingAttentionTest : public MpiTest {};
TYPED_TEST_SUITE(RingAttentionTest, test::Scalars);

/// Stacked heads: q (hq n_q x d), k (hkv n_k x d), v (hkv n_k x d_v).
template <typename Scalar>
struct Stacked {
  RowMatrix<Scalar> q, k, v;
};

template <typename Scalar>
Stacked<Scalar> stacked(HeadLayout heads, Index n_q, Index n_k, Index d, Index d_v, std::uint64_t seed) {
  Stacked<Scalar> w{RowMatrix<Scalar>(heads.q_heads * n_q, d), RowMatrix<Scalar>(heads.kv_heads * n_k, d),
                    RowMatrix<Scalar>(heads.kv_heads * n_k, d_v)};
  for (Index h = 0; h < heads.q_heads; ++h) {
    const auto one = make_llm_like_workload<Scalar>({n_q, n_k, d, d_v}, seed + static_cast<std::uint64_t>(h));
    w.q.middleRows(h * n_q, n_q) = one.q;
    if (h < heads.kv_heads) {
      // Same-length tokens for the keys (n_k rows) from their own draw.
      const auto kv =
          make_llm_like_workload<Scalar>({n_k, n_k, d, d_v}, 1000 + seed + static_cast<std::uint64_t>(h));
      w.k.middleRows(h * n_k, n_k) = kv.k;
      w.v.middleRows(h * n_k, n_k) = kv.v;
    }
  }
  return w;
}

/// The oracle and the bounds of one problem, for every query row (stacked).
template <typename Scalar>
struct Expected {
  AttentionResult<Scalar> exact;  // the long-double oracle, rounded to Scalar
  Bound flash;                    // the kernel's worst-case bound per row
  Eigen::VectorXd lambda;         // Λ_i = a_i + log n_k
  double max_v = 0;
};

template <typename Scalar>
Expected<Scalar> expected(const Stacked<Scalar>& w, HeadLayout heads, const AttentionOptions& opt) {
  const Index n_q = w.q.rows() / heads.q_heads, n_k = w.k.rows() / heads.kv_heads, d = w.q.cols();
  const double scale = opt.scale.value_or(1.0 / std::sqrt(as_double(d)));
  const MaskLayout layout = resolve_mask(opt.mask, n_q, n_k);
  const test::NaiveMask nm{opt.mask.kind, layout.offset(), opt.mask.window, opt.mask.sinks};
  Expected<Scalar> e{{RowMatrix<Scalar>(w.q.rows(), w.v.cols()), Vector<Scalar>(w.q.rows())},
                     {Eigen::VectorXd(w.q.rows()), Eigen::VectorXd(w.q.rows())},
                     Eigen::VectorXd(w.q.rows()),
                     static_cast<double>(w.v.cwiseAbs().maxCoeff())};
  for (Index h = 0; h < heads.q_heads; ++h) {
    const Index g = heads.kv_head(h);
    const RowMatrix<Scalar> qh = w.q.middleRows(h * n_q, n_q), kh = w.k.middleRows(g * n_k, n_k),
                            vh = w.v.middleRows(g * n_k, n_k);
    const test::NaiveResult naive = test::naive_attention(qh, kh, vh, nm, scale);
    e.exact.output.middleRows(h * n_q, n_q) = naive.output.template cast<Scalar>();
    e.exact.lse.segment(h * n_q, n_q) = naive.lse.template cast<Scalar>();
    const Bound b = error_bound(qh, kh, vh, scale, 128, BoundKind::worst_case);
    e.flash.output.segment(h * n_q, n_q) = b.output;
    e.flash.lse.segment(h * n_q, n_q) = b.lse;
    const RowMatrix<double> abs_logits =
        scale * qh.template cast<double>().cwiseAbs() * kh.template cast<double>().cwiseAbs().transpose();
    for (Index i = 0; i < n_q; ++i)
      e.lambda(h * n_q + i) = abs_logits.row(i).maxCoeff() + std::log(as_double(n_k));
  }
  return e;
}

/// Rank `rank`'s rows of stacked per-row values.
Eigen::VectorXd shard_vector(const Eigen::VectorXd& all, Index heads, Sharding s, int ranks, int rank) {
  return extract_shard(all, heads, s, ranks, rank).col(0);
}

template <typename Scalar>
AttentionResult<Scalar> shard_result(const AttentionResult<Scalar>& all, Index heads, Sharding s, int ranks,
                                     int rank) {
  return {extract_shard(all.output, heads, s, ranks, rank),
          extract_shard(all.lse, heads, s, ranks, rank).col(0)};
}

Bound shard_bound(const Bound& all, Index heads, Sharding s, int ranks, int rank) {
  return {shard_vector(all.output, heads, s, ranks, rank), shard_vector(all.lse, heads, s, ranks, rank)};
}

Bound sum(const Bound& a, const Bound& b) {
  return {a.output + b.output, a.lse + b.lse};
}

/// Largest |got - exact| / max|v| over the rows that see a key.
template <typename Scalar>
double relative_error(const AttentionResult<Scalar>& got, const AttentionResult<Scalar>& exact,
                      double max_v) {
  double worst = 0;
  for (Index i = 0; i < got.output.rows(); ++i)
    if (std::isfinite(static_cast<double>(exact.lse(i))))
      worst = std::max(worst, (got.output.row(i) - exact.output.row(i)).cwiseAbs().maxCoeff() / max_v);
  return static_cast<double>(worst);
}

struct Case {
  Index n_q, n_k;
  Mask mask;
};

std::vector<Case> cases(int P) {
  std::vector<Case> out;
  const Index self[] = {Index(P), 7, 50, 131};
  for (const Index n : self) {
    if (n < P) continue;
    for (const Mask& m :
         {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal().with_window(9).with_sinks(2),
          Mask::strict_causal(1).with_window(5), Mask::none().with_window(6).with_sinks(1)})
      if (m.sinks <= n) out.push_back({n, n, m});
  }
  // Queries that are the last n_q tokens of a longer key sequence (chunked
  // prefill against a sharded prefix), and explicit offsets.
  for (const Mask& m : {Mask::causal(), Mask::causal(10), Mask::strict_causal(26), Mask::none(),
                        Mask::causal(4).with_window(7).with_sinks(3)})
    out.push_back({20, 45, m});
  return out;
}

TYPED_TEST(RingAttentionTest, EveryRanksRowsMatchTheOracleAndOneProcess) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const Index d = 16, d_v = 12;
  std::uint64_t seed = 31000;
  double worst_oracle = 0, worst_flash = 0;
  int checked = 0;
  for (const HeadLayout heads : {HeadLayout{1, 1}, HeadLayout{4, 2}, HeadLayout{3, 1}})
    for (const Case& c : cases(P))
      for (const Sharding sharding : {Sharding::contiguous, Sharding::zigzag}) {
        const auto w = stacked<Scalar>(heads, c.n_q, c.n_k, d, d_v, ++seed);
        const AttentionOptions opt{c.mask, {}};
        const RowMatrix<Scalar> qs = extract_shard(w.q, heads.q_heads, sharding, P, rank),
                                ks = extract_shard(w.k, heads.kv_heads, sharding, P, rank),
                                vs = extract_shard(w.v, heads.kv_heads, sharding, P, rank);
        // Small tiles, so shards span several tiles and crossing tiles occur.
        const RingConfig config{sharding, FlashConfig{1, 16, 16}};
        const AttentionResult<Scalar> ring =
            ring_attention_heads(MPI_COMM_WORLD, qs, ks, vs, heads, opt, config);

        const Expected<Scalar> e = expected(w, heads, opt);
        const AttentionResult<Scalar> flash =
            flash_attention_heads(w.q, w.k, w.v, heads, opt, FlashConfig{1});
        const Index pieces = sharding == Sharding::zigzag ? 2 : 1;
        const Bound mine_flash = shard_bound(e.flash, heads.q_heads, sharding, P, rank);
        const Bound ring_bound = merged_bound<Scalar>(
            mine_flash, shard_vector(e.lambda, heads.q_heads, sharding, P, rank), e.max_v, pieces * P - 1);
        const auto exact = shard_result(e.exact, heads.q_heads, sharding, P, rank);
        const auto one = shard_result(flash, heads.q_heads, sharding, P, rank);
        const char* kind = to_string(c.mask.kind);
        EXPECT_TRUE(within_bound(ring, exact, ring_bound))
            << "vs oracle: " << kind << " n_q " << c.n_q << " n_k " << c.n_k << " heads " << heads.q_heads
            << "/" << heads.kv_heads << " " << to_string(sharding) << " P " << P << " rank " << rank;
        EXPECT_TRUE(within_bound(ring, one, sum(ring_bound, mine_flash)))
            << "vs one process: " << kind << " n_q " << c.n_q << " n_k " << c.n_k << " heads "
            << heads.q_heads << "/" << heads.kv_heads << " " << to_string(sharding) << " P " << P << " rank "
            << rank;
        worst_oracle = std::max(worst_oracle, relative_error(ring, exact, e.max_v));
        worst_flash = std::max(worst_flash, relative_error(ring, one, e.max_v));
        ++checked;
      }
  EXPECT_GT(checked, 100);
  if (rank == 0)
    std::printf(
        "  P = %d, %s: max |ring - oracle| = %.2g max|v|, max |ring - one process| = %.2g max|v| (%d "
        "cases)\n",
        P, sizeof(Scalar) == 4 ? "float" : "double", worst_oracle, worst_flash, checked);
}

// One rank: the ring is one kernel call with the same arguments as the
// single-process call, so the same bits.
TYPED_TEST(RingAttentionTest, OneRankIsBitForBitOneProcess) {
  using Scalar = TypeParam;
  if (test::world_size() != 1) GTEST_SKIP() << "P = 1 only";
  for (const Sharding sharding : {Sharding::contiguous, Sharding::zigzag})
    for (const Mask& m :
         {Mask::none(), Mask::causal(), Mask::strict_causal().with_window(20).with_sinks(3)}) {
      const HeadLayout heads{4, 2};
      const auto w = stacked<Scalar>(heads, 300, 300, 32, 32, 32000);
      const auto ring =
          ring_attention_heads(MPI_COMM_WORLD, w.q, w.k, w.v, heads, {m}, {sharding, FlashConfig{1}});
      const auto one = flash_attention_heads(w.q, w.k, w.v, heads, {m}, FlashConfig{1});
      EXPECT_TRUE(matrices_near(ring.output, one.output, 0.0)) << to_string(m.kind);
      EXPECT_TRUE(matrices_near(ring.lse, one.lse, 0.0)) << to_string(m.kind);
    }
}

// The work counters: every visible (query, key) pair attended exactly once
// over the ranks; causal contiguous skips the shards after a rank's queries;
// zigzag gives every rank the same causal work when 2P divides n.
TYPED_TEST(RingAttentionTest, StatisticsCountTheWorkAndTheZigzagBalancesIt) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const Index n = 2 * P * 24, d = 8;
  const HeadLayout heads{2, 1};
  const auto w = stacked<Scalar>(heads, n, n, d, d, 33000);
  for (const Sharding sharding : {Sharding::contiguous, Sharding::zigzag}) {
    const RowMatrix<Scalar> qs = extract_shard(w.q, 2, sharding, P, rank),
                            ks = extract_shard(w.k, 1, sharding, P, rank),
                            vs = extract_shard(w.v, 1, sharding, P, rank);
    RingStats st;
    ring_attention_heads(MPI_COMM_WORLD, qs, ks, vs, heads, {Mask::causal()}, {sharding, FlashConfig{1}},
                         &st);
    double total = 0, lo = 0, hi = 0;
    MPI_Allreduce(&st.visible_pairs, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&st.visible_pairs, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&st.visible_pairs, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    const double causal_pairs = 2.0 * as_double(n) * as_double(n + 1) / 2;  // two query heads
    EXPECT_EQ(total, causal_pairs) << to_string(sharding);
    EXPECT_EQ(st.steps, P);
    const double shard_bytes = as_double(n / P) * as_double(2 * d) * sizeof(Scalar);
    EXPECT_EQ(st.bytes_sent, (P - 1) * shard_bytes);
    EXPECT_EQ(st.bytes_received, (P - 1) * shard_bytes);
    if (sharding == Sharding::contiguous) {
      // Rank r's queries see shards 0 .. r: the P - 1 - r later ones are skipped.
      EXPECT_EQ(st.skipped_calls, P - 1 - rank);
      EXPECT_EQ(st.partial_calls, rank + 1);
      // Rank r does (r + 1/2) shard-pairs of work: the last one (2P - 1) / P
      // times the mean.
      const double c = as_double(n / P);
      EXPECT_EQ(st.visible_pairs, 2.0 * (rank * c * c + c * (c + 1) / 2));
    } else {
      EXPECT_EQ(lo, hi) << "zigzag: every rank the same causal work";
    }
  }
}

// Bad input: the same std::invalid_argument on every rank, before any ring
// message, and the communicator stays usable afterwards.
TYPED_TEST(RingAttentionTest, BadInputThrowsTheSameErrorOnEveryRank) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const Index n = 23;
  const auto w = stacked<Scalar>(HeadLayout{1, 1}, n, n, 8, 8, 34000);
  const Sharding z = Sharding::zigzag;
  const RowMatrix<Scalar> qs = extract_shard(w.q, 1, z, P, rank), ks = extract_shard(w.k, 1, z, P, rank),
                          vs = extract_shard(w.v, 1, z, P, rank);
  const AttentionOptions causal{Mask::causal()};
  const auto call = [&](const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
                        const AttentionOptions& opt, const RingConfig& config) {
    return ring_attention(MPI_COMM_WORLD, q, k, v, opt, config);
  };

  // An option that is bad on every rank: the same mask message everywhere.
  EXPECT_TRUE(throws_everywhere([&] { call(qs, ks, vs, {Mask::causal(1)}, {z}); },
                                {"ring_attention", "offset 1", "n_q = 23"}));
  // A bad argument on ONE rank: every rank reports it, naming the rank.
  RingConfig bad_threads{z};
  if (rank == P - 1) bad_threads.flash.threads = -1;
  EXPECT_TRUE(
      throws_everywhere([&] { call(qs, ks, vs, causal, bad_threads); }, {"ring_attention", "threads = -1"}));
  if (P > 1) {
    // Shards that do not fit together: the last rank holds two extra keys.
    RowMatrix<Scalar> k2(ks.rows() + 2, ks.cols()), v2(vs.rows() + 2, vs.cols());
    k2 << ks, ks.topRows(2);
    v2 << vs, vs.topRows(2);
    const bool last = rank == P - 1;
    EXPECT_TRUE(throws_everywhere([&] { call(qs, last ? k2 : ks, last ? v2 : vs, causal, {z}); },
                                  {"ring_attention", "K/V shards do not fit together"}));
    // The same rows, sharded contiguously on one rank and zigzag on the others.
    EXPECT_TRUE(throws_everywhere([&] { call(qs, ks, vs, causal, {last ? Sharding::contiguous : z}); },
                                  {"ring_attention", "ranks disagree on the sharding"}));
    // Ranks that disagree on d, on the mask, on its window, on the scale.
    const RowMatrix<Scalar> qw = RowMatrix<Scalar>::Ones(qs.rows(), 9),
                            kw = RowMatrix<Scalar>::Ones(ks.rows(), 9);
    EXPECT_TRUE(throws_everywhere([&] { call(last ? qw : qs, last ? kw : ks, vs, causal, {z}); },
                                  {"ranks disagree on d (columns of Q)", "rank 0 has 8", "has 9"}));
    EXPECT_TRUE(throws_everywhere([&] { call(qs, ks, vs, {last ? Mask::none() : Mask::causal()}, {z}); },
                                  {"ranks disagree on the mask kind"}));
    EXPECT_TRUE(throws_everywhere(
        [&] { call(qs, ks, vs, {last ? Mask::causal().with_window(4) : Mask::causal()}, {z}); },
        {"ranks disagree on the mask window", "unset", "4"}));
    EXPECT_TRUE(throws_everywhere(
        [&] {
          call(qs, ks, vs, {Mask::causal(), last ? 0.5 : 0.25}, {z});
        },
        {"ranks disagree on the scale", "0.25", "0.5"}));
    // More ranks than tokens: n = P - 1, one token on each rank but the last.
    const RowMatrix<Scalar> one_q = w.q.topRows(rank < P - 1 ? 1 : 0),
                            one_k = w.k.topRows(rank < P - 1 ? 1 : 0),
                            one_v = w.v.topRows(rank < P - 1 ? 1 : 0);
    EXPECT_TRUE(throws_everywhere([&] { call(one_q, one_k, one_v, {}, {z}); },
                                  {"cannot be sharded over P = ", "use fewer ranks"}));
  }
  // Nothing is left in flight: a correct call afterwards succeeds.
  const auto ok = call(qs, ks, vs, causal, {z});
  const auto one = flash_attention(w.q, w.k, w.v, causal, FlashConfig{1});
  EXPECT_TRUE(matrices_near(ok.output, extract_shard(one.output, 1, z, P, rank), 1e-4));
}

}  // namespace
}  // namespace attnkit
