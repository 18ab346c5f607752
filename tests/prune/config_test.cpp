// Tests of attnkit/prune/config.hpp: the names users script against
// (attnkit-eval's --weights, --select, --compensation, --rope-pairs) round-trip
// exactly, nothing else parses, and configurations print as
// weights/selector/compensation[/rope-...][/scale].

#include "attnkit/prune/config.hpp"

#include <cstddef>
#include <string>

#include <gtest/gtest.h>

namespace attnkit {
namespace {

template <typename E, std::size_t N>
std::string joined(const E (&values)[N]) {
  std::string s;
  for (std::size_t i = 0; i < N; ++i)
    s += (i ? "|" : "") + std::string(to_string(values[i]));
  return s;
}

TEST(PruneNames, RoundTripExactlyTheCliNames) {
  const PruneWeights weights[] = {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention};
  const PruneSelector selectors[] = {PruneSelector::topk,
                                     PruneSelector::greedy_remove,
                                     PruneSelector::greedy_remain,
                                     PruneSelector::greedy_remove_literal,
                                     PruneSelector::greedy_remain_literal,
                                     PruneSelector::swap,
                                     PruneSelector::residual,
                                     PruneSelector::optimal};
  const PruneCompensation comps[] = {PruneCompensation::none, PruneCompensation::mean,
                                     PruneCompensation::regression};
  const RotaryLayout layouts[] = {RotaryLayout::interleaved, RotaryLayout::half};
  // The lists users script against (issue 5).
  EXPECT_EQ(joined(weights), "gram|centered|attention");
  EXPECT_EQ(
      joined(selectors),
      "topk|greedy-remove|greedy-remain|greedy-remove-literal|greedy-remain-literal|swap|residual|optimal");
  EXPECT_EQ(joined(comps), "none|mean|regression");
  EXPECT_EQ(joined(layouts), "interleaved|half");
  EXPECT_EQ(joined(weights), prune_weights_names());
  EXPECT_EQ(joined(selectors), prune_selector_names());
  EXPECT_EQ(joined(comps), prune_compensation_names());
  EXPECT_EQ(joined(layouts), rope_pairs_names());
  for (const auto w : weights)
    EXPECT_EQ(parse_prune_weights(to_string(w)), w);
  for (const auto s : selectors)
    EXPECT_EQ(parse_prune_selector(to_string(s)), s);
  for (const auto c : comps)
    EXPECT_EQ(parse_prune_compensation(to_string(c)), c);
  for (const auto l : layouts)
    EXPECT_EQ(parse_rope_pairs(to_string(l)), l);
  for (const char* bad : {"", "Gram", "gram ", "top-k", "greedy_remove", "think", "interleave", "mean,"}) {
    EXPECT_FALSE(parse_prune_weights(bad)) << bad;
    EXPECT_FALSE(parse_prune_selector(bad)) << bad;
    EXPECT_FALSE(parse_prune_compensation(bad)) << bad;
    EXPECT_FALSE(parse_rope_pairs(bad)) << bad;
  }
  EXPECT_EQ(to_string(PruneConfig{}), "gram/topk/none");
  EXPECT_EQ(to_string(PruneConfig{PruneWeights::centered, PruneSelector::swap, PruneCompensation::regression,
                                  RotaryLayout::half, true}),
            "centered/swap/regression/rope-half/scale");
}

}  // namespace
}  // namespace attnkit
