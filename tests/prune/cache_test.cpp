// Tests of attnkit/prune/cache.hpp: with nothing pruned the cache equals
// reference_attention (every mask, every compensation, after appends and
// overflow compression); with pruning it equals a naive long-double attention
// over explicitly built "effective" keys, within the fused kernel's derived
// bound (attention/flash_bounds.hpp); mean compensation leaves exactly the
// centred residual on the logits; appends keep token order (also of the
// cache's own rows); the refit schedule; exact memory; bad input.

#include "attnkit/prune/cache.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/detail/wider.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class PrunedCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(PrunedCacheTest, test::Scalars);

// The cache attends through two partials of the fused kernel merged exactly:
// its bound is test::pruned_attention_bound (prune_test_util.hpp) on the
// effective logits of the cache's own compensation.
template <typename Scalar>
test::flash_bounds::Bound cache_bound(const PrunedKeyCache<Scalar>& cache, const RowMatrix<Scalar>& q,
                                      const RowMatrix<Scalar>& keys, const RowMatrix<Scalar>& v) {
  const auto& comp = cache.compensation();
  const RowMatrix<double> m = comp.coefficients.template cast<double>();
  const Eigen::VectorXd offset = comp.offset.template cast<double>();
  const RowMatrix<double> abs_logits =
      test::pruned_abs_logits(q, keys, cache.selection(), cache.compressed_size(), cache.kept_scale(), m,
                              offset, 1.0 / std::sqrt(static_cast<double>(q.cols())));
  return test::pruned_attention_bound<Scalar>(abs_logits, v.template cast<double>().cwiseAbs().maxCoeff(),
                                              q.cols());
}

template <typename Scalar>
::testing::AssertionResult within_cache_bound(const AttentionResult<Scalar>& got,
                                              const RowMatrix<LD>& want_output, const Vector<LD>& want_lse,
                                              const test::flash_bounds::Bound& b) {
  return test::within_row_bound(got.output, &got.lse, want_output, &want_lse, b);
}

TYPED_TEST(PrunedCacheTest, NothingPrunedEqualsReference) {
  using Scalar = TypeParam;
  const Index d = 8, n = 40, extra = 9;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n + extra, d, 1, 2.0);
  const RowMatrix<Scalar> v = test::random_matrix<Scalar>(n + extra, 5, 2);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(12, d, 3) * Scalar(0.3);
  for (const PruneCompensation comp :
       {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression})
    for (const Index recent : {0, 5, 100})
      for (const bool scale_correction : {false, true}) {
        PrunedCacheOptions o;
        o.recent = recent;
        o.compensation = comp;
        o.scale_correction = scale_correction;
        PrunedKeyCache<Scalar> cache(k.topRows(n), DimSelection::all(d), o);
        cache.append(k.middleRows(n, 4));
        cache.append(k.bottomRows(extra - 4));
        ASSERT_EQ(cache.size(), n + extra);
        const auto bound = cache_bound(cache, q, k, v);
        for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(3),
                                Mask::causal().with_window(9).with_sinks(2)}) {
          const AttentionOptions ao{mask, {}};
          const MaskLayout layout = resolve_mask(mask, q.rows(), k.rows());
          const test::NaiveResult want = test::naive_attention(
              q, k, v, test::NaiveMask{mask.kind, layout.offset(), mask.window, mask.sinks},
              1.0 / std::sqrt(8.0));
          for (const int threads : {1, 2})
            EXPECT_TRUE(within_cache_bound(cache.attention(q, v, ao, FlashConfig{threads}), want.output,
                                           want.lse, bound))
                << to_string(comp) << " recent " << recent << " mask " << to_string(mask.kind) << " threads "
                << threads;
        }
      }
}

