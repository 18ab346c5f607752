// Tests of attnkit/workload/synthetic.hpp: determinism, shapes, and that each
// generator has the property it claims to imitate.

#include "attnkit/workload/synthetic.hpp"

#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "attnkit/attention/reference.hpp"
#include "attnkit/core/softmax.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::throws_invalid_argument;

template <typename Scalar>
class SyntheticTest : public ::testing::Test {};
TYPED_TEST_SUITE(SyntheticTest, test::Scalars);

TYPED_TEST(SyntheticTest, SameSeedSameNumbersOtherSeedOtherNumbers) {
  using Scalar = TypeParam;
  const WorkloadShape shape{9, 33, 16, 8};
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like}) {
    const auto a = make_workload<Scalar>(kind, shape, 7), b = make_workload<Scalar>(kind, shape, 7);
    const auto c = make_workload<Scalar>(kind, shape, 8);
    EXPECT_TRUE(matrices_near(a.q, b.q, 0.0)) << to_string(kind);
    EXPECT_TRUE(matrices_near(a.k, b.k, 0.0)) << to_string(kind);
    EXPECT_TRUE(matrices_near(a.v, b.v, 0.0)) << to_string(kind);
    EXPECT_GT((a.k - c.k).cwiseAbs().maxCoeff(), Scalar(0.01)) << to_string(kind);
    EXPECT_EQ(a.q.rows(), 9);
    EXPECT_EQ(a.q.cols(), 16);
    EXPECT_EQ(a.k.rows(), 33);
    EXPECT_EQ(a.v.rows(), 33);
    EXPECT_EQ(a.v.cols(), 8);
    EXPECT_TRUE(a.q.allFinite() && a.k.allFinite() && a.v.allFinite());
  }
}

TEST(SyntheticPortability, FloatAndDoubleAgreeToFloatRounding) {
  const WorkloadShape shape{8, 40, 16, 16};
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like}) {
    const auto f = make_workload<float>(kind, shape, 3);
    const auto d = make_workload<double>(kind, shape, 3);
    EXPECT_TRUE(matrices_near(f.k, d.k, eps<float>() * d.k.cwiseAbs().maxCoeff())) << to_string(kind);
    EXPECT_TRUE(matrices_near(f.q, d.q, eps<float>() * d.q.cwiseAbs().maxCoeff())) << to_string(kind);
  }
}

// The random stream is pinned to literal values: std::mt19937_64's sequence
// is fixed by the standard ([rand.predef]: the 10000th output of a
// default-constructed engine is 9981545732273789042), the uniform is integer
// arithmetic and one exact scaling, so these hold bit for bit on any
// platform. The normal goes through libm's log, sin and cos: pinned to a few
// ulp.
TEST(SyntheticPortability, TheRandomStreamIsPinned) {
  std::mt19937_64 standard;
  for (int i = 0; i < 9999; ++i)
    standard();
  EXPECT_EQ(standard(), 9981545732273789042ULL);
  EXPECT_EQ(std::mt19937_64(42)(), 13930160852258120406ULL);
  detail::Random uniform(42);
  EXPECT_EQ(uniform.uniform(), 0.75515553295453897);
  detail::Random normal(42);
  EXPECT_NEAR(normal.normal(), -1.0771745442782885, 8 * eps<double>());
  EXPECT_NEAR(normal.normal(), -1.2860634502166481, 8 * eps<double>());
  // The generators draw from this stream: the first iid query entry is the
  // first normal of the seed.
  EXPECT_NEAR(make_iid_workload<double>({1, 1, 2, 1}, 42).q(0, 0), -1.0771745442782885, 8 * eps<double>());
}

TEST(SyntheticIid, MomentsMatchTheOptions) {
  const auto w = make_iid_workload<double>({2000, 2000, 32, 32}, 5, {1.0, 2.0, 0.5});
  // 64000 samples: the standard error of a std estimate is std / sqrt(2 N)
  // ~ 0.003 std; 6 standard errors.
  const auto sd = [](const RowMatrix<double>& m) {
    return std::sqrt((m.array() - m.mean()).square().mean());
  };
  EXPECT_NEAR(sd(w.q), 1.0, 6 * 1.0 / std::sqrt(2 * 64000.0));
  EXPECT_NEAR(sd(w.k), 2.0, 6 * 2.0 / std::sqrt(2 * 64000.0));
  EXPECT_NEAR(sd(w.v), 0.5, 6 * 0.5 / std::sqrt(2 * 64000.0));
  EXPECT_NEAR(w.k.mean(), 0.0, 6 * 2.0 / std::sqrt(64000.0));
}

