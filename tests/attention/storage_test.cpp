// Tests of 16-bit (and 32/64-bit) storage in the fused kernel and the caches
// (attnkit/attention/flash.hpp, kv_cache.hpp, prune/cache.hpp), typed over
// every storage type: the kernel on STORED inputs against the long-double
// reference on exactly those (rounded) values, so the kernel's own error is
// isolated; decode, every mask; the bfloat16 dot-product path; NaN and +-inf
// in 16-bit storage; rounding and half's overflow to infinity; and the
// output error that rounding K and V itself causes, against its bound.

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/kv_cache.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/prune/cache.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::matrices_near;
using namespace test::flash_bounds;

template <typename Storage>
class StorageTest : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, double, Eigen::half, Eigen::bfloat16>;
TYPED_TEST_SUITE(StorageTest, StorageTypes);

/// The compute type of a storage type (double for double, float otherwise).
template <typename S>
using ComputeOf = std::conditional_t<std::is_same_v<S, double>, double, float>;

/// Unit roundoff of a storage format: 2^-p, p the significand bits.
template <typename S>
double storage_roundoff() {
  if constexpr (std::is_same_v<S, Eigen::half>)
    return std::ldexp(1.0, -11);
  else if constexpr (std::is_same_v<S, Eigen::bfloat16>)
    return std::ldexp(1.0, -8);
  else
    return 0.5 * static_cast<double>(std::numeric_limits<S>::epsilon());
}

TYPED_TEST(StorageTest, KernelOnStoredInputsMatchesTheReferenceOnTheSameValues) {
  using S = TypeParam;
  using C = ComputeOf<S>;
  const auto w = make_llm_like_workload<double>({90, 300, 32, 24}, 12000);
  const RowMatrix<S> q = w.q.cast<S>(), k = w.k.cast<S>(), v = w.v.cast<S>();
  // The reference on the same (rounded) values, in long double.
  const RowMatrix<double> qd = q.template cast<double>(), kd = k.template cast<double>(),
                          vd = v.template cast<double>();
  const RowMatrix<C> qc = qd.cast<C>();
  for (const Mask mask :
       {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal().with_window(50).with_sinks(2)})
    for (const FlashConfig cfg : {FlashConfig{1, 16, 16}, FlashConfig{2}})
      for (const Index rows : {Index(90), Index(2)}) {
        const AttentionOptions opt{mask, {}};
        const auto ref = reference_attention(qd.bottomRows(rows), kd, vd, opt);
        const AttentionResult<double> refd{ref.output, ref.lse};
        const Bound bound = error_bound(RowMatrix<C>(qc.bottomRows(rows)), RowMatrix<C>(kd.cast<C>()),
                                        RowMatrix<C>(vd.cast<C>()), 1.0 / std::sqrt(32.0),
                                        cfg.block_k > 0 ? cfg.block_k : 128, BoundKind::worst_case);
        // Q stored too (the bfloat16 dot-product path when S is bfloat16) and
        // Q in the compute type.
        const auto a = flash_attention(q.bottomRows(rows), k, v, opt, cfg);
        const auto b = flash_attention(qc.bottomRows(rows), k, v, opt, cfg);
        const AttentionResult<C> want{ref.output.cast<C>(), ref.lse.cast<C>()};
        EXPECT_TRUE(within_bound(a, want, bound)) << to_string(mask.kind) << " rows " << rows;
        EXPECT_TRUE(within_bound(b, want, bound)) << to_string(mask.kind) << " rows " << rows;
      }
}

TYPED_TEST(StorageTest, KVCacheStoresRoundedRowsAndAttendsOverThem) {
  using S = TypeParam;
  using C = ComputeOf<S>;
  const auto w = make_iid_workload<C>({2, 2000, 64, 64}, 12100);
  KVCache<S> cache(64, 64, 16);
  for (Index t = 0; t < 2000; t += 250)
    cache.append(w.k.middleRows(t, 250), w.v.middleRows(t, 250));
  EXPECT_EQ(cache.size(), 2000);
  const RowMatrix<S> ks = w.k.template cast<S>(), vs = w.v.template cast<S>();
  EXPECT_TRUE(
      (RowMatrix<S>(cache.keys()).template cast<double>().array() == ks.template cast<double>().array())
          .all());
  EXPECT_EQ(cache.bytes() >= sizeof(S) * 2000 * 128, true);
  for (const int threads : {1, 2}) {
    const auto got = cache.attend(w.q, {Mask::causal()}, FlashConfig{threads});
    const auto direct = flash_attention(w.q, ks, vs, {Mask::causal()}, FlashConfig{threads});
    EXPECT_TRUE(matrices_near(got.output, direct.output, 0.0));
  }
}

TYPED_TEST(StorageTest, NaNAndInfinityBehaveAsInFloat) {
  using S = TypeParam;
  const auto w = make_iid_workload<float>({40, 40, 8, 6}, 12200);
  RowMatrix<S> k = w.k.cast<S>(), v = w.v.cast<S>();
  k(20, 1) = S(std::numeric_limits<float>::quiet_NaN());
  v(30, 2) = S(std::numeric_limits<float>::infinity());
  const auto clean =
      flash_attention(w.q, RowMatrix<S>(w.k.cast<S>()), RowMatrix<S>(w.v.cast<S>()), {Mask::causal()});
  const auto r = flash_attention(w.q, k, v, {Mask::causal()});
  for (Index i = 0; i < 40; ++i)
    for (Index c = 0; c < 6; ++c) {
      if (i >= 20)
        EXPECT_TRUE(std::isnan(r.output(i, c))) << i;  // sees the NaN key
      else
        EXPECT_EQ(r.output(i, c), clean.output(i, c));
    }
  // +inf in V with a finite weight: +-inf or NaN in that column only (rows
  // 30.. see it, but rows >= 20 are NaN already).
  for (Index i = 0; i < 20; ++i)
    EXPECT_TRUE(r.output.row(i).allFinite());
}

