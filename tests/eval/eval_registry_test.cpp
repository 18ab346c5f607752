// Tests of attnkit-eval's method registry (bench/attnkit-eval/methods.hpp)
// and of its command line driven in-process (bench/attnkit-eval/cli.hpp) with
// a registry holding test methods: one with options and a compare sweep — the
// way later methods (approx --eps, linear --features, ...) plug in — and one
// that throws. Every result is checked against attnkit's reference computed
// here.

#include "attnkit-eval/methods.hpp"

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attention/flash_bounds.hpp"
#include "attnkit-eval/cli.hpp"
#include "attnkit-eval/commands.hpp"
#include "attnkit-eval/compare.hpp"
#include "attnkit-eval/errors.hpp"
#include "attnkit/approx/approx_attention.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "attnkit/prune/prompt.hpp"
#include "attnkit/similarity/alibi.hpp"
#include "attnkit/similarity/cosine.hpp"
#include "attnkit/similarity/hyperbolic.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/similarity/softcap.hpp"
#include "attnkit/sparse/lsh_attention.hpp"
#include "attnkit/sparse/topk.hpp"
#include "attnkit/workload/grouped.hpp"
#include "file_util.hpp"
#include "test_util.hpp"

namespace attnkit_eval {
namespace {

using namespace attnkit;
using namespace attnkit::test::flash_bounds;

using attnkit::test::matrices_near;
using attnkit::test::random_matrix;
using attnkit::test::read_file;
using attnkit::test::ScratchDir;

/// Passes when `f` throws UsageError whose message contains every needle.
template <typename F>
::testing::AssertionResult throws_usage_error(F&& f, std::initializer_list<const char*> needles) {
  return attnkit::test::throws_with_message<UsageError>(std::forward<F>(f), needles);
}

/// "scaled": the reference output times --gain, a method with a known error
/// (relative Frobenius error |gain - 1|), registered exactly as a new
/// per-head method is.
Method scaled_method() {
  Method m("scaled", "reference output times --gain (a test method)", false);
  m.options = {{"gain", "1", "output multiplier"}};
  m.sweep = {{{"gain", "0.5"}}, {{"gain", "2"}}};
  m.check = [](const MethodParams& p) { p.positive("gain"); };
  m.set_kernel(per_head(
      [](const auto& q, const auto& k, const auto& v, const AttentionOptions& o, const MethodParams& p) {
        auto result = reference_attention(q, k, v, o);
        using Scalar = typename decltype(result.output)::Scalar;
        result.output *= static_cast<Scalar>(p.positive("gain"));
        return result;
      }));
  return m;
}

/// The builtin reference plus "scaled".
Registry test_registry() {
  Registry r;
  r.add(*builtin_methods().find("reference"));
  r.add(scaled_method());
  return r;
}

struct CliRun {
  int code;
  std::string out, err;
};

CliRun run_cli_args(const Registry& registry, std::vector<std::string> args) {
  args.insert(args.begin(), "attnkit-eval");
  std::vector<const char*> argv;
  for (const std::string& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = run_cli(static_cast<int>(argv.size()), argv.data(), registry, nullptr, out, err);
  return {code, out.str(), err.str()};
}

TEST(MethodParams, ParsesAndNamesTheFlagOnBadValues) {
  MethodParams p{{"eps", "0.01"}, {"features", "64"}, {"map", "elu"}};
  EXPECT_EQ(p.number("eps"), 0.01);
  EXPECT_EQ(p.count("features"), 64);
  EXPECT_EQ(p.text("map"), "elu");
  EXPECT_EQ(p.to_string(), "eps=0.01 features=64 map=elu");
  EXPECT_EQ(MethodParams{}.to_string(), "-");
  EXPECT_TRUE(throws_usage_error([&] { p.number("map"); }, {"--map elu: not a finite number"}));
  EXPECT_TRUE(throws_usage_error([&] { p.text("nope"); }, {"--nope"}));
  p.set("eps", "-1");
  EXPECT_TRUE(throws_usage_error([&] { p.positive("eps"); }, {"--eps -1: must be > 0"}));
  p.set("features", "2.5");
  EXPECT_TRUE(throws_usage_error([&] { p.count("features"); }, {"--features 2.5", "integer >= 1"}));
  p.set("features", "99999999999999999999");
  EXPECT_TRUE(throws_usage_error([&] { p.count("features"); },
                                 {"--features 99999999999999999999", "[1, 9223372036854775807]"}));
  p.set("eps", "1e400");
  EXPECT_TRUE(throws_usage_error([&] { p.number("eps"); }, {"not a finite number"}));
  p.set("eps", "0.5x");
  EXPECT_TRUE(throws_usage_error([&] { p.number("eps"); }, {"not a finite number"}));
}

TEST(Registry, ResolvesDefaultsSweepsAndRefusesConflicts) {
  const Registry r = test_registry();
  EXPECT_EQ(r.names(), "reference, scaled");
  const Method& scaled = *r.find("scaled");
  EXPECT_EQ(scaled.resolve().to_string(), "gain=1");
  EXPECT_EQ(scaled.resolve({{"gain", "3"}}).to_string(), "gain=3");
  const auto settings = scaled.compare_settings();
  ASSERT_EQ(settings.size(), 2u);
  EXPECT_EQ(settings[1].to_string(), "gain=2");
  EXPECT_EQ(r.find("reference")->compare_settings().size(), 1u);
  EXPECT_EQ(r.find("nope"), nullptr);

  Registry twice = test_registry();
  EXPECT_THROW(twice.add(*builtin_methods().find("reference")), std::logic_error);
  Method clash("other", "declares --gain with another meaning", false);
  clash.options = {{"gain", "2", "something else"}};
  clash.set_kernel(per_head([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                               const MethodParams&) { return reference_attention(q, k, v, o); }));
  EXPECT_THROW(twice.add(clash), std::logic_error);
  Method no_kernel("empty", "no kernel", true);
  EXPECT_THROW(twice.add(no_kernel), std::logic_error);
}

/// 4 query heads over 2 key/value heads (query heads 0, 1 -> 0; 2, 3 -> 1),
/// stacked; width 8 (even: the grouped queries are turned pair by pair).
GroupedWorkload<double> grouped_inputs(Index n_q, Index n_k) {
  return make_grouped_workload<double>(WorkloadKind::llm_like, {n_q, n_k, 8, 6}, 4, 2, 5);
}

// The builtin exact methods take all heads at once: every query head must be
// what reference_attention gives for it with ITS key/value head, under every
// mask kind, with a window and sinks. Tolerances: the reference is the same
// computation head by head (reference_attention_heads runs
// reference_attention on each head), so it must agree exactly; flash is
// within the fused kernel's worst-case bound (tests/attention/flash_bounds.hpp,
// requested tile B_k = 128); materialized has the same error structure (a
// d-term dot product per logit, one exp per weight, n_k-term sums) with the
// whole key range as one block: the same bound with B_k = n_k.
TEST(BuiltinMethods, ExactMethodsMatchTheReferenceHeadByHeadOnGroupedHeads) {
  const Registry r = builtin_methods();
  const Index n_q = 11, n_k = 40;
  const auto w = grouped_inputs(n_q, n_k);
  const HeadLayout layout{4, 2};
  const double scale = 1.0 / std::sqrt(8.0);
  for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal})
    for (const Mask mask : {Mask(kind), Mask(kind).with_window(7), Mask(kind).with_window(7).with_sinks(3)}) {
      const AttentionOptions o{mask, {}};
      const auto ref = r.find("reference")
                           ->kernel<double>()(w.stacked.q, w.stacked.k, w.stacked.v,
                                              RunContext{layout, o, {}, nullptr}, {});
      const auto mat = r.find("materialized")
                           ->kernel<double>()(w.stacked.q, w.stacked.k, w.stacked.v,
                                              RunContext{layout, o, {}, nullptr}, {});
      const Method& flash = *r.find("flash");
      for (Index h = 0; h < 4; ++h) {
        const Index g = h / 2;
        const RowMatrix<double> qh = w.stacked.q.middleRows(h * n_q, n_q),
                                kg = w.stacked.k.middleRows(g * n_k, n_k),
                                vg = w.stacked.v.middleRows(g * n_k, n_k);
        const auto want = reference_attention(qh, kg, vg, o);
        const std::string where = std::string(to_string(kind)) + " window " +
                                  std::to_string(mask.window.value_or(0)) + " sinks " +
                                  std::to_string(mask.sinks) + " head " + std::to_string(h);
        EXPECT_TRUE(matrices_near(ref.attention.output.middleRows(h * n_q, n_q), want.output, 0.0)) << where;
        const AttentionResult<double> mat_h{mat.attention.output.middleRows(h * n_q, n_q),
                                            mat.attention.lse.segment(h * n_q, n_q)};
        EXPECT_TRUE(within_bound(mat_h, want, error_bound(qh, kg, vg, scale, n_k, BoundKind::worst_case)))
            << where;
        for (const MethodParams& p : flash.compare_settings()) {
          const auto all = flash.kernel<double>()(w.stacked.q, w.stacked.k, w.stacked.v,
                                                  RunContext{layout, o, {}, nullptr}, p);
          const AttentionResult<double> one{all.attention.output.middleRows(h * n_q, n_q),
                                            all.attention.lse.segment(h * n_q, n_q)};
          EXPECT_TRUE(within_bound(one, want, error_bound(qh, kg, vg, scale, 128, BoundKind::worst_case)))
              << where << " " << p.to_string();
          EXPECT_FALSE(all.cache_bytes) << "exact methods keep K and V as given";
        }
      }
    }
}

TEST(BuiltinMethods, MaterializedFollowsTheMaskConventionsInFloatToo) {
  const Registry r = builtin_methods();
  const RowMatrix<float> q = random_matrix<float>(9, 6, 1), k = random_matrix<float>(11, 6, 2),
                         v = random_matrix<float>(11, 4, 3);
  const double scale = 1.0 / std::sqrt(6.0);
  for (const Mask mask :
       {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal().with_window(2)}) {
    const AttentionOptions o{mask, {}};
    const auto got =
        r.find("materialized")->kernel<float>()(q, k, v, RunContext{HeadLayout{}, o, {}, nullptr}, {});
    EXPECT_TRUE(within_bound(got.attention, reference_attention(q, k, v, o),
                             error_bound(q, k, v, scale, 11, BoundKind::worst_case)))
        << to_string(mask.kind);
  }
  // Strict causal with offset 0: row 0 sees no key: a zero row and lse -inf,
  // as attnkit's kernels give.
  const auto none =
      r.find("materialized")
          ->kernel<float>()(q, k, v, RunContext{HeadLayout{}, {Mask::strict_causal(0), {}}, {}, nullptr}, {});
  EXPECT_TRUE((none.attention.output.row(0).array() == 0).all());
  EXPECT_EQ(none.attention.lse(0), -std::numeric_limits<float>::infinity());
}

TEST(BuiltinMethods, FlashValidatesThreads) {
  const Registry r = builtin_methods();
  const Method* flash = r.find("flash");
  ASSERT_NE(flash, nullptr);
  EXPECT_TRUE(flash->exact);
  const auto settings = flash->compare_settings();
  ASSERT_EQ(settings.size(), 2u);
  EXPECT_EQ(settings[0].to_string(), "threads=1");
  EXPECT_EQ(settings[1].to_string(), "threads=all");
  EXPECT_NO_THROW(flash->check(flash->resolve({{"threads", "3"}})));
  for (const char* bad : {"0", "-1", "x", "1.5", "5000"})
    EXPECT_TRUE(throws_usage_error(
        [&] {
          flash->check(flash->resolve({{"threads", bad}}));
        },
        {"--threads", bad}))
        << bad;
}

// The prune method on grouped heads: with shared-selection=off every query
// head prunes its key/value head's keys from its own last W queries; with on,
// each key/value head is pruned once from all its query heads' windows. Both
// are computed here with the library (prune_prompt / prune_prompt_shared,
// then the cache's attention). The selections are the same computation; the
// tool attends with one thread per cache (caches in parallel), this test with
// all, so the fused kernel may split the keys differently: the outputs agree
// within twice the kernel's worst-case bound (flash_bounds.hpp, tile 128;
// ThinK has no compensation, so the pruned logits' absolute scale is at most
// the full-width one). cache_bytes: every cache's memory().total_bytes() plus
// V once per key/value head.
TEST(BuiltinMethods, PruneSelectsPerQueryHeadOrSharedPerKeyValueHead) {
  const Registry r = builtin_methods();
  const Method& prune = *r.find("prune");
  const Index n = 64, w = 8;
  const auto gw = grouped_inputs(n, n);
  const HeadLayout layout{4, 2};
  const AttentionOptions o{Mask::causal(), {}};
  PruneOptions opt;
  opt.ratio = 0.5;
  opt.recent = 16;
  std::size_t per_head_bytes = 0, shared_bytes = 0;
  const std::size_t value_bytes = sizeof(double) * static_cast<std::size_t>(gw.stacked.v.size());
  for (const char* shared : {"off", "on"}) {
    const MethodParams p = prune.resolve(
        {{"ratio", "0.5"}, {"recent", "16"}, {"query-window", "8"}, {"shared-selection", shared}});
    EXPECT_NO_THROW(prune.check(p));
    const auto got = prune.kernel<double>()(gw.stacked.q, gw.stacked.k, gw.stacked.v,
                                            RunContext{layout, o, {}, nullptr}, p);
    std::size_t bytes = 0;
    for (Index g = 0; g < 2; ++g) {
      const RowMatrix<double> kg = gw.stacked.k.middleRows(g * n, n), vg = gw.stacked.v.middleRows(g * n, n);
      RowMatrix<double> windows(2 * w, 8);
      for (Index i = 0; i < 2; ++i)
        windows.middleRows(i * w, w) = gw.stacked.q.middleRows((2 * g + i) * n + n - w, w);
      const auto group = prune_prompt_shared(windows, 2, kg, opt);
      if (std::string(shared) == "on") bytes += group.cache.memory().total_bytes();
      for (Index i = 0; i < 2; ++i) {
        const Index h = 2 * g + i;
        const RowMatrix<double> qh = gw.stacked.q.middleRows(h * n, n);
        const auto own = prune_prompt(qh.bottomRows(w), kg, opt);
        if (std::string(shared) == "off") bytes += own.cache.memory().total_bytes();
        const auto& cache = std::string(shared) == "on" ? group.cache : own.cache;
        const double tol =
            2 * error_bound(qh, kg, vg, 1 / std::sqrt(8.0), 128, BoundKind::worst_case).output.maxCoeff();
        EXPECT_TRUE(
            matrices_near(got.attention.output.middleRows(h * n, n), cache.attention(qh, vg, o).output, tol))
            << "shared-selection " << shared << " head " << h;
      }
    }
    ASSERT_TRUE(got.cache_bytes);
    EXPECT_EQ(*got.cache_bytes, bytes + value_bytes) << shared;
    (std::string(shared) == "on" ? shared_bytes : per_head_bytes) = *got.cache_bytes;
  }
  // The GQA saving: one pruned key cache per key/value head, not per query head.
  EXPECT_LT(shared_bytes, per_head_bytes);
  EXPECT_TRUE(throws_usage_error(
      [&] {
        prune.check(prune.resolve({{"shared-selection", "yes"}}));
      },
      {"--shared-selection yes", "on|off"}));
}

TEST(BuiltinMethods, PruneChecksItsOptionsAgainstTheShapes) {
  const Registry r = builtin_methods();
  const Method& prune = *r.find("prune");
  ProblemShape s;
  s.n_q = 40;
  s.n_k = 20;
  s.d = 8;
  s.d_v = 8;
  EXPECT_TRUE(
      throws_usage_error([&] { prune.check_shape(prune.resolve(), s); }, {"--query-window 32", "n_k = 20"}));
  EXPECT_NO_THROW(prune.check_shape(prune.resolve({{"query-window", "20"}}), s));
  EXPECT_TRUE(throws_usage_error(
      [&] {
        prune.check_shape(prune.resolve({{"ratio", "0.9"}}), s);
      },
      {"--ratio 0.9", "D = 8"}));
  s.d = 7;
  EXPECT_TRUE(throws_usage_error(
      [&] {
        prune.check_shape(prune.resolve({{"query-window", "8"}, {"rope-pairs", "half"}}), s);
      },
      {"--rope-pairs half", "odd"}));
  // The selection window is the option query-window (--window is the mask's).
  EXPECT_TRUE(prune.resolve().has("query-window"));
  EXPECT_FALSE(prune.resolve().has("window"));
}

TEST(SpeedupBaseline, IsTheFastestTimedExactMethod) {
  const auto row = [](const char* method, const char* params, bool exact, double seconds) {
    CompareRow r;
    r.method = method;
    r.params = params;
    r.exact = exact;
    r.seconds = seconds;
    return r;
  };
  std::vector<CompareRow> rows = {row("reference", "-", true, 3.0), row("materialized", "-", true, 0.5),
                                  row("approx", "eps=0.1", false, 0.1),  // faster, but not exact
                                  row("flash", "threads=1", true, 0.7)};
  rows[0].status = "oracle";  // untimed: never the baseline
  rows[0].seconds.reset();
  EXPECT_EQ(speedup_baseline(rows), std::optional<std::size_t>(1));
  EXPECT_EQ(speedup_baseline_description(rows), "the fastest exact method (materialized)");
  rows[3].seconds = 0.2;
  EXPECT_EQ(speedup_baseline(rows), std::optional<std::size_t>(3));
  EXPECT_EQ(speedup_baseline_description(rows), "the fastest exact method (flash threads=1)");
  rows[3].status = "failed";
  rows[3].seconds.reset();
  EXPECT_EQ(speedup_baseline(rows), std::optional<std::size_t>(1));
  for (CompareRow& r : rows)
    r.exact = false;
  EXPECT_FALSE(speedup_baseline(rows));
  EXPECT_EQ(speedup_baseline_description(rows), "no exact method was timed");
}

TEST(EvalCliInProcess, MethodOptionsReachTheKernelAndAreValidated) {
  ScratchDir dir;
  const Registry registry = test_registry();
  const RowMatrix<double> q = random_matrix<double>(5, 4, 7), k = random_matrix<double>(8, 4, 8),
                          v = random_matrix<double>(8, 3, 9);
  write_npy(dir / "q.npy", q);
  write_npy(dir / "k.npy", k);
  write_npy(dir / "v.npy", v);
  const std::vector<std::string> files = {"--q", dir / "q.npy", "--k", dir / "k.npy", "--v", dir / "v.npy"};
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"attention"};
    a.insert(a.end(), files.begin(), files.end());
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const auto want = reference_attention(q, k, v);

