// Tests of attnkit/similarity/score.hpp: the score-policy hook of the fused
// kernel. A test policy uses every part of the concept (key terms, query
// terms, a transform, a row constant, positions); the kernel's rewritten form
// must agree with the policy's definition as the reference evaluates it, and
// the reference's generic path must agree with its dot-product path.

#include "attnkit/similarity/score.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::LD;
using test::matrices_near;
using test::throws_invalid_argument;

/// z_ij = scale (q_i . k_j) f_j + b_j + t_i + c_i with a per-key factor
/// f_j = 1 + gain k_j0^2, a per-key bias b_j = slope (kpos mod 5), a per-query
/// bias t_i = tilt q_i0 (through the transform) and a per-query constant
/// c_i = shift * qpos (through the epilogue).
struct TestScore {
  static constexpr int key_terms = 2;
  static constexpr int query_terms = 1;
  static constexpr bool transforms = true;
  double gain = 0.5, slope = 0.3, tilt = 0.7, shift = 0.01;

  void check(const char* where, const AttentionProblem&, const AttentionOptions&) const {
    if (!(gain >= 0)) detail::fail(where, ": gain = ", gain, " must be >= 0");
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index qpos, Index kpos, T scale) const {
    T dot = 0;
    for (Index c = 0; c < d; ++c)
      dot += q[c] * k[c];
    const T f = T(1) + static_cast<T>(gain) * k[0] * k[0];
    return scale * dot * f + static_cast<T>(slope) * static_cast<T>(kpos % 5) + static_cast<T>(tilt) * q[0] +
           static_cast<T>(shift) * static_cast<T>(qpos);
  }

  template <typename C>
  struct Kernel {
    C factor, slope2, tilt2, shift, gain;
    C prepare_query(const C* q, Index d, Index qpos, C* q_out, C* terms) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      terms[0] = tilt2 * q[0];
      return shift * static_cast<C>(qpos);
    }
    template <typename S>
    void key(const S* k, Index, Index kpos, C* terms) const {
      const C k0 = detail::to_compute<C>(k[0]);
      terms[0] = C(1) + gain * k0 * k0;
      terms[1] = slope2 * static_cast<C>(kpos % 5);
    }
    template <typename Packet>
    Packet transform(const Packet& s, const Packet* kt, const Packet* qt) const {
      return Eigen::internal::padd(Eigen::internal::pmadd(s, kt[0], kt[1]), qt[0]);
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    const double l2e = detail::log2e;
    return {static_cast<C>(pb.scale * l2e), static_cast<C>(slope * l2e), static_cast<C>(tilt * l2e),
            static_cast<C>(shift), static_cast<C>(gain)};
  }
};

template <typename Scalar>
class ScoreTest : public ::testing::Test {};
TYPED_TEST_SUITE(ScoreTest, test::Scalars);

