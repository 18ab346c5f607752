// Tests of attnkit/attention/flash.hpp against the reference
// (attnkit/attention/reference.hpp, computed in a wider type), with the error
// bounds derived in attention/flash_bounds.hpp: the worst-case bound for every
// mask, offset, awkward shape, tile size and thread count, and at n = 4096 a
// first-order probabilistic bound (propagated_bound below) of order 1e-5 max|v|
// for float, the order the issue states.
//
// Built twice: flash_test with the portable flags of the test suite (SSE2:
// 4-lane float packets, 16-register tiles, no decode kernel) and
// flash_native_test with -march=native (AVX-512 here: 16-lane packets,
// 32-register tiles, the decode kernel for up to 8 rows), both with OpenMP
// when available, so every instruction-set path the benchmarks use is tested.

#include "attnkit/attention/flash.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../../bench/baseline/flash_9c49f25.hpp"
#include "attention/flash_bounds.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;
using namespace test::flash_bounds;

template <typename Scalar>
class FlashTest : public ::testing::Test {};
TYPED_TEST_SUITE(FlashTest, test::Scalars);

TYPED_TEST(FlashTest, MatchesReferenceForEveryMaskOffsetShapeAndTile) {
  using Scalar = TypeParam;
  std::uint64_t seed = 1000;
  int cases = 0;
  for (const Index n_q : {1, 3, 17, 70})
    for (const Index n_k : {1, 5, 33, 131})
      for (const Index d : {1, 3, 64}) {
        const Index d_v = d == 3 ? 5 : d;  // d_v != d included
        const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, ++seed);
        const RowMatrix<Scalar> k = random_matrix<Scalar>(n_k, d, ++seed);
        const RowMatrix<Scalar> v = random_matrix<Scalar>(n_k, d_v, ++seed);
        for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal}) {
          const Index max_offset =
              kind == MaskKind::none ? 0 : (kind == MaskKind::causal ? n_k - n_q : n_k - n_q + 1);
          if (max_offset < 0) continue;  // no valid layout for this shape
          for (Index offset = 0; offset <= max_offset; offset += std::max<Index>(1, max_offset / 3)) {
            const AttentionOptions opt{kind == MaskKind::none ? Mask::none() : Mask{kind, offset}, {}};
            const auto ref = reference_attention(q, k, v, opt);
            for (const Index block_k : {8, 16, 128})
              for (const int threads : {1, 2}) {
                const FlashConfig cfg{threads, 16, block_k};
                const auto got = flash_attention(q, k, v, opt, cfg);
                const Bound bound =
                    error_bound(q, k, v, 1.0 / std::sqrt(as_double(d)), block_k, BoundKind::worst_case);
                ASSERT_TRUE(within_bound(got, ref, bound))
                    << to_string(kind) << " offset " << offset << " n_q " << n_q << " n_k " << n_k << " d "
                    << d << " block_k " << block_k << " threads " << threads;
                ++cases;
              }
          }
        }
      }
  EXPECT_GT(cases, 1000);
}

TYPED_TEST(FlashTest, DefaultConfigAndLargeBlocksAgreeWithSmallBlocks) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({300, 300, 64, 48}, 3);
  const AttentionOptions opt{Mask::causal(), {}};
  const auto ref = reference_attention(w.q, w.k, w.v, opt);
  const Bound bound = error_bound(w.q, w.k, w.v, 0.125, 256, BoundKind::worst_case);
  for (const FlashConfig cfg : {FlashConfig{}, FlashConfig{1, 256, 256}, FlashConfig{2, 1, 1}})
    EXPECT_TRUE(within_bound(flash_attention(w.q, w.k, w.v, opt, cfg), ref, bound))
        << "block_q " << cfg.block_q << " block_k " << cfg.block_k;
  // Tiles far larger than the problem are capped at it (one 300-key tile: no
  // oversized workspace, no overflow when rounding to whole packets), for
  // prefill and for the decode kernel (two queries at the end of the keys).
  const FlashConfig huge{2, Index(1) << 40, Index(1) << 40};
  const Bound one_tile = error_bound(w.q, w.k, w.v, 0.125, 300, BoundKind::worst_case);
  EXPECT_TRUE(within_bound(flash_attention(w.q, w.k, w.v, opt, huge), ref, one_tile));
  const RowMatrix<Scalar> last = w.q.bottomRows(2);
  const Bound decode_bound = error_bound(last, w.k, w.v, 0.125, 300, BoundKind::worst_case);
  EXPECT_TRUE(within_bound(flash_attention(last, w.k, w.v, opt, huge),
                           reference_attention(last, w.k, w.v, opt), decode_bound));
}

