// Tests of attnkit/prune/protocol.hpp: the default configuration is ThinK
// (top-D' of ||q_i|| ||k_i||, computed here by hand); the protocol's outputs
// and metrics equal an independent long-double evaluation of the same pruned
// cache; lambda = 0 is exact; the n0 = n and compress-new-keys modes; bad
// input.

#include "attnkit/prune/protocol.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>

#include "attnkit/detail/wider.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class ProtocolTest : public ::testing::Test {};
TYPED_TEST_SUITE(ProtocolTest, test::Scalars);

// ThinK: keep the D' dimensions with the largest ||q_i|| ||k_i||, q over the
// last w prompt queries, k over all prompt keys.
TYPED_TEST(ProtocolTest, DefaultConfigurationIsThink) {
  using Scalar = TypeParam;
  const Index n = 300, n0 = 200, d = 32, w = 16;
  const Workload<Scalar> wl = make_llm_like_workload<Scalar>({n, n, d, d}, 5);
  PruneProtocolOptions o;
  o.prompt = n0;
  o.window = w;
  o.prune.ratio = 0.5;
  const PruneProtocolResult<Scalar> r = run_prune_protocol(wl.q, wl.k, wl.v, o);
  std::vector<LD> score(static_cast<std::size_t>(d));
  for (Index i = 0; i < d; ++i)
    score[static_cast<std::size_t>(i)] = wl.q.col(i).segment(n0 - w, w).template cast<LD>().norm() *
                                         wl.k.col(i).head(n0).template cast<LD>().norm();
  std::vector<Index> order(static_cast<std::size_t>(d));
  std::iota(order.begin(), order.end(), Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
  });
  EXPECT_EQ(r.selection, DimSelection(d, std::vector<Index>(order.begin(), order.begin() + 16)));
  EXPECT_EQ(r.selection.kept_count(), 16);
}