  // 3 * reference: the tool's product and this test's each round once (half
  // an ulp of 3|O| per entry each): at most eps * 3 max|O| apart.
  CliRun r = run_cli_args(registry, args({"--method", "scaled", "--gain", "3", "--out", dir / "o.npy"}));
  ASSERT_EQ(r.code, 0) << r.err;
  NpyArray<double> o = read_npy<double>(dir / "o.npy");
  const Eigen::Map<const RowMatrix<double>> got(o.data.data(), 5, 3);
  EXPECT_TRUE(
      matrices_near(got, 3.0 * want.output, 3 * test::eps<double>() * want.output.cwiseAbs().maxCoeff()));

  // Default --gain 1: the reference itself.
  r = run_cli_args(registry, args({"--method", "scaled", "--out", dir / "o.npy"}));
  ASSERT_EQ(r.code, 0) << r.err;
  o = read_npy<double>(dir / "o.npy");
  EXPECT_TRUE(matrices_near(Eigen::Map<const RowMatrix<double>>(o.data.data(), 5, 3), want.output, 0.0));

  r = run_cli_args(registry, args({"--method", "reference", "--gain", "3", "--out", dir / "o.npy"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--gain is not an option of method 'reference'"), std::string::npos) << r.err;

  r = run_cli_args(registry, args({"--method", "scaled", "--gain", "-2", "--out", dir / "o.npy"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--gain -2: must be > 0"), std::string::npos) << r.err;

  r = run_cli_args(registry, {"attention", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--gain"), std::string::npos);
  EXPECT_NE(r.out.find("method scaled, default 1"), std::string::npos) << r.out;
}

TEST(EvalCliInProcess, CompareRunsEverySweepSettingWithItsKnownError) {
  ScratchDir dir;
  const Registry registry = test_registry();
  const CliRun r = run_cli_args(registry, {"compare", "--n", "24", "--d", "8", "--heads", "2", "--dtype",
                                           "float64", "--repeats", "1", "--quiet", "--json", dir / "r.json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  const auto& res = doc.at("results");
  ASSERT_EQ(res.size(), 3u);
  EXPECT_EQ(res[0].at("method"), "reference");
  EXPECT_EQ(res[0].at("status"), "oracle");
  EXPECT_TRUE(res[0].at("seconds").is_null()) << "the oracle is not timed";
  EXPECT_EQ(res[1].at("params"), "gain=0.5");
  EXPECT_EQ(res[2].at("params"), "gain=2");
  EXPECT_EQ(res[1].at("exact"), false);
  // scaled output = gain * reference: relative error |gain - 1| up to one
  // rounding of the product (eps relative).
  EXPECT_NEAR(res[1].at("rel_fro_error").get<double>(), 0.5, 4 * test::eps<double>());
  EXPECT_NEAR(res[2].at("rel_fro_error").get<double>(), 1.0, 4 * test::eps<double>());
  EXPECT_TRUE(res[0].at("peak_bytes").is_null()) << "no probe in process: n/a";
  // No exact method was timed: no speedup.
  EXPECT_TRUE(res[1].at("speedup").is_null());
  EXPECT_EQ(doc.at("workload").at("speedup_baseline"), "no exact method was timed");
  EXPECT_NE(r.out.find("gain=0.5"), std::string::npos);
  EXPECT_NE(r.out.find("n/a"), std::string::npos);
}

TEST(EvalCliInProcess, CompareReportsAThrowingMethodAsAFailedRowAndKeepsTheOthers) {
  ScratchDir dir;
  Registry registry = test_registry();
  {
    Method m("broken", "throws on every call (a test method)", true);
    m.set_kernel(per_head([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                             const MethodParams&) -> decltype(reference_attention(q, k, v, o)) {
      throw std::runtime_error("kaboom\nsecond line");
    }));
    registry.add(std::move(m));
  }
  const CliRun r =
      run_cli_args(registry, {"compare", "--n", "24", "--d", "8", "--heads", "1", "--dtype", "float64",
                              "--repeats", "1", "--quiet", "--json", dir / "r.json", "--csv", dir / "r.csv"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  const auto& res = doc.at("results");
  ASSERT_EQ(res.size(), 4u);
  EXPECT_EQ(res[1].at("status"), "ok");
  EXPECT_NEAR(res[1].at("rel_fro_error").get<double>(), 0.5, 4 * test::eps<double>());
  EXPECT_EQ(res[3].at("method"), "broken");
  EXPECT_EQ(res[3].at("status"), "failed");
  EXPECT_EQ(res[3].at("message"), "kaboom second line") << "one line";
  EXPECT_TRUE(res[3].at("seconds").is_null());
  EXPECT_TRUE(res[3].at("rel_fro_error").is_null());
  EXPECT_NE(r.out.find("failed: broken: kaboom second line"), std::string::npos) << r.out;
  EXPECT_NE(read_file(dir / "r.csv").find("broken,\"-\",true,failed,,,,,,,,,\"kaboom second line\""),
            std::string::npos)
      << read_file(dir / "r.csv");
}

// --- similarities, the new methods and 16-bit K/V -----------------------------
//
// The tool must run the library's function with the options its flags name:
// each registry kernel is compared with the library call it wraps, made here
// directly. This test and attnkit_eval_core are built with the same -march,
// so the same call gives the same bits: the comparisons are exact. (What the
// library functions compute is tested in their own test files.)

struct Stacked {
  RowMatrix<float> q, k, v;
};

/// 4 query heads over 2 key/value heads, n = 24, d = 8 (inside the unit ball
/// for the hyperbolic score: entries in [-1, 1] / 4 give |x| <= sqrt(8) / 4 < 1).
Stacked small_heads() {
  return {random_matrix<float>(4 * 24, 8, 701) / 4, random_matrix<float>(2 * 24, 8, 702) / 4,
          random_matrix<float>(2 * 24, 8, 703)};
}

template <typename Policy>
void expect_scored_like_the_library(const Registry& r, const Stacked& s, const Scoring& scoring,
                                    const Policy& policy) {
  const HeadLayout layout{4, 2};
  const AttentionOptions o{Mask::causal()};
  const RunContext ctx{layout, o, scoring, nullptr};
  const RunContext dot{layout, o, {}, nullptr};
  const MethodParams flash_params = r.find("flash")->resolve({{"threads", "1"}});
  const auto flash = r.find("flash")->kernel<float>()(s.q, s.k, s.v, ctx, flash_params);
  const auto want = flash_attention_heads(s.q, s.k, s.v, layout, o, FlashConfig{1}, policy);
  EXPECT_TRUE(matrices_near(flash.attention.output, want.output, 0.0)) << scoring.describe();
  EXPECT_TRUE(matrices_near(flash.attention.lse, want.lse, 0.0)) << scoring.describe();
  // The score matters: the dot product gives another output.
  const auto flash_dot = r.find("flash")->kernel<float>()(s.q, s.k, s.v, dot, flash_params);
  EXPECT_GT((flash.attention.output - flash_dot.attention.output).cwiseAbs().maxCoeff(), 0.0f)
      << scoring.describe();

  const auto ref = r.find("reference")->kernel<float>()(s.q, s.k, s.v, ctx, {});
  const auto ref_want = reference_attention_heads(s.q, s.k, s.v, layout, o, policy);
  EXPECT_TRUE(matrices_near(ref.attention.output, ref_want.output, 0.0)) << scoring.describe();

  // topk: head by head with that head's policy (ALiBi's slope is per head).
  const auto topk =
      r.find("topk")->kernel<float>()(s.q, s.k, s.v, ctx, r.find("topk")->resolve({{"topk", "5"}}));
  for (Index h = 0; h < 4; ++h) {
    const auto one = topk_attention(s.q.middleRows(h * 24, 24), s.k.middleRows((h / 2) * 24, 24),
                                    s.v.middleRows((h / 2) * 24, 24), TopkOptions{5}, o, FlashConfig{},
                                    attnkit::detail::policy_for_head(policy, h, 4));
    EXPECT_TRUE(matrices_near(topk.attention.output.middleRows(h * 24, 24), one.output, 0.0))
        << scoring.describe() << " head " << h;
  }
}

TEST(EvalRegistry, EverySimilarityReachesReferenceFlashAndTopk) {
  const Registry r = builtin_methods();
  const Stacked s = small_heads();
  Scoring sc;
  sc.kind = Similarity::rbf;
  sc.tau = 2;
  expect_scored_like_the_library(r, s, sc, RbfScore{2});
  sc = {};
  sc.kind = Similarity::cosine;
  sc.tau = 0.5;
  expect_scored_like_the_library(r, s, sc, CosineScore{0.5});
  sc = {};
  sc.kind = Similarity::hyperbolic;
  sc.curvature = 2;
  sc.tau = 0.5;
  expect_scored_like_the_library(r, s, sc, hyperbolic_score<float>(2, 0.5));
  sc = {};
  sc.kind = Similarity::softcap;
  sc.cap = 0.2;  // below the largest |logit|, so the cap changes the scores
  expect_scored_like_the_library(r, s, sc, SoftcapScore{0.2});
  sc = {};
  sc.kind = Similarity::alibi;
  expect_scored_like_the_library(r, s, sc, AlibiScore::standard());
}

TEST(EvalRegistry, DotProductOnlyMethodsRefuseOtherScores) {
  const Registry r = builtin_methods();
  Scoring rbf;
  rbf.kind = Similarity::rbf;
  for (const char* name : {"materialized", "prune", "linear", "lsh"})
    EXPECT_TRUE(throws_usage_error([&] { check_scoring(*r.find(name), rbf); },
                                   {"--similarity rbf", name, "dot-product score only"}))
        << name;
  for (const char* name : {"reference", "flash", "topk"})
    EXPECT_NO_THROW(check_scoring(*r.find(name), rbf)) << name;
}

TEST(EvalRegistry, ScoringFlagsAreValidatedNamingTheFlag) {
  EXPECT_TRUE(scoring_flags({}).is_dot());
  EXPECT_EQ(scoring_flags({"hyperbolic", "0.5", "2", "", false}).describe(), "hyperbolic c=2 tau=0.5");
  EXPECT_EQ(scoring_flags({"", "", "", "30", false}).describe(), "softcap cap=30");
  EXPECT_EQ(scoring_flags({"dot", "", "", "", true}).kind, Similarity::alibi);
  EXPECT_TRUE(throws_usage_error(
      [] {
        scoring_flags({"euclid", "", "", "", false});
      },
      {"--similarity euclid", "dot|rbf|cosine|hyperbolic"}));
  for (const char* tau : {"0", "-1"})
    EXPECT_TRUE(throws_usage_error(
        [&] {
          scoring_flags({"rbf", tau, "", "", false});
        },
        {"--tau", "finite and > 0"}))
        << tau;
  for (const char* tau : {"inf", "nan"})
    EXPECT_TRUE(throws_usage_error(
        [&] {
          scoring_flags({"rbf", tau, "", "", false});
        },
        {"--tau", tau, "not a finite number"}))
        << tau;
  EXPECT_TRUE(throws_usage_error([] { scoring_flags({"", "2", "", "", false}); }, {"--tau 2", "--scale"}));
  EXPECT_TRUE(throws_usage_error(
      [] {
        scoring_flags({"hyperbolic", "", "0", "", false});
      },
      {"--curvature 0", "finite and > 0"}));
  EXPECT_TRUE(throws_usage_error(
      [] {
        scoring_flags({"cosine", "", "1", "", false});
      },
      {"--curvature 1", "only --similarity hyperbolic"}));
  EXPECT_TRUE(throws_usage_error([] { scoring_flags({"", "", "", "-3", false}); }, {"--softcap -3"}));
  EXPECT_TRUE(throws_usage_error(
      [] {
        scoring_flags({"", "", "", "30", true});
      },
      {"--softcap 30", "--alibi"}));
  EXPECT_TRUE(throws_usage_error([] { scoring_flags({"rbf", "", "", "", true}); }, {"--alibi", "rbf"}));
  EXPECT_TRUE(throws_usage_error([] { kv_dtype_flag("bf8"); }, {"--kv-dtype bf8", "f32|f64|bf16|f16"}));
}

TEST(EvalRegistry, LinearAndLshRunTheLibraryWithTheirOptions) {
  const Registry r = builtin_methods();
  const Stacked s = small_heads();
  const HeadLayout layout{4, 2};
  const AttentionOptions o{Mask::causal()};
  const RunContext ctx{layout, o, {}, nullptr};
  const Method& linear = *r.find("linear");
  const Method& lsh = *r.find("lsh");
  for (const char* map : {"elu", "relu", "favor"}) {
    const auto got =
        linear.kernel<float>()(s.q, s.k, s.v, ctx, linear.resolve({{"map", map}, {"features", "16"}}));
    LinearAttentionOptions lo;
    lo.mask = o.mask;
    lo.threads = 0;
    for (Index h = 0; h < 4; ++h) {
      const auto qh = s.q.middleRows(h * 24, 24);
      const auto kh = s.k.middleRows((h / 2) * 24, 24), vh = s.v.middleRows((h / 2) * 24, 24);
      PositiveRandomFeatureOptions fo;
      fo.features = 16;
      fo.seed = 1;
      const AttentionResult<float> want =
          std::string(map) == "elu" ? linear_attention(qh, kh, vh, EluFeatureMap{}, lo)
          : std::string(map) == "relu"
              ? linear_attention(qh, kh, vh, ReluFeatureMap{}, lo)
              : linear_attention(qh, kh, vh, PositiveRandomFeatures<float>(8, fo), lo);
      EXPECT_TRUE(matrices_near(got.attention.output.middleRows(h * 24, 24), want.output, 0.0)) << map << h;
    }
  }
  const auto got = lsh.kernel<float>()(s.q, s.k, s.v, ctx, lsh.resolve({{"rounds", "3"}, {"bits", "2"}}));
  LshAttentionOptions lo;
  lo.hash = {LshHashKind::simhash, 4, 3, 1};
  lo.mask = o.mask;
  for (Index h = 0; h < 4; ++h) {
    const auto want = lsh_attention(s.q.middleRows(h * 24, 24), s.k.middleRows((h / 2) * 24, 24),
                                    s.v.middleRows((h / 2) * 24, 24), lo);
    EXPECT_TRUE(matrices_near(got.attention.output.middleRows(h * 24, 24), want.output, 0.0)) << h;
  }
  EXPECT_TRUE(throws_usage_error([&] { linear.check(linear.resolve({{"map", "cos"}})); }, {"--map cos"}));
  EXPECT_TRUE(throws_usage_error([&] { lsh.check(lsh.resolve({{"bits", "31"}})); }, {"--bits", "31"}));
  EXPECT_TRUE(throws_usage_error(
      [&] {
        r.find("topk")->check(r.find("topk")->resolve({{"topk", "0"}}));
      },
      {"--topk", "0"}));
}

TEST(EvalRegistry, SixteenBitKvIsRoundedOnceAndFlashReadsIt) {
  const Stacked s = small_heads();
  const Registry r = builtin_methods();
  const HeadLayout layout{4, 2};
  const AttentionOptions o{Mask::none()};
  for (const KvDtype t : {KvDtype::bf16, KvDtype::f16}) {
    Inputs<float> in{{4, 24, 8, true, s.q}, {2, 24, 8, true, s.k}, {2, 24, 8, true, s.v}};
    HalfKv kv16;
    ASSERT_TRUE(round_kv(in, t, kv16));
    EXPECT_EQ(kv16.bf16, t == KvDtype::bf16);
    // Rounded once, to nearest: every entry is the 16-bit value, within the
    // type's unit roundoff relative (bf16 keeps 8 significant bits: 2^-8;
    // f16 11: 2^-11), plus half the spacing of f16's subnormals (2^-25)
    // for entries below its smallest normal 2^-14.
    const double half_ulp = t == KvDtype::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    const double subnormal = t == KvDtype::bf16 ? 0.0 : std::ldexp(1.0, -25);
    for (Index i = 0; i < s.k.size(); ++i) {
      const double x = s.k.data()[i], y = in.k.data.data()[i];
      const double stored = t == KvDtype::bf16
                                ? static_cast<double>(static_cast<float>(kv16.k_bf16.data()[i]))
                                : static_cast<double>(static_cast<float>(kv16.k_f16.data()[i]));
      EXPECT_EQ(y, stored);
      EXPECT_LE(std::fabs(x - y), half_ulp * std::fabs(x) + subnormal) << i;
    }
    const RunContext ctx{layout, o, {}, &kv16};
    const auto got = r.find("flash")->kernel<float>()(in.q.data, in.k.data, in.v.data, ctx,
                                                      r.find("flash")->resolve({{"threads", "1"}}));
    const auto want =
        t == KvDtype::bf16
            ? flash_attention_heads<float>(s.q, kv16.k_bf16, kv16.v_bf16, layout, o, FlashConfig{1})
            : flash_attention_heads<float>(s.q, kv16.k_f16, kv16.v_f16, layout, o, FlashConfig{1});
    EXPECT_TRUE(matrices_near(got.attention.output, want.output, 0.0));
    ASSERT_TRUE(got.cache_bytes.has_value());
    EXPECT_EQ(*got.cache_bytes, 2 * static_cast<std::size_t>(s.k.size() + s.v.size()));
    // Another score with 16-bit storage is refused, not silently widened.
    Scoring rbf;
    rbf.kind = Similarity::rbf;
    EXPECT_TRUE(throws_usage_error(
        [&] {
          r.find("flash")->kernel<float>()(in.q.data, in.k.data, in.v.data, RunContext{layout, o, rbf, &kv16},
                                           {{"threads", "1"}});
        },
        {"--similarity rbf", "--kv-dtype", "dot-product score only"}));
  }
  // f32 on double inputs rounds to float; f64 and as_computed change nothing.
  Inputs<double> d{{1, 24, 8, false, s.q.cast<double>() / 3},
                   {1, 24, 8, false, s.k.cast<double>() / 3},
                   {1, 24, 8, false, s.v.cast<double>() / 3}};
  const RowMatrix<double> k0 = d.k.data;
  HalfKv unused;
  EXPECT_FALSE(round_kv(d, KvDtype::f64, unused));
  EXPECT_TRUE(matrices_near(d.k.data, k0, 0.0));
  EXPECT_FALSE(round_kv(d, KvDtype::f32, unused));
  EXPECT_TRUE(matrices_near(d.k.data, k0.cast<float>().cast<double>(), 0.0));
  EXPECT_GT((d.k.data - k0).cwiseAbs().maxCoeff(), 0.0);  // x / 3 is not a float
  EXPECT_TRUE(
      throws_usage_error([&] { round_kv(d, KvDtype::bf16, unused); }, {"--kv-dtype bf16", "float32"}));
}

TEST(EvalRegistry, ApproxRunsTheLibraryPerHeadAndReturnsItsBound) {
  const Registry r = builtin_methods();
  const Stacked s = small_heads();
  const HeadLayout layout{4, 2};
  const AttentionOptions o{Mask::strict_causal()};
  const Method& approx = *r.find("approx");
  EXPECT_TRUE(approx.reports_bound);
  for (const char* budget : {"none", "8"}) {
    const MethodParams p = approx.resolve({{"eps", "0.1"}, {"budget", budget}});
    const auto got = approx.kernel<float>()(s.q, s.k, s.v, RunContext{layout, o, {}, nullptr}, p);
    ASSERT_TRUE(got.bound.has_value());
    ApproxOptions ao;
    ao.mask = o.mask;
    ao.eps = 0.1;
    if (std::string(budget) != "none") ao.budget = 8;
    for (Index h = 0; h < 4; ++h) {
      const auto want = approx_attention(RowMatrix<float>(s.q.middleRows(h * 24, 24)),
                                         RowMatrix<float>(s.k.middleRows((h / 2) * 24, 24)),
                                         RowMatrix<float>(s.v.middleRows((h / 2) * 24, 24)), ao);
      EXPECT_TRUE(matrices_near(got.attention.output.middleRows(h * 24, 24), want.output, 0.0))
          << budget << h;
      EXPECT_TRUE(matrices_near(got.bound->middleRows(h * 24, 24), want.bound, 0.0)) << budget << h;
    }
  }
  EXPECT_EQ(approx.describe(approx.resolve({{"eps", "0.01"}})), "certified eps=0.01");
  EXPECT_EQ(approx.describe(approx.resolve({{"budget", "256"}})), "budgeted budget=256 eps=0.01");
  EXPECT_TRUE(throws_usage_error(
      [&] {
        approx.check(approx.resolve({{"eps", "1.5"}}));
      },
      {"--eps 1.5", "(0, 1)"}));
  EXPECT_TRUE(throws_usage_error([&] { approx.check(approx.resolve({{"budget", "-2"}})); }, {"--budget -2"}));
  for (const char* other : {"flash", "reference", "topk"})
    EXPECT_FALSE(r.find(other)->reports_bound) << other;
}

}  // namespace
}  // namespace attnkit_eval
