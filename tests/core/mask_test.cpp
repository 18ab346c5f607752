// Tests of attnkit/core/mask.hpp: the layout rules, against their definitions.

#include "attnkit/core/mask.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::throws_invalid_argument;

TEST(MaskTest, KeyEndFollowsTheDefinitionForEveryValidOffset) {
  for (Index n_q = 1; n_q <= 6; ++n_q)
    for (Index n_k = 1; n_k <= 8; ++n_k) {
      const MaskLayout none = resolve_mask(Mask::none(), n_q, n_k);
      for (Index i = 0; i < n_q; ++i)
        EXPECT_EQ(none.key_end(i), n_k);
      for (Index offset = 0; offset <= n_k - n_q; ++offset) {
        const MaskLayout c = resolve_mask(Mask::causal(offset), n_q, n_k);
        for (Index i = 0; i < n_q; ++i)
          for (Index j = 0; j < n_k; ++j)
            EXPECT_EQ(c.visible(i, j), j <= offset + i);
      }
      for (Index offset = 0; offset <= n_k - n_q + 1; ++offset) {
        const MaskLayout s = resolve_mask(Mask::strict_causal(offset), n_q, n_k);
        for (Index i = 0; i < n_q; ++i)
          for (Index j = 0; j < n_k; ++j)
            EXPECT_EQ(s.visible(i, j), j < offset + i);
      }
    }
}

TEST(MaskTest, DefaultOffsetIsNkMinusNq) {
  EXPECT_EQ(resolve_mask(Mask::causal(), 3, 10).offset(), 7);
  EXPECT_EQ(resolve_mask(Mask::strict_causal(), 10, 10).offset(), 0);
  // Decode: one query over a cache sees all of it (causal) or all but its own
  // key (strict).
  EXPECT_EQ(resolve_mask(Mask::causal(), 1, 100).key_end(0), 100);
  EXPECT_EQ(resolve_mask(Mask::strict_causal(), 1, 100).key_end(0), 99);
  // Strict with the next token's query, its key not yet appended.
  EXPECT_EQ(resolve_mask(Mask::strict_causal(100), 1, 100).key_end(0), 100);
}

TEST(MaskTest, InvalidLayoutsThrow) {
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::causal(-1), 2, 4); }, {"offset -1", "causal"}));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::causal(3), 2, 4); }, {"offset 3", "<= 2"}));
  EXPECT_TRUE(
      throws_invalid_argument([] { resolve_mask(Mask::strict_causal(4), 2, 4); }, {"offset 4", "<= 3"}));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::causal(), 5, 4); }, {"n_q = 5", "n_k = 4"}));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::none(), 0, 4); }, {"n_q = 0"}));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask{MaskKind::none, 0}, 2, 4); }, {"none"}));
  // Strict causal admits one more query than keys (the next token's), at offset 0.
  EXPECT_NO_THROW(resolve_mask(Mask::strict_causal(0), 5, 4));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::strict_causal(), 5, 4); }, {"offset -1"}));
}

}  // namespace
}  // namespace attnkit