// The oracle is the naive long-double attention with TestScore's formula
// written out again here; the reference evaluates TestScore::logit.
TYPED_TEST(ScoreTest, KernelFormOfAPolicyMatchesItsDefinition) {
  using Scalar = TypeParam;
  const TestScore policy;
  std::uint64_t seed = 8000;
  for (const Index n_q : {1, 3, 70})
    for (const Mask mask : {Mask::none(), Mask::causal(), Mask::causal().with_window(20).with_sinks(2)}) {
      const Index n_k = 130, d = 16;
      const auto w = make_iid_workload<Scalar>({n_q, n_k, d, 8}, ++seed);
      const AttentionOptions opt{mask, {}};
      const double scale = 0.25;
      const MaskLayout layout = resolve_mask(mask, n_q, n_k);
      const test::NaiveMask nm{mask.kind, layout.offset(), mask.window, mask.sinks};
      const RowMatrix<LD> ql = w.q.template cast<LD>(), kl = w.k.template cast<LD>(),
                          vl = w.v.template cast<LD>();
      const auto naive = test::naive_attention_with(
          n_q, n_k, vl,
          [&](Index i, Index j) {
            LD dot = 0;
            for (Index c = 0; c < d; ++c)
              dot += ql(i, c) * kl(j, c);
            const LD qpos = static_cast<LD>(layout.query_position(i));
            return static_cast<LD>(scale) * dot * (1 + 0.5L * kl(j, 0) * kl(j, 0)) +
                   0.3L * static_cast<LD>(j % 5) + 0.7L * ql(i, 0) + 0.01L * qpos;
          },
          [&](Index i, Index j) { return nm.visible(i, j, n_q, n_k); });
      const auto ref = reference_attention(w.q, w.k, w.v, opt, policy);
      // Bound: the flash_bounds derivation with the logit scale a_i replaced
      // by max_j (|scale q_i||k_j| f_j + |b_j| + |t_i|) and three more
      // roundings per logit (f_j, the fused multiply-add with b_j, + t_i);
      // the row constant adds one rounding of |c_i| to the lse only.
      const double u = 0.5 * eps<Scalar>(), max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
      const double chain = 128 + 16 + as_double(n_k) / 16 + 16;
      for (const FlashConfig cfg : {FlashConfig{1, 16, 16}, FlashConfig{2}}) {
        const auto got = flash_attention(w.q, w.k, w.v, opt, cfg, policy);
        for (Index i = 0; i < n_q; ++i) {
          double a = 0;
          for (Index j = 0; j < n_k; ++j) {
            const double f = 1 + 0.5 * static_cast<double>(w.k(j, 0) * w.k(j, 0));
            double dot = 0;
            for (Index c = 0; c < d; ++c)
              dot += std::fabs(static_cast<double>(w.q(i, c) * w.k(j, c)));
            a = std::max(a, scale * dot * f + 0.3 * 4 + 0.7 * std::fabs(static_cast<double>(w.q(i, 0))));
          }
          const double weights = u * (2 * (as_double(d) + 6) * a + 2 * a + 2);
          const double out_bound = max_v * (2 * weights + 2 * chain * u + u);
          for (Index c = 0; c < 8; ++c) {
            ASSERT_LE(
                std::fabs(static_cast<double>(got.output(i, c)) - static_cast<double>(naive.output(i, c))),
                out_bound)
                << "row " << i << " col " << c << " n_q " << n_q << " threads " << cfg.threads;
            ASSERT_LE(
                std::fabs(static_cast<double>(ref.output(i, c)) - static_cast<double>(naive.output(i, c))),
                2 * u * max_v + 1e-12)
                << "reference row " << i;
          }
          const double lse = static_cast<double>(naive.lse(i));
          EXPECT_NEAR(
              static_cast<double>(got.lse(i)), lse,
              (as_double(d) + 6) * u * a + weights + 2 * chain * u + 2 * eps<Scalar>() * std::fabs(lse))
              << "row " << i;
        }
      }
    }
}

/// The dot product written as a generic policy: the reference's generic path
/// and the kernel's transform path must agree with the default's fast paths.
struct GenericDot {
  static constexpr int key_terms = 0;
  static constexpr int query_terms = 0;
  static constexpr bool transforms = true;
  void check(const char*, const AttentionProblem&, const AttentionOptions&) const {}
  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T scale) const {
    T s = 0;
    for (Index c = 0; c < d; ++c)
      s += q[c] * k[c];
    return scale * s;
  }
  template <typename C>
  struct Kernel {
    C factor;
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      return C(0);
    }
    template <typename S>
    void key(const S*, Index, Index, C*) const {}
    template <typename Packet>
    Packet transform(const Packet& s, const Packet*, const Packet*) const {
      return s;
    }
  };
  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    return {static_cast<C>(pb.scale * detail::log2e)};
  }
};

TYPED_TEST(ScoreTest, GenericPathsAgreeWithTheDefaultPolicy) {
  using Scalar = TypeParam;
  const auto w = make_llm_like_workload<Scalar>({60, 200, 32, 32}, 8100);
  for (const Mask mask : {Mask::causal(), Mask::none().with_window(40)}) {
    const AttentionOptions opt{mask, {}};
    // Same arithmetic, an identity transform: the kernel's bits are the
    // default policy's.
    const auto fast = flash_attention(w.q, w.k, w.v, opt, FlashConfig{1});
    const auto generic = flash_attention(w.q, w.k, w.v, opt, FlashConfig{1}, GenericDot{});
    EXPECT_TRUE(matrices_near(generic.output, fast.output, 0.0));
    const auto fast_decode = flash_attention(w.q.bottomRows(2), w.k, w.v, opt, FlashConfig{1});
    const auto generic_decode =
        flash_attention(w.q.bottomRows(2), w.k, w.v, opt, FlashConfig{1}, GenericDot{});
    EXPECT_TRUE(matrices_near(generic_decode.output, fast_decode.output, 0.0));
    // The reference's per-key logit loop against its matrix-vector path:
    // both in the wide type, a d-term dot product apart in summation order.
    const auto ref = reference_attention(w.q, w.k, w.v, opt);
    const auto ref_generic = reference_attention(w.q, w.k, w.v, opt, GenericDot{});
    EXPECT_TRUE(matrices_near(ref_generic.output, ref.output, eps<Scalar>() * w.v.cwiseAbs().maxCoeff()));
  }
}