// The protocol's cache, outputs and metrics, recomputed independently: the
// compensation from the compressed keys in long double, effective keys, a
// naive causal attention, the exact attention, the logit RMSE, the objective.
TYPED_TEST(ProtocolTest, MatchesIndependentEvaluation) {
  using Scalar = TypeParam;
  using Wide = detail::wider_t<Scalar>;
  const Index n = 120, n0 = 80, d = 16, w = 10, r = 12;
  const Workload<Scalar> wl = make_llm_like_workload<Scalar>({n, n, d, d}, 7);
  const PruneConfig configs[] = {
      {},
      {PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false},
      {PruneWeights::gram, PruneSelector::residual, PruneCompensation::regression, RotaryLayout::half, true},
      {PruneWeights::attention, PruneSelector::optimal, PruneCompensation::regression, {}, false}};
  for (const PruneConfig& config : configs) {
    PruneProtocolOptions o;
    o.prompt = n0;
    o.window = w;
    o.prune.recent = r;
    o.prune.ratio = 0.625;  // D' = 6
    o.prune.config = config;
    const PruneProtocolResult<Scalar> res = run_prune_protocol(wl.q, wl.k, wl.v, o);
    const DimSelection& s = res.selection;
    EXPECT_EQ(s.kept_count(), 6);
    EXPECT_EQ(res.first_judged, n0);
    ASSERT_EQ(res.output.rows(), n - n0);
    const Index n_c = n0 - r;
    // Compensation in long double (ridge as documented: rho = 1e-6 tr(S) / D).
    const RowMatrix<LD> kc = wl.k.topRows(n_c).template cast<LD>();
    const Eigen::Matrix<LD, 1, Eigen::Dynamic> mu = kc.colwise().sum() / static_cast<LD>(n_c);
    RowMatrix<LD> x = kc;
    x.rowwise() -= mu;
    const RowMatrix<LD> scatter = x.transpose() * x;
    const Index na = s.kept_count(), nb = s.dropped_count();
    RowMatrix<LD> saa(na, na), sab(na, nb);
    for (Index a = 0; a < na; ++a) {
      for (Index b = 0; b < na; ++b)
        saa(a, b) = scatter(s.kept()[static_cast<std::size_t>(a)], s.kept()[static_cast<std::size_t>(b)]);
      for (Index b = 0; b < nb; ++b)
        sab(a, b) = scatter(s.kept()[static_cast<std::size_t>(a)], s.dropped()[static_cast<std::size_t>(b)]);
    }
    saa.diagonal().array() += LD(1e-6) * scatter.trace() / d;
    const RowMatrix<LD> m =
        config.compensation == PruneCompensation::regression
            ? RowMatrix<LD>(Eigen::Matrix<LD, Eigen::Dynamic, Eigen::Dynamic>(saa)
                                .ldlt()
                                .solve(Eigen::Matrix<LD, Eigen::Dynamic, Eigen::Dynamic>(sab))
                                .transpose())
            : RowMatrix<LD>::Zero(nb, na);
    const LD c = config.scale_correction ? std::sqrt(LD(d) / LD(na)) : LD(1);
    RowMatrix<LD> eff = wl.k.template cast<LD>();
    for (Index j = 0; j < n_c; ++j) {
      Eigen::Matrix<LD, Eigen::Dynamic, 1> ka(na);
      for (Index a = 0; a < na; ++a)
        ka(a) = eff(j, s.kept()[static_cast<std::size_t>(a)]);
      for (Index a = 0; a < na; ++a)
        eff(j, s.kept()[static_cast<std::size_t>(a)]) = c * ka(a);
      for (Index b = 0; b < nb; ++b) {
        LD pred = 0;
        if (config.compensation != PruneCompensation::none) {
          pred = mu(s.dropped()[static_cast<std::size_t>(b)]);
          for (Index a = 0; a < na; ++a)
            pred += m(b, a) * (ka(a) - mu(s.kept()[static_cast<std::size_t>(a)]));
        }
        eff(j, s.dropped()[static_cast<std::size_t>(b)]) = pred;
      }
    }
    const LD scale = 1 / std::sqrt(LD(d));
    const RowMatrix<LD> qj = wl.q.bottomRows(n - n0).template cast<LD>();
    const test::NaiveResult approx = test::naive_attention(
        qj, eff, wl.v.template cast<LD>(), test::NaiveMask{MaskKind::causal, n0}, static_cast<double>(scale));
    const test::NaiveResult exact =
        test::naive_attention(qj, wl.k.template cast<LD>(), wl.v.template cast<LD>(),
                              test::NaiveMask{MaskKind::causal, n0}, static_cast<double>(scale));
    const double vmax = wl.v.template cast<double>().cwiseAbs().maxCoeff();
    const double u = 0.5 * test::eps<Scalar>(), eps_d = std::numeric_limits<double>::epsilon();
    const double eps_w = static_cast<double>(std::numeric_limits<Wide>::epsilon());
    // The cache fitted its compensation in double and rounded it to Scalar;
    // the oracle fitted it in long double. The ridge solve moves M and the
    // offset by at most 2 kappa n_c eps_d relative (kappa the condition
    // number of S_AA + rho I; see cache_test's refit test), the rounding by
    // u: a logit perturbation of (1 + 2 kappa n_c eps_d / u) u a_ij, carried
    // as extra roundings per logit into the kernel's bound.
    Eigen::MatrixXd saa_d = saa.template cast<double>();
    const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(saa_d).eigenvalues();
    const double kappa = ev.maxCoeff() / std::max(ev.minCoeff(), std::numeric_limits<double>::min());
    const double extra =
        config.compensation == PruneCompensation::none ? 0.0 : 1 + 2 * kappa * n_c * eps_d / u;
    const RowMatrix<double> m_d = config.compensation == PruneCompensation::regression
                                      ? RowMatrix<double>(m.template cast<double>())
                                      : RowMatrix<double>();
    Eigen::VectorXd offset_d;
    if (config.compensation != PruneCompensation::none) {
      offset_d.resize(nb);
      for (Index b = 0; b < nb; ++b) {
        LD o_b = mu(s.dropped()[static_cast<std::size_t>(b)]);
        for (Index a = 0; a < na && config.compensation == PruneCompensation::regression; ++a)
          o_b -= m(b, a) * mu(s.kept()[static_cast<std::size_t>(a)]);
        offset_d(b) = static_cast<double>(o_b);
      }
    }
    const RowMatrix<Scalar> qs = wl.q.bottomRows(n - n0);
    const RowMatrix<double> abs_logits = test::pruned_abs_logits(qs, wl.k, s, n_c, static_cast<double>(c),
                                                                 m_d, offset_d, static_cast<double>(scale));
    const auto bound = test::pruned_attention_bound<Scalar>(abs_logits, vmax, d, extra);
    EXPECT_TRUE(test::within_row_bound<Scalar>(res.output, nullptr, approx.output, nullptr, bound))
        << to_string(config);
    // The exact outputs come from the reference: its final rounding (u max|v|)
    // plus the wide type's error ~4 (n + d) eps_w (1 + |logit|) max|v|
    // (reference_test.cpp).
    const double lmax = static_cast<double>(exact.logits.cwiseAbs().maxCoeff());
    const double ref_tol = u * vmax + 4.0 * static_cast<double>(n + d) * eps_w * (1 + lmax) * vmax;
    EXPECT_TRUE(test::entries_near(res.exact, exact.output, 0.0, ref_tol)) << to_string(config);
    // Metrics. output_error = ||O~ - O|| / ||O|| with O~ within Delta1 (the
    // bound above, in Frobenius norm) of the oracle's A and O within Delta2 of
    // its E: it lies in [(||A - E|| - D1 - D2) / (||E|| + D2),
    // (||A - E|| + D1 + D2) / (||E|| - D2)].
    const RowMatrix<LD> diff = approx.output - exact.output;
    const double ae = static_cast<double>(diff.norm()), e_norm = static_cast<double>(exact.output.norm());
    const double delta1 = std::sqrt(static_cast<double>(wl.v.cols())) * bound.output.norm();
    const double delta2 = std::sqrt(static_cast<double>(exact.output.size())) * ref_tol;
    EXPECT_GE(res.output_error, (ae - delta1 - delta2) / (e_norm + delta2)) << to_string(config);
    EXPECT_LE(res.output_error, (ae + delta1 + delta2) / (e_norm - delta2)) << to_string(config);
    // logit_rmse: each reported logit is the wide-type logit of the Scalar
    // fit, rounded to Scalar: within u |z| + (extra u + (d + 3) eps_w) a_ij of
    // the oracle's; the RMS of the differences bounds the difference of the
    // RMS values (triangle inequality in R^N).
    LD logit_sq = 0, bound_sq = 0;
    for (Index t = 0; t < n - n0; ++t)
      for (Index j = 0; j < n_c; ++j) {
        logit_sq += std::pow(approx.logits(t, j) - exact.logits(t, j), 2);
        const double bz = u * std::fabs(static_cast<double>(approx.logits(t, j))) +
                          (extra * u + (static_cast<double>(d) + 3) * eps_w) * abs_logits(t, j);
        bound_sq += static_cast<LD>(bz) * bz;
      }
    const LD count = static_cast<LD>((n - n0) * n_c);
    const double rmse = static_cast<double>(std::sqrt(logit_sq / count));
    EXPECT_NEAR(res.logit_rmse, rmse, static_cast<double>(std::sqrt(bound_sq / count))) << to_string(config);
    EXPECT_GT(res.output_error, 0.0);
    EXPECT_GE(res.objective, 0.0);
    EXPECT_LE(res.objective, res.objective_total * (1 + 1e-12));
    EXPECT_EQ(res.memory.compressed_key_bytes, sizeof(Scalar) * static_cast<std::size_t>(n_c * na));
    EXPECT_EQ(res.memory.window_key_bytes, sizeof(Scalar) * static_cast<std::size_t>((n - n_c) * d));
  }
}