TEST(SyntheticClustered, QueriesAttendToTheirOwnCluster) {
  const Index clusters = 8;
  const auto w = make_clustered_workload<double>({64, 512, 64, 16}, 6, {clusters, 8.0, 2.0, 0.25});
  const RowMatrix<double> p = reference_attention_probabilities(w.q, w.k);
  // Which cluster a query belongs to: the one receiving most of its mass.
  double own_mass = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    Eigen::VectorXd mass = Eigen::VectorXd::Zero(clusters);
    for (Index j = 0; j < p.cols(); ++j)
      mass(j % clusters) += p(i, j);
    own_mass += mass.maxCoeff();
  }
  own_mass /= static_cast<double>(p.rows());
  // Margin 8 logits over 7/8 of the keys: own-cluster mass ~ 1 / (1 + 7 e^-8) ~ 0.998.
  EXPECT_GT(own_mass, 0.95);
  // Peaked: far fewer effective keys than the 64 keys of a cluster (logit std
  // 2 inside a cluster: ~ 64 e^-2 ~ 9 keys).
  const Vector<double> support = effective_support(p);
  EXPECT_LT(support.mean(), 32.0);
  // iid attention over 512 keys is diffuse in comparison.
  const auto iid = make_iid_workload<double>({64, 512, 64, 16}, 6);
  EXPECT_GT(effective_support(reference_attention_probabilities(iid.q, iid.k)).mean(), 4 * support.mean());
}

TEST(SyntheticLlmLike, HasOutlierChannelsMeanKeySinkAndRequestedLogitScale) {
  const Index d = 128, n = 1024;
  LlmLikeOptions opt;
  const auto w = make_llm_like_workload<double>({n, n, d, d}, 9, opt);
  // Outlier channels: d/64 = 2 pairs = 4 channels, the largest by far, at
  // exactly 10..50x the median norm (the pair RMS is exact), in the
  // lowest-frequency quarter of the pairs; every other channel below 10x.
  Eigen::VectorXd norms = w.k.colwise().norm().transpose();
  Eigen::VectorXd sorted = norms;
  std::sort(sorted.data(), sorted.data() + d);
  const double median = 0.5 * (sorted(d / 2 - 1) + sorted(d / 2));
  const double fifth_largest = sorted(d - 5);
  EXPECT_LT(fifth_largest / median, 10.0);
  int outliers = 0;
  for (Index c = 0; c < d; ++c) {
    if (norms(c) <= fifth_largest) continue;
    ++outliers;
    const Index partner = rotary_partner(c, d, RotaryLayout::half);
    const double pair = std::sqrt(0.5 * (norms(c) * norms(c) + norms(partner) * norms(partner))) / median;
    EXPECT_GE(pair, 10.0 * (1 - 1e-9));
    EXPECT_LE(pair, 50.0 * (1 + 1e-9));
    EXPECT_GE(rotary_pair(c, d, RotaryLayout::half), d / 2 - d / 8);
  }
  EXPECT_EQ(outliers, 4);
  // A non-zero mean key: its norm is a sizeable part of the typical key norm.
  const double mean_norm = w.k.colwise().mean().norm();
  const double key_norm = w.k.rowwise().norm().mean();
  EXPECT_GT(mean_norm, 0.3 * key_norm);
  // Logit scale: std over the non-sink keys ~ logit_std (the outlier rescale
  // after the sink moves it slightly).
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const RowMatrix<double> logits = scale * w.q.bottomRows(256) * w.k.bottomRows(n - 1).transpose();
  double std_sum = 0;
  for (Index i = 0; i < logits.rows(); ++i) {
    const Eigen::ArrayXd row = logits.row(i).transpose().array();
    std_sum += std::sqrt((row - row.mean()).square().mean());
  }
  EXPECT_NEAR(std_sum / 256.0, opt.logit_std, 0.1 * opt.logit_std);
  // The sink takes ~sink_mass of the attention without a mask, averaged over
  // the queries (fitted on 256 of them, so a few percent off on all 1024;
  // the outlier rescale after the fit moves it slightly too).
  const RowMatrix<double> p = reference_attention_probabilities(w.q, w.k);
  EXPECT_NEAR(p.col(0).mean(), opt.sink_mass, 0.05);
  EXPECT_LT(w.v.row(0).norm(), 0.5 * w.v.bottomRows(n - 1).rowwise().norm().mean());
}

