// Tests of attnkit/sparse/lsh_attention.hpp: one bucket = exact attention;
// L rounds against a long-double brute force of the same bucketed definition
// (union of the rounds' collisions, each key once; both fallbacks; all
// masks); duplicates counted once (the double-counting alternative is far
// off); causality by truncation; seeds; bad input.

#include "attnkit/sparse/lsh_attention.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;

using LD = long double;

template <typename Scalar>
class LshAttentionTest : public ::testing::Test {};
TYPED_TEST_SUITE(LshAttentionTest, test::Scalars);

struct Oracle {
  RowMatrix<LD> out;
  Vector<LD> lse;
  Index largest_set = 0;  // max |C_i|
  Index empty_sets = 0;   // queries with C_i empty
  Index duplicates = 0;   // (i, j) pairs colliding in more than one round
  RowMatrix<LD> doubled;  // the alternative that counts a pair once per round
};

/// The definition of the file comment in long double, from the codes (the
/// codes themselves are tested against their definition in lsh_hash_test).
template <typename Scalar>
Oracle oracle(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
              const LshCodes& qc, const LshCodes& kc, const Mask& mask, double scale, LshFallback fallback) {
  const MaskLayout layout = resolve_mask(mask, q.rows(), k.rows());
  const RowMatrix<LD> qw = q.template cast<LD>(), kw = k.template cast<LD>(), vw = v.template cast<LD>();
  Oracle o{RowMatrix<LD>::Zero(q.rows(), v.cols()), Vector<LD>(q.rows()), 0, 0, 0,
           RowMatrix<LD>::Zero(q.rows(), v.cols())};
  for (Index i = 0; i < q.rows(); ++i) {
    const Index end = layout.key_end(i);
    std::vector<Index> set;
    std::vector<LD> multiplicity;
    for (Index j = 0; j < end; ++j) {
      Index hits = 0;
      for (Index r = 0; r < qc.cols(); ++r)
        hits += qc(i, r) == kc(j, r);
      if (hits == 0) continue;
      set.push_back(j);
      multiplicity.push_back(static_cast<LD>(hits));
      if (hits > 1) ++o.duplicates;
    }
    o.largest_set = std::max<Index>(o.largest_set, static_cast<Index>(set.size()));
    if (set.empty()) {
      ++o.empty_sets;
      if (fallback == LshFallback::last_visible_key && end > 0) {
        o.out.row(i) = vw.row(end - 1);
        o.doubled.row(i) = vw.row(end - 1);
        o.lse(i) = static_cast<LD>(scale) * qw.row(i).dot(kw.row(end - 1));
      } else {
        o.lse(i) = -std::numeric_limits<LD>::infinity();
      }
      continue;
    }
    LD m = -std::numeric_limits<LD>::infinity();
    for (const Index j : set)
      m = std::max(m, static_cast<LD>(scale) * qw.row(i).dot(kw.row(j)));
    LD sum = 0, sum2 = 0;
    for (std::size_t t = 0; t < set.size(); ++t) {
      const LD e = std::exp(static_cast<LD>(scale) * qw.row(i).dot(kw.row(set[t])) - m);
      sum += e;
      sum2 += multiplicity[t] * e;
      o.out.row(i) += e * vw.row(set[t]);
      o.doubled.row(i) += multiplicity[t] * e * vw.row(set[t]);
    }
    o.out.row(i) /= sum;
    o.doubled.row(i) /= sum2;
    o.lse(i) = m + std::log(sum);
  }
  return o;
}

/// |O - O_def| / max|v| for the Scalar evaluation: each score carries
/// (d + 2) u scale |q||k| (the d-term GEMM dot and the product by scale), the
/// shifted exp u (|s| + |m|) <= 2 u max|s| plus Eigen's exp (2 ulp = 4 u); the
/// sums over a tile's <= n_k keys (n_k + 2) u: e_w = those, and a ratio of sums
/// of positive weights moves by 2 e_w / (1 - e_w). Each of the L exact merges
/// (weights from one exp and one division, one multiply-add) adds 6 u; the
/// final division u.
template <typename Scalar>
double lsh_bound(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, double scale, Index rounds) {
  const double u = eps<Scalar>() / 2, d = as_double(q.cols());
  const double qk =
      static_cast<double>(q.rowwise().norm().maxCoeff() * k.rowwise().norm().maxCoeff()) * scale;
  const double e_w = (d + 2) * u * qk + 2 * u * qk + 4 * u + (as_double(k.rows()) + 2) * u;
  return 2 * e_w / (1 - e_w) + 6 * as_double(rounds) * u + u;
}

