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

TEST(MaskTest, WindowsAndSinksFollowTheDefinition) {
  // Definition (docs/design.md): with prefix end e(i), query i sees key j iff
  // j < e(i) and (j >= e(i) - w or j < s).
  for (Index n_q = 1; n_q <= 5; ++n_q)
    for (Index n_k = 1; n_k <= 9; ++n_k)
      for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal})
        for (Index w = 1; w <= n_k + 1; ++w)
          for (Index s = 0; s <= n_k; ++s) {
            const Index max_offset =
                kind == MaskKind::none ? 0 : (kind == MaskKind::causal ? n_k - n_q : n_k - n_q + 1);
            for (Index offset = 0; offset <= max_offset; ++offset) {
              const Mask base = kind == MaskKind::none ? Mask::none() : Mask{kind, offset};
              const MaskLayout m = resolve_mask(base.with_window(w).with_sinks(s), n_q, n_k);
              Index prev_end = 0, prev_begin = 0, prev_sink = 0;
              for (Index i = 0; i < n_q; ++i) {
                const Index p = kind == MaskKind::none ? n_k - n_q + i : offset + i;
                const Index e = std::clamp<Index>(
                    kind == MaskKind::none ? n_k : (kind == MaskKind::causal ? p + 1 : p), 0, n_k);
                EXPECT_EQ(m.query_position(i), p);
                Index count = 0;
                for (Index j = 0; j < n_k; ++j) {
                  const bool expected = j < e && (j >= e - w || j < s);
                  EXPECT_EQ(m.visible(i, j), expected) << i << ' ' << j << " w " << w << " s " << s;
                  // The two-range form every kernel uses.
                  const bool ranges = j < m.sink_end(i) || (j >= m.key_begin(i) && j < m.key_end(i));
                  EXPECT_EQ(ranges, expected) << i << ' ' << j << " w " << w << " s " << s;
                  count += expected ? 1 : 0;
                }
                EXPECT_EQ(m.visible_count(i), count);
                // Non-decreasing in i: what lets the kernels skip tiles.
                EXPECT_GE(m.key_end(i), prev_end);
                EXPECT_GE(m.key_begin(i), prev_begin);
                EXPECT_GE(m.sink_end(i), prev_sink);
                EXPECT_LE(m.sink_end(i), m.key_begin(i));
                prev_end = m.key_end(i);
                prev_begin = m.key_begin(i);
                prev_sink = m.sink_end(i);
              }
            }
          }
}

TEST(MaskTest, BadWindowsAndSinksThrow) {
  EXPECT_TRUE(
      throws_invalid_argument([] { resolve_mask(Mask::causal().with_window(0), 2, 4); }, {"window = 0"}));
  EXPECT_TRUE(
      throws_invalid_argument([] { resolve_mask(Mask::none().with_window(-3), 2, 4); }, {"window = -3"}));
  EXPECT_TRUE(throws_invalid_argument([] { resolve_mask(Mask::causal().with_sinks(5), 2, 4); },
                                      {"sinks = 5", "[0, 4]"}));
  EXPECT_TRUE(
      throws_invalid_argument([] { resolve_mask(Mask::causal().with_sinks(-1), 2, 4); }, {"sinks = -1"}));
  EXPECT_NO_THROW(resolve_mask(Mask::causal().with_window(1).with_sinks(4), 2, 4));
}

TEST(MaskTest, KindNamesParseBack) {
  for (const MaskKind k : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal})
    EXPECT_EQ(parse_mask_kind(to_string(k)), k);
  EXPECT_FALSE(parse_mask_kind("strict_causal").has_value());
  EXPECT_FALSE(parse_mask_kind("").has_value());
}

}  // namespace
}  // namespace attnkit