// First-order probabilistic bound for large n (flash_bounds.hpp's worst-case
// bound charges every weight the worst logit error of its row and lets the
// errors add coherently: correct but ~100x loose at n = 4096).
// Per-logit rounding errors are independent across keys: weight j of row i
// is off by a relative delta_ij with standard deviation at most
//   s_i = u (sqrt(d + 3) a_i + 3 a_i + 2)   (dot product, exp2 argument, exp2),
// and to first order O_i moves by sum_j p_ij delta_ij (v_j - O_i), whose
// standard deviation is at most s_i sqrt(sum_j p_ij^2 (v_jc - O_ic)^2).
// Shared by all keys of a row (correlated, so worst case): the rounding of
// the scaled query and of scale * log2(e) to Scalar, each a relative u on
// the logits: at most 4 u a_i max|v| together. The two blocked sums (P V and
// l, rounded separately) add lambda sqrt(2 L) u max|v|. With lambda = 6
// (failure probability 3.1e-8 per entry) this is of order 1e-5 max|v| for
// float at n = 4096.
template <typename Scalar>
RowMatrix<double> propagated_bound(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k,
                                   const RowMatrix<Scalar>& v, const AttentionOptions& opt, double scale,
                                   Index block_k) {
  const double u = unit_roundoff<Scalar>(), lambda = 6.0;
  const Index d = q.cols(), n_k = k.rows();
  const RowMatrix<double> p = reference_attention_probabilities(q, k, opt).template cast<double>();
  const RowMatrix<double> vd = v.template cast<double>();
  const RowMatrix<double> o = p * vd;
  const RowMatrix<double> p2 = p.cwiseProduct(p);
  // sum_j p_ij^2 (v_jc - o_ic)^2 = (P2 V^2)_ic - 2 o_ic (P2 V)_ic + o_ic^2 (P2 1)_i
  const RowMatrix<double> a2 = p2 * vd.cwiseProduct(vd), a1 = p2 * vd;
  const Eigen::VectorXd a0 = p2.rowwise().sum();
  const RowMatrix<double> abs_logits =
      scale * q.template cast<double>().cwiseAbs() * k.template cast<double>().cwiseAbs().transpose();
  const double max_v = vd.cwiseAbs().maxCoeff();
  const double chain = as_double(block_k) + 16 + as_double(n_k) / as_double(block_k) + 16;
  RowMatrix<double> bound(q.rows(), v.cols());
  for (Index i = 0; i < q.rows(); ++i) {
    const double a = abs_logits.row(i).maxCoeff();
    const double s_i = u * (std::sqrt(as_double(d) + 3) * a + 3 * a + 2);
    for (Index c = 0; c < v.cols(); ++c) {
      const double var = std::max(0.0, a2(i, c) - 2 * o(i, c) * a1(i, c) + o(i, c) * o(i, c) * a0(i));
      bound(i, c) =
          lambda * s_i * std::sqrt(var) + 4 * u * a * max_v + (lambda * std::sqrt(2 * chain) + 2) * u * max_v;
    }
  }
  return bound;
}

// The headline: float error at n = 4096 relative to max|v| is of the
// order 1e-5; both the measured error and the derived bound are reported.
TYPED_TEST(FlashTest, ErrorAtN4096IsWithinTheDerivedBound) {
  using Scalar = TypeParam;
  // n = 4096 for float as the issue asks; double's long-double reference is
  // 10x slower, so 1024 there.
  const Index n = std::is_same_v<Scalar, float> ? 4096 : 1024, d = 64;
  for (const WorkloadKind kind : {WorkloadKind::llm_like, WorkloadKind::iid}) {
    const auto w = make_workload<Scalar>(kind, {n, n, d, d}, 4);
    for (const Mask mask : {Mask::none(), Mask::causal()}) {
      const AttentionOptions opt{mask, {}};
      const auto ref = reference_attention(w.q, w.k, w.v, opt);
      const auto got = flash_attention(w.q, w.k, w.v, opt, FlashConfig{2});
      const RowMatrix<double> bound = propagated_bound(w.q, w.k, w.v, opt, 0.125, 128);
      const RowMatrix<double> err =
          (got.output.template cast<double>() - ref.output.template cast<double>()).cwiseAbs();
      Index wi = 0, wc = 0;
      const double worst_ratio = (err.array() / bound.array()).maxCoeff(&wi, &wc);
      EXPECT_LE(worst_ratio, 1.0) << to_string(kind) << " " << to_string(mask.kind) << ": error "
                                  << err(wi, wc) << " > bound " << bound(wi, wc) << " at (" << wi << ", "
                                  << wc << ")";
      const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
      const std::string tag = std::string(to_string(kind)) + "_" + to_string(mask.kind);
      ::testing::Test::RecordProperty("max_error_over_max_v_" + tag, std::to_string(err.maxCoeff() / max_v));
      ::testing::Test::RecordProperty("max_bound_over_max_v_" + tag,
                                      std::to_string(bound.maxCoeff() / max_v));
      // The bound is not vacuous: of order 1e-5 max|v| for float (1e-14 for
      // double). At the time of writing the bounds were 7e-6 (iid) to 6e-5
      // (LLM-like, large |q||k|) max|v| and the measured errors 2e-8 to 5e-7.
      const double expected_order = std::is_same_v<Scalar, float> ? 1e-4 : 1e-12;
      EXPECT_LT(bound.maxCoeff() / max_v, expected_order) << tag;
      std::printf("[ info     ] %s %s: max error %.3g max|v|, bound %.3g max|v|\n", to_string(kind),
                  to_string(mask.kind), err.maxCoeff() / max_v, bound.maxCoeff() / max_v);
    }
  }
}