// The key terms are computed once per call into a table when several query
// blocks read them, tile by tile when one block does: the same function of
// the same key and position, so the same bits (without a mask, where the
// block size changes nothing else). Keys that are a slice of a longer
// sequence (first_position > 0) over two ranges: the table is indexed by K's
// row and fed the key's position (TestScore's key terms depend on it), so the
// slice gives the bits of the whole sequence restricted to the same ranges,
// for every mask.
TYPED_TEST(ScoreTest, KeyTermsPrecomputedPerCallGiveTheBitsOfPerTileTerms) {
  using Scalar = TypeParam;
  const Index n_k = 300, first = 37;
  // The ranges end before K does (the table spans K's rows up to the last
  // range's end, not n_k).
  const std::vector<KeyRange> ranges{KeyRange{first + 5, first + 140}, KeyRange{first + 170, first + 290}};
  KeySet slice;
  slice.first_position = first;
  slice.sequence_length = first + n_k;
  slice.ranges = ranges;
  KeySet whole;
  whole.ranges = ranges;
  // n_q 68: the last block of 4 rows runs the decode kernel, over the table too.
  for (const Index n_q : {Index(64), Index(68)}) {
    const auto w = make_llm_like_workload<Scalar>({n_q, first + n_k, 16, 12}, 8300);
    const RowMatrix<Scalar> k = w.k.bottomRows(n_k), v = w.v.bottomRows(n_k);
    const auto same_bits = [&](const AttentionResult<Scalar>& a, const AttentionResult<Scalar>& b) {
      bool ok = matrices_near(a.output, b.output, 0.0);
      for (Index i = 0; i < n_q; ++i)
        ok = ok && (a.lse(i) == b.lse(i) || (std::isinf(a.lse(i)) && std::isinf(b.lse(i))));
      return ok;
    };
    for (const int threads : {1, 2}) {
      if (n_q == 64) {
        // block_q 16: four blocks (the table), on one or two threads;
        // block_q 64: one block (per tile), on one thread (on two the
        // scheduler would split its keys into merged chunks: other
        // roundings).
        const AttentionOptions none{Mask::none(), {}};
        EXPECT_TRUE(same_bits(
            flash_attention_partial(w.q, k, v, slice, none, FlashConfig{threads, 16, 32}, TestScore{}),
            flash_attention_partial(w.q, k, v, slice, none, FlashConfig{1, 64, 32}, TestScore{})))
            << "threads " << threads;
      }
      for (const Mask mask : {Mask::none(), Mask::causal(), Mask::causal().with_window(90).with_sinks(3)}) {
        const AttentionOptions opt{mask, {}};
        const auto from_slice =
            flash_attention_partial(w.q, k, v, slice, opt, FlashConfig{threads, 16, 32}, TestScore{});
        KeySet whole_seq = whole;
        whole_seq.sequence_length = first + n_k;
        const auto from_whole =
            flash_attention_partial(w.q, w.k, w.v, whole_seq, opt, FlashConfig{threads, 16, 32}, TestScore{});
        EXPECT_TRUE(same_bits(from_slice, from_whole))
            << to_string(mask.kind) << " threads " << threads << " n_q " << n_q;
      }
    }
  }
}

TYPED_TEST(ScoreTest, PolicyParametersAreChecked) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 8, 4, 4}, 8200);
  TestScore bad;
  bad.gain = -1;
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, bad); },
                                      {"flash_attention", "gain = -1"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(w.q, w.k, w.v, {}, bad); },
                                      {"reference_attention", "gain"}));
}

TEST(DotProductScore, LogitIsTheScaledDotProduct) {
  const double q[3] = {1, -2, 0.5}, k[3] = {4, 1, -2};
  EXPECT_EQ(DotProductScore{}.logit(q, k, 3, 0, 0, 0.5), 0.5 * (4 - 2 - 1));
}

}  // namespace
}  // namespace attnkit
