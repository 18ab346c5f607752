// Tests of attnkit/linear/linear_state.hpp: the decode state against causal
// prefill row by row (causal and strict), against the long-double brute force
// (including keys whose stabilisers grow, which rescale the state), block
// appends, reset, and bad input leaving the state unchanged.

#include "attnkit/linear/linear_state.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "linear/linear_oracle.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::LD;
using test::linear_bound;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class LinearStateTest : public ::testing::Test {};
TYPED_TEST_SUITE(LinearStateTest, test::Scalars);

// Decode (append token t, query q_t) equals row t of the chunked causal
// prefill; querying before appending equals strict causal. Each is within
// linear_bound of the exact value (chunk 1 for the state), so within the sum.
TYPED_TEST(LinearStateTest, DecodeEqualsCausalPrefillRowByRow) {
  using Scalar = TypeParam;
  const Index n = 41, d = 8, d_v = 5, m = 32;
  const PositiveRandomFeatures<Scalar> favor(d, {m, 3});
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 1, 0.8), k = random_matrix<Scalar>(n, d, 2, 0.8),
                          v = random_matrix<Scalar>(n, d_v, 3);
  const auto causal = linear_attention(q, k, v, favor, {Mask::causal(), 16});
  const auto strict = linear_attention(q, k, v, favor, {Mask::strict_causal(), 16});
  const double e_phi = std::max(test::favor_feature_error(q, favor), test::favor_feature_error(k, favor));
  const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
  const double tol = (linear_bound<Scalar>(e_phi, m, n, 16) + linear_bound<Scalar>(e_phi, m, n, 1)) * max_v;
  LinearAttentionState<Scalar, PositiveRandomFeatures<Scalar>> state(favor, d, d_v);
  for (Index t = 0; t < n; ++t) {
    const auto before = state.query(q.row(t));
    if (t == 0) {
      EXPECT_TRUE(matrices_near(before.output, RowMatrix<Scalar>::Zero(1, d_v), 0.0));
      EXPECT_EQ(before.lse(0), -std::numeric_limits<Scalar>::infinity());
    } else {
      EXPECT_TRUE(matrices_near(before.output, strict.output.row(t), tol)) << t;
    }
    state.append(k.row(t), v.row(t));
    const auto after = state.query(q.row(t));
    EXPECT_TRUE(matrices_near(after.output, causal.output.row(t), tol)) << t;
    // lse: both within e_w/(1 - e_w) + 3 u (|lse| + 2 max|E|) of the exact one.
    const double max_e = std::max(test::favor_max_exponent(q, favor), test::favor_max_exponent(k, favor));
    const double lse_tol =
        tol / max_v + 6 * eps<Scalar>() / 2 * (std::fabs(static_cast<double>(after.lse(0))) + 2 * max_e);
    EXPECT_NEAR(static_cast<double>(after.lse(0)), static_cast<double>(causal.lse(t)), lse_tol) << t;
  }
  EXPECT_EQ(state.tokens(), n);
}

// Keys whose norms grow along the sequence: each new key block has a larger
// FAVOR+ stabiliser, so the state is rescaled again and again. Exponents
// reach ~100, beyond float's exp range, and the result still matches the
// long-double brute force (which needs no stabiliser) within the bound,
// which counts one rounding per rescale.
TYPED_TEST(LinearStateTest, GrowingKeysRescaleTheStateAndMatchBruteForce) {
  using Scalar = TypeParam;
  const Index n = 30, d = 8, m = 16;
  const PositiveRandomFeatures<Scalar> favor(d, {m, 4, true, 1.0});
  RowMatrix<Scalar> k = random_matrix<Scalar>(n, d, 5);
  for (Index j = 0; j < n; ++j)
    k.row(j) *= static_cast<Scalar>(0.5 + 0.1 * static_cast<double>(j));
  const RowMatrix<Scalar> q = random_matrix<Scalar>(3, d, 6), v = random_matrix<Scalar>(n, 2, 7);
  LinearAttentionState<Scalar, PositiveRandomFeatures<Scalar>> state(favor, d, 2);
  for (Index j = 0; j < n; ++j)
    state.append(k.row(j), v.row(j));
  const auto got = state.query(q);
  const auto want = test::linear_oracle(test::favor_features_ld(q, favor), test::favor_features_ld(k, favor),
                                        v, Mask::none());
  const double e_phi = std::max(test::favor_feature_error(q, favor), test::favor_feature_error(k, favor));
  EXPECT_GT(test::favor_max_exponent(k, favor), 90.0);
  EXPECT_TRUE(
      test::near_oracle(got.output, want.out,
                        linear_bound<Scalar>(e_phi, m, n, 1) * static_cast<double>(v.cwiseAbs().maxCoeff())));
}

