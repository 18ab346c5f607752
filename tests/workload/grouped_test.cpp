// Tests of attnkit/workload/grouped.hpp: key/value heads are the generators'
// workloads, each group's first query head their queries, the other heads
// the same queries turned pair by pair (norms and per-pair energies kept,
// directions changed), deterministic; bad head counts throw.

#include "attnkit/workload/grouped.hpp"

#include <cmath>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using test::throws_invalid_argument;

TEST(GroupedWorkload, GroupsShareTheirKeyHeadAndTurnTheirQueries) {
  const Index n = 50, d = 16;
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like}) {
    const auto g = make_grouped_workload<double>(kind, {n, n, d, 8}, 6, 2, 40);
    ASSERT_EQ(g.stacked.q.rows(), 6 * n);
    ASSERT_EQ(g.stacked.k.rows(), 2 * n);
    for (Index kv = 0; kv < 2; ++kv) {
      const Workload<double> w =
          make_workload<double>(kind, {n, n, d, 8}, 40 + static_cast<std::uint64_t>(kv));
      EXPECT_EQ(RowMatrix<double>(g.stacked.k.middleRows(kv * n, n)), w.k);
      EXPECT_EQ(RowMatrix<double>(g.stacked.v.middleRows(kv * n, n)), w.v);
      EXPECT_EQ(RowMatrix<double>(g.stacked.q.middleRows(kv * 3 * n, n)), w.q);
      const auto [c1, c2] = kind == WorkloadKind::llm_like ? rotary_pair_dims(3, d, RotaryLayout::half)
                                                           : std::pair<Index, Index>{6, 7};
      for (Index r = 1; r < 3; ++r) {
        const RowMatrix<double> qr = g.stacked.q.middleRows((kv * 3 + r) * n, n);
        // A turn within pair p keeps its energy per row (to rounding: two
        // products and a sum per entry, 4 eps relative), but not the entries.
        for (Index i = 0; i < n; ++i) {
          const double before = w.q(i, c1) * w.q(i, c1) + w.q(i, c2) * w.q(i, c2);
          const double after = qr(i, c1) * qr(i, c1) + qr(i, c2) * qr(i, c2);
          EXPECT_NEAR(after, before, 4 * test::eps<double>() * before + 1e-300);
        }
        EXPECT_GT((qr - w.q).cwiseAbs().maxCoeff(), 1e-3) << "head " << r << " equals the group's first";
      }
    }
    // Deterministic.
    EXPECT_EQ(make_grouped_workload<double>(kind, {n, n, d, 8}, 6, 2, 40).stacked.q, g.stacked.q);
  }
}

TEST(GroupedWorkload, BadHeadCountsThrow) {
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        make_grouped_workload<float>(WorkloadKind::iid, {4, 4, 4, 4}, 4, 3, 1);
      },
      {"q_heads = 4", "kv_heads = 3"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        make_grouped_workload<float>(WorkloadKind::iid, {4, 4, 3, 4}, 2, 1, 1);
      },
      {"d = 3", "even"}));
  EXPECT_NO_THROW(make_grouped_workload<float>(WorkloadKind::iid, {4, 4, 3, 4}, 2, 2, 1));
}

}  // namespace
}  // namespace attnkit