template <typename Scalar>
void check(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
           const LshAttentionOptions& o, Oracle* seen = nullptr) {
  const LshIndex<Scalar> index(k, v, o.hash);
  const auto got = index.attend(q, {o.mask, o.scale, o.fallback});
  const double scale = o.scale.value_or(1 / std::sqrt(as_double(q.cols())));
  const Oracle want = oracle(q, k, v, index.hasher().codes(q), index.key_codes(), o.mask, scale, o.fallback);
  const double bound = lsh_bound(q, k, scale, o.hash.rounds);
  const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
  EXPECT_TRUE(matrices_near(got.output.template cast<LD>(), want.out, bound * max_v))
      << to_string(o.hash.kind) << " B " << o.hash.buckets << " L " << o.hash.rounds << " mask "
      << to_string(o.mask.kind);
  const double u = eps<Scalar>() / 2;
  for (Index i = 0; i < q.rows(); ++i) {
    if (std::isinf(want.lse(i))) {
      EXPECT_EQ(static_cast<LD>(got.lse(i)), want.lse(i)) << i;
      continue;
    }
    // lse: the normaliser's relative error e_w / (1 - e_w) <= bound / 2, and
    // per merge one log and one addition, 2 u (|lse| + 1) each.
    const double tol =
        bound / 2 + 2 * u * as_double(o.hash.rounds + 1) * (std::fabs(static_cast<double>(want.lse(i))) + 1);
    EXPECT_NEAR(static_cast<double>(got.lse(i)), static_cast<double>(want.lse(i)), tol) << i;
  }
  if (seen) *seen = want;
}

// B = 1: every key is a candidate in round 0 and a duplicate in every later
// round, so the result is exact attention whatever L is.
TYPED_TEST(LshAttentionTest, OneBucketIsExactAttention) {
  using Scalar = TypeParam;
  const Index n_q = 23, n_k = 37, d = 8;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, 1), k = random_matrix<Scalar>(n_k, d, 2),
                          v = random_matrix<Scalar>(n_k, 5, 3);
  for (const Index rounds : {Index{1}, Index{3}})
    for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(4)}) {
      LshAttentionOptions o;
      o.hash = {LshHashKind::angular, 1, rounds, 5};
      o.mask = mask;
      o.fallback = LshFallback::zero_row;  // a strict row that sees nothing stays zero, as in the reference
      const auto got = lsh_attention(q, k, v, o);
      const auto want = reference_attention(q, k, v, {mask});
      const double scale = 1 / std::sqrt(as_double(d));
      const double tol = lsh_bound(q, k, scale, rounds) * static_cast<double>(v.cwiseAbs().maxCoeff());
      EXPECT_TRUE(matrices_near(got.output, want.output, tol)) << to_string(mask.kind) << " L " << rounds;
      EXPECT_TRUE(matrices_near(got.lse, want.lse, tol + 4 * eps<Scalar>() * 10)) << to_string(mask.kind);
    }
}

TYPED_TEST(LshAttentionTest, RoundsMatchLongDoubleBruteForce) {
  using Scalar = TypeParam;
  const Index n_q = 40, n_k = 61, d = 8;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, 4), k = random_matrix<Scalar>(n_k, d, 5),
                          v = random_matrix<Scalar>(n_k, 3, 6);
  Index empties = 0, duplicates = 0;
  for (const LshHashKind kind : {LshHashKind::angular, LshHashKind::simhash})
    for (const auto& [buckets, rounds] : {std::pair<Index, Index>{2, 1}, {8, 1}, {8, 4}, {32, 3}, {64, 1}})
      for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(7)})
        for (const LshFallback fallback : {LshFallback::last_visible_key, LshFallback::zero_row}) {
          LshAttentionOptions o;
          o.hash = {kind, buckets, rounds, 11};
          o.mask = mask;
          o.fallback = fallback;
          Oracle seen;
          check(q, k, v, o, &seen);
          empties += seen.empty_sets;
          duplicates += seen.duplicates;
        }
  // The grid exercises both fallbacks and the de-duplication.
  EXPECT_GT(empties, 100);
  EXPECT_GT(duplicates, 100);
}

// Many rounds of 2 buckets: nearly every visible pair collides in several
// rounds. Counting each pair once per round (Reformer without its duplicate
// correction) would be far from the definition; the result is within the
// bound of it, and with the union covering every visible key, equals exact
// attention.
TYPED_TEST(LshAttentionTest, DuplicatesAreCountedOnce) {
  using Scalar = TypeParam;
  const Index n = 30, d = 8;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 7), k = random_matrix<Scalar>(n, d, 8),
                          v = random_matrix<Scalar>(n, 3, 9);
  LshAttentionOptions o;
  o.hash = {LshHashKind::simhash, 2, 24, 3};
  o.mask = Mask::causal();
  Oracle seen;
  check(q, k, v, o, &seen);
  const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
  const double bound = lsh_bound(q, k, 1 / std::sqrt(as_double(d)), 24) * max_v;
  EXPECT_FALSE(matrices_near(seen.doubled, seen.out, 100 * bound));  // the alternative is distinguishable
  EXPECT_EQ(seen.empty_sets, 0);
  EXPECT_EQ(seen.largest_set, n);  // the last query's set is every key (P(miss) = 2^-24 per pair)
  const auto exact = reference_attention(q, k, v, {Mask::causal()});
  const auto got = lsh_attention(q, k, v, o);
  EXPECT_TRUE(matrices_near(got.output, exact.output, 2 * bound));
}