// The objective reported for the configuration's weights, recomputed from the weight functions.
TYPED_TEST(ProtocolTest, ObjectiveUsesTheConfiguredWeights) {
  using Scalar = TypeParam;
  const Index n = 100, n0 = 70, d = 12, w = 8;
  const Workload<Scalar> wl = make_clustered_workload<Scalar>({n, n, d, d}, 9);
  const auto qw = wl.q.middleRows(n0 - w, w);
  const auto kp = wl.k.topRows(n0);
  for (const PruneWeights weights : {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention}) {
    PruneProtocolOptions o;
    o.prompt = n0;
    o.window = w;
    o.prune.config.weights = weights;
    o.prune.config.selector = PruneSelector::greedy_remain;
    const auto res = run_prune_protocol(wl.q, wl.k, wl.v, o);
    const RowMatrix<double> wm = weights == PruneWeights::gram       ? gram_weights(qw, kp)
                                 : weights == PruneWeights::centered ? centered_weights(qw, kp)
                                                                     : attention_weights(qw, kp);
    EXPECT_EQ(res.selection, select_greedy_remain(wm, 6)) << to_string(weights);
    EXPECT_NEAR(res.objective, selection_objective(wm, res.selection), 1e-9 * total_objective(wm));
    EXPECT_NEAR(res.objective_total, total_objective(wm), 1e-9 * total_objective(wm));
  }
}