TYPED_TEST(FlashTest, ThreadCountsAgree) {
  using Scalar = TypeParam;
  // Prefill: query blocks are independent, results are bit-identical.
  const auto w = make_iid_workload<Scalar>({500, 500, 32, 32}, 5);
  const AttentionOptions opt{Mask::causal(), {}};
  const auto one = flash_attention(w.q, w.k, w.v, opt, FlashConfig{1});
  const auto two = flash_attention(w.q, w.k, w.v, opt, FlashConfig{2});
  EXPECT_TRUE(matrices_near(one.output, two.output, 0.0));
  EXPECT_TRUE(matrices_near(one.lse, two.lse, 0.0));
  // Decode: two threads split the keys and merge; equal up to reassociation.
  const auto dec = make_iid_workload<Scalar>({2, 5000, 64, 64}, 6);
  const auto d1 = flash_attention(dec.q, dec.k, dec.v, opt, FlashConfig{1, 0, 64});
  const auto d2 = flash_attention(dec.q, dec.k, dec.v, opt, FlashConfig{2, 0, 64});
  const auto ref = reference_attention(dec.q, dec.k, dec.v, opt);
  const Bound bound = error_bound(dec.q, dec.k, dec.v, 0.125, 64, BoundKind::worst_case);
  EXPECT_TRUE(within_bound(d1, ref, bound));
  EXPECT_TRUE(within_bound(d2, ref, bound));
  // Both are within `bound` of the reference, so within twice it of each other.
  EXPECT_TRUE(matrices_near(d1.output, d2.output, 2 * bound.output.maxCoeff()));
}

TYPED_TEST(FlashTest, DecodeAgainstLongCacheForEveryMask) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({7, 3000, 128, 128}, 7);
  for (const Index n_q : {1, 2, 5, 7})
    for (const Mask mask :
         {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::strict_causal(3000 - n_q + 1)}) {
      const RowMatrix<Scalar> q = w.q.topRows(n_q);
      const AttentionOptions opt{mask, {}};
      const auto ref = reference_attention(q, w.k, w.v, opt);
      const Bound bound = error_bound(q, w.k, w.v, 1.0 / std::sqrt(128.0), 128, BoundKind::worst_case);
      for (const int threads : {1, 2})
        EXPECT_TRUE(within_bound(flash_attention(q, w.k, w.v, opt, FlashConfig{threads}), ref, bound))
            << "n_q " << n_q << " " << to_string(mask.kind) << " threads " << threads;
    }
}

TYPED_TEST(FlashTest, SingleKeyAndWidthOne) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(9, 1, 8), k = random_matrix<Scalar>(1, 1, 9);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(1, 3, 10);
  const auto r = flash_attention(q, k, v);
  for (Index i = 0; i < 9; ++i) {
    EXPECT_TRUE(matrices_near(r.output.row(i), v.row(0), eps<Scalar>() * v.cwiseAbs().maxCoeff()));
    EXPECT_NEAR(static_cast<double>(r.lse(i)), static_cast<double>(q(i, 0) * k(0, 0)),
                4 * eps<Scalar>() * (1 + std::fabs(static_cast<double>(q(i, 0) * k(0, 0)))));
  }
}

