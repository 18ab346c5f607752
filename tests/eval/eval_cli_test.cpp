// End-to-end tests of the attnkit-eval binary: it is run as a user runs it, on
// small .npy files written here; its outputs are read back and checked against
// reference_attention computed in this process, and every kind of bad input
// must give exit code 2 and a one-line message naming the flag or file, and
// leave existing outputs untouched.

#include <sys/wait.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/detail/wider.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/version.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "file_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::read_file;
using test::ScratchDir;
using test::write_file;

struct Outcome {
  int code = -1;
  std::string out, err;
};

/// Single-quoted for the shell (the scratch paths contain no quote).
std::string q(const std::string& s) {
  return "'" + s + "'";
}

/// The protocol options the prune tests pass as flags.
PruneProtocolOptions protocol_options(Index prompt, Index window, double ratio, Index recent,
                                      const PruneConfig& config = {}) {
  PruneProtocolOptions po;
  po.prompt = prompt;
  po.window = window;
  po.prune.ratio = ratio;
  po.prune.recent = recent;
  po.prune.config = config;
  return po;
}

class EvalCli : public ::testing::Test {
 protected:
  /// Runs attnkit-eval with `args` (shell words) and optional `env` assignments.
  Outcome run(const std::string& args, const std::string& env = "") {
    const std::string cmd = (env.empty() ? "" : "env " + env + " ") + q(ATTNKIT_EVAL_BINARY) + " " + args +
                            " >" + q(dir / "stdout.txt") + " 2>" + q(dir / "stderr.txt");
    const int status = std::system(cmd.c_str());
    Outcome r;
    r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = read_file(dir / "stdout.txt");
    r.err = read_file(dir / "stderr.txt");
    return r;
  }

  template <typename Scalar>
  std::string save(const std::string& name, const RowMatrix<Scalar>& m) {
    write_npy(dir / name, m);
    return dir / name;
  }
  /// Saves `heads` stacked (rows x cols) matrices as a 3-D array.
  template <typename Scalar>
  std::string save3(const std::string& name, Index heads, const RowMatrix<Scalar>& stacked) {
    NpyArray<Scalar> a{{heads, stacked.rows() / heads, stacked.cols()},
                       std::vector<Scalar>(stacked.data(), stacked.data() + stacked.size())};
    write_npy(dir / name, a);
    return dir / name;
  }
  /// Saves q.npy, k.npy, v.npy and returns the flags "--q Q --k K --v V".
  template <typename Scalar>
  std::string save_qkv(const RowMatrix<Scalar>& qm, const RowMatrix<Scalar>& km,
                       const RowMatrix<Scalar>& vm) {
    return "--q " + q(save("q.npy", qm)) + " --k " + q(save("k.npy", km)) + " --v " + q(save("v.npy", vm));
  }
  template <typename Scalar>
  RowMatrix<Scalar> load(const std::string& name, Index rows, Index cols) {
    const NpyArray<Scalar> a = read_npy<Scalar>(dir / name);
    EXPECT_EQ(static_cast<Index>(a.data.size()), rows * cols) << name;
    RowMatrix<Scalar> m(rows, cols);
    if (static_cast<Index>(a.data.size()) == rows * cols) std::copy(a.data.begin(), a.data.end(), m.data());
    return m;
  }

  ScratchDir dir;
};

template <typename Scalar>
class EvalCliTyped : public EvalCli {};
TYPED_TEST_SUITE(EvalCliTyped, test::Scalars);

template <typename Scalar>
double max_abs_logit(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, double scale) {
  return scale * (q.template cast<double>() * k.template cast<double>().transpose()).cwiseAbs().maxCoeff();
}

// The binary and this process each compute the reference, which is within
// half an ulp of Scalar (times max|v|) plus the wide type's rounding of the
// exact result (docs/design.md); two such results differ by at most twice that.
template <typename Scalar>
double two_references_tolerance(Index n_k, Index d, double max_logit, double max_v) {
  const double eps_wide = static_cast<double>(std::numeric_limits<detail::wider_t<Scalar>>::epsilon());
  return 2 * (0.5 * eps<Scalar>() + 4.0 * static_cast<double>(n_k + d) * eps_wide * (1 + max_logit)) * max_v +
         std::numeric_limits<Scalar>::denorm_min();
}

template <typename Scalar>
void expect_lse_near(const Vector<Scalar>& got, const Vector<Scalar>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (Index i = 0; i < got.size(); ++i) {
    if (std::isinf(static_cast<double>(want(i)))) {
      EXPECT_EQ(got(i), want(i)) << "row " << i;
    } else {
      // Both within half an ulp of the exact lse (plus wide rounding).
      EXPECT_NEAR(static_cast<double>(got(i)), static_cast<double>(want(i)),
                  2 * eps<Scalar>() * (1 + std::fabs(static_cast<double>(want(i)))))
          << "row " << i;
    }
  }
}