TYPED_TEST(ProtocolTest, NothingPrunedIsExact) {
  using Scalar = TypeParam;
  const Index n = 90, d = 8;
  const Workload<Scalar> wl = make_llm_like_workload<Scalar>({n, n, d, d}, 11);
  for (const PruneCompensation comp : {PruneCompensation::none, PruneCompensation::regression}) {
    PruneProtocolOptions o;
    o.prompt = 60;
    o.window = 8;
    o.prune.ratio = 0.0;
    o.prune.config.compensation = comp;
    o.prune.config.selector = PruneSelector::swap;
    const auto res = run_prune_protocol(wl.q, wl.k, wl.v, o);
    EXPECT_EQ(res.selection, DimSelection::all(d));
    // Nothing pruned: the cache's output is the kernel's exact attention, the
    // compensation folds nothing (B is empty). Its relative Frobenius error
    // against the reference is at most the kernel's bound plus the
    // reference's rounding (u max|v|), in Frobenius norm over ||O||.
    const RowMatrix<Scalar> qs = wl.q.bottomRows(30);
    const RowMatrix<double> abs_logits = test::pruned_abs_logits(
        qs, wl.k, res.selection, 0, 1.0, RowMatrix<double>(), Eigen::VectorXd(), 1.0 / std::sqrt(8.0));
    const double vmax = wl.v.template cast<double>().cwiseAbs().maxCoeff();
    const auto bound = test::pruned_attention_bound<Scalar>(abs_logits, vmax, d);
    const double frob = std::sqrt(static_cast<double>(d) *
                                  (bound.output.array() + 0.5 * test::eps<Scalar>() * vmax).square().sum());
    EXPECT_LE(res.output_error, frob / res.exact.template cast<double>().norm());
    EXPECT_EQ(res.objective, 0.0);
  }
}

TYPED_TEST(ProtocolTest, PromptOfAllTokensJudgesEveryQuery) {
  using Scalar = TypeParam;
  const Index n = 64, d = 8;
  const Workload<Scalar> wl = make_iid_workload<Scalar>({n, n, d, d}, 12);
  PruneProtocolOptions o;  // prompt = n
  o.window = 8;
  o.prune.recent = 8;
  const auto res = run_prune_protocol(wl.q, wl.k, wl.v, o);
  EXPECT_EQ(res.prompt, n);
  EXPECT_EQ(res.first_judged, 0);
  EXPECT_EQ(res.output.rows(), n);
  // Query 0 sees only key 0 (compressed): its output is v_0 whatever the logit.
  EXPECT_TRUE(test::entries_near(res.output.row(0), wl.v.row(0), 0.0, 0.0));
  EXPECT_GT(res.output_error, 0.0);
}