TYPED_TEST(LinearStateTest, BlockAppendsResetAndElu) {
  using Scalar = TypeParam;
  const Index n = 20, d = 4;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(2, d, 8), k = random_matrix<Scalar>(n, d, 9),
                          v = random_matrix<Scalar>(n, 3, 10);
  LinearAttentionState<Scalar, EluFeatureMap> blocks(EluFeatureMap{}, d, 3), tokens(EluFeatureMap{}, d, 3);
  blocks.append(k.topRows(7), v.topRows(7));
  blocks.append(k.bottomRows(13), v.bottomRows(13));
  for (Index j = 0; j < n; ++j)
    tokens.append(k.row(j), v.row(j));
  const auto want = test::linear_oracle(test::elu_features_ld(q), test::elu_features_ld(k), v, Mask::none());
  const double bound =
      linear_bound<Scalar>(4 * eps<Scalar>() / 2, d, n, 1) * static_cast<double>(v.cwiseAbs().maxCoeff());
  EXPECT_TRUE(test::near_oracle(blocks.query(q).output, want.out, bound));
  EXPECT_TRUE(test::near_oracle(tokens.query(q).output, want.out, bound));
  EXPECT_EQ(blocks.tokens(), n);
  blocks.reset();
  EXPECT_EQ(blocks.tokens(), 0);
  EXPECT_TRUE(matrices_near(blocks.query(q).output, RowMatrix<Scalar>::Zero(2, 3), 0.0));
  blocks.append(k.row(4), v.row(4));
  // One key: the output is that key's value exactly up to the division.
  EXPECT_TRUE(matrices_near(blocks.query(q).output.row(1), v.row(4), 4 * eps<Scalar>()));
}

TEST(LinearStateInput, BadInputThrowsAndLeavesTheStateUnchanged) {
  LinearAttentionState<double, ReluFeatureMap> state(ReluFeatureMap{}, 4, 2);
  const RowMatrix<double> k = RowMatrix<double>::Ones(3, 4), v = RowMatrix<double>::Ones(3, 2),
                          k5 = RowMatrix<double>::Ones(3, 5), v2 = RowMatrix<double>::Ones(2, 2), empty(0, 4);
  state.append(k, v);
  EXPECT_TRUE(throws_invalid_argument([&] { state.append(k5, v); }, {"append", "(3 x 5)", "(t x 4)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { state.append(k, v2); }, {"(2 x 2)", "same t"}));
  EXPECT_TRUE(throws_invalid_argument([&] { state.append(empty, v); }, {"empty"}));
  EXPECT_TRUE(throws_invalid_argument([&] { state.query(k5); }, {"query", "(3 x 5)"}));
  EXPECT_EQ(state.tokens(), 3);
  EXPECT_TRUE(matrices_near(state.query(k).output, v, 0.0));
  EXPECT_TRUE(throws_invalid_argument(
      [] { LinearAttentionState<double, ReluFeatureMap>(ReluFeatureMap{}, 0, 2); }, {"d = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LinearAttentionState<double, PositiveRandomFeatures<double>>(PositiveRandomFeatures<double>(8, {4}),
                                                                     6, 2);
      },
      {"d = 6", "d = 8"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] { LinearAttentionState<double, ReluFeatureMap>(ReluFeatureMap{}, 4, 2, {-1.0}); },
      {"denominator_floor = -1"}));
}

}  // namespace
}  // namespace attnkit