// Effective keys: compressed token j -> (c k_A, offset + M k_A) in its dimensions,
// window tokens unchanged. The naive long-double attention over them is what
// the cache must compute.
template <typename Scalar>
RowMatrix<LD> effective_keys(const PrunedKeyCache<Scalar>& cache, const RowMatrix<Scalar>& original) {
  const DimSelection& s = cache.selection();
  const auto& comp = cache.compensation();
  RowMatrix<LD> eff = original.template cast<LD>();
  for (Index j = 0; j < cache.compressed_size(); ++j) {
    Eigen::Matrix<LD, Eigen::Dynamic, 1> ka(s.kept_count());
    for (Index t = 0; t < s.kept_count(); ++t)
      ka(t) = static_cast<LD>(original(j, s.kept()[static_cast<std::size_t>(t)]));
    for (Index t = 0; t < s.kept_count(); ++t)
      eff(j, s.kept()[static_cast<std::size_t>(t)]) = static_cast<LD>(cache.kept_scale()) * ka(t);
    for (Index t = 0; t < s.dropped_count(); ++t) {
      LD pred = 0;
      if (comp.kind != PruneCompensation::none) pred = static_cast<LD>(comp.offset(t));
      if (comp.kind == PruneCompensation::regression)
        pred += comp.coefficients.row(t).template cast<LD>().dot(ka.transpose());
      eff(j, s.dropped()[static_cast<std::size_t>(t)]) = pred;
    }
  }
  return eff;
}

TYPED_TEST(PrunedCacheTest, PrunedAttentionMatchesEffectiveKeys) {
  using Scalar = TypeParam;
  const Index d = 10, n = 50;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 4, 2.0);
  const RowMatrix<Scalar> v = test::random_matrix<Scalar>(n, 3, 5);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(15, d, 6) * Scalar(0.3);
  const DimSelection sel(d, {0, 3, 4, 8});
  for (const PruneCompensation comp :
       {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression})
    for (const bool scale_correction : {false, true}) {
      PrunedCacheOptions o;
      o.recent = 12;
      o.compensation = comp;
      o.scale_correction = scale_correction;
      const PrunedKeyCache<Scalar> cache(k, sel, o);
      EXPECT_EQ(cache.compressed_size(), 38);
      EXPECT_EQ(cache.kept_scale(), scale_correction ? std::sqrt(10.0 / 4.0) : 1.0);
      const RowMatrix<LD> eff = effective_keys(cache, k);
      const LD scale = 1 / std::sqrt(LD(d));
      const test::NaiveResult want =
          test::naive_attention(q.template cast<LD>(), eff, v.template cast<LD>(),
                                test::NaiveMask{MaskKind::causal, n - q.rows()}, static_cast<double>(scale));
      const double max_logit = static_cast<double>(want.logits.cwiseAbs().maxCoeff());
      for (const int threads : {1, 2})
        EXPECT_TRUE(within_cache_bound(cache.attention(q, v, {Mask::causal(), {}}, FlashConfig{threads}),
                                       want.output, want.lse, cache_bound(cache, q, k, v)))
            << to_string(comp) << " threads " << threads;
      // Decode: the last query alone (the decode kernel on wide builds).
      const test::NaiveResult last =
          test::naive_attention(q.bottomRows(1).template cast<LD>(), eff, v.template cast<LD>(),
                                test::NaiveMask{MaskKind::causal, n - 1}, static_cast<double>(scale));
      EXPECT_TRUE(within_cache_bound(cache.attention(q.bottomRows(1), v, {Mask::causal(), {}}), last.output,
                                     last.lse, cache_bound(cache, RowMatrix<Scalar>(q.bottomRows(1)), k, v)))
          << to_string(comp) << " decode";
      // Logits, no mask: one rounding to Scalar plus the wide error of the sums.
      EXPECT_TRUE(test::entries_near(
          cache.logits(q), want.logits, test::eps<Scalar>(),
          64.0 * (1 + max_logit) *
              static_cast<double>(std::numeric_limits<detail::wider_t<Scalar>>::epsilon())))
          << to_string(comp);
    }
}

