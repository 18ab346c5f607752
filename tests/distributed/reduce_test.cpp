// Tests of attnkit/distributed/reduce.hpp, run on P = 1 .. 4 ranks: the
// packed merge is commutative bit for bit; allreduce_attention gives every
// rank the same bits, within the stated bound of the exact merge of the
// partials (computed in long double from the partials themselves) for any
// lse magnitudes, rows without keys and NaN rows; and within the kernel's
// bound plus the merge's of the long-double oracle for partials of real
// attention; sequential merges in rank order and in reverse order agree with
// it within twice the bound; bad input throws on every rank.

#include "attnkit/distributed/reduce.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/distributed/sharding.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "distributed/mpi_test_util.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::LD;
using test::merged_bound;
using test::MpiTest;
using test::throws_everywhere;
using namespace test::flash_bounds;

template <typename Scalar>
class ReduceTest : public MpiTest {};
TYPED_TEST_SUITE(ReduceTest, test::Scalars);

TYPED_TEST(ReduceTest, ThePackedMergeIsCommutativeBitForBit) {
  using Scalar = TypeParam;
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Index d_v = 5, width = d_v + 1;
  detail::Random rng(51000);
  int pairs = 0;
  for (int t = 0; t < 400; ++t) {
    RowMatrix<Scalar> a = rng.normal_matrix(1, width, 1.0).template cast<Scalar>(),
                      b = rng.normal_matrix(1, width, 1.0).template cast<Scalar>();
    switch (t % 5) {
      case 1:  // equal lse, different rows: the byte order decides
        b(0, 0) = a(0, 0);
        break;
      case 2:
        b(0, 0) = -inf;
        b.rightCols(d_v).setZero();
        break;
      case 3:  // far apart
        a(0, 0) = Scalar(1e4);
        break;
      case 4:
        a(0, 0) = b(0, 0) = -inf;
        a.rightCols(d_v).setZero();
        b.rightCols(d_v).setZero();
        break;
      default:
        break;
    }
    RowMatrix<Scalar> ab = b, ba = a;
    detail::merge_packed_rows(a.data(), ab.data(), 1, d_v);  // a into b
    detail::merge_packed_rows(b.data(), ba.data(), 1, d_v);  // b into a
    EXPECT_EQ(std::memcmp(ab.data(), ba.data(), sizeof(Scalar) * std::size_t(width)), 0) << "case " << t;
    ++pairs;
  }
  EXPECT_EQ(pairs, 400);
}

// Partials with arbitrary lse (rank r shifts its rows by r * shift), rows
// where some ranks have no key, and one NaN row: every rank receives the
// same bits, within the bound of the exact merge of these very partials.
TYPED_TEST(ReduceTest, AllreduceIsTheExactMergeWithinTheBoundOnEveryRank) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Index rows = 40, d_v = 7;
  const double u = unit_roundoff<Scalar>();
  for (const double shift : {0.0, 3.0, 30.0, 1e3}) {
    // Every rank draws every rank's partial from the same seeds.
    std::vector<AttentionResult<Scalar>> parts;
    for (int r = 0; r < P; ++r) {
      detail::Random rng(52000 + static_cast<std::uint64_t>(r));
      AttentionResult<Scalar> p{
          rng.normal_matrix(rows, d_v, 1.0).template cast<Scalar>(),
          (rng.normal_matrix(rows, 1, 2.0).col(0).array() + shift * r).template cast<Scalar>()};
      for (Index i = 0; i < rows; ++i)
        if ((i + r) % 4 == 0) {  // no key on this rank for this row
          p.lse(i) = -inf;
          p.output.row(i).setZero();
        }
      parts.push_back(p);
    }
    // A row made NaN by a NaN input (its output and lse, as the kernel makes it).
    parts[std::size_t(P - 1)].lse(rows - 1) = std::numeric_limits<Scalar>::quiet_NaN();
    parts[std::size_t(P - 1)].output.row(rows - 1).setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    AttentionResult<Scalar> got = parts[std::size_t(rank)];
    allreduce_attention(MPI_COMM_WORLD, got);
    EXPECT_TRUE(test::same_on_every_rank(got.output));
    EXPECT_TRUE(test::same_on_every_rank(got.lse));
    double max_v = 0, max_lse = 0;
    for (const auto& p : parts) {
      max_v = std::max(max_v, static_cast<double>(p.output.cwiseAbs().maxCoeff()));
      for (Index i = 0; i < rows - 1; ++i)
        if (std::isfinite(static_cast<double>(p.lse(i))))
          max_lse = std::max(max_lse, std::fabs(static_cast<double>(p.lse(i))));
    }
    const double lambda = max_lse + std::log(as_double(P)), D = as_double(P - 1);
    const double out_bound = D * u * max_v * (6 + (D - 1) * (lambda + 4));
    const double lse_bound = D * u * (lambda + 4);
    for (Index i = 0; i < rows - 1; ++i) {
      LD m = -std::numeric_limits<LD>::infinity();
      for (const auto& p : parts)
        m = std::max(m, static_cast<LD>(p.lse(i)));
      if (m == -std::numeric_limits<LD>::infinity()) {
        EXPECT_EQ(got.lse(i), -inf);
        EXPECT_TRUE((got.output.row(i).array() == 0).all());
        continue;
      }
      LD total = 0;
      std::vector<LD> o(static_cast<std::size_t>(d_v), 0);
      for (const auto& p : parts) {
        if (p.lse(i) == -inf) continue;
        const LD w = std::exp(static_cast<LD>(p.lse(i)) - m);
        total += w;
        for (Index c = 0; c < d_v; ++c)
          o[std::size_t(c)] += w * static_cast<LD>(p.output(i, c));
      }
      for (Index c = 0; c < d_v; ++c)
        EXPECT_LE(
            std::fabs(static_cast<double>(static_cast<LD>(got.output(i, c)) - o[std::size_t(c)] / total)),
            out_bound)
            << "row " << i << " col " << c << " shift " << shift;
      EXPECT_LE(std::fabs(static_cast<double>(static_cast<LD>(got.lse(i)) - (m + std::log(total)))),
                lse_bound)
          << "row " << i << " shift " << shift;
    }
    EXPECT_TRUE(std::isnan(got.lse(rows - 1)) && got.output.row(rows - 1).array().isNaN().all())
        << "a NaN partial makes its row NaN";
    // Sequential merges in rank order and in reverse: other brackets, the
    // same exact value, so within twice the bound of MPI's result.
    AttentionResult<Scalar> forward = parts[0], backward = parts[std::size_t(P - 1)];
    for (int r = 1; r < P; ++r) {
      merge_attention_into(forward, parts[std::size_t(r)]);
      merge_attention_into(backward, parts[std::size_t(P - 1 - r)]);
    }
    for (const auto* seq : {&forward, &backward})
      for (Index i = 0; i < rows - 1; ++i)
        if (std::isfinite(static_cast<double>(got.lse(i)))) {
          EXPECT_LE((seq->output.row(i) - got.output.row(i)).cwiseAbs().maxCoeff(), 2 * out_bound)
              << "row " << i;
          EXPECT_LE(std::fabs(static_cast<double>(seq->lse(i) - got.lse(i))), 2 * lse_bound) << "row " << i;
        }
  }
}

