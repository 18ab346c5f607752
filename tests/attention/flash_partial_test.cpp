// Tests of the partial-result entry points of attnkit/attention/flash.hpp
// (flash_attention_partial, KeySet): each partial against the long-double
// oracle on exactly its keys, and partials over random partitions of the
// keys merged (attnkit/attention/merge.hpp) against the whole.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::LD;
using test::matrices_near;
using test::NaiveMask;
using test::throws_invalid_argument;
using namespace test::flash_bounds;

template <typename Scalar>
class FlashPartialTest : public ::testing::Test {};
TYPED_TEST_SUITE(FlashPartialTest, test::Scalars);

/// A random partition of positions [0, n) into `parts` key sets, each a
/// sorted list of disjoint ranges (cut points uniformly at random, pieces
/// dealt to the sets at random).
std::vector<std::vector<KeyRange>> random_partition(Index n, int parts, std::uint64_t seed) {
  detail::Random rng(seed);
  std::vector<Index> cuts = {0, n};
  for (int c = 0; c < 3 * parts; ++c)
    cuts.push_back(rng.index(n + 1));
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::vector<KeyRange>> sets(static_cast<std::size_t>(parts));
  for (std::size_t c = 0; c + 1 < cuts.size(); ++c)
    if (cuts[c] < cuts[c + 1])
      sets[static_cast<std::size_t>(rng.index(parts))].push_back({cuts[c], cuts[c + 1]});
  return sets;
}

bool in_ranges(const std::vector<KeyRange>& ranges, Index j) {
  for (const KeyRange& r : ranges)
    if (j >= r.begin && j < r.end) return true;
  return false;
}

TYPED_TEST(FlashPartialTest, EachPartialMatchesTheOracleOnItsKeysAndTheirMergeIsTheWhole) {
  using Scalar = TypeParam;
  std::uint64_t seed = 7000;
  int cases = 0;
  for (const Index n_q : {1, 4, 70})
    for (const Index n_k : {40, 300}) {
      if (n_q > n_k) continue;
      const auto w = make_llm_like_workload<Scalar>({n_q, n_k, 16, 12}, ++seed);
      const double scale = 0.25, max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
      const Bound bound = error_bound(w.q, w.k, w.v, scale, 128, BoundKind::worst_case);
      for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(),
                              Mask::causal().with_window(25).with_sinks(2)})
        for (const int parts : {1, 2, 5})
          for (const int threads : {1, 2}) {
            const AttentionOptions opt{mask, {}};
            const auto sets = random_partition(n_k, parts, ++seed);
            const MaskLayout layout = resolve_mask(mask, n_q, n_k);
            NaiveMask nm{mask.kind, layout.offset(), mask.window, mask.sinks};
            AttentionResult<Scalar> merged{
                RowMatrix<Scalar>::Zero(n_q, 12),
                Vector<Scalar>::Constant(n_q, -std::numeric_limits<Scalar>::infinity())};
            for (const auto& set : sets) {
              KeySet ks;
              ks.ranges = set;
              if (set.empty())
                ks.ranges = std::vector<KeyRange>{KeyRange{0, 0}};  // an empty subset, spelled out
              const auto part = flash_attention_partial(w.q, w.k, w.v, ks, opt, FlashConfig{threads, 16, 16});
              // The oracle on exactly this subset of the visible keys.
              const RowMatrix<LD> vl = w.v.template cast<LD>();
              const auto naive = test::naive_attention_with(
                  n_q, n_k, vl,
                  [&](Index i, Index j) {
                    LD dot = 0;
                    for (Index c = 0; c < 16; ++c)
                      dot += static_cast<LD>(w.q(i, c)) * static_cast<LD>(w.k(j, c));
                    return static_cast<LD>(scale) * dot;
                  },
                  [&](Index i, Index j) { return nm.visible(i, j, n_q, n_k) && in_ranges(set, j); });
              for (Index i = 0; i < n_q; ++i) {
                if (std::isinf(naive.lse(i))) {
                  ASSERT_EQ(part.lse(i), -std::numeric_limits<Scalar>::infinity()) << "row " << i;
                  ASSERT_TRUE((part.output.row(i).array() == 0).all());
                  continue;
                }
                for (Index c = 0; c < 12; ++c)
                  ASSERT_LE(std::fabs(static_cast<double>(part.output(i, c)) -
                                      static_cast<double>(naive.output(i, c))),
                            bound.output(i))
                      << "row " << i << " col " << c << " parts " << parts;
              }
              merge_attention_into(merged, part);
            }
            // The merge of P partials: each within `bound` of its own exact
            // value, and each merge step rounds its two weights, their sum,
            // the quotients and the combination (5 roundings of at most
            // max|v| each): |merged - exact| <= bound + 5 P u max|v|.
            const auto whole = reference_attention(w.q, w.k, w.v, opt);
            Bound merged_bound = bound;
            merged_bound.output.array() += 5.0 * parts * 0.5 * eps<Scalar>() * max_v;
            merged_bound.lse.array() += 5.0 * parts * 0.5 * eps<Scalar>();
            EXPECT_TRUE(within_bound(merged, whole, merged_bound))
                << to_string(mask.kind) << " parts " << parts;
            ++cases;
          }
    }
  EXPECT_GT(cases, 100);
}