TYPED_TEST(FlashTest, RowsThatSeeNoKeyAreZeroWithMinusInfinityLse) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({40, 40, 16, 16}, 11);
  for (const int threads : {1, 2}) {
    const auto r = flash_attention(w.q, w.k, w.v, {Mask::strict_causal()}, FlashConfig{threads, 16, 8});
    EXPECT_TRUE((r.output.row(0).array() == 0).all());
    EXPECT_EQ(r.lse(0), -std::numeric_limits<Scalar>::infinity());
    EXPECT_TRUE(r.output.bottomRows(39).allFinite());
    // A one-query decode that sees nothing (strict, offset 0).
    const auto e = flash_attention(w.q.topRows(1), w.k, w.v, {Mask::strict_causal(0)}, FlashConfig{threads});
    EXPECT_TRUE((e.output.array() == 0).all());
    EXPECT_EQ(e.lse(0), -std::numeric_limits<Scalar>::infinity());
  }
}

TYPED_TEST(FlashTest, HugeLogitsNeitherOverflowNorGiveNaN) {
  using Scalar = TypeParam;
  // Logits of +-1e4 (scale 1, d = 1) through the prefill and decode kernels.
  const Index n = 40;
  RowMatrix<Scalar> q(n, 1), k(n, 1);
  for (Index i = 0; i < n; ++i) {
    q(i, 0) = Scalar(i % 2 ? 100 : -100);
    k(i, 0) = Scalar(i % 3 ? 100 : -100) + Scalar(i) * Scalar(1e-2);
  }
  const RowMatrix<Scalar> v = random_matrix<Scalar>(n, 4, 12);
  // Logits of magnitude 1e4 are only known to about 2e4 eps (the scaled query
  // and the product each round), which moves every weight by that relative
  // amount and the output by twice it times max|v|.
  const double tol = 8 * 1e4 * eps<Scalar>() * static_cast<double>(v.cwiseAbs().maxCoeff());
  for (const Mask mask : {Mask::none(), Mask::causal()}) {
    // All n queries (prefill kernel) and the last query alone (decode kernel).
    for (const Index rows : {n, Index(1)}) {
      const RowMatrix<Scalar> qs = q.bottomRows(rows);
      const AttentionOptions opt{mask, 1.0};
      const auto ref = reference_attention(qs, k, v, opt);
      const auto got = flash_attention(qs, k, v, opt);
      ASSERT_TRUE(got.output.allFinite());
      ASSERT_TRUE(got.lse.allFinite());
      EXPECT_TRUE(matrices_near(got.output, ref.output, tol)) << to_string(mask.kind) << " rows " << rows;
      EXPECT_TRUE(matrices_near(got.lse, ref.lse, 4 * 1e4 * eps<Scalar>()));
    }
  }
}

// A NaN reaches exactly the rows (and, for V, the columns) it enters, through
// masked tiles, decode and key splits alike.
TYPED_TEST(FlashTest, NaNPropagatesToExactlyTheRowsItReaches) {
  using Scalar = TypeParam;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  const Index n = 70;
  const auto w = make_iid_workload<Scalar>({n, n, 8, 6}, 13);
  for (const FlashConfig cfg : {FlashConfig{1, 16, 8}, FlashConfig{2, 64, 16}}) {
    const AttentionOptions opt{Mask::causal(), {}};
    const auto clean = flash_attention(w.q, w.k, w.v, opt, cfg);

    RowMatrix<Scalar> q = w.q;
    q(20, 3) = nan;
    const auto rq = flash_attention(q, w.k, w.v, opt, cfg);
    for (Index i = 0; i < n; ++i) {
      if (i == 20)
        EXPECT_TRUE(rq.output.row(i).array().isNaN().all() && std::isnan(rq.lse(i)));
      else
        EXPECT_TRUE(matrices_near(rq.output.row(i), clean.output.row(i), 0.0)) << "row " << i;
    }

    RowMatrix<Scalar> k = w.k;
    k(37, 0) = nan;  // seen by queries 37..69 only
    const auto rk = flash_attention(w.q, k, w.v, opt, cfg);
    for (Index i = 0; i < n; ++i) {
      if (i >= 37)
        EXPECT_TRUE(rk.output.row(i).array().isNaN().all()) << "row " << i;
      else
        EXPECT_TRUE(matrices_near(rk.output.row(i), clean.output.row(i), 0.0)) << "row " << i;
    }

    RowMatrix<Scalar> v = w.v;
    v(45, 2) = nan;  // queries 45..69, column 2 only
    const auto rv = flash_attention(w.q, w.k, v, opt, cfg);
    for (Index i = 0; i < n; ++i)
      for (Index c = 0; c < 6; ++c) {
        if (i >= 45 && c == 2)
          EXPECT_TRUE(std::isnan(rv.output(i, c))) << i;
        else
          EXPECT_EQ(rv.output(i, c), clean.output(i, c)) << "(" << i << ", " << c << ")";
      }

    // Decode (one query, the decode kernel on 8+ lane builds): a NaN query,
    // and a NaN in key 0, i.e. in the first tile the row sees, where the
    // running maximum is still -inf.
    RowMatrix<Scalar> q1 = w.q.bottomRows(1);
    q1(0, 5) = nan;
    const auto rq1 = flash_attention(q1, w.k, w.v, opt, cfg);
    EXPECT_TRUE(rq1.output.array().isNaN().all());
    EXPECT_TRUE(std::isnan(rq1.lse(0)));
    RowMatrix<Scalar> k0 = w.k;
    k0(0, 2) = nan;  // every query sees key 0
    const auto rk0 = flash_attention(w.q.bottomRows(1), k0, w.v, opt, cfg);
    EXPECT_TRUE(rk0.output.array().isNaN().all());
    EXPECT_TRUE(std::isnan(rk0.lse(0)));

    // Decode rows (few queries) with a NaN key in the middle of the cache.
    const auto dclean = flash_attention(w.q.bottomRows(2), w.k, w.v, opt, cfg);
    RowMatrix<Scalar> kd = w.k;
    kd(n - 1, 1) = nan;  // only the last query sees the last key
    const auto rd = flash_attention(w.q.bottomRows(2), kd, w.v, opt, cfg);
    EXPECT_TRUE(matrices_near(rd.output.row(0), dclean.output.row(0), 0.0));
    EXPECT_TRUE(rd.output.row(1).array().isNaN().all());
  }
}