// Flash-decoding across processes: rank r attends the queries to its
// contiguous slice of the keys; the merged result is the attention over all
// keys, within the kernel's bound plus the merge's of the oracle.
TYPED_TEST(ReduceTest, PartialsOfRealAttentionMergeToTheWhole) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const Index n_q = 6, n_k = 203, d = 32;
  const auto w = make_llm_like_workload<Scalar>({n_q, n_k, d, d}, 53000);
  for (const Mask& mask : {Mask::none(), Mask::causal(), Mask::causal().with_window(40).with_sinks(4)}) {
    const TokenRange mine = shard_ranges(Sharding::contiguous, n_k, P, rank)[0];
    KeySet keys;
    keys.first_position = mine.begin;
    keys.sequence_length = n_k;
    AttentionResult<Scalar> got =
        flash_attention_partial(w.q, w.k.middleRows(mine.begin, mine.size()),
                                w.v.middleRows(mine.begin, mine.size()), keys, {mask}, FlashConfig{1});
    allreduce_attention(MPI_COMM_WORLD, got);
    const double scale = 1.0 / std::sqrt(as_double(d));
    const MaskLayout layout = resolve_mask(mask, n_q, n_k);
    const auto naive =
        test::naive_attention(w.q, w.k, w.v, {mask.kind, layout.offset(), mask.window, mask.sinks}, scale);
    const AttentionResult<Scalar> exact{naive.output.template cast<Scalar>(),
                                        naive.lse.template cast<Scalar>()};
    const Bound flash = error_bound(w.q, w.k, w.v, scale, 128, BoundKind::worst_case);
    const RowMatrix<double> abs_logits =
        scale * w.q.template cast<double>().cwiseAbs() * w.k.template cast<double>().cwiseAbs().transpose();
    Eigen::VectorXd lambda(n_q);
    for (Index i = 0; i < n_q; ++i)
      lambda(i) = abs_logits.row(i).maxCoeff() + std::log(as_double(n_k));
    const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
    EXPECT_TRUE(within_bound(got, exact, merged_bound<Scalar>(flash, lambda, max_v, P - 1)))
        << to_string(mask.kind);
  }
}

TYPED_TEST(ReduceTest, DisagreeingShapesThrowOnEveryRank) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  AttentionResult<Scalar> bad{RowMatrix<Scalar>::Zero(3, 4), Vector<Scalar>::Zero(2)};
  EXPECT_TRUE(throws_everywhere([&] { allreduce_attention(MPI_COMM_WORLD, bad); },
                                {"allreduce_attention", "lse has 2 entries"}));
  if (P > 1) {
    const Index rows = rank == P - 1 ? 4 : 3;
    AttentionResult<Scalar> r{RowMatrix<Scalar>::Zero(rows, 4), Vector<Scalar>::Zero(rows)};
    EXPECT_TRUE(throws_everywhere([&] { allreduce_attention(MPI_COMM_WORLD, r); },
                                  {"ranks disagree on the query rows", "rank 0 has 3", "has 4"}));
  }
}

}  // namespace
}  // namespace attnkit