// Causality: the first t queries of a causal self-attention do not change
// when the keys and values after them are cut off (their buckets, and so the
// candidate sets, depend on the visible keys only).
TYPED_TEST(LshAttentionTest, CausalRowsIgnoreLaterKeys) {
  using Scalar = TypeParam;
  const Index n = 50, t = 20, d = 8;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 10), k = random_matrix<Scalar>(n, d, 11),
                          v = random_matrix<Scalar>(n, 4, 12);
  for (const Mask mask : {Mask::causal(0), Mask::strict_causal(0)}) {
    LshAttentionOptions o;
    o.hash = {LshHashKind::angular, 8, 3, 13};
    o.mask = mask;
    const auto full = lsh_attention(q, k, v, o);
    const auto cut = lsh_attention(q.topRows(t), k.topRows(t), v.topRows(t), o);
    const double tol =
        2 * lsh_bound(q, k, 1 / std::sqrt(as_double(d)), 3) * static_cast<double>(v.cwiseAbs().maxCoeff());
    EXPECT_TRUE(matrices_near(full.output.topRows(t), cut.output, tol)) << to_string(mask.kind);
  }
}

TYPED_TEST(LshAttentionTest, SeedsAreReproducible) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(30, 8, 14), k = random_matrix<Scalar>(30, 8, 15),
                          v = random_matrix<Scalar>(30, 2, 16);
  LshAttentionOptions o;
  o.hash = {LshHashKind::angular, 8, 2, 21};
  const auto a = lsh_attention(q, k, v, o), b = lsh_attention(q, k, v, o);
  EXPECT_TRUE(matrices_near(a.output, b.output, 0.0));
  o.hash.seed = 22;
  const auto c = lsh_attention(q, k, v, o);
  EXPECT_FALSE(matrices_near(a.output, c.output, 1e-3));
  // The index answers a repeated batch identically; one query alone goes
  // through other GEMM shapes (its tile has one row), so it agrees within
  // rounding: both are within the bound of the definition.
  const LshIndex<Scalar> index(k, v, {LshHashKind::angular, 8, 2, 21});
  const auto all = index.attend(q);
  EXPECT_TRUE(matrices_near(all.output, a.output, 0.0));
  const auto one = index.attend(q.middleRows(5, 1), {Mask::none()});
  const double tol =
      2 * lsh_bound(q, k, 1 / std::sqrt(8.0), 2) * static_cast<double>(v.cwiseAbs().maxCoeff());
  EXPECT_TRUE(matrices_near(one.output, all.output.middleRows(5, 1), tol));
}

TEST(LshAttentionInput, BadInputThrows) {
  const RowMatrix<double> q = RowMatrix<double>::Ones(3, 4), k = RowMatrix<double>::Ones(5, 4),
                          v = RowMatrix<double>::Ones(5, 2), k3 = RowMatrix<double>::Ones(5, 3),
                          v4 = RowMatrix<double>::Ones(4, 2);
  EXPECT_TRUE(
      throws_invalid_argument([&] { lsh_attention(q, k3, v); }, {"lsh_attention", "(3 x 4)", "(5 x 3)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v4); }, {"(5 x 4)", "(4 x 2)"}));
  LshAttentionOptions o;
  o.scale = -1.0;
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v, o); }, {"scale = -1"}));
  o = {};
  o.mask = Mask::causal(9);
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v, o); }, {"offset 9"}));
  o = {};
  o.mask = Mask::causal().with_window(2);  // refused, not ignored
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v, o); }, {"lsh_attention", "window = 2"}));
  o = {};
  o.hash.buckets = 5;
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v, o); }, {"buckets = 5"}));
  o.hash = {LshHashKind::angular, 4, 0};
  EXPECT_TRUE(throws_invalid_argument([&] { lsh_attention(q, k, v, o); }, {"rounds = 0"}));
  EXPECT_TRUE(throws_invalid_argument([&] { LshIndex<double>(k, v4); }, {"LshIndex", "(4 x 2)"}));
  const LshIndex<double> index(k, v);
  EXPECT_TRUE(throws_invalid_argument([&] { index.attend(k3); }, {"(5 x 3)"}));
}

}  // namespace
}  // namespace attnkit
