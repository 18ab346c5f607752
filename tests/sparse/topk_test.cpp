// Tests of attnkit/sparse/topk.hpp: against an oracle that computes every
// visible logit in long double, sorts them (ties: earlier key first), keeps
// the k best and runs the naive attention over exactly those keys. Rows
// whose k-th and (k+1)-th logits are closer than twice the logit error may
// legitimately keep another key; they are counted and must be rare. Also:
// k >= the visible keys is exact attention; NaN rows; bad k.

#include "attnkit/sparse/topk.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class TopkTest : public ::testing::Test {};
TYPED_TEST_SUITE(TopkTest, test::Scalars);

TYPED_TEST(TopkTest, KeepsTheKLargestVisibleLogitsAndAttendsExactlyOverThem) {
  using Scalar = TypeParam;
  const double u = 0.5 * eps<Scalar>();
  int ambiguous = 0, rows_checked = 0;
  std::uint64_t seed = 11000;
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like})
    for (const Index kk : {1, 7, 64})
      for (const Mask mask : {Mask::none(), Mask::causal(), Mask::causal().with_window(90).with_sinks(3)})
        for (const FlashConfig cfg : {FlashConfig{1, 16, 16}, FlashConfig{2}}) {
          const Index n_q = 70, n_k = 300, d = 16;
          const auto w = make_workload<Scalar>(kind, {n_q, n_k, d, 8}, ++seed);
          const AttentionOptions opt{mask, {}};
          const double scale = 0.25;
          const auto got = topk_attention_selection(w.q, w.k, w.v, {kk}, opt, cfg);
          const MaskLayout layout = resolve_mask(mask, n_q, n_k);
          const test::NaiveMask nm{mask.kind, layout.offset(), mask.window, mask.sinks};
          const RowMatrix<LD> ql = w.q.template cast<LD>(), kl = w.k.template cast<LD>(),
                              vl = w.v.template cast<LD>();
          const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
          for (Index i = 0; i < n_q; ++i) {
            std::vector<Index> visible;
            std::vector<LD> z(static_cast<std::size_t>(n_k));
            double a = 0;
            for (Index j = 0; j < n_k; ++j) {
              z[static_cast<std::size_t>(j)] = static_cast<LD>(scale) * ql.row(i).dot(kl.row(j));
              a = std::max(a, scale * static_cast<double>(
                                          (ql.row(i).cwiseAbs() * kl.row(j).cwiseAbs().transpose())(0)));
              if (nm.visible(i, j, n_q, n_k)) visible.push_back(j);
            }
            std::stable_sort(visible.begin(), visible.end(), [&](Index x, Index y) {
              return z[static_cast<std::size_t>(x)] > z[static_cast<std::size_t>(y)];
            });
            const std::size_t keep = std::min<std::size_t>(visible.size(), static_cast<std::size_t>(kk));
            // The kernel's logits are within (d + 3) u a of the exact ones: a
            // gap below twice that at the boundary makes the choice ambiguous.
            const double logit_error = (as_double(d) + 3) * u * a;
            if (keep < visible.size() &&
                static_cast<double>(z[static_cast<std::size_t>(visible[keep - 1])] -
                                    z[static_cast<std::size_t>(visible[keep])]) < 2 * logit_error) {
              ++ambiguous;
              continue;
            }
            std::vector<Index> kept(visible.begin(), visible.begin() + static_cast<std::ptrdiff_t>(keep));
            std::sort(kept.begin(), kept.end());
            for (std::size_t t = 0; t < kept.size(); ++t)
              ASSERT_EQ(got.keys(i, static_cast<Index>(t)), kept[t]) << "row " << i << " k " << kk;
            for (Index t = static_cast<Index>(kept.size()); t < got.keys.cols(); ++t)
              ASSERT_EQ(got.keys(i, t), -1);
            const auto naive = test::naive_attention_with(
                1, n_k, vl, [&](Index, Index j) { return z[static_cast<std::size_t>(j)]; },
                [&](Index, Index j) { return std::binary_search(kept.begin(), kept.end(), j); });
            // Over the kept keys the output has the fused kernel's bound
            // (flash_bounds.hpp, logit error (d + 3) u a, |z - max| <= 2 a).
            const auto bound = test::flash_bounds::error_bound_from_logit_errors<Scalar>(
                Eigen::VectorXd::Constant(1, logit_error), Eigen::VectorXd::Constant(1, 2 * a), max_v, kk,
                kk);
            for (Index c = 0; c < 8; ++c)
              ASSERT_LE(std::fabs(static_cast<double>(got.result.output(i, c)) -
                                  static_cast<double>(naive.output(0, c))),
                        bound.output(0))
                  << "row " << i << " col " << c;
            ++rows_checked;
          }
        }
  // Near-ties at the k-th key are rare in continuous random data.
  EXPECT_LT(ambiguous, rows_checked / 50) << ambiguous << " ambiguous rows of " << rows_checked + ambiguous;
  EXPECT_GT(rows_checked, 3700);  // of 3 x 3 x 3 x 2 x 70 = 3780 rows
}

TYPED_TEST(TopkTest, KAtLeastTheVisibleKeysIsExactAttention) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({50, 120, 32, 16}, 11100);
  for (const Mask mask : {Mask::causal(), Mask::none()}) {
    const auto ref = reference_attention(w.q, w.k, w.v, {mask});
    const auto got = topk_attention(w.q, w.k, w.v, {1000}, {mask});
    EXPECT_TRUE(test::flash_bounds::within_bound(
        got, ref,
        test::flash_bounds::error_bound(w.q, w.k, w.v, 1.0 / std::sqrt(32.0), 128,
                                        test::flash_bounds::BoundKind::worst_case)));
  }
  // Ties: identical keys keep the earliest positions.
  RowMatrix<Scalar> q = RowMatrix<Scalar>::Ones(1, 4), k = RowMatrix<Scalar>::Ones(10, 4);
  const RowMatrix<Scalar> v = test::random_matrix<Scalar>(10, 2, 11150);
  const auto s = topk_attention_selection(q, k, v, {3});
  EXPECT_EQ(s.keys(0, 0), 0);
  EXPECT_EQ(s.keys(0, 1), 1);
  EXPECT_EQ(s.keys(0, 2), 2);
}

TYPED_TEST(TopkTest, NaNReachesOnlyItsRowAndBadKThrows) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({30, 60, 8, 8}, 11200);
  RowMatrix<Scalar> q = w.q;
  q(12, 3) = std::numeric_limits<Scalar>::quiet_NaN();
  const auto clean = topk_attention(w.q, w.k, w.v, {5}, {Mask::causal()});
  const auto r = topk_attention(q, w.k, w.v, {5}, {Mask::causal()});
  for (Index i = 0; i < 30; ++i) {
    if (i == 12)
      EXPECT_TRUE(r.output.row(i).array().isNaN().all() && std::isnan(r.lse(i)));
    else
      EXPECT_TRUE(test::matrices_near(r.output.row(i), clean.output.row(i), 0.0)) << i;
  }
  EXPECT_TRUE(
      throws_invalid_argument([&] { topk_attention(w.q, w.k, w.v, {0}); }, {"topk_attention", "k = 0"}));
}

}  // namespace
}  // namespace attnkit