// Mean compensation: z~ - z = -scale q_B . (k_B - mu_B) on compressed tokens, 0 on the window.
TYPED_TEST(PrunedCacheTest, MeanCompensationLeavesTheCentredResidualOnLogits) {
  using Scalar = TypeParam;
  const Index d = 12, n = 64, recent = 16;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 7, 8.0);  // a large common mean
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(10, d, 8) * Scalar(0.2);
  const DimSelection sel(d, {1, 2, 5, 7, 11});
  PrunedCacheOptions o;
  o.recent = recent;
  o.compensation = PruneCompensation::mean;
  const PrunedKeyCache<Scalar> cache(k, sel, o);
  const RowMatrix<Scalar> z = cache.logits(q);
  const LD scale = 1 / std::sqrt(LD(d));
  std::vector<LD> mu(static_cast<std::size_t>(d), 0);
  for (Index c = 0; c < d; ++c)
    mu[static_cast<std::size_t>(c)] = k.col(c).topRows(n - recent).template cast<LD>().sum() / (n - recent);
  for (Index i = 0; i < q.rows(); ++i)
    for (Index j = 0; j < n; ++j) {
      LD exact = 0, residual = 0, magnitude = 0;
      for (Index c = 0; c < d; ++c) {
        exact += static_cast<LD>(q(i, c)) * static_cast<LD>(k(j, c));
        magnitude += std::fabs(static_cast<LD>(q(i, c)) * static_cast<LD>(k(j, c)));
      }
      if (j < n - recent)
        for (const Index b : sel.dropped())
          residual += static_cast<LD>(q(i, b)) * (static_cast<LD>(k(j, b)) - mu[static_cast<std::size_t>(b)]);
      const LD expected_error = -scale * residual;
      // z rounds to Scalar (eps |z|); mu was rounded to Scalar (eps |q_B| |mu_B|).
      LD mu_term = 0;
      for (const Index b : sel.dropped())
        mu_term += std::fabs(static_cast<LD>(q(i, b)) * mu[static_cast<std::size_t>(b)]);
      const double tol = test::eps<Scalar>() * static_cast<double>(scale * (2 * magnitude + mu_term)) + 1e-15;
      EXPECT_NEAR(static_cast<double>(static_cast<LD>(z(i, j)) - scale * exact),
                  static_cast<double>(expected_error), tol)
          << "(" << i << ", " << j << ")";
    }
}

TYPED_TEST(PrunedCacheTest, AppendsKeepTokenOrder) {
  using Scalar = TypeParam;
  const Index d = 6;
  const RowMatrix<Scalar> k = test::random_matrix<Scalar>(30, d, 9);
  const DimSelection sel(d, {1, 4});
  for (const bool overflow : {true, false}) {
    PrunedCacheOptions o;
    o.recent = 4;
    o.compress_overflow = overflow;
    PrunedKeyCache<Scalar> cache(k.topRows(10), sel, o);
    EXPECT_EQ(cache.compressed_size(), 6);
    EXPECT_EQ(cache.window_size(), 4);
    cache.append(k.middleRows(10, 1));
    cache.append(k.middleRows(11, 3));
    cache.append(k.middleRows(14, 16));
    EXPECT_EQ(cache.size(), 30);
    const Index n_c = overflow ? 26 : 6;
    ASSERT_EQ(cache.compressed_size(), n_c);
    ASSERT_EQ(cache.window_size(), 30 - n_c);
    for (Index j = 0; j < n_c; ++j) {
      EXPECT_EQ(cache.compressed_keys()(j, 0), k(j, 1));
      EXPECT_EQ(cache.compressed_keys()(j, 1), k(j, 4));
    }
    EXPECT_EQ(RowMatrix<Scalar>(cache.window_keys()), RowMatrix<Scalar>(k.bottomRows(30 - n_c)));
  }
  // A cache shorter than its window compresses nothing.
  const PrunedKeyCache<Scalar> short_cache(k.topRows(3), sel, PrunedCacheOptions{});
  EXPECT_EQ(short_cache.compressed_size(), 0);
  EXPECT_EQ(short_cache.window_size(), 3);
}

