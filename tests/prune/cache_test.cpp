// Tests of attnkit/prune/cache.hpp: with nothing pruned the cache equals
// reference_attention (every mask, every compensation, after appends and
// overflow compression); with pruning it equals a naive long-double attention
// over explicitly built "effective" keys; mean compensation leaves exactly the
// centred residual on the logits; appends keep token order; the refit schedule;
// exact memory; bad input.

#include "attnkit/prune/cache.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

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

// Two results computed in the wide type from the same inputs and rounded once
// to Scalar differ by at most one rounding of the output plus the wide type's
// error, which grows with the logit magnitude L: eps_S |o| + 64 eps_W (1 + L) max|v|.
template <typename Scalar>
double output_abs_tol(double max_logit, double max_v) {
  const double eps_wide = static_cast<double>(std::numeric_limits<detail::wider_t<Scalar>>::epsilon());
  return 64.0 * eps_wide * (1.0 + max_logit) * max_v;
}

template <typename Scalar>
double max_abs_logit(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k) {
  return (q.template cast<double>() * k.template cast<double>().transpose()).cwiseAbs().maxCoeff() /
         std::sqrt(static_cast<double>(q.cols()));
}

TYPED_TEST(PrunedCacheTest, NothingPrunedEqualsReference) {
  using Scalar = TypeParam;
  const Index d = 8, n = 40, extra = 9;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n + extra, d, 1, 2.0);
  const RowMatrix<Scalar> v = test::random_matrix<Scalar>(n + extra, 5, 2);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(12, d, 3) * Scalar(0.3);
  const double tol_abs =
      output_abs_tol<Scalar>(max_abs_logit(q, k), v.template cast<double>().cwiseAbs().maxCoeff());
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
        for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(3)}) {
          const AttentionOptions ao{mask, {}};
          const auto got = cache.attention(q, v, ao);
          const auto want = reference_attention(q, k, v, ao);
          EXPECT_TRUE(test::entries_near(got.output, want.output, test::eps<Scalar>(), tol_abs))
              << to_string(comp) << " recent " << recent << " mask " << to_string(mask.kind);
          EXPECT_TRUE(test::entries_near(got.lse, want.lse, test::eps<Scalar>(), tol_abs));
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
          test::naive_attention(q.template cast<LD>(), eff, v.template cast<LD>(), scale, true, n - q.rows());
      const auto got = cache.attention(q, v, {Mask::causal(), {}});
      const double max_logit = static_cast<double>(want.logits.cwiseAbs().maxCoeff());
      const double tol_abs =
          output_abs_tol<Scalar>(max_logit, v.template cast<double>().cwiseAbs().maxCoeff());
      EXPECT_TRUE(test::entries_near(got.output, want.output, test::eps<Scalar>(), tol_abs))
          << to_string(comp);
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
  // Merged (Chan) and two-pass statistics agree to ~n eps_double relative; then one rounding to Scalar.
  const double cmax = want.coefficients.template cast<double>().cwiseAbs().maxCoeff() + 1.0;
  EXPECT_TRUE(test::entries_near(cache.compensation().coefficients, want.coefficients,
                                 2 * test::eps<Scalar>(), 1e-9 * cmax));
  EXPECT_TRUE(test::entries_near(cache.compensation().offset, want.offset, 2 * test::eps<Scalar>(),
                                 1e-9 * cmax * 10));
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
