// Tests of attnkit-eval's method registry (bench/eval/methods.hpp) and of the
// command line driven in-process (bench/eval/cli.hpp) with a registry holding
// a test method that has options and a compare sweep — the way later methods
// (approx --eps, linear --features, ...) plug in.

#include "eval/methods.hpp"

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/io/npy.hpp"
#include "eval/cli.hpp"
#include "eval/compare.hpp"
#include "file_util.hpp"
#include "test_util.hpp"

namespace attnkit::eval {
namespace {

using namespace test::flash_bounds;

using test::matrices_near;
using test::random_matrix;
using test::read_file;
using test::ScratchDir;

/// The builtin reference plus "scaled": the reference output times --gain, a
/// method with a known error (relative Frobenius error |gain - 1|), registered
/// exactly as a new method is.
Registry test_registry() {
  Registry r;
  r.add(*builtin_methods().find("reference"));
  {
    Method m("scaled", "reference output times --gain (a test method)", false);
    m.options = {{"gain", "1", "output multiplier"}};
    m.sweep = {{{"gain", "0.5"}}, {{"gain", "2"}}};
    m.check = [](const MethodParams& p) { p.positive("gain"); };
    m.set_kernel(
        [](const auto& q, const auto& k, const auto& v, const AttentionOptions& o, const MethodParams& p) {
          auto result = reference_attention(q, k, v, o);
          using Scalar = typename decltype(result.output)::Scalar;
          result.output *= static_cast<Scalar>(p.positive("gain"));
          return result;
        });
    r.add(std::move(m));
  }
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
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.number("map"); }, {"--map elu: not a finite number"}));
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.text("nope"); }, {"--nope"}));
  p.set("eps", "-1");
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.positive("eps"); }, {"--eps -1: must be > 0"}));
  p.set("features", "2.5");
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.count("features"); }, {"--features 2.5", "integer"}));
  p.set("eps", "1e400");
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.number("eps"); }, {"not a finite number"}));
  p.set("eps", "0.5x");
  EXPECT_TRUE(test::throws_invalid_argument([&] { p.number("eps"); }, {"not a finite number"}));
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
  clash.set_kernel([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                      const MethodParams&) { return reference_attention(q, k, v, o); });
  EXPECT_THROW(twice.add(clash), std::logic_error);
  Method no_kernel("empty", "no kernel", true);
  EXPECT_THROW(twice.add(no_kernel), std::logic_error);
}

TEST(Registry, BuiltinMethodsMatchTheReferenceOnBothScalarTypes) {
  const Registry r = builtin_methods();
  ASSERT_NE(r.find("reference"), nullptr);
  ASSERT_NE(r.find("materialized"), nullptr);
  EXPECT_TRUE(r.find("reference")->exact);
  const RowMatrix<double> q = random_matrix<double>(9, 6, 1), k = random_matrix<double>(11, 6, 2),
                          v = random_matrix<double>(11, 4, 3);
  for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal}) {
    AttentionOptions o;
    o.mask.kind = kind;
    const auto want = reference_attention(q, k, v, o);
    const auto got = r.find("reference")->kernel<double>()(q, k, v, o, {});
    EXPECT_TRUE(matrices_near(got.output, want.output, 0.0));
    // materialized has the fused kernel's error structure (a d-term dot
    // product per logit, one exp per weight, sums over the keys), with the
    // whole key range as one block: flash_bounds.hpp's worst-case bound with
    // B_k = n_k.
    const double scale = 1.0 / std::sqrt(6.0);
    const auto mat = r.find("materialized")->kernel<double>()(q, k, v, o, {});
    EXPECT_TRUE(within_bound(mat, want, error_bound(q, k, v, scale, 11, BoundKind::worst_case)))
        << to_string(kind);
    const RowMatrix<float> qf = q.cast<float>(), kf = k.cast<float>(), vf = v.cast<float>();
    const auto f = r.find("materialized")->kernel<float>()(qf, kf, vf, o, {});
    EXPECT_TRUE(within_bound(f, reference_attention(qf, kf, vf, o),
                             error_bound(qf, kf, vf, scale, 11, BoundKind::worst_case)))
        << to_string(kind);
  }
}

TEST(SpeedupBaseline, IsTheFastestExactMethod) {
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
  EXPECT_EQ(speedup_baseline(rows), 1u);
  EXPECT_EQ(speedup_baseline_description(rows), "the fastest exact method (materialized)");
  rows[3].seconds = 0.2;
  EXPECT_EQ(speedup_baseline(rows), 3u);
  EXPECT_EQ(speedup_baseline_description(rows), "the fastest exact method (flash threads=1)");
  for (CompareRow& r : rows)
    r.exact = false;
  EXPECT_THROW(speedup_baseline(rows), std::logic_error);
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

  CliRun r = run_cli_args(registry, args({"--method", "scaled", "--gain", "3", "--out", dir / "o.npy"}));
  ASSERT_EQ(r.code, 0) << r.err;
  NpyArray<double> o = read_npy<double>(dir / "o.npy");
  const Eigen::Map<const RowMatrix<double>> got(o.data.data(), 5, 3);
  EXPECT_TRUE(matrices_near(got, 3.0 * want.output, 4 * test::eps<double>()));

  // Default --gain 1.
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

TEST(BuiltinMethods, FlashMatchesTheReferenceAndValidatesThreads) {
  const Registry r = builtin_methods();
  const Method* flash = r.find("flash");
  ASSERT_NE(flash, nullptr);
  EXPECT_TRUE(flash->exact);
  const auto settings = flash->compare_settings();
  ASSERT_EQ(settings.size(), 2u);
  EXPECT_EQ(settings[0].to_string(), "threads=1");
  EXPECT_EQ(settings[1].to_string(), "threads=all");
  const RowMatrix<double> q = random_matrix<double>(30, 8, 21), k = random_matrix<double>(50, 8, 22),
                          v = random_matrix<double>(50, 6, 23);
  for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal}) {
    const AttentionOptions o{Mask{kind, std::nullopt}, {}};
    const auto want = reference_attention(q, k, v, o);
    const Bound bound = error_bound(q, k, v, 1.0 / std::sqrt(8.0), 128, BoundKind::worst_case);
    for (const MethodParams& p : settings)
      EXPECT_TRUE(within_bound(flash->kernel<double>()(q, k, v, o, p), want, bound))
          << to_string(kind) << " " << p.to_string();
  }
  EXPECT_NO_THROW(flash->check(flash->resolve({{"threads", "3"}})));
  for (const char* bad : {"0", "-1", "x", "1.5"})
    EXPECT_THROW(flash->check(flash->resolve({{"threads", bad}})), std::invalid_argument) << bad;
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
  EXPECT_EQ(res[1].at("params"), "gain=0.5");
  EXPECT_EQ(res[2].at("params"), "gain=2");
  EXPECT_EQ(res[1].at("exact"), false);
  // scaled output = gain * reference: relative error |gain - 1| up to one
  // rounding of the product (eps relative).
  EXPECT_NEAR(res[1].at("rel_fro_error").get<double>(), 0.5, 4 * test::eps<double>());
  EXPECT_NEAR(res[2].at("rel_fro_error").get<double>(), 1.0, 4 * test::eps<double>());
  EXPECT_TRUE(res[0].at("peak_bytes").is_null()) << "no probe in process: n/a";
  EXPECT_NE(r.out.find("gain=0.5"), std::string::npos);
  EXPECT_NE(r.out.find("n/a"), std::string::npos);
}

}  // namespace
}  // namespace attnkit::eval