TYPED_TEST(EvalCliTyped, AttentionOnTwoDimensionalFilesMatchesTheReference) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> qm = random_matrix<Scalar>(7, 5, 11), km = random_matrix<Scalar>(9, 5, 12),
                          vm = random_matrix<Scalar>(9, 3, 13);
  const std::string files = this->save_qkv(qm, km, vm);
  const double scale = 1 / std::sqrt(5.0);
  const double tol =
      two_references_tolerance<Scalar>(9, 5, max_abs_logit(qm, km, scale), vm.cwiseAbs().maxCoeff());
  for (const char* mask : {"none", "causal", "strict"}) {
    const Outcome r = this->run("attention " + files + " --method reference --mask " + mask + " --out " +
                                q(this->dir / "o.npy") + " --lse " + q(this->dir / "lse.npy"));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "");
    const NpyHeader h = read_npy_header(this->dir / "o.npy");
    EXPECT_EQ(h.dtype, npy_dtype_of<Scalar>()) << "output dtype follows the input";
    EXPECT_EQ(h.shape, (std::vector<Index>{7, 3}));
    EXPECT_EQ(read_npy_header(this->dir / "lse.npy").shape, (std::vector<Index>{7}));
    AttentionOptions opt;
    opt.mask.kind = std::string(mask) == "none"
                        ? MaskKind::none
                        : (std::string(mask) == "causal" ? MaskKind::causal : MaskKind::strict_causal);
    const auto want = reference_attention(qm, km, vm, opt);
    EXPECT_TRUE(matrices_near(this->template load<Scalar>("o.npy", 7, 3), want.output, tol)) << mask;
    const RowMatrix<Scalar> lse = this->template load<Scalar>("lse.npy", 7, 1);
    expect_lse_near<Scalar>(lse.col(0), want.lse);
  }
}