TEST(StorageRounding, HalfOverflowsToInfinityAndRoundsToNearestEven) {
  // binary16: largest finite 65504; 65519.99 rounds down to it, 65520 (the
  // midpoint to the next power of two) rounds to +inf; 2^-24 is the smallest
  // subnormal, 2^-26 rounds to 0.
  EXPECT_EQ(static_cast<float>(Eigen::half(65504.0f)), 65504.0f);
  EXPECT_EQ(static_cast<float>(Eigen::half(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(static_cast<float>(Eigen::half(65520.0f))));
  EXPECT_TRUE(std::isinf(static_cast<float>(Eigen::half(1e5f))));
  EXPECT_EQ(static_cast<float>(Eigen::half(-1e5f)), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(static_cast<float>(Eigen::half(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));
  EXPECT_EQ(static_cast<float>(Eigen::half(std::ldexp(1.0f, -26))), 0.0f);
  EXPECT_EQ(static_cast<float>(Eigen::half(1.0f + std::ldexp(1.0f, -11))), 1.0f);     // a tie: to even
  EXPECT_EQ(static_cast<float>(Eigen::bfloat16(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // a tie: to even
  // 3e38 = 1.7634 2^127; to 7 fraction bits: 226 / 128 2^127 = 113 2^121 (float's range).
  EXPECT_EQ(static_cast<float>(Eigen::bfloat16(3e38f)), std::ldexp(113.0f, 121));
  // A cache of half rounds what it is given the same way: 1e5 becomes +inf,
  // and a query against it follows the logit rule (+inf logit: NaN row).
  KVCache<Eigen::half> cache(1, 1, 4);
  RowMatrix<float> k(2, 1), v(2, 1), q(1, 1);
  k << 1e5f, 1.0f;
  v << 1.0f, 2.0f;
  q << 1.0f;
  cache.append(k, v);
  EXPECT_TRUE(std::isinf(static_cast<float>(cache.keys()(0, 0))));
  const auto r = cache.attend(q, {Mask::none(), 1.0});
  EXPECT_TRUE(std::isnan(r.output(0, 0)));
}

// The error that rounding K and V to Storage causes (not the kernel's): with
// k~ = k (1 + d_k), v~ = v (1 + d_v), |d| <= u_s per entry, each logit moves
// by at most u_s scale sum_c |q_c k_c| <= u_s A (A the row's largest such
// sum: the logit range), every weight by a relative 2 u_s A (the logit and
// the normaliser), so the output moves by at most
//   |O~ - O| <= (2 u_s A (2 max|v|) + u_s max|v|) (1 + O(u_s A))
// to first order; docs/benchmarks.md lists the measured ratios.
TYPED_TEST(StorageTest, RoundingKAndVCostsAtMostTheDerivedBound) {
  using S = TypeParam;
  if constexpr (std::is_same_v<S, double>) GTEST_SKIP() << "double storage rounds nothing";
  const double us = storage_roundoff<S>();
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like}) {
    const auto w = make_workload<double>(kind, {256, 1024, 64, 64}, 12300);
    const auto exact = reference_attention(w.q, w.k, w.v, {Mask::causal()});
    const RowMatrix<double> kr = w.k.cast<S>().template cast<double>(),
                            vr = w.v.cast<S>().template cast<double>();
    const auto rounded = reference_attention(w.q, kr, vr, {Mask::causal()});
    const double max_v = w.v.cwiseAbs().maxCoeff();
    for (Index i = 0; i < 256; ++i) {
      const double a = (w.q.row(i).cwiseAbs() * w.k.cwiseAbs().transpose()).maxCoeff() / 8.0;
      const double bound = (4 * us * a + us) * max_v * (1 + 4 * us * a);
      const double err = (rounded.output.row(i) - exact.output.row(i)).cwiseAbs().maxCoeff();
      ASSERT_LE(err, bound) << to_string(kind) << " row " << i << " A = " << a;
    }
  }
}

TEST(StoragePrunedCache, SixteenBitKeysAttendThroughTheKernel) {
  const auto w = make_llm_like_workload<float>({40, 200, 16, 16}, 12400);
  const DimSelection sel(16, {0, 1, 2, 3, 8, 9, 10, 11});
  PrunedCacheOptions o;
  o.recent = 24;
  const PrunedKeyCache<float, Eigen::bfloat16> cache(w.k, sel, o);
  // The same cache built from keys rounded to bfloat16 first, stored as float:
  // identical stored values, so identical attention (same tiles, one thread).
  const RowMatrix<float> kr = w.k.cast<Eigen::bfloat16>().cast<float>();
  const PrunedKeyCache<float> reference(kr, sel, o);
  const auto a = cache.attention(w.q, w.v, {Mask::causal()}, FlashConfig{1});
  const auto b = reference.attention(w.q, w.v, {Mask::causal()}, FlashConfig{1});
  const Bound bound = error_bound(w.q, kr, w.v, 0.25, 128, BoundKind::worst_case);
  EXPECT_TRUE(within_bound(a, b, Bound{2 * bound.output, 2 * bound.lse}));
  EXPECT_EQ(cache.memory().compressed_key_bytes, sizeof(Eigen::bfloat16) * 176 * 8);
}

}  // namespace
}  // namespace attnkit