TYPED_TEST(FlashTest, AcceptsColumnMajorInputsAndRowBlocks) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({20, 50, 12, 7}, 14);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> qc = w.q, kc = w.k, vc = w.v;
  const auto a = flash_attention(w.q, w.k, w.v, {Mask::causal()});
  const auto b = flash_attention(qc, kc, vc, {Mask::causal()});
  EXPECT_TRUE(matrices_near(a.output, b.output, 0.0));
  // Row blocks of a larger matrix are used in place.
  const auto c = flash_attention(w.q.topRows(5), w.k.topRows(30), w.v.topRows(30));
  const auto ref = reference_attention(w.q.topRows(5), w.k.topRows(30), w.v.topRows(30));
  EXPECT_TRUE(within_bound(c, ref,
                           error_bound<Scalar>(w.q.topRows(5), w.k.topRows(30), w.v.topRows(30),
                                               1.0 / std::sqrt(12.0), 128, BoundKind::worst_case)));
}

TYPED_TEST(FlashTest, BadInputThrowsAndWritesNothing) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(3, 4, 15), k = random_matrix<Scalar>(5, 4, 16);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(5, 2, 17), k3 = random_matrix<Scalar>(5, 3, 18);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(q, k3, v); },
                                      {"flash_attention", "Q (3 x 4)", "K (5 x 3)"}));
  EXPECT_NO_THROW(flash_attention(q, k, k));  // V may have any width
  EXPECT_TRUE(
      throws_invalid_argument([&] { flash_attention(q, k, v.topRows(4)); }, {"K (5 x 4)", "V (4 x 2)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(q, k, v, {Mask::none(), -2.0}); }, {"scale"}));
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(q, k, v, {Mask::causal(7)}); }, {"offset 7"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { flash_attention(q, k, v, {}, FlashConfig{-1}); }, {"threads = -1"}));
  RowMatrix<Scalar> out = RowMatrix<Scalar>::Constant(3, 3, Scalar(7));
  Vector<Scalar> lse = Vector<Scalar>::Constant(3, Scalar(7));
  EXPECT_TRUE(
      throws_invalid_argument([&] { flash_attention_into(q, k, v, out, lse); }, {"out (3 x 3)", "(3 x 2)"}));
  EXPECT_TRUE((out.array() == Scalar(7)).all()) << "nothing may be written on error";
  RowMatrix<Scalar> out2(3, 2);
  Vector<Scalar> lse4(4);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention_into(q, k, v, out2, lse4); }, {"lse has 4"}));
}

