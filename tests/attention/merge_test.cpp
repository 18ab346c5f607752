// Tests of attnkit/attention/merge.hpp: results of the same queries over
// disjoint key sets combine exactly, against the reference over all keys.

#include "attnkit/attention/merge.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attnkit/attention/reference.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::throws_invalid_argument;

template <typename Scalar>
class MergeTest : public ::testing::Test {};
TYPED_TEST_SUITE(MergeTest, test::Scalars);

// merge_attention: results over disjoint key sets combine exactly.
TYPED_TEST(MergeTest, MergeOfDisjointKeySetsEqualsTheWhole) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({10, 90, 16, 16}, 19);
  const auto whole = reference_attention(w.q, w.k, w.v);
  auto part = reference_attention(w.q, w.k.topRows(30), w.v.topRows(30));
  const auto rest = reference_attention(w.q, w.k.bottomRows(60), w.v.bottomRows(60));
  merge_attention_into(part, rest);
  // Each part is rounded to Scalar (eps/2); the merge adds a few roundings.
  EXPECT_TRUE(matrices_near(part.output, whole.output, 4 * eps<Scalar>() * w.v.cwiseAbs().maxCoeff()));
  EXPECT_TRUE(matrices_near(part.lse, whole.lse, 4 * eps<Scalar>() * (1 + whole.lse.cwiseAbs().maxCoeff())));
  // Empty parts (lse = -inf) are neutral on either side; NaN propagates.
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  AttentionResult<Scalar> empty{RowMatrix<Scalar>::Zero(10, 16), Vector<Scalar>::Constant(10, -inf)};
  EXPECT_TRUE(matrices_near(merge_attention(whole, empty).output, whole.output, 0.0));
  EXPECT_TRUE(matrices_near(merge_attention(empty, whole).output, whole.output, 0.0));
  const auto both_empty = merge_attention(empty, empty);
  EXPECT_TRUE((both_empty.output.array() == 0).all() && (both_empty.lse.array() == -inf).all());
  AttentionResult<Scalar> bad = whole;
  bad.lse(3) = std::numeric_limits<Scalar>::quiet_NaN();
  const auto merged = merge_attention(bad, rest);
  EXPECT_TRUE(merged.output.row(3).array().isNaN().all());
  EXPECT_TRUE(merged.output.row(2).allFinite());
  // Huge lse values on both sides: no overflow, and the exact values. Both
  // parts hold the same rows O with lse L + 1e4 and L + 1e4 - 1, so the merge
  // is O itself with lse L + 1e4 + log(1 + e^-1). The merge computes the
  // weights e^0 = 1 and e^-1 (one rounding each), their sum and quotients
  // (two more) and O (1 - f) + O f (two more): within 6 eps |O| of O; the lse
  // adds log(total) (two roundings) to L + 1e4, itself rounded from the
  // shifted inputs (|L| + 1e4 + 1 in magnitude, eps/2 each).
  AttentionResult<Scalar> hi = whole, lo = whole;
  hi.lse.array() += Scalar(1e4);
  lo.lse.array() += Scalar(1e4) - Scalar(1);
  const auto huge = merge_attention(hi, lo);
  EXPECT_TRUE(matrices_near(huge.output, whole.output, 6 * eps<Scalar>() * w.v.cwiseAbs().maxCoeff()));
  for (Index i = 0; i < 10; ++i) {
    const long double expected = static_cast<long double>(whole.lse(i)) + 1e4L + std::log1p(std::exp(-1.0L));
    EXPECT_NEAR(static_cast<double>(huge.lse(i)), static_cast<double>(expected),
                4 * eps<Scalar>() * (std::fabs(static_cast<double>(whole.lse(i))) + 1e4 + 2))
        << "row " << i;
  }
  const RowMatrix<Scalar> wrong = RowMatrix<Scalar>::Zero(9, 16);
  AttentionResult<Scalar> mismatched{wrong, Vector<Scalar>::Zero(9)};
  EXPECT_TRUE(throws_invalid_argument([&] { merge_attention(whole, mismatched); },
                                      {"merge_attention", "(10 x 16)", "(9 x 16)"}));
}

}  // namespace
}  // namespace attnkit