// Compress-new-keys: query t sees tokens [0, t], of which all but the last r
// are compressed (no compensation, so no refit to follow).
TYPED_TEST(ProtocolTest, CompressNewKeysTokenByToken) {
  using Scalar = TypeParam;
  const Index n = 70, n0 = 40, d = 8, r = 6;
  const Workload<Scalar> wl = make_llm_like_workload<Scalar>({n, n, d, d}, 13);
  PruneProtocolOptions o;
  o.prompt = n0;
  o.window = 8;
  o.prune.recent = r;
  o.compress_new_keys = true;
  const auto res = run_prune_protocol(wl.q, wl.k, wl.v, o);
  const LD scale = 1 / std::sqrt(LD(d));
  for (Index t = n0; t < n; ++t) {
    RowMatrix<LD> eff = wl.k.topRows(t + 1).template cast<LD>();
    for (Index j = 0; j < t + 1 - r; ++j)
      for (const Index b : res.selection.dropped())
        eff(j, b) = 0;
    const test::NaiveResult want = test::naive_attention(wl.q.middleRows(t, 1).template cast<LD>(), eff,
                                                         wl.v.topRows(t + 1).template cast<LD>(),
                                                         test::NaiveMask{}, static_cast<double>(scale));
    // The kernel's bound on the effective logits (no compensation).
    const RowMatrix<Scalar> qt = wl.q.middleRows(t, 1);
    const RowMatrix<Scalar> kt = wl.k.topRows(t + 1);
    const RowMatrix<double> abs_logits =
        test::pruned_abs_logits(qt, kt, res.selection, t + 1 - r, 1.0, RowMatrix<double>(), Eigen::VectorXd(),
                                static_cast<double>(scale));
    const auto bound = test::pruned_attention_bound<Scalar>(
        abs_logits, wl.v.topRows(t + 1).template cast<double>().cwiseAbs().maxCoeff(), d);
    const RowMatrix<Scalar> got = res.output.row(t - n0);
    EXPECT_TRUE(test::within_row_bound<Scalar>(got, nullptr, want.output, nullptr, bound)) << "t = " << t;
  }
  EXPECT_EQ(res.memory.window_key_bytes, sizeof(Scalar) * static_cast<std::size_t>(r * d));
}

// Grouped-query attention: one selection for the query heads that share a
// key head. With the default (gram, top-k) it is ThinK over the group: keep
// the D' dimensions with the largest sum_h ||q_h,i||^2 ||k_i||^2 (by hand,
// in long double); every head's judged outputs then equal the naive
// attention over that one pruned cache; one head alone is run_prune_protocol.
TYPED_TEST(ProtocolTest, SharedSelectionIsThinkOverTheGroup) {
  using Scalar = TypeParam;
  const Index n = 200, n0 = 150, d = 16, w = 12, heads = 3;
  const Workload<Scalar> wl = make_llm_like_workload<Scalar>({n, n, d, d}, 15);
  RowMatrix<Scalar> q(heads * n, d);
  for (Index h = 0; h < heads; ++h)
    q.middleRows(h * n, n) =
        make_llm_like_workload<Scalar>({n, n, d, d}, 16 + static_cast<std::uint64_t>(h)).q;
  PruneProtocolOptions o;
  o.prompt = n0;
  o.window = w;
  o.prune.ratio = 0.5;
  const auto res = run_prune_protocol_shared(q, heads, wl.k, wl.v, o);
  ASSERT_EQ(res.size(), static_cast<std::size_t>(heads));
  std::vector<LD> score(static_cast<std::size_t>(d), 0);
  for (Index i = 0; i < d; ++i) {
    LD qn = 0;
    for (Index h = 0; h < heads; ++h)
      qn += q.col(i).segment(h * n + n0 - w, w).template cast<LD>().squaredNorm();
    score[static_cast<std::size_t>(i)] = qn * wl.k.col(i).head(n0).template cast<LD>().squaredNorm();
  }
  std::vector<Index> order(static_cast<std::size_t>(d));
  std::iota(order.begin(), order.end(), Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
  });
  const DimSelection want(d, std::vector<Index>(order.begin(), order.begin() + 8));
  const LD scale = 1 / std::sqrt(LD(d));
  const Index n_c = n0 - o.prune.recent;
  for (Index h = 0; h < heads; ++h) {
    const auto& r = res[static_cast<std::size_t>(h)];
    EXPECT_EQ(r.selection, want) << "head " << h;
    RowMatrix<LD> eff = wl.k.template cast<LD>();
    for (Index j = 0; j < n_c; ++j)
      for (const Index b : want.dropped())
        eff(j, b) = 0;
    const RowMatrix<Scalar> qh = q.middleRows(h * n + n0, n - n0);
    const test::NaiveResult naive =
        test::naive_attention(qh.template cast<LD>(), eff, wl.v.template cast<LD>(),
                              test::NaiveMask{MaskKind::causal, n0}, static_cast<double>(scale));
    const RowMatrix<double> abs_logits = test::pruned_abs_logits(
        qh, wl.k, want, n_c, 1.0, RowMatrix<double>(), Eigen::VectorXd(), static_cast<double>(scale));
    const auto bound = test::pruned_attention_bound<Scalar>(
        abs_logits, wl.v.template cast<double>().cwiseAbs().maxCoeff(), d);
    EXPECT_TRUE(test::within_row_bound<Scalar>(r.output, nullptr, naive.output, nullptr, bound))
        << "head " << h;
    EXPECT_EQ(r.memory.total_bytes(), res[0].memory.total_bytes());
  }
  // One head alone: the single-head protocol, bit for bit.
  const auto one = run_prune_protocol_shared(q.topRows(n), 1, wl.k, wl.v, o);
  const auto single = run_prune_protocol(q.topRows(n), wl.k, wl.v, o);
  EXPECT_EQ(one[0].selection, single.selection);
  EXPECT_EQ(one[0].output, single.output);
  EXPECT_TRUE(
      throws_invalid_argument([&] { run_prune_protocol_shared(q.topRows(2 * n + 1), 2, wl.k, wl.v, o); },
                              {"run_prune_protocol_shared", "heads = 2"}));
}