// Appending the cache's own rows (a view into its storage) across a
// reallocation copies them first: a regression test for a heap
// use-after-free.
TYPED_TEST(PrunedCacheTest, AppendingItsOwnRowsIsSafe) {
  using Scalar = TypeParam;
  const Index d = 6;
  const RowMatrix<Scalar> k = test::random_matrix<Scalar>(12, d, 21);
  const DimSelection sel(d, {0, 2, 3});
  PrunedCacheOptions o;
  o.recent = 4;
  o.compress_overflow = false;  // appended rows stay in the window
  PrunedKeyCache<Scalar> cache(k, sel, o);
  RowMatrix<Scalar> expected = k.bottomRows(4);
  for (int round = 0; round < 5; ++round) {  // the window doubles every round: 4, 8, ..., 128 rows
    cache.append(cache.window_keys());
    RowMatrix<Scalar> doubled(2 * expected.rows(), d);
    doubled << expected, expected;
    expected = doubled;
    ASSERT_EQ(RowMatrix<Scalar>(cache.window_keys()), expected) << "round " << round;
  }
  // With overflow compression, the compressed rows follow the window's.
  PrunedCacheOptions oc;
  oc.recent = 3;
  PrunedKeyCache<Scalar> compressing(k.topRows(5), sel, oc);
  const RowMatrix<Scalar> window = compressing.window_keys();
  compressing.append(compressing.window_keys());
  EXPECT_EQ(RowMatrix<Scalar>(compressing.window_keys()), window);
  EXPECT_EQ(compressing.compressed_size(), 5);
  for (Index t = 0; t < 3; ++t)
    EXPECT_EQ(compressing.compressed_keys()(2 + t, 1), window(t, 2));
}

TYPED_TEST(PrunedCacheTest, RefitScheduleFollowsGrowth) {
  using Scalar = TypeParam;
  const Index d = 7;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(60, d, 10, 3.0);
  const DimSelection sel(d, {0, 2, 5});
  PrunedCacheOptions o;
  o.recent = 4;
  o.compensation = PruneCompensation::regression;
  o.refit_growth = 2.0;
  PrunedKeyCache<Scalar> cache(k.topRows(14), sel, o);  // 10 compressed
  ASSERT_EQ(cache.fitted_count(), 10);
  const Compensation<Scalar> first = cache.compensation();
  cache.append(k.middleRows(14, 9));  // 19 compressed: no refit yet
  EXPECT_EQ(cache.compressed_size(), 19);
  EXPECT_EQ(cache.fitted_count(), 10);
  EXPECT_EQ(cache.compensation().coefficients, first.coefficients);
  cache.append(k.middleRows(23, 1));  // 20 = 2 x 10: refit on all 20 compressed keys
  EXPECT_EQ(cache.fitted_count(), 20);
  const Compensation<Scalar> want = fit_compensation(k.topRows(20), sel, PruneCompensation::regression);
  // Merged (Chan) and two-pass statistics of the 20 keys agree to ~n eps_d
  // relative (n = 20 terms per sum, in double); the ridge solve for M (and the
  // offset, mu_B - M mu_A) amplifies that by at most the condition number
  // kappa of S_AA + rho I, and adds its own backward error, kappa eps_d: in all
  // |dM| <= 2 kappa n eps_d max(|M|, 1). Each side is then rounded to Scalar
  // once (eps_S / 2 relative): the relative term below.
  RowMatrix<LD> x = k.topRows(20).template cast<LD>();
  const Eigen::Matrix<LD, 1, Eigen::Dynamic> mean = x.colwise().mean();
  x.rowwise() -= mean;
  const RowMatrix<LD> scatter = x.transpose() * x;
  Eigen::MatrixXd saa(sel.kept_count(), sel.kept_count());
  for (Index a = 0; a < sel.kept_count(); ++a)
    for (Index b = 0; b < sel.kept_count(); ++b)
      saa(a, b) = static_cast<double>(
          scatter(sel.kept()[static_cast<std::size_t>(a)], sel.kept()[static_cast<std::size_t>(b)]));
  saa.diagonal().array() += 1e-6 * static_cast<double>(scatter.trace()) / static_cast<double>(d);
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(saa).eigenvalues();
  const double kappa = ev.maxCoeff() / ev.minCoeff();
  const double eps_d = std::numeric_limits<double>::epsilon();
  const double cmax = std::max(1.0, want.coefficients.template cast<double>().cwiseAbs().maxCoeff());
  const double omax = std::max(1.0, want.offset.template cast<double>().cwiseAbs().maxCoeff());
  EXPECT_TRUE(test::entries_near(cache.compensation().coefficients, want.coefficients, test::eps<Scalar>(),
                                 2 * kappa * 20 * eps_d * cmax));
  EXPECT_TRUE(test::entries_near(
      cache.compensation().offset, want.offset, test::eps<Scalar>(),
      2 * kappa * 20 * eps_d * (omax + cmax * static_cast<double>(mean.cwiseAbs().maxCoeff()))));
  cache.append(k.middleRows(24, 3));
  cache.refit();
  EXPECT_EQ(cache.fitted_count(), 23);
  // Without refit statistics nothing is ever refitted.
  o.refit_growth = std::nullopt;
  PrunedKeyCache<Scalar> frozen(k.topRows(14), sel, o);
  frozen.append(k.middleRows(14, 40));
  frozen.refit();
  EXPECT_EQ(frozen.fitted_count(), 10);
  EXPECT_EQ(frozen.memory().statistics_bytes, 0u);
}