TYPED_TEST(EvalCliTyped, ThreeDimensionalGroupedQueryHeadsUseTheirKeyValueHead) {
  using Scalar = TypeParam;
  // 4 query heads over 2 key/value heads: query heads 0,1 -> KV 0; 2,3 -> KV 1.
  const Index hq = 4, hkv = 2, n_q = 6, n_k = 10, d = 8, d_v = 4;
  const RowMatrix<Scalar> qs = random_matrix<Scalar>(hq * n_q, d, 21),
                          ks = random_matrix<Scalar>(hkv * n_k, d, 22),
                          vs = random_matrix<Scalar>(hkv * n_k, d_v, 23);
  const Outcome r = this->run("attention --q " + q(this->save3("q.npy", hq, qs)) + " --k " +
                              q(this->save3("k.npy", hkv, ks)) + " --v " + q(this->save3("v.npy", hkv, vs)) +
                              " --method reference --mask causal --scale 0.3 --out " +
                              q(this->dir / "o.npy") + " --lse " + q(this->dir / "lse.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy_header(this->dir / "o.npy").shape, (std::vector<Index>{hq, n_q, d_v}));
  EXPECT_EQ(read_npy_header(this->dir / "lse.npy").shape, (std::vector<Index>{hq, n_q}));
  const RowMatrix<Scalar> out = this->template load<Scalar>("o.npy", hq * n_q, d_v);
  const RowMatrix<Scalar> lse = this->template load<Scalar>("lse.npy", hq, n_q);
  for (Index h = 0; h < hq; ++h) {
    const Index g = h / 2;
    const RowMatrix<Scalar> qh = qs.middleRows(h * n_q, n_q), kg = ks.middleRows(g * n_k, n_k),
                            vg = vs.middleRows(g * n_k, n_k);
    const auto want = reference_attention(qh, kg, vg, {Mask::causal(), 0.3});
    const double tol =
        two_references_tolerance<Scalar>(n_k, d, max_abs_logit(qh, kg, 0.3), vg.cwiseAbs().maxCoeff());
    EXPECT_TRUE(matrices_near(out.middleRows(h * n_q, n_q), want.output, tol)) << "head " << h;
    expect_lse_near<Scalar>(lse.row(h).transpose(), want.lse);
    // A different KV head would give a different answer: the mapping matters.
    const auto other = reference_attention(qh, ks.middleRows((1 - g) * n_k, n_k).eval(),
                                           vs.middleRows((1 - g) * n_k, n_k).eval(), {Mask::causal(), 0.3});
    EXPECT_FALSE(matrices_near(out.middleRows(h * n_q, n_q), other.output, 1e-3));
  }
}

TEST_F(EvalCli, StrictMaskWithOffsetZeroGivesAZeroRowAndMinusInfinity) {
  const RowMatrix<float> x = random_matrix<float>(5, 4, 31);
  const std::string p = save("x.npy", x);
  const Outcome r = run("attention --q " + q(p) + " --k " + q(p) + " --v " + q(p) +
                        " --method reference --mask strict --offset 0 --out " + q(dir / "o.npy") + " --lse " +
                        q(dir / "lse.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  const RowMatrix<float> o = load<float>("o.npy", 5, 4), lse = load<float>("lse.npy", 5, 1);
  EXPECT_TRUE((o.row(0).array() == 0).all());
  EXPECT_EQ(lse(0, 0), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(lse.bottomRows(4).allFinite());
  // Query 1 sees only key 0: its output is v_0.
  EXPECT_TRUE(matrices_near(o.row(1), x.row(0), eps<float>() * x.row(0).cwiseAbs().maxCoeff()));
}

TEST_F(EvalCli, DtypeFlagComputesAndWritesInThatType) {
  const RowMatrix<float> qm = random_matrix<float>(6, 4, 41), km = random_matrix<float>(6, 4, 42),
                         vm = random_matrix<float>(6, 4, 43);
  const Outcome r = run("attention " + save_qkv(qm, km, vm) + " --method reference --dtype float64 --out " +
                        q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy_header(dir / "o.npy").dtype, NpyDtype::float64);
  const RowMatrix<double> qd = qm.cast<double>(), kd = km.cast<double>(), vd = vm.cast<double>();
  const auto want = reference_attention(qd, kd, vd);
  EXPECT_TRUE(matrices_near(
      load<double>("o.npy", 6, 4), want.output,
      two_references_tolerance<double>(6, 4, max_abs_logit(qd, kd, 0.5), vd.cwiseAbs().maxCoeff())));
}

TEST_F(EvalCli, BuiltInWorkloadIsTheDocumentedGenerator) {
  const Index n = 48, d = 16;
  const Outcome r =
      run("attention --method reference --n 48 --d 16 --heads 2 --seed 7 --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy_header(dir / "o.npy").shape, (std::vector<Index>{2, n, d}));
  EXPECT_EQ(read_npy_header(dir / "o.npy").dtype, NpyDtype::float32);
  const RowMatrix<float> out = load<float>("o.npy", 2 * n, d);
  for (Index h = 0; h < 2; ++h) {
    const auto w = make_llm_like_workload<float>({n, n, d, d}, 7 + static_cast<std::uint64_t>(h));
    const auto want = reference_attention(w.q, w.k, w.v);
    // The binary is built with -march=native, this test without: the
    // generator's double arithmetic may round differently by an ulp of float
    // in Q, K, V (relative eps). That moves each logit by <= 2 eps |logit|,
    // each softmax weight by a factor within exp(+-4 eps max|logit|), the
    // output by <= 4 eps max|logit| max|v| plus eps max|v| from V, on top of
    // the two references' own rounding.
    const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
    const double max_logit = max_abs_logit(w.q, w.k, 0.25);
    const double tol =
        two_references_tolerance<float>(n, d, max_logit, max_v) + eps<float>() * max_v * (1 + 4 * max_logit);
    EXPECT_TRUE(matrices_near(out.middleRows(h * n, n), want.output, tol)) << "head " << h;
  }
}

// --- compare ----------------------------------------------------------------

TEST_F(EvalCli, CompareWritesConsistentTableJsonAndCsv) {
  const Index n = 40, d = 8;
  const RowMatrix<double> qm = random_matrix<double>(n, d, 51), km = random_matrix<double>(n, d, 52),
                          vm = random_matrix<double>(n, d, 53);
  const std::string files = save_qkv(qm, km, vm);
  const Outcome r = run("compare " + files + " --mask causal --repeats 2 --json " + q(dir / "r.json") +
                        " --csv " + q(dir / "r.csv"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("n_q 40, n_k 40, d 8, d_v 8, float64, mask causal"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nreference "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nmaterialized "), std::string::npos) << r.out;

  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  const auto& w = doc.at("workload");
  EXPECT_EQ(w.at("source"), "files");
  EXPECT_EQ(w.at("heads"), 1);
  EXPECT_EQ(w.at("n_q"), 40);
  EXPECT_EQ(w.at("d_v"), 8);
  EXPECT_EQ(w.at("dtype"), "float64");
  EXPECT_EQ(w.at("mask"), "causal");
  EXPECT_EQ(w.at("repeats"), 2);
  EXPECT_EQ(w.at("attnkit_version"), version_string);
  EXPECT_DOUBLE_EQ(w.at("scale").get<double>(), 1 / std::sqrt(8.0));
  const auto& res = doc.at("results");
  // reference, materialized, flash threads=1, flash threads=all, prune x 3
  ASSERT_EQ(res.size(), 7u);
  const auto& ref = res[0];
  EXPECT_EQ(ref.at("method"), "reference");
  EXPECT_EQ(ref.at("params"), "-");
  EXPECT_EQ(ref.at("exact"), true);
  EXPECT_EQ(ref.at("max_abs_error").get<double>(), 0.0);
  EXPECT_EQ(ref.at("rel_fro_error").get<double>(), 0.0);
  EXPECT_GT(ref.at("seconds").get<double>(), 0.0);
  const auto& mat = res[1];
  EXPECT_EQ(mat.at("method"), "materialized");
  EXPECT_EQ(res[2].at("method"), "flash");
  EXPECT_EQ(res[2].at("params"), "threads=1");
  EXPECT_EQ(res[3].at("params"), "threads=all");
  // Speedups are relative to the fastest exact row, which has speedup 1.
  double fastest = ref.at("seconds").get<double>();
  for (const auto& row : res)
    if (row.at("exact").get<bool>()) fastest = std::min(fastest, row.at("seconds").get<double>());
  for (const auto& row : res) {
    EXPECT_DOUBLE_EQ(row.at("speedup").get<double>(), fastest / row.at("seconds").get<double>());
    if (row.at("exact").get<bool>()) {
      EXPECT_LE(row.at("speedup").get<double>(), 1.0 + 1e-12);
    }
  }
  EXPECT_EQ(res[4].at("method"), "prune");
  EXPECT_EQ(res[4].at("params"), "ratio=0.5 gram/topk/none");
  EXPECT_EQ(res[4].at("exact"), false);
  EXPECT_GT(res[4].at("rel_fro_error").get<double>(), 0.0);  // half the key dimensions are gone
  EXPECT_NE(w.at("speedup_baseline").get<std::string>().find("the fastest exact method ("),
            std::string::npos);
  // flash is exact: its error against the reference is at rounding level.
  EXPECT_LT(res[3].at("max_abs_error").get<double>(), 1e-12);

  // The errors are those of the method's own output against the reference's.
  ASSERT_EQ(run("attention " + files + " --mask causal --method materialized --out " + q(dir / "m.npy")).code,
            0);
  ASSERT_EQ(run("attention " + files + " --mask causal --method reference --out " + q(dir / "ref.npy")).code,
            0);
  const RowMatrix<double> m_out = load<double>("m.npy", n, d), ref_out = load<double>("ref.npy", n, d);
  EXPECT_DOUBLE_EQ(mat.at("max_abs_error").get<double>(), max_abs_error(m_out, ref_out));
  EXPECT_DOUBLE_EQ(mat.at("rel_fro_error").get<double>(), relative_frobenius_error(m_out, ref_out));
  // And small: materialized is exact attention in double. Its rounding: each
  // logit is a d-term dot product (error <= d eps |logit|-scale terms), the
  // weights inherit it through exp, and P V sums n_k terms (<= n_k eps max|v|).
  const double max_logit = max_abs_logit(qm, km, 1 / std::sqrt(8.0));
  EXPECT_LE(mat.at("max_abs_error").get<double>(),
            2 * (static_cast<double>(d) * (1 + max_logit) + static_cast<double>(n) + 4) * eps<double>() *
                vm.cwiseAbs().maxCoeff());

  // Peak bytes: the reference holds wide (long double) copies of Q, K and V
  // while it runs: at least that much, and not wildly more.
  if (ref.at("peak_bytes").is_null()) {
    EXPECT_TRUE(w.at("peak_bytes_method").is_null());
  } else {
    const double copies = static_cast<double>(3 * n * d) * sizeof(detail::wider_t<double>);
    EXPECT_GE(ref.at("peak_bytes").get<double>(), copies);
    EXPECT_LE(ref.at("peak_bytes").get<double>(), 2 * copies + 16384);
    // materialized holds the (n_q x n_k) score matrix and the output at once.
    EXPECT_GE(mat.at("peak_bytes").get<double>(), static_cast<double>(n * n + n * d) * sizeof(double));
    // flash on one thread: the output and lse plus one block's workspace,
    // (d + d_v + B_k) B_q + 4 B_q scalars with B_k <= 128 + 16, B_q <= 64.
    const double flash_bound = static_cast<double>(n * d + n + (d + d + 144) * 64 + 4 * 64) * sizeof(double);
    EXPECT_LE(res[2].at("peak_bytes").get<double>(), flash_bound + 16384);
  }

  // CSV: a header and the same rows.
  std::istringstream csv(read_file(dir / "r.csv"));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "method,params,exact,seconds,speedup,max_abs_error,rel_fro_error,peak_bytes");
  for (const auto& row : res) {
    ASSERT_TRUE(std::getline(csv, line));
    std::istringstream fields(line);
    std::string method, params, exact, seconds;
    std::getline(fields, method, ',');
    std::getline(fields, params, ',');
    std::getline(fields, exact, ',');
    std::getline(fields, seconds, ',');
    EXPECT_EQ(method, row.at("method").get<std::string>());
    EXPECT_EQ(params, "\"" + row.at("params").get<std::string>() + "\"");
    EXPECT_EQ(exact, row.at("exact").get<bool>() ? "true" : "false");
    EXPECT_DOUBLE_EQ(std::stod(seconds), row.at("seconds").get<double>());
  }
  EXPECT_FALSE(std::getline(csv, line));
}

TEST_F(EvalCli, CompareMethodsSubsetAndBuiltInWorkload) {
  const Outcome r =
      run("compare --n 32 --d 8 --heads 3 --workload clustered --methods reference --repeats 1 --json " +
          q(dir / "r.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  EXPECT_EQ(doc.at("workload").at("source"), "built-in");
  EXPECT_EQ(doc.at("workload").at("kind"), "clustered");
  EXPECT_EQ(doc.at("workload").at("heads"), 3);
  EXPECT_EQ(doc.at("workload").at("dtype"), "float32");
  ASSERT_EQ(doc.at("results").size(), 1u);
  EXPECT_EQ(doc.at("results")[0].at("method"), "reference");
}

TEST_F(EvalCli, PlotIsDrawnWhenMatplotlibIsThere) {
  if (std::string(ATTNKIT_TEST_PLOT_PYTHON).empty())
    GTEST_SKIP() << "no Python with matplotlib was found at configure time (install python3-matplotlib)";
  const Outcome r = run("compare --n 32 --d 8 --heads 1 --repeats 1 --plot " + q(dir / "p.png"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(dir / "p.png").substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_NE(r.out.find("plot: "), std::string::npos);
}

TEST_F(EvalCli, PlotWithoutMatplotlibFailsFastWithInstallAdvice) {
  // A "Python" whose import of matplotlib fails.
  write_file(dir / "fakepython", "#!/bin/sh\nexit 1\n");
  ASSERT_EQ(std::system(("chmod +x " + q(dir / "fakepython")).c_str()), 0);
  const Outcome r =
      run("compare --n 32 --d 8 --heads 1 --json " + q(dir / "r.json") + " --plot " + q(dir / "p.png"),
          "ATTNKIT_PYTHON=" + q(dir / "fakepython"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--plot: matplotlib is not installed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("apt-get install python3-matplotlib"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(dir / "r.json"), "") << "nothing is computed or written before the check";
  const Outcome missing = run("compare --n 32 --d 8 --heads 1 --plot " + q(dir / "p.png"),
                              "ATTNKIT_PYTHON=" + q(dir / "no-such-python"));
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("cannot run Python"), std::string::npos) << missing.err;
}

// --- progress, help, version -------------------------------------------------

TEST_F(EvalCli, ProgressLinesOnStderrUnlessQuiet) {
  const std::string args = "attention --method reference --n 16 --d 8 --heads 2 --out " + q(dir / "o.npy");
  const Outcome loud = run(args, "ATTNKIT_EVAL_PROGRESS_AFTER=0");
  ASSERT_EQ(loud.code, 0) << loud.err;
  EXPECT_NE(loud.err.find("attnkit-eval: reference head 1/2"), std::string::npos) << loud.err;
  EXPECT_NE(loud.err.find("attnkit-eval: reference head 2/2"), std::string::npos) << loud.err;
  const Outcome quiet = run(args + " --quiet", "ATTNKIT_EVAL_PROGRESS_AFTER=0");
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  // Short work prints nothing with the default one-second threshold.
  const Outcome fast = run(args);
  EXPECT_EQ(fast.err, "");
}

TEST_F(EvalCli, HelpAndVersionExitZero) {
  const Outcome help = run("--help");
  EXPECT_EQ(help.code, 0);
  for (const char* sub : {"attention", "prune", "compare"})
    EXPECT_NE(help.out.find(sub), std::string::npos);
  const Outcome version = run("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.out.find(version_string), std::string::npos);
  const Outcome attention_help = run("attention --help");
  EXPECT_EQ(attention_help.code, 0);
  EXPECT_NE(attention_help.out.find("reference, materialized"), std::string::npos);
}

// --- prune ---------------------------------------------------------------------

/// An int64 .npy (what prune writes for --out-dims): shape and values. The
/// library reader reads floats only, so the header is taken apart here.
struct IndexArray {
  std::string shape;
  std::vector<std::int64_t> values;
};

IndexArray read_index_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  EXPECT_GE(bytes.size(), 10u) << path;
  if (bytes.size() < 10) return {};
  const std::size_t header =
      static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  const std::string dict = bytes.substr(10, header);
  EXPECT_NE(dict.find("'descr': '<i8'"), std::string::npos) << dict;
  IndexArray a;
  const std::size_t open = dict.find("'shape': (");
  a.shape = dict.substr(open + 9, dict.find(')', open) - open - 8);
  for (std::size_t p = 10 + header; p + 8 <= bytes.size(); p += 8) {
    std::uint64_t v = 0;
    for (int b = 7; b >= 0; --b)
      v = (v << 8) | static_cast<unsigned char>(bytes[p + static_cast<std::size_t>(b)]);
    a.values.push_back(static_cast<std::int64_t>(v));
  }
  return a;
}

// The binary runs the library's protocol: same kept dimensions, same judged
// outputs. The binary is built with -march=native and this test without, so
// their double arithmetic rounds differently: the selection (comparisons of
// double objectives that differ by far more than an ulp on this fixed seed)
// must agree exactly; with mean compensation the outputs then differ only
// through the mean of the dropped dimensions (an n0-term sum: at most
// n0 eps |k| apart), which moves each logit by at most n0 eps scale |q| |k|
// and each output by twice that times max|v|, plus both sides' rounding.
TEST_F(EvalCli, PruneRunsTheProtocolAndWritesKeptDimensionsAndOutputs) {
  const Index n = 160, d = 16, n0 = 128;
  const auto w = make_llm_like_workload<double>({n, n, d, d}, 71);
  const std::string files = save_qkv(w.q, w.k, w.v);
  const Outcome r = run("prune " + files +
                        " --ratio 0.5 --prompt 128 --window 16 --recent 8 --weights centered --select swap"
                        " --compensation mean --out-dims " +
                        q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("keep 8 of 16 key dimensions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("median output error"), std::string::npos) << r.out;

  const auto want = run_prune_protocol(
      w.q, w.k, w.v,
      protocol_options(n0, 16, 0.5, 8,
                       {PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false}));
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  EXPECT_EQ(dims.shape, "(8,)");
  ASSERT_EQ(dims.values.size(), want.selection.kept().size());
  for (std::size_t i = 0; i < dims.values.size(); ++i)
    EXPECT_EQ(dims.values[i], static_cast<std::int64_t>(want.selection.kept()[i]));
  const RowMatrix<double> got = load<double>("o.npy", n - n0, d);
  const double max_v = w.v.cwiseAbs().maxCoeff();
  const double qk = 0.25 * w.q.rowwise().norm().maxCoeff() * w.k.rowwise().norm().maxCoeff();  // scale 1/4
  const double tol = (2 * static_cast<double>(n0) * eps<double>() * qk + 4 * eps<double>()) * max_v;
  EXPECT_TRUE(matrices_near(got, want.output, tol));
  char expected_error[32];
  std::snprintf(expected_error, sizeof expected_error, "%.4g", want.output_error);
  EXPECT_NE(r.out.find(expected_error), std::string::npos) << r.out << " lacks " << expected_error;
}

// The regression-aware path end to end: the residual selector with regression
// compensation chooses the same dimensions as the library. (Its outputs are
// compared with an independent evaluation in tests/prune/protocol_test.cpp;
// through the binary only the selection is exact enough to compare bit for
// bit, the fit's rounding depends on the compiler flags.)
TEST_F(EvalCli, PruneRegressionPathMatchesTheLibrarySelection) {
  const Index n = 160, d = 16, n0 = 128;
  const auto w = make_llm_like_workload<double>({n, n, d, d}, 74);
  const std::string files = save_qkv(w.q, w.k, w.v);
  const Outcome r = run("prune " + files +
                        " --ratio 0.5 --prompt 128 --window 16 --recent 8 --weights gram --select residual"
                        " --compensation regression --out-dims " +
                        q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("gram/residual/regression"), std::string::npos) << r.out;
  const auto want = run_prune_protocol(
      w.q, w.k, w.v,
      protocol_options(
          n0, 16, 0.5, 8,
          {PruneWeights::gram, PruneSelector::residual, PruneCompensation::regression, {}, false}));
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  ASSERT_EQ(dims.values.size(), want.selection.kept().size());
  for (std::size_t i = 0; i < dims.values.size(); ++i)
    EXPECT_EQ(dims.values[i], static_cast<std::int64_t>(want.selection.kept()[i]));
  const RowMatrix<double> got = load<double>("o.npy", n - n0, d);
  EXPECT_TRUE(got.allFinite());
}

// 3-D, grouped query heads: two query heads share one key head; each chooses
// its own dimensions over it.
TEST_F(EvalCli, PruneHandlesThreeDimensionalGroupedHeads) {
  const Index n = 96, d = 8;
  const auto a = make_llm_like_workload<float>({n, n, d, d}, 72);
  const auto b = make_llm_like_workload<float>({n, n, d, d}, 73);
  RowMatrix<float> qs(2 * n, d);
  qs << a.q, b.q;
  const std::string files = "--q " + q(save3("q.npy", 2, qs)) + " --k " + q(save3("k.npy", 1, a.k)) +
                            " --v " + q(save3("v.npy", 1, a.v));
  const Outcome r = run("prune " + files + " --ratio 0.25 --prompt 64 --window 8 --recent 4 --out-dims " +
                        q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  EXPECT_EQ(dims.shape, "(2, 6)");
  const NpyArray<float> o = read_npy<float>(dir / "o.npy");
  EXPECT_EQ(o.shape, (std::vector<Index>{2, 32, 8}));
  const PruneProtocolOptions po = protocol_options(64, 8, 0.25, 4);
  for (Index h = 0; h < 2; ++h) {
    const auto want = run_prune_protocol(h == 0 ? a.q : b.q, a.k, a.v, po);
    for (std::size_t i = 0; i < 6; ++i)
      EXPECT_EQ(dims.values[static_cast<std::size_t>(h) * 6 + i],
                static_cast<std::int64_t>(want.selection.kept()[i]))
          << "head " << h;
  }
}

// --- bad input: exit code 2, one line naming the flag or file, nothing lost --

TEST_F(EvalCli, BadInputGivesExitTwoAndOneLineNamingTheProblem) {
  const std::string qp = save("q.npy", random_matrix<float>(7, 5, 61));
  const std::string kp = save("k.npy", random_matrix<float>(9, 5, 62));
  const std::string vp = save("v.npy", random_matrix<float>(9, 3, 63));
  const std::string k6 = save("k6.npy", random_matrix<float>(9, 6, 64));
  const std::string v8 = save("v8.npy", random_matrix<float>(8, 3, 65));
  const std::string kd = save("kd.npy", random_matrix<double>(9, 5, 66));
  const std::string q3 = save3("q3.npy", 3, random_matrix<float>(3 * 7, 5, 67));
  const std::string k2 = save3("k2.npy", 2, random_matrix<float>(2 * 9, 5, 68));
  const std::string v2 = save3("v2.npy", 2, random_matrix<float>(2 * 9, 3, 69));
  const std::string v4 = save3("v4.npy", 4, random_matrix<float>(4 * 9, 3, 70));
  write_npy(dir / "one_d.npy", NpyArray<float>{{5}, {1, 2, 3, 4, 5}});
  write_file(dir / "text.npy", "this is not a numpy file\n");
  const std::string good = read_file(kp);
  write_file(dir / "truncated.npy", good.substr(0, good.size() - 4));
  std::string int_file = good;
  int_file.replace(int_file.find("<f4"), 3, "<i4");
  write_file(dir / "int.npy", int_file);
  const std::string missing = dir / "missing.npy";
  const std::string files = "--q " + q(qp) + " --k " + q(kp) + " --v " + q(vp);
  const std::string out = " --out " + q(dir / "out.npy");

  struct Case {
    std::string args;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"attention --q " + q(missing) + " --k " + q(kp) + " --v " + q(vp) + " --method reference" + out,
       {missing, "cannot open"}},
      {"attention --q " + q(qp) + " --k " + q(dir / "text.npy") + " --v " + q(vp) + " --method reference" +
           out,
       {dir / "text.npy", "not a .npy file"}},
      {"attention --q " + q(qp) + " --k " + q(dir / "truncated.npy") + " --v " + q(vp) +
           " --method reference" + out,
       {dir / "truncated.npy", "truncated"}},
      {"attention --q " + q(qp) + " --k " + q(dir / "int.npy") + " --v " + q(vp) + " --method reference" +
           out,
       {dir / "int.npy", "unsupported dtype '<i4'"}},
      {"attention --q " + q(qp) + " --k " + q(k6) + " --v " + q(vp) + " --method reference" + out,
       {"--q '" + qp + "' (7, 5)", "--k '" + k6 + "' (9, 6)", "same width d"}},
      {"attention --q " + q(qp) + " --k " + q(kp) + " --v " + q(v8) + " --method reference" + out,
       {"(9, 5)", "(8, 3)", "same number of tokens"}},
      {"attention --q " + q(dir / "one_d.npy") + " --k " + q(kp) + " --v " + q(vp) + " --method reference" +
           out,
       {"one_d.npy' (5,)", "2-D (n, d) or 3-D (heads, n, d)"}},
      {"attention --q " + q(q3) + " --k " + q(kp) + " --v " + q(vp) + " --method reference" + out,
       {"(3, 7, 5)", "same number of dimensions"}},
      {"attention --q " + q(q3) + " --k " + q(k2) + " --v " + q(v2) + " --method reference" + out,
       {"3 heads", "multiple of the number of key/value heads"}},
      {"attention --q " + q(q3) + " --k " + q(k2) + " --v " + q(v4) + " --method reference" + out,
       {"(2, 9, 5)", "(4, 9, 3)", "same number of heads"}},
      {"attention --q " + q(qp) + " --k " + q(kd) + " --v " + q(vp) + " --method reference" + out,
       {"float32", "float64", "pass --dtype"}},
      {"attention --q " + q(qp) + " --method reference" + out, {"give all three of --q, --k and --v"}},
      {"attention " + files + " --method reference --mask diagonal" + out, {"--mask", "diagonal"}},
      {"attention " + files + " --method reference --scale -1" + out, {"--scale -1: must be finite and > 0"}},
      {"attention " + files + " --method reference --scale nan" + out, {"--scale"}},
      {"attention " + files + " --method reference --mask causal --offset 100" + out,
       {"--offset 100", "causal"}},
      {"attention " + files + " --method reference --offset 1" + out, {"--offset 1", "'none'"}},
      {"attention " + files + " --method reference --offset abc" + out, {"--offset", "abc"}},
      {"attention " + files + " --method nope" + out,
       {"--method nope", "available: reference, materialized"}},
      {"attention " + files + out, {"--method", "required"}},
      {"attention " + files + " --method reference", {"--out", "required"}},
      {"attention " + files + " --method reference --bogus 3" + out, {"--bogus"}},
      {"attention " + files + " --method reference --n 64" + out, {"--n sets up the built-in workload"}},
      {"attention --method reference --n 0" + out, {"--n 0: must be >= 1"}},
      {"attention --method reference --d 7 --n 8" + out, {"--d 7", "even"}},
      {"attention --method reference --workload zipf" + out, {"--workload", "zipf"}},
      {"attention " + files + " --method reference --out " + q(dir / "no/such/dir/o.npy"),
       {"--out '" + dir / "no/such/dir/o.npy" + "'", "does not exist"}},
      {"attention " + files + " --method reference --out " + q(dir.str()), {"--out", "is a directory"}},
      {"attention " + files + " --method reference" + out + " --lse " + q(dir / "nope/l.npy"),
       {"--lse", "does not exist"}},
      {"compare " + files + " --repeats 0", {"--repeats 0: must be >= 1"}},
      {"compare " + files + " --methods reference,fast", {"--methods", "'fast'"}},
      {"compare " + files + " --json " + q(dir / "none/r.json"), {"--json", "does not exist"}},
      {"prune " + files + " --ratio 0.5 --weights norm --select greedy --out-dims " + q(dir / "dims.npy"),
       {"--weights norm", "gram|centered|attention"}},
      {"prune " + files + " --ratio 0.5 --select greedy --out-dims " + q(dir / "dims.npy"),
       {"--select greedy", "greedy-remove"}},
      {"prune " + files + " --ratio 1.5 --out-dims " + q(dir / "dims.npy"), {"--ratio 1.5", "[0, 1)"}},
      {"prune " + files + " --ratio 0.5 --compensation full --out-dims " + q(dir / "dims.npy"),
       {"--compensation full"}},
      {"prune " + files + " --ratio 0.5 --rope-pairs odd --out-dims " + q(dir / "dims.npy"),
       {"--rope-pairs odd"}},
      {"prune " + files + " --ratio 0.5 --window 0 --out-dims " + q(dir / "dims.npy"), {"--window 0"}},
      {"prune " + files + " --ratio 0.5 --out-dims " + q(dir / "dims.npy"),
       {"one query per token", "7", "9"}},
      {"prune " + files + " --ratio 0.5 --mask strict --out-dims " + q(dir / "dims.npy"), {"--mask strict"}},
      {"prune --n 40 --ratio 0.5 --prompt 10 --window 20 --out-dims " + q(dir / "dims.npy"),
       {"--window 20", "longer than the prompt (N0 = 10)"}},
      {"prune --n 40 --ratio 0.5 --prompt 41 --out-dims " + q(dir / "dims.npy"), {"--prompt 41", "[1, 40]"}},
      {"prune --n 40 --d 8 --ratio 0.95 --out-dims " + q(dir / "dims.npy"), {"--ratio 0.95", "D = 8"}},
      {"prune --n 40 --d 32 --ratio 0.5 --select optimal --out-dims " + q(dir / "dims.npy"),
       {"--select optimal", "24 units", "D = 32 has 32"}},
      {"prune --n 40 --ratio 0.5", {"--out-dims"}},
      {"compare --n 100000000 --d 128 --heads 1000", {"--heads 1000", "more than 1 TiB"}},
      {"", {"subcommand"}},
      {"frobnicate", {"frobnicate"}},
  };
  write_file(dir / "out.npy", "precious");
  for (const Case& c : cases) {
    const Outcome r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_EQ(r.out, "") << c.args;
    ASSERT_FALSE(r.err.empty()) << c.args;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
    EXPECT_EQ(r.err.rfind("attnkit-eval", 0), 0u) << r.err;
    for (const std::string& needle : c.needles)
      EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(read_file(dir / "out.npy"), "precious") << "an existing output was touched: " << c.args;
  }
  EXPECT_EQ(read_file(dir / "dims.npy"), "") << "prune wrote a file";
}

}  // namespace
}  // namespace attnkit