// The default policy reproduces the kernel before the kernel layer (commit
// 9c49f25, kept verbatim in bench/baseline/) bit for bit in the prefill
// kernel: same tiles, same summation order, same key splits. The decode
// kernel (at most half a packet of queries, on 8+ lane builds) computes the
// same sums, but the previous kernel left two loops of it (the rescaled
// accumulator, acc = alpha acc + tile) to the compiler, whose choice between
// a fused multiply-add and a multiply then an add depends on the context it
// is compiled in (the two agree bit for bit at -O2 or -ffp-contract=off);
// the new one writes them with explicit fused multiply-adds. Decode results
// may therefore differ by that rounding: at most u l max|v| per tile before
// the division by l, i.e. u max|v| per tile and one more for the epilogue.
TYPED_TEST(FlashTest, DefaultPolicyReproducesThePreviousKernel) {
  using Scalar = TypeParam;
  std::uint64_t seed = 5000;
  int cases = 0;
  for (const Index n_q : {1, 3, 17, 70, 300})
    for (const Index n_k : {5, 131, 700})
      for (const Index d : {2, 6, 64}) {
        if (n_q > n_k) continue;
        const auto w = make_llm_like_workload<Scalar>({n_q, n_k, d, d == 6 ? 5 : d}, ++seed);
        for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(0)})
          for (const FlashConfig cfg :
               {FlashConfig{1}, FlashConfig{2}, FlashConfig{2, 16, 8}, FlashConfig{1, 32, 64}}) {
            const AttentionOptions opt{mask, {}};
            RowMatrix<Scalar> out(n_q, w.v.cols());
            Vector<Scalar> lse(n_q);
            baseline_9c49f25::flash_attention_into(
                w.q, w.k, w.v, out, lse, opt,
                baseline_9c49f25::FlashConfig{cfg.threads, cfg.block_q, cfg.block_k});
            const auto now = flash_attention(w.q, w.k, w.v, opt, cfg);
            // Blocks of at most decode_max_rows queries (a short call, or the
            // last partial block) run the decode kernel: their rows agree
            // within the contraction rounding, the others bit for bit.
            const Index bq = detail::flash_tiling<Scalar>("test", cfg, n_q, n_k).block_q;
            const Index last = n_q - (n_q - 1) / bq * bq;
            const Index decode_from = last <= detail::decode_max_rows<Scalar>() ? n_q - last : n_q;
            const Index bk = cfg.block_k > 0 ? cfg.block_k : 128;
            const double tiles = as_double(n_k) / as_double(bk) + 2;
            for (Index i = 0; i < n_q; ++i) {
              if (i >= decode_from) {
                ASSERT_TRUE(matrices_near(
                    now.output.row(i), out.row(i),
                    tiles * 0.5 * eps<Scalar>() * static_cast<double>(w.v.cwiseAbs().maxCoeff())))
                    << "decode row " << i << " n_q " << n_q << " n_k " << n_k;
                // l's update (l = alpha l + sum) is a scalar expression the
                // compiler may fuse or not too: relative u per tile on l.
                ASSERT_NEAR(static_cast<double>(now.lse(i)), static_cast<double>(lse(i)),
                            tiles * eps<Scalar>() * (1 + std::fabs(static_cast<double>(lse(i)))));
                continue;
              }
              ASSERT_TRUE((now.output.row(i).array() == out.row(i).array()).all())
                  << "row " << i << " n_q " << n_q << " n_k " << n_k << " d " << d << " "
                  << to_string(mask.kind) << " threads " << cfg.threads << " block_k " << cfg.block_k;
              ASSERT_TRUE(now.lse(i) == lse(i)) << "row " << i << ": " << now.lse(i) << " vs " << lse(i);
            }
            ++cases;
          }
      }
  EXPECT_GT(cases, 300);
}

TYPED_TEST(FlashTest, BandAndSinkMasksMatchTheReference) {
  using Scalar = TypeParam;
  std::uint64_t seed = 6000;
  int cases = 0;
  for (const Index n_q : {1, 5, 70})
    for (const Index n_k : {33, 300})
      for (const Index d : {3, 64}) {
        if (n_q > n_k) continue;
        const auto w = make_iid_workload<Scalar>({n_q, n_k, d, d == 3 ? 5 : d}, ++seed);
        for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal})
          for (const Index window : {1, 5, 40, 200})
            for (const Index sinks : {0, 1, 4}) {
              const Index offset = kind == MaskKind::none ? 0 : (n_k - n_q) / 2;
              const Mask base = kind == MaskKind::none ? Mask::none() : Mask{kind, offset};
              const AttentionOptions opt{base.with_window(window).with_sinks(sinks), {}};
              const auto ref = reference_attention(w.q, w.k, w.v, opt);
              for (const FlashConfig cfg : {FlashConfig{1, 16, 8}, FlashConfig{2, 16, 16}, FlashConfig{2}}) {
                const Index bk = cfg.block_k > 0 ? cfg.block_k : 128;
                const Bound bound =
                    error_bound(w.q, w.k, w.v, 1.0 / std::sqrt(as_double(d)), bk, BoundKind::worst_case);
                ASSERT_TRUE(within_bound(flash_attention(w.q, w.k, w.v, opt, cfg), ref, bound))
                    << to_string(kind) << " window " << window << " sinks " << sinks << " n_q " << n_q
                    << " n_k " << n_k << " d " << d << " threads " << cfg.threads << " block_k "
                    << cfg.block_k;
                ++cases;
              }
            }
      }
  EXPECT_GT(cases, 600);
}