TYPED_TEST(PrunedCacheTest, MemoryIsExact) {
  using Scalar = TypeParam;
  const Index d = 16, n = 100;
  const RowMatrix<Scalar> k = test::random_matrix<Scalar>(n, d, 11);
  const DimSelection sel = test::random_selection(d, 6, 12);
  const std::size_t s = sizeof(Scalar);
  for (const PruneCompensation comp :
       {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression}) {
    PrunedCacheOptions o;
    o.recent = 20;
    o.compensation = comp;
    PrunedKeyCache<Scalar> cache(k, sel, o);
    const PrunedCacheMemory m = cache.memory();
    EXPECT_EQ(m.unpruned_bytes, s * 100 * 16);
    EXPECT_EQ(m.compressed_key_bytes, s * 80 * 6);
    EXPECT_EQ(m.window_key_bytes, s * 20 * 16);
    const std::size_t comp_bytes = comp == PruneCompensation::none   ? 0
                                   : comp == PruneCompensation::mean ? s * 10
                                                                     : s * (10 * 6 + 10);
    EXPECT_EQ(m.compensation_bytes, comp_bytes);
    EXPECT_EQ(m.selection_bytes, sizeof(Index) * 16);
    const std::size_t stats = comp == PruneCompensation::none ? 0 : sizeof(double) * (16 + 256);
    EXPECT_EQ(m.statistics_bytes, stats);
    EXPECT_EQ(m.total_bytes(), s * (480 + 320) + comp_bytes + sizeof(Index) * 16 + stats);
    EXPECT_GE(m.allocated_key_bytes, m.compressed_key_bytes + m.window_key_bytes);
  }
}

TYPED_TEST(PrunedCacheTest, BadInputThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::random_matrix<Scalar>(10, 4, 13);
  const DimSelection sel(4, {0, 1});
  EXPECT_TRUE(throws_invalid_argument([&] { PrunedKeyCache<Scalar>(k, DimSelection(5, {0})); },
                                      {"PrunedKeyCache", "(10 x 4)", "D = 5"}));
  PrunedCacheOptions o;
  o.recent = -1;
  EXPECT_TRUE(throws_invalid_argument([&] { PrunedKeyCache<Scalar>(k, sel, o); }, {"recent = -1"}));
  o.recent = 2;
  o.refit_growth = 1.0;
  EXPECT_TRUE(throws_invalid_argument([&] { PrunedKeyCache<Scalar>(k, sel, o); }, {"refit_growth = 1"}));
  PrunedKeyCache<Scalar> cache(k, sel);
  const RowMatrix<Scalar> q = test::random_matrix<Scalar>(3, 4, 14),
                          v = test::random_matrix<Scalar>(9, 2, 15);
  EXPECT_TRUE(throws_invalid_argument([&] { cache.attention(q, v); },
                                      {"PrunedKeyCache::attention", "(9 x 2)", "(10)"}));
  const RowMatrix<Scalar> q5 = RowMatrix<Scalar>::Ones(3, 5);
  EXPECT_TRUE(
      throws_invalid_argument([&] { cache.logits(q5); }, {"PrunedKeyCache::logits", "(3 x 5)", "D = 4"}));
  EXPECT_TRUE(throws_invalid_argument([&] { cache.append(q5); }, {"PrunedKeyCache::append", "(3 x 5)"}));
  EXPECT_EQ(cache.size(), 10);  // unchanged by the failed append
  const PrunedKeyCache<Scalar> empty(k.topRows(0), sel);
  EXPECT_TRUE(throws_invalid_argument([&] { empty.logits(q); }, {"holds no token"}));
  EXPECT_TRUE(throws_invalid_argument([&] { cache.logits(q, -1.0); }, {"scale = -1"}));
}

}  // namespace
}  // namespace attnkit