// Energy over the rotary frequencies: pair p's amplitude is
// high_frequency_amplitude^(1 - p / (P - 1)) (RoPE preserves a pair's norm),
// so the slowest quarter of the pairs carries far more than the fastest.
TEST(SyntheticLlmLike, EnergyConcentratesInTheSlowRotaryPairs) {
  const Index n = 1024, d = 64, pairs = d / 2;
  const auto pair_norms = [&](double amplitude) {
    LlmLikeOptions opt;
    opt.outlier_pairs = 0;
    opt.high_frequency_amplitude = amplitude;
    const auto w = make_llm_like_workload<double>({n, n, d, d}, 12, opt);
    Eigen::VectorXd norms(pairs);
    for (Index p = 0; p < pairs; ++p) {
      const auto [a, b] = rotary_pair_dims(p, d, RotaryLayout::half);
      norms(p) = std::sqrt(w.k.col(a).squaredNorm() + w.k.col(b).squaredNorm());
    }
    return norms;
  };
  const Eigen::VectorXd flat = pair_norms(1.0), decaying = pair_norms(0.1);
  const auto slow_over_fast = [&](const Eigen::VectorXd& x) {
    return x.tail(pairs / 4).mean() / x.head(pairs / 4).mean();
  };
  // Flat: equal energy up to sampling noise. Decaying: the quarters' mean
  // amplitudes are 0.1^(1/8 .. 0) and 0.1^(1 .. 7/8), a ratio of about 10^0.75.
  EXPECT_NEAR(slow_over_fast(flat), 1.0, 0.35);
  EXPECT_GT(slow_over_fast(decaying), 0.5 * std::pow(10.0, 0.75));
  EXPECT_LT(slow_over_fast(decaying), 2.0 * std::pow(10.0, 1.0));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        LlmLikeOptions bad;
        bad.high_frequency_amplitude = 0;
        make_llm_like_workload<float>({4, 4, 16, 4}, 1, bad);
      },
      {"high_frequency_amplitude = 0"}));
}

TEST(SyntheticLlmLike, KeysAreRotatedByTheirPosition) {
  // Before RoPE every key shares the mean key mu. Undoing the rotation of key j
  // (rotating by -j) must restore a large common mean in the fast-turning
  // pairs, which after RoPE average out over the positions.
  const Index n = 256, d = 32;
  LlmLikeOptions flat;  // every pair with the same energy: the fast pairs show it
  flat.high_frequency_amplitude = 1.0;
  const auto w = make_llm_like_workload<double>({4, n, d, 4}, 10, flat);
  RowMatrix<double> unrotated(n - 1, d);
  for (Index j = 1; j < n; ++j)
    unrotated.row(j - 1) = apply_rotary(w.k.row(j), -j);
  const RowMatrix<double> rotated = w.k.bottomRows(n - 1);
  double before = 0, after = 0;
  for (Index p = 0; p < d / 8; ++p) {  // the fastest eighth of the pairs
    const auto [a, b] = rotary_pair_dims(p, d, RotaryLayout::half);
    for (const Index c : {a, b}) {
      before += std::pow(unrotated.col(c).mean(), 2);
      after += std::pow(rotated.col(c).mean(), 2);
    }
  }
  EXPECT_GT(before, 1.0);  // ~ |mu|^2 over 8 channels, mu ~ N(0, 1)
  EXPECT_LT(after, 0.1 * before);
}

TEST(SyntheticErrors, BadOptionsThrow) {
  EXPECT_TRUE(throws_invalid_argument([] { make_iid_workload<float>({0, 4, 4, 4}, 1); }, {"n_q = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        make_iid_workload<float>({4, 4, 4, 4}, 1, {-1.0, 1.0, 1.0});
      },
      {"q_std"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        make_clustered_workload<float>({4, 4, 4, 4}, 1, {0});
      },
      {"clusters = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        make_llm_like_workload<float>({4, 4, 7, 4}, 1);
      },
      {"d = 7", "even"}));
  LlmLikeOptions many;
  many.outlier_pairs = 5;
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        make_llm_like_workload<float>({4, 4, 32, 4}, 1, many);
      },
      {"outlier_pairs = 5", "d/8"}));
  LlmLikeOptions bad_ratio;
  bad_ratio.outlier_min_ratio = 60;
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        make_llm_like_workload<float>({4, 4, 32, 4}, 1, bad_ratio);
      },
      {"outlier ratios"}));
  EXPECT_EQ(parse_workload_kind("llm-like"), WorkloadKind::llm_like);
  EXPECT_FALSE(parse_workload_kind("gaussian").has_value());
}

}  // namespace
}  // namespace attnkit