// Keys outside a query's band and sinks are never read: NaN there reaches
// nothing (prefill, decode and key splits).
TYPED_TEST(FlashTest, KeysOutsideTheBandAreNeverRead) {
  using Scalar = TypeParam;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  const Index n = 400;
  const auto w = make_iid_workload<Scalar>({n, n, 16, 8}, 6100);
  const Mask mask = Mask::causal().with_window(64).with_sinks(2);
  // Queries 300.. see keys [2, ...) only from 237 on: poison keys 2..236.
  RowMatrix<Scalar> k = w.k, v = w.v;
  for (Index j = 2; j < 237; ++j) {
    k(j, j % 16) = nan;
    v(j, j % 8) = nan;
  }
  const RowMatrix<Scalar> q = w.q.bottomRows(100);
  for (const FlashConfig cfg : {FlashConfig{1, 16, 8}, FlashConfig{2}, FlashConfig{2, 0, 16}}) {
    const auto clean = flash_attention(q, w.k, w.v, {mask}, cfg);
    const auto poisoned = flash_attention(q, k, v, {mask}, cfg);
    EXPECT_TRUE(poisoned.output.allFinite());
    EXPECT_TRUE(matrices_near(poisoned.output, clean.output, 0.0));
    // Decode rows too.
    const auto d_clean = flash_attention(q.bottomRows(3), w.k, w.v, {mask}, cfg);
    const auto d_poisoned = flash_attention(q.bottomRows(3), k, v, {mask}, cfg);
    EXPECT_TRUE(matrices_near(d_poisoned.output, d_clean.output, 0.0));
  }
}

// docs/design.md: non-finite inputs follow the logit they produce. A -inf
// logit is a masked key; +inf or NaN logits make the row NaN; the reference
// and the kernel agree on every such row, through prefill and decode.
TYPED_TEST(FlashTest, NonFiniteInputsFollowTheirLogits) {
  using Scalar = TypeParam;
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Index n = 40;
  const auto w = make_iid_workload<Scalar>({n, n, 4, 3}, 6200);
  RowMatrix<Scalar> q = w.q, k = w.k;
  for (Index j = 0; j < n; ++j)
    k(j, 0) = Scalar(1) + std::abs(k(j, 0));  // column 0 positive for every key
  q(10, 0) = -inf;                            // row 10: every logit -inf: sees no key
  q(10, 1) = Scalar(1);
  q(11, 0) = inf;  // row 11: every logit +inf: NaN
  q(11, 1) = Scalar(1);
  k(25, 1) = -inf;  // key 25: -inf logit where q_1 > 0, +inf where q_1 < 0
  for (const Mask mask : {Mask::none(), Mask::causal()})
    for (const FlashConfig cfg : {FlashConfig{1, 16, 8}, FlashConfig{2}}) {
      const AttentionOptions opt{mask, {}};
      const auto ref = reference_attention(q, k, w.v, opt);
      const auto got = flash_attention(q, k, w.v, opt, cfg);
      EXPECT_TRUE((got.output.row(10).array() == 0).all());
      EXPECT_EQ(got.lse(10), -inf);
      EXPECT_TRUE(got.output.row(11).array().isNaN().all() && std::isnan(got.lse(11)));
      for (Index i = 0; i < n; ++i) {
        if (i == 10 || i == 11) continue;
        const bool sees25 = mask.kind == MaskKind::none || i >= 25;
        const bool nan_row = sees25 && q(i, 1) < 0;
        EXPECT_EQ(std::isnan(got.lse(i)), nan_row) << "row " << i;
        EXPECT_EQ(std::isnan(ref.lse(i)), nan_row) << "row " << i;
      }
      const RowMatrix<Scalar> ro = ref.output, go = got.output;
      // Compare the finite rows with the bound of the finite inputs' scale.
      for (Index i = 0; i < n; ++i) {
        if (i == 10 || i == 11 || std::isnan(ref.lse(i))) continue;
        const RowMatrix<Scalar> qi = q.row(i);
        const RowMatrix<Scalar> kf = k.array().isFinite().select(k, Scalar(0));
        const Bound b = error_bound(qi, kf, w.v, 0.5, 128, BoundKind::worst_case);
        for (Index c = 0; c < 3; ++c)
          EXPECT_LE(std::fabs(static_cast<double>(go(i, c) - ro(i, c))), b.output(0)) << i << ", " << c;
      }
      // Decode: the same rows one at a time.
      for (const Index i : {Index(10), Index(11), Index(30)}) {
        const auto d1 = flash_attention(q.middleRows(i, 1), k, w.v,
                                        {mask.kind == MaskKind::none ? Mask::none() : Mask::causal(i)}, cfg);
        const auto r1 = reference_attention(q.middleRows(i, 1), k, w.v,
                                            {mask.kind == MaskKind::none ? Mask::none() : Mask::causal(i)});
        EXPECT_EQ(std::isnan(d1.lse(0)), std::isnan(r1.lse(0))) << i;
        EXPECT_EQ(d1.lse(0) == -inf, r1.lse(0) == -inf) << i;
      }
    }
}