TYPED_TEST(ProtocolTest, BadInputThrows) {
  using Scalar = TypeParam;
  const Index n = 50, d = 8;
  const Workload<Scalar> wl = make_iid_workload<Scalar>({n, n, d, d}, 14);
  const auto run = [&](PruneProtocolOptions o) { run_prune_protocol(wl.q, wl.k, wl.v, o); };
  PruneProtocolOptions o;
  o.window = 8;
  o.prompt = 30;
  {
    auto b = o;
    b.prune.ratio = -0.25;
    EXPECT_TRUE(throws_invalid_argument([&] { run(b); }, {"ratio lambda = -0.25", "[0, 1)"}));
    b.prune.ratio = 1.0;
    EXPECT_TRUE(throws_invalid_argument([&] { run(b); }, {"ratio lambda = 1"}));
    b.prune.ratio = 0.95;  // D' = floor(0.4) = 0
    EXPECT_TRUE(throws_invalid_argument([&] { run(b); }, {"D' = floor", "at least one"}));
  }
  {
    auto b = o;
    b.window = 31;
    EXPECT_TRUE(
        throws_invalid_argument([&] { run(b); }, {"window (w = 31)", "longer than the prompt (n0 = 30)"}));
    b.window = 0;
    EXPECT_TRUE(throws_invalid_argument([&] { run(b); }, {"window w = 0"}));
  }
  for (const Index bad : {Index(0), Index(51), Index(-3)}) {
    auto b = o;
    b.prompt = bad;
    EXPECT_TRUE(
        throws_invalid_argument([&] { run(b); }, {"run_prune_protocol", "prompt n0", "[1, n] = [1, 50]"}));
  }
  {
    auto b = o;
    b.prune.recent = -1;
    EXPECT_TRUE(throws_invalid_argument([&] { run(b); }, {"recent r = -1"}));
  }
  const RowMatrix<Scalar> k9 = RowMatrix<Scalar>::Ones(n, 9), v49 = RowMatrix<Scalar>::Ones(49, 4);
  EXPECT_TRUE(throws_invalid_argument([&] { run_prune_protocol(wl.q, k9, wl.v, o); },
                                      {"Q (50 x 8)", "K (50 x 9)", "width"}));
  EXPECT_TRUE(throws_invalid_argument([&] { run_prune_protocol(wl.q, wl.k, v49, o); },
                                      {"V (49 x 4)", "one row per token"}));
  const RowMatrix<Scalar> wrong = RowMatrix<Scalar>::Zero(3, 8);
  EXPECT_TRUE(throws_invalid_argument([&] { run_prune_protocol(wl.q, wl.k, wl.v, o, wrong); },
                                      {"exact outputs (3 x 8)", "(20 x 8)"}));
  const Workload<Scalar> wide = make_iid_workload<Scalar>({n, n, 32, 8}, 15);
  auto b = o;
  b.prune.config.selector = PruneSelector::optimal;
  EXPECT_TRUE(throws_invalid_argument([&] { run_prune_protocol(wide.q, wide.k, wide.v, b); },
                                      {"select_optimal", "32 dimensions", "limit of 24"}));
  EXPECT_TRUE(throws_invalid_argument([&] { prune_prompt(wl.q.topRows(31), wl.k.topRows(30)); },
                                      {"prune_prompt", "window (w = 31)", "prompt (n0 = 30)"}));
}

}  // namespace
}  // namespace attnkit