// Keys that are a slice of a longer sequence (first_position, sequence_length)
// give exactly the partial over that range of the whole key matrix: the same
// tiles, so the same bits.
TYPED_TEST(FlashPartialTest, AKeySliceOfALongerSequenceIsTheRangeOfTheWhole) {
  using Scalar = TypeParam;
  const Index n = 500;
  const auto w = make_llm_like_workload<Scalar>({n, n, 32, 32}, 7100);
  for (const Mask mask :
       {Mask::causal(), Mask::strict_causal(), Mask::causal().with_window(100).with_sinks(4)})
    for (const Index nq : {Index(3), n})
      for (const auto& [a, b] : {std::pair<Index, Index>{0, 120}, {120, 500}, {3, 77}, {250, 251}}) {
        const RowMatrix<Scalar> q = w.q.bottomRows(nq);
        KeySet range;
        range.ranges = std::vector<KeyRange>{KeyRange{a, b}};
        const auto from_whole = flash_attention_partial(q, w.k, w.v, range, {mask}, FlashConfig{1});
        KeySet slice;
        slice.first_position = a;
        slice.sequence_length = n;
        const auto from_slice = flash_attention_partial(q, w.k.middleRows(a, b - a), w.v.middleRows(a, b - a),
                                                        slice, {mask}, FlashConfig{1});
        EXPECT_TRUE(matrices_near(from_slice.output, from_whole.output, 0.0))
            << a << ".." << b << " nq " << nq;
        for (Index i = 0; i < nq; ++i)
          EXPECT_TRUE(from_slice.lse(i) == from_whole.lse(i) ||
                      (std::isnan(from_slice.lse(i)) && std::isnan(from_whole.lse(i))));
      }
}

TYPED_TEST(FlashPartialTest, AnEmptyKeySetGivesZeroRowsAndMinusInfinity) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({20, 50, 8, 8}, 7200);
  KeySet none;
  none.ranges = std::vector<KeyRange>{KeyRange{10, 10}, KeyRange{30, 30}};
  for (const int threads : {1, 2}) {
    const auto r = flash_attention_partial(w.q, w.k, w.v, none, {Mask::causal()}, FlashConfig{threads});
    EXPECT_TRUE((r.output.array() == 0).all());
    EXPECT_TRUE((r.lse.array() == -std::numeric_limits<Scalar>::infinity()).all());
    // Keys after every query (causal): also nothing.
    KeySet later;
    later.ranges = std::vector<KeyRange>{KeyRange{45, 50}};
    const auto l =
        flash_attention_partial(w.q.topRows(3), w.k, w.v, later, {Mask::causal(0)}, FlashConfig{threads});
    EXPECT_TRUE((l.lse.array() == -std::numeric_limits<Scalar>::infinity()).all());
  }
}

TYPED_TEST(FlashPartialTest, BadKeySetsThrowNamingTheRange) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 10, 4, 4}, 7300);
  const auto call = [&](const KeySet& ks) { return flash_attention_partial(w.q, w.k, w.v, ks); };
  KeySet outside;
  outside.ranges = std::vector<KeyRange>{KeyRange{5, 11}};
  EXPECT_TRUE(throws_invalid_argument([&] { call(outside); }, {"key range 0", "[5, 11)", "[0, 10)"}));
  KeySet unsorted;
  unsorted.ranges = std::vector<KeyRange>{KeyRange{5, 8}, KeyRange{1, 3}};
  EXPECT_TRUE(throws_invalid_argument([&] { call(unsorted); }, {"key range 1", "sorted and disjoint"}));
  KeySet overlapping;
  overlapping.ranges = std::vector<KeyRange>{KeyRange{1, 5}, KeyRange{4, 8}};
  EXPECT_TRUE(throws_invalid_argument([&] { call(overlapping); }, {"key range 1"}));
  KeySet reversed;
  reversed.ranges = std::vector<KeyRange>{KeyRange{6, 2}};
  EXPECT_TRUE(throws_invalid_argument([&] { call(reversed); }, {"key range 0"}));
  KeySet negative;
  negative.first_position = -1;
  EXPECT_TRUE(throws_invalid_argument([&] { call(negative); }, {"first_position = -1"}));
  KeySet shifted;
  shifted.first_position = 5;
  shifted.ranges = std::vector<KeyRange>{KeyRange{2, 4}};
  EXPECT_TRUE(throws_invalid_argument([&] { call(shifted); }, {"key range 0", "[5, 15)"}));
  KeySet short_sequence;
  short_sequence.first_position = 5;
  short_sequence.sequence_length = 12;
  EXPECT_TRUE(throws_invalid_argument([&] { call(short_sequence); }, {"sequence_length = 12"}));
}

}  // namespace
}  // namespace attnkit