TYPED_TEST(FlashTest, OutputsThatAliasAnInputAreRefused) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({6, 6, 4, 4}, 6300);
  RowMatrix<Scalar> q = w.q, k = w.k, v = w.v;
  const RowMatrix<Scalar> v0 = v, q0 = q;
  Vector<Scalar> lse(6);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention_into(q, k, v, v, lse); }, {"out", "V"}));
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention_into(q, k, v, q, lse); }, {"out", "Q"}));
  // Partial overlap: Q is rows 0..3, out rows 2..5 of the same matrix.
  EXPECT_TRUE(throws_invalid_argument(
      [&] { flash_attention_into(q.topRows(4), k, v, q.bottomRows(4), lse.head(4)); }, {"out", "Q"}));
  Eigen::Map<Vector<Scalar>> lse_in_k(k.data(), 6);
  RowMatrix<Scalar> out(6, 4);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention_into(q, k, v, out, lse_in_k); }, {"lse", "K"}));
  EXPECT_TRUE(matrices_near(v, v0, 0.0));
  EXPECT_TRUE(matrices_near(q, q0, 0.0));
}

// Float inputs, double arithmetic: within double's worst-case bound of the
// (long double) reference on the same inputs.
TYPED_TEST(FlashTest, StoredTypeAndComputeTypeAreIndependent) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({70, 300, 64, 48}, 6400);
  const RowMatrix<double> qd = w.q.template cast<double>(), kd = w.k.template cast<double>(),
                          vd = w.v.template cast<double>();
  for (const Mask mask : {Mask::causal(), Mask::causal().with_window(50).with_sinks(3)}) {
    const AttentionOptions opt{mask, {}};
    const auto ref = reference_attention(qd, kd, vd, opt);
    const Bound bound = error_bound(qd, kd, vd, 0.125, 128, BoundKind::worst_case);
    const AttentionResult<double> wide = flash_attention<double>(w.q, w.k, w.v, opt);
    EXPECT_TRUE(within_bound(wide, ref, bound));
    const AttentionResult<double> wide_decode = flash_attention<double>(w.q.bottomRows(2), w.k, w.v, opt);
    const auto ref_decode = reference_attention(qd.bottomRows(2), kd, vd, opt);
    EXPECT_TRUE(within_bound(
        wide_decode, ref_decode,
        error_bound(RowMatrix<double>(qd.bottomRows(2)), kd, vd, 0.125, 128, BoundKind::worst_case)));
  }
}

TYPED_TEST(FlashTest, TileSizesAreCappedAtTheWorkingSetLimit) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({1100, 2500, 8, 8}, 6500);
  const AttentionOptions opt{Mask::causal(), {}};
  // Requests beyond the limits run with the limits themselves: the same
  // tiles, so the same bits.
  const auto capped = flash_attention(w.q, w.k, w.v, opt, FlashConfig{1, Index(1) << 40, Index(1) << 40});
  const auto at_limit =
      flash_attention(w.q, w.k, w.v, opt, FlashConfig{1, flash_max_block_q, flash_max_block_k});
  EXPECT_TRUE(matrices_near(capped.output, at_limit.output, 0.0));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { flash_attention(w.q, w.k, w.v, opt, FlashConfig{flash_max_threads + 1}); }, {"threads = 4097"}));
}

TEST(FlashBuild, OpenMPIsUsedWhenTheTestIsBuiltWithIt) {
#if defined(ATTNKIT_TEST_EXPECT_OPENMP)
  EXPECT_TRUE(detail::openmp_enabled());
#else
  GTEST_SKIP() << "built without OpenMP: thread counts > 1 run on one thread";
#endif
}

}  // namespace
}  // namespace attnkit
