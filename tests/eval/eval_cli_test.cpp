// End-to-end tests of the attnkit-eval binary: it is run as a user runs it, on
// small .npy files written here; its outputs are read back and checked against
// attnkit's reference (or the library function the tool wraps) computed in
// this process, with every tolerance derived where it is used. Every kind of
// bad input must give exit code 2 and a one-line message naming the flag or
// file, create no file and leave every input and existing output as it was.
//
// ATTNKIT_EVAL_TEST_BINARY (environment) runs the tests against another
// attnkit-eval binary than the one built with them.

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>
#include <nlohmann/json.hpp>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/detail/wider.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/prune/compensation.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/prune/statistics.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/version.hpp"
#include "attnkit/workload/grouped.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "file_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using namespace test::flash_bounds;

using test::as_double;
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

std::string binary() {
  if (const char* b = std::getenv("ATTNKIT_EVAL_TEST_BINARY"); b && *b) return b;
  return ATTNKIT_EVAL_BINARY;
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

/// Every entry of `dir`: name -> contents (regular files), or a tag for
/// anything else. Two snapshots are equal when no file was created, removed
/// or changed.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> s;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_symlink())
      s[name] = "<symlink to " + fs::read_symlink(e.path()).string() + ">";
    else if (e.is_regular_file())
      s[name] = read_file(e.path().string());
    else
      s[name] = "<not a regular file>";
  }
  return s;
}

class EvalCli : public ::testing::Test {
 protected:
  /// Runs attnkit-eval with `args` (shell words), optional `env`
  /// assignments and, if `timeout_seconds` > 0, under timeout(1) (exit code
  /// 124 when it had to kill it). stdin is /dev/null.
  Outcome run(const std::string& args, const std::string& env = "", int timeout_seconds = 0) {
    const std::string cmd = (timeout_seconds > 0 ? "timeout " + std::to_string(timeout_seconds) + " " : "") +
                            (env.empty() ? "" : "env " + env + " ") + q(binary()) + " " + args +
                            " </dev/null >" + q(dir / "stdout.txt") + " 2>" + q(dir / "stderr.txt");
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
  /// An executable shell script in the scratch directory.
  std::string script(const std::string& name, const std::string& text) {
    write_file(dir / name, text);
    EXPECT_EQ(::chmod((dir / name).c_str(), 0755), 0);
    return dir / name;
  }
  /// A "Python" that says matplotlib imports (`-c ...` exits 0) and runs
  /// anything else with the real python3: lets the plot step be tested
  /// without matplotlib.
  std::string fake_python() {
    return script("fakepython", "#!/bin/sh\nif [ \"$1\" = -c ]; then exit 0; fi\nexec python3 \"$@\"\n");
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
      // Both are the wide lse rounded once to Scalar: within half an ulp of
      // it each, so within an ulp (eps |lse|) of each other; 2 eps (1 + |lse|)
      // also covers the wide type's own rounding for |lse| near 0.
      EXPECT_NEAR(static_cast<double>(got(i)), static_cast<double>(want(i)),
                  2 * eps<Scalar>() * (1 + std::fabs(static_cast<double>(want(i)))))
          << "row " << i;
    }
  }
}

// --- attention ---------------------------------------------------------------

TYPED_TEST(EvalCliTyped, AttentionOnTwoDimensionalFilesMatchesTheReference) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> qm = random_matrix<Scalar>(7, 5, 11), km = random_matrix<Scalar>(9, 5, 12),
                          vm = random_matrix<Scalar>(9, 3, 13);
  const std::string files = this->save_qkv(qm, km, vm);
  const double scale = 1 / std::sqrt(5.0);
  const double tol =
      two_references_tolerance<Scalar>(9, 5, max_abs_logit(qm, km, scale), vm.cwiseAbs().maxCoeff());
  for (const char* mask : {"none", "causal", "strict"})
    for (const char* band : {"", " --window 3", " --window 3 --sinks 2"}) {
      const Outcome r = this->run("attention " + files + " --method reference --mask " + mask + band +
                                  " --out " + q(this->dir / "o.npy") + " --lse " + q(this->dir / "lse.npy"));
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_EQ(r.out, "");
      const NpyHeader h = read_npy_header(this->dir / "o.npy");
      EXPECT_EQ(h.dtype, npy_dtype_of<Scalar>()) << "output dtype follows the input";
      EXPECT_EQ(h.shape, (std::vector<Index>{7, 3}));
      EXPECT_EQ(read_npy_header(this->dir / "lse.npy").shape, (std::vector<Index>{7}));
      Mask m(*parse_mask_kind(mask));
      if (std::string(band).find("window") != std::string::npos) m = m.with_window(3);
      if (std::string(band).find("sinks") != std::string::npos) m = m.with_sinks(2);
      const auto want = reference_attention(qm, km, vm, {m, {}});
      EXPECT_TRUE(matrices_near(this->template load<Scalar>("o.npy", 7, 3), want.output, tol))
          << mask << band;
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
  const std::string files = "--q " + q(this->save3("q.npy", hq, qs)) + " --k " +
                            q(this->save3("k.npy", hkv, ks)) + " --v " + q(this->save3("v.npy", hkv, vs));
  for (const char* method : {"reference", "flash"}) {
    const Outcome r = this->run("attention " + files + " --method " + method +
                                " --mask causal --window 5 --sinks 1 --scale 0.3 --out " +
                                q(this->dir / "o.npy") + " --lse " + q(this->dir / "lse.npy"));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_npy_header(this->dir / "o.npy").shape, (std::vector<Index>{hq, n_q, d_v}));
    EXPECT_EQ(read_npy_header(this->dir / "lse.npy").shape, (std::vector<Index>{hq, n_q}));
    const RowMatrix<Scalar> out = this->template load<Scalar>("o.npy", hq * n_q, d_v);
    const RowMatrix<Scalar> lse = this->template load<Scalar>("lse.npy", hq, n_q);
    const AttentionOptions opt{Mask::causal().with_window(5).with_sinks(1), 0.3};
    for (Index h = 0; h < hq; ++h) {
      const Index g = h / 2;
      const RowMatrix<Scalar> qh = qs.middleRows(h * n_q, n_q), kg = ks.middleRows(g * n_k, n_k),
                              vg = vs.middleRows(g * n_k, n_k);
      const auto want = reference_attention(qh, kg, vg, opt);
      if (std::string(method) == "reference") {
        const double tol =
            two_references_tolerance<Scalar>(n_k, d, max_abs_logit(qh, kg, 0.3), vg.cwiseAbs().maxCoeff());
        EXPECT_TRUE(matrices_near(out.middleRows(h * n_q, n_q), want.output, tol)) << "head " << h;
        expect_lse_near<Scalar>(lse.row(h).transpose(), want.lse);
      } else {
        // The fused kernel's worst-case bound (requested tile 128).
        const AttentionResult<Scalar> got{out.middleRows(h * n_q, n_q), lse.row(h).transpose()};
        EXPECT_TRUE(within_bound(got, want, error_bound(qh, kg, vg, 0.3, 128, BoundKind::worst_case)))
            << "head " << h;
      }
      // A different KV head would give a different answer: the mapping matters.
      // (Outputs over other keys differ by O(max|v|); 1e-3 is far above every
      // rounding tolerance above, which are below 1e-5.)
      const RowMatrix<Scalar> ko = ks.middleRows((1 - g) * n_k, n_k), vo = vs.middleRows((1 - g) * n_k, n_k);
      EXPECT_FALSE(
          matrices_near(out.middleRows(h * n_q, n_q), reference_attention(qh, ko, vo, opt).output, 1e-3));
    }
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
  // Query 1 sees only key 0: its weight is exp(0) / exp(0) = 1 exactly, so
  // the output is v_0 times 1 in the wide type, rounded once: v_0 exactly.
  EXPECT_TRUE(matrices_near(o.row(1), x.row(0), 0.0));
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

// The binary is built with -march=native, this test without: the generator's
// double arithmetic may round differently by an ulp of float in Q, K, V
// (relative eps). That moves each logit by <= 2 eps |logit|, each softmax
// weight by a factor within exp(+-4 eps max|logit|), the output by
// <= 4 eps max|logit| max|v| plus eps max|v| from V, on top of the two
// references' own rounding.
double generator_tolerance(const RowMatrix<float>& qh, const RowMatrix<float>& kg, const RowMatrix<float>& vg,
                           double scale) {
  const double max_v = static_cast<double>(vg.cwiseAbs().maxCoeff());
  const double max_logit = max_abs_logit(qh, kg, scale);
  return two_references_tolerance<float>(kg.rows(), kg.cols(), max_logit, max_v) +
         eps<float>() * max_v * (1 + 4 * max_logit);
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
    EXPECT_TRUE(
        matrices_near(out.middleRows(h * n, n), want.output, generator_tolerance(w.q, w.k, w.v, 0.25)))
        << "head " << h;
  }
}

TEST_F(EvalCli, BuiltInGroupedWorkloadIsMakeGroupedWorkload) {
  const Index n = 40, d = 8;
  const Outcome r = run("attention --method reference --n 40 --d 8 --heads 4 --kv-heads 2 --seed 3 --out " +
                        q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  const RowMatrix<float> out = load<float>("o.npy", 4 * n, d);
  const auto g = make_grouped_workload<float>(WorkloadKind::llm_like, {n, n, d, d}, 4, 2, 3);
  for (Index h = 0; h < 4; ++h) {
    const RowMatrix<float> qh = g.stacked.q.middleRows(h * n, n), kg = g.stacked.k.middleRows(h / 2 * n, n),
                           vg = g.stacked.v.middleRows(h / 2 * n, n);
    EXPECT_TRUE(matrices_near(out.middleRows(h * n, n), reference_attention(qh, kg, vg).output,
                              generator_tolerance(qh, kg, vg, 1 / std::sqrt(8.0))))
        << "head " << h;
  }
}

// attention accepts non-finite inputs; they propagate as docs/design.md
// documents: a NaN in Q row i reaches exactly output row i, a NaN in key j
// exactly the rows that see key j. Every other row equals the reference's.
TEST_F(EvalCli, AttentionAcceptsNonFiniteInputsAndTheyReachOnlyTheirRows) {
  const RowMatrix<double> q0 = random_matrix<double>(6, 4, 81), k0 = random_matrix<double>(6, 4, 82),
                          vm = random_matrix<double>(6, 4, 83);
  RowMatrix<double> qm = q0, km = k0;
  qm(1, 2) = std::numeric_limits<double>::quiet_NaN();
  km(4, 0) = std::numeric_limits<double>::quiet_NaN();
  const Outcome r = run("attention " + save_qkv(qm, km, vm) + " --method reference --mask causal --out " +
                        q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  const RowMatrix<double> o = load<double>("o.npy", 6, 4);
  for (Index i = 0; i < 6; ++i) {
    const bool poisoned = i == 1 || i >= 4;  // its own NaN query, or it sees the NaN key 4
    EXPECT_EQ(o.row(i).hasNaN(), poisoned) << "row " << i;
  }
  // NaN in the same places as this process's reference, the rest within the
  // two references' tolerance (from the finite inputs' logits).
  const auto want = reference_attention(qm, km, vm, {Mask::causal(), {}});
  EXPECT_TRUE(matrices_near(
      o, want.output,
      two_references_tolerance<double>(6, 4, max_abs_logit(q0, k0, 0.5), vm.cwiseAbs().maxCoeff())));
}

// --- compare -----------------------------------------------------------------

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
  EXPECT_NE(r.out.find("cache_bytes"), std::string::npos) << r.out;

  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  const auto& w = doc.at("workload");
  EXPECT_EQ(w.at("source"), "files");
  EXPECT_EQ(w.at("heads"), 1);
  EXPECT_EQ(w.at("n_q"), 40);
  EXPECT_EQ(w.at("d_v"), 8);
  EXPECT_EQ(w.at("dtype"), "float64");
  EXPECT_EQ(w.at("mask"), "causal");
  EXPECT_TRUE(w.at("window").is_null());
  EXPECT_EQ(w.at("sinks"), 0);
  EXPECT_EQ(w.at("repeats"), 2);
  EXPECT_EQ(w.at("attnkit_version"), version_string);
  EXPECT_DOUBLE_EQ(w.at("scale").get<double>(), 1 / std::sqrt(8.0));
  const auto& res = doc.at("results");
  // reference (the oracle), materialized, flash threads=1, flash threads=all,
  // prune x 3, topk x 2, linear x 3, lsh x 1, approx x 2
  ASSERT_EQ(res.size(), 15u);
  const auto& ref = res[0];
  EXPECT_EQ(ref.at("method"), "reference");
  EXPECT_EQ(ref.at("params"), "-");
  EXPECT_EQ(ref.at("exact"), true);
  EXPECT_EQ(ref.at("status"), "oracle");
  EXPECT_EQ(ref.at("max_abs_error").get<double>(), 0.0);
  EXPECT_EQ(ref.at("rel_fro_error").get<double>(), 0.0);
  EXPECT_TRUE(ref.at("seconds").is_null()) << "the oracle is computed once, untimed";
  EXPECT_TRUE(ref.at("speedup").is_null());
  const auto& mat = res[1];
  EXPECT_EQ(mat.at("method"), "materialized");
  EXPECT_EQ(res[2].at("method"), "flash");
  EXPECT_EQ(res[2].at("params"), "threads=1");
  EXPECT_EQ(res[3].at("params"), "threads=all");
  // Speedups are relative to the fastest timed exact row, which has speedup 1.
  double fastest = std::numeric_limits<double>::infinity();
  for (const auto& row : res) {
    EXPECT_TRUE(row.at("message").is_null());
    if (row.at("status") == "ok" && row.at("exact").get<bool>())
      fastest = std::min(fastest, row.at("seconds").get<double>());
  }
  for (const auto& row : res) {
    if (row.at("status") != "ok") continue;
    // The same division of the same doubles (JSON keeps them exactly).
    EXPECT_DOUBLE_EQ(row.at("speedup").get<double>(), fastest / row.at("seconds").get<double>());
    if (row.at("exact").get<bool>()) {
      EXPECT_LE(row.at("speedup").get<double>(), 1.0);
    }
  }
  EXPECT_EQ(res[4].at("method"), "prune");
  EXPECT_EQ(res[4].at("params"), "ratio=0.5 gram/topk/none");
  EXPECT_EQ(res[4].at("exact"), false);
  EXPECT_GT(res[4].at("rel_fro_error").get<double>(), 0.0);  // half the key dimensions are gone
  EXPECT_NE(w.at("speedup_baseline").get<std::string>().find("the fastest exact method ("),
            std::string::npos);

  // flash is exact: within the fused kernel's worst-case bound
  // (tests/attention/flash_bounds.hpp, tile 128) of the reference, per row.
  const double scale = 1 / std::sqrt(8.0);
  const Bound flash_bound = error_bound(qm, km, vm, scale, 128, BoundKind::worst_case);
  for (const std::size_t i : {2u, 3u})
    EXPECT_LE(res[i].at("max_abs_error").get<double>(), flash_bound.output.maxCoeff()) << i;

  // The errors are those of the method's own output against the reference's.
  ASSERT_EQ(run("attention " + files + " --mask causal --method materialized --out " + q(dir / "m.npy")).code,
            0);
  ASSERT_EQ(run("attention " + files + " --mask causal --method reference --out " + q(dir / "ref.npy")).code,
            0);
  const RowMatrix<double> m_out = load<double>("m.npy", n, d), ref_out = load<double>("ref.npy", n, d);
  EXPECT_EQ(mat.at("max_abs_error").get<double>(), max_abs_error(m_out, ref_out));
  EXPECT_EQ(mat.at("rel_fro_error").get<double>(), relative_frobenius_error(m_out, ref_out));
  // And small: materialized has the fused kernel's error structure with the
  // whole key range as one block, so the same bound with B_k = n_k holds.
  EXPECT_LE(mat.at("max_abs_error").get<double>(),
            error_bound(qm, km, vm, scale, n, BoundKind::worst_case).output.maxCoeff());

  // cache_bytes: exact methods keep K and V, n (d + d_v) doubles; prune keeps
  // its pruned cache (the library's own count, recomputed here from the same
  // selection inputs: the last 32 queries over all keys, ThinK) plus V.
  for (const std::size_t i : {0u, 1u, 2u, 3u})
    EXPECT_EQ(res[i].at("cache_bytes").get<std::int64_t>(), n * (d + d) * 8) << i;
  PruneOptions think;
  think.scale = std::nullopt;
  const auto pruned = prune_prompt(qm.bottomRows(32), km, think);
  EXPECT_EQ(res[4].at("cache_bytes").get<std::size_t>(),
            pruned.cache.memory().total_bytes() + static_cast<std::size_t>(n * d) * sizeof(double));

  // Peak bytes (glibc's malloc_usable_size of the live blocks; null where
  // not measured).
  if (ref.at("peak_bytes").is_null()) {
    EXPECT_TRUE(w.at("peak_bytes_method").is_null());
  } else {
    // The reference holds wide (long double) copies of Q, K and V while it
    // runs: at least that much. At most that plus its two Scalar results
    // (the head's and the stacked one, n (d_v + 1) each), its wide row
    // buffers (2 n_k + d_v), and 16 KiB for allocator rounding (<= 24 bytes
    // per block, a few dozen blocks) and OpenMP's bookkeeping.
    const double wide = sizeof(detail::wider_t<double>);
    const double copies = as_double(3 * n * d) * wide;
    EXPECT_GE(ref.at("peak_bytes").get<double>(), copies);
    EXPECT_LE(ref.at("peak_bytes").get<double>(),
              copies + as_double(2 * n * (d + 1)) * 8 + as_double(2 * n + d) * wide + 16384);
    // materialized holds the (n_q x n_k) score matrix and the output at once.
    EXPECT_GE(mat.at("peak_bytes").get<double>(), as_double(n * n + n * d) * sizeof(double));
    // flash on one thread: the output and lse plus one block's workspace,
    // (d + d_v + B_k) B_q + 4 B_q scalars with B_k <= 128 + 16, B_q <= 64,
    // and 16 KiB for the head and range lists and allocator rounding.
    const double flash_peak = as_double(n * d + n + (d + d + 144) * 64 + 4 * 64) * sizeof(double);
    EXPECT_LE(res[2].at("peak_bytes").get<double>(), flash_peak + 16384);
  }

  // CSV: a header and the same rows.
  std::istringstream csv(read_file(dir / "r.csv"));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line,
            "method,params,exact,status,seconds,speedup,max_abs_error,rel_fro_error,peak_bytes,cache_bytes,"
            "max_abs_error_rounded,rel_fro_error_rounded,message");
  for (const auto& row : res) {
    ASSERT_TRUE(std::getline(csv, line));
    std::istringstream fields(line);
    std::string method, params, exact, status, seconds;
    std::getline(fields, method, ',');
    std::getline(fields, params, ',');
    std::getline(fields, exact, ',');
    std::getline(fields, status, ',');
    std::getline(fields, seconds, ',');
    EXPECT_EQ(method, row.at("method").get<std::string>());
    EXPECT_EQ(params, "\"" + row.at("params").get<std::string>() + "\"");
    EXPECT_EQ(exact, row.at("exact").get<bool>() ? "true" : "false");
    EXPECT_EQ(status, row.at("status").get<std::string>());
    if (row.at("seconds").is_null())
      EXPECT_EQ(seconds, "");
    else
      EXPECT_EQ(std::stod(seconds), row.at("seconds").get<double>());  // written with 17 digits
  }
  EXPECT_FALSE(std::getline(csv, line));
}

TEST_F(EvalCli, CompareRunsTheOracleOnceUntimedAndOnlyTheSelectedMethods) {
  const std::string base =
      "compare --n 32 --d 8 --heads 3 --workload clustered --repeats 2 --json " + q(dir / "r.json");
  Outcome r = run(base + " --methods flash", "ATTNKIT_EVAL_PROGRESS_AFTER=0");
  ASSERT_EQ(r.code, 0) << r.err;
  // Progress shows every call: the oracle exactly once, each flash setting
  // 1 + 2 times; the reference is never timed unless asked for.
  const auto count = [&](const std::string& needle) {
    std::size_t c = 0;
    for (std::size_t p = r.err.find(needle); p != std::string::npos; p = r.err.find(needle, p + 1))
      ++c;
    return c;
  };
  EXPECT_EQ(count("compare: reference (oracle) 1/1"), 1u) << r.err;
  EXPECT_EQ(count("compare: reference run"), 0u) << r.err;
  EXPECT_EQ(count("compare: flash threads=1 run"), 3u) << r.err;
  auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  EXPECT_EQ(doc.at("workload").at("source"), "built-in");
  EXPECT_EQ(doc.at("workload").at("kind"), "clustered");
  EXPECT_EQ(doc.at("workload").at("heads"), 3);
  EXPECT_EQ(doc.at("workload").at("dtype"), "float32");
  ASSERT_EQ(doc.at("results").size(), 3u);
  EXPECT_EQ(doc.at("results")[0].at("status"), "oracle");
  EXPECT_EQ(doc.at("results")[1].at("params"), "threads=1");

  // Naming the reference times it as a contender too (the oracle still runs once).
  r = run(base + " --methods reference", "ATTNKIT_EVAL_PROGRESS_AFTER=0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count("compare: reference (oracle) 1/1"), 1u) << r.err;
  doc = nlohmann::json::parse(read_file(dir / "r.json"));
  ASSERT_EQ(doc.at("results").size(), 2u);
  EXPECT_EQ(doc.at("results")[1].at("status"), "ok");
  EXPECT_EQ(doc.at("results")[1].at("speedup").get<double>(), 1.0);
  // The same function on the same inputs: exactly the oracle.
  EXPECT_EQ(doc.at("results")[1].at("max_abs_error").get<double>(), 0.0);
}

TEST_F(EvalCli, CompareWithWindowSinksAndGroupedHeads) {
  const Index n = 64, d = 16;
  const Outcome r =
      run("compare --n 64 --d 16 --heads 4 --kv-heads 2 --mask causal --window 8 --sinks 2 --repeats 1 "
          "--methods flash,materialized --json " +
          q(dir / "r.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4 heads (2 key/value)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mask causal window 8 sinks 2"), std::string::npos) << r.out;
  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  EXPECT_EQ(doc.at("workload").at("kv_heads"), 2);
  EXPECT_EQ(doc.at("workload").at("window"), 8);
  EXPECT_EQ(doc.at("workload").at("sinks"), 2);
  // The errors are against the binary's oracle on its inputs; the bound is
  // computed here on the generator's inputs, which may differ from the
  // binary's by an ulp (see generator_tolerance): that changes the bound
  // itself by a relative few eps, far below its own size.
  const auto g = make_grouped_workload<float>(WorkloadKind::llm_like, {n, n, d, d}, 4, 2, 1);
  double flash_bound = 0, block_bound = 0;
  for (Index h = 0; h < 4; ++h) {
    const RowMatrix<float> qh = g.stacked.q.middleRows(h * n, n), kg = g.stacked.k.middleRows(h / 2 * n, n),
                           vg = g.stacked.v.middleRows(h / 2 * n, n);
    flash_bound =
        std::max(flash_bound, error_bound(qh, kg, vg, 0.25, 128, BoundKind::worst_case).output.maxCoeff());
    block_bound =
        std::max(block_bound, error_bound(qh, kg, vg, 0.25, n, BoundKind::worst_case).output.maxCoeff());
  }
  for (const auto& row : doc.at("results")) {
    // Exact methods keep K and V: 2 key/value heads of n (d + d_v) floats.
    EXPECT_EQ(row.at("cache_bytes").get<std::int64_t>(), 2 * n * (d + d) * 4);
    const double bound = row.at("method") == "flash" ? flash_bound : block_bound;
    EXPECT_LE(row.at("max_abs_error").get<double>(), bound) << row.at("method");
  }
}

// --- the plot step -----------------------------------------------------------

TEST_F(EvalCli, PlotIsDrawnWhenMatplotlibIsThere) {
  if (std::string(ATTNKIT_TEST_PLOT_PYTHON).empty())
    GTEST_SKIP() << "no Python with matplotlib was found at configure time (install python3-matplotlib)";
  const Outcome r = run("compare --n 32 --d 8 --heads 1 --repeats 1 --plot " + q(dir / "p.png"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(dir / "p.png").substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_NE(r.out.find("plot: "), std::string::npos);
}

TEST_F(EvalCli, PlotSuccessIsReportedOnlyOnceAPngExists) {
  const std::string python = fake_python();
  // A plot script that writes a PNG signature: success, the PNG in place.
  const std::string good =
      script("good.py", "import sys\nopen(sys.argv[2], 'wb').write(b'\\x89PNG\\r\\n\\x1a\\nfake')\n");
  const std::string env = "ATTNKIT_PYTHON=" + q(python) + " ATTNKIT_EVAL_PLOT_SCRIPT=" + q(good);
  Outcome r =
      run("compare --n 16 --d 8 --heads 1 --repeats 1 --methods flash --plot " + q(dir / "p.png"), env);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("plot: " + dir / "p.png"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(dir / "p.png"), std::string("\x89PNG\r\n\x1a\nfake", 12));
  for (const auto& [name, bytes] : snapshot(dir.str()))
    EXPECT_EQ(name.find(".attnkit-eval-"), std::string::npos) << "temporary left (the plot's JSON): " << name;
  // One that exits 0 but writes nothing: a failure, and no p.png.
  fs::remove(dir / "p.png");
  const std::string lazy = script("lazy.py", "pass\n");
  r = run("compare --n 16 --d 8 --heads 1 --repeats 1 --methods flash --json " + q(dir / "r.json") +
              " --plot " + q(dir / "p.png"),
          "ATTNKIT_PYTHON=" + q(python) + " ATTNKIT_EVAL_PLOT_SCRIPT=" + q(lazy));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("exited 0 but wrote no PNG"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "p.png"));
  EXPECT_FALSE(fs::exists(dir / "r.json")) << "nothing is written when a later output fails";
}

// A failure after the first output was written: every output goes to a
// temporary beside its target, renamed into place only when all succeeded.
// A failing plot script (the last step, after the JSON and CSV are written)
// must leave no output and no temporary, and be reported in ONE line.
TEST_F(EvalCli, PlotFailureAfterTheWorkLeavesNoOutputAndNoTemporary) {
  const std::string failing =
      script("fail.py", "import sys\nsys.stderr.write('first\\nsecond\\nthe last line\\n')\nsys.exit(1)\n");
  fs::create_directory(dir / "out");
  const std::string out = dir / "out";
  const Outcome r =
      run("compare --n 16 --d 8 --heads 1 --repeats 1 --methods flash --json " + q(out + "/r.json") +
              " --csv " + q(out + "/r.csv") + " --plot " + q(out + "/p.png"),
          "ATTNKIT_PYTHON=" + q(fake_python()) + " ATTNKIT_EVAL_PLOT_SCRIPT=" + q(failing));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  EXPECT_NE(r.err.find("--plot '" + out + "/p.png': the plot script '" + failing +
                       "' failed (exit 1): the last line"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(snapshot(out).empty()) << "left behind: " << snapshot(out).begin()->first;
}

TEST_F(EvalCli, PlotWithoutMatplotlibFailsFastWithInstallAdvice) {
  // A "Python" whose import of matplotlib fails.
  const std::string python = script("nompl", "#!/bin/sh\nexit 1\n");
  const Outcome r =
      run("compare --n 32 --d 8 --heads 1 --json " + q(dir / "r.json") + " --plot " + q(dir / "p.png"),
          "ATTNKIT_PYTHON=" + q(python) + " ATTNKIT_EVAL_PROGRESS_AFTER=0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--plot: matplotlib is not installed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("apt-get install python3-matplotlib"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("attnkit-eval: compare: "), std::string::npos) << "checked before any work: " << r.err;
  EXPECT_FALSE(fs::exists(dir / "r.json")) << "nothing is computed or written before the check";
  const Outcome missing = run("compare --n 32 --d 8 --heads 1 --plot " + q(dir / "p.png"),
                              "ATTNKIT_PYTHON=" + q(dir / "no-such-python"));
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("cannot run Python"), std::string::npos) << missing.err;
}

// --- output paths ------------------------------------------------------------

TEST_F(EvalCli, OutputsReplaceExistingFilesAndWriteThroughSymlinks) {
  const RowMatrix<float> x = random_matrix<float>(6, 4, 91);
  const std::string files = save_qkv(x, x, x);
  write_file(dir / "target.npy", "old contents");
  fs::create_symlink(dir / "target.npy", dir / "link.npy");
  write_file(dir / "lse.npy", "old lse");
  const Outcome r = run("attention " + files + " --method reference --out " + q(dir / "link.npy") +
                        " --lse " + q(dir / "lse.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::is_symlink(dir / "link.npy")) << "the link is kept, its target replaced";
  EXPECT_EQ(read_npy_header(dir / "target.npy").shape, (std::vector<Index>{6, 4}));
  EXPECT_EQ(read_npy_header(dir / "lse.npy").shape, (std::vector<Index>{6}));
  for (const auto& [name, bytes] : snapshot(dir.str()))
    EXPECT_EQ(name.find(".attnkit-eval-"), std::string::npos) << "temporary left: " << name;
}

// --- progress, help, version -------------------------------------------------

TEST_F(EvalCli, ProgressLinesOnStderrUnlessQuiet) {
  const std::string args = "attention --method reference --n 16 --d 8 --heads 2 --out " + q(dir / "o.npy");
  const Outcome loud = run(args, "ATTNKIT_EVAL_PROGRESS_AFTER=0");
  ASSERT_EQ(loud.code, 0) << loud.err;
  EXPECT_NE(loud.err.find("attnkit-eval: reference: call 1/1"), std::string::npos) << loud.err;
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
  for (const char* needle :
       {"reference, materialized", "--window", "--sinks", "--kv-heads", "--query-window"})
    EXPECT_NE(attention_help.out.find(needle), std::string::npos) << needle;
  const Outcome prune_help = run("prune --help");
  EXPECT_EQ(prune_help.code, 0);
  for (const char* needle : {"--query-window", "--shared-selection"})
    EXPECT_NE(prune_help.out.find(needle), std::string::npos) << needle;
}

TEST_F(EvalCli, SimilarityFlagsReachTheKernels) {
  // rbf with tau 2 through the reference: the binary's reference against this
  // process's reference with the same policy (two references' rounding).
  const Index n = 12, d = 4;
  const RowMatrix<double> qm = random_matrix<double>(n, d, 81), km = random_matrix<double>(n, d, 82),
                          vm = random_matrix<double>(n, d, 83);
  const std::string files = save_qkv(qm, km, vm);
  ASSERT_EQ(run("attention " + files + " --mask causal --method reference --similarity rbf --tau 2 --out " +
                q(dir / "o.npy"))
                .code,
            0);
  const auto want = reference_attention(qm, km, vm, {Mask::causal()}, RbfScore{2});
  // The rbf logits are -|q - k|^2 / 4 <= 2 d / 4 in magnitude for entries in [-1, 1].
  EXPECT_TRUE(matrices_near(load<double>("o.npy", n, d), want.output,
                            two_references_tolerance<double>(n, d, 2.0 * d, vm.cwiseAbs().maxCoeff())));
  // ... and it is not the dot product's output.
  const auto dot = reference_attention(qm, km, vm, {Mask::causal()});
  EXPECT_GT((load<double>("o.npy", n, d) - dot.output).cwiseAbs().maxCoeff(), 1e-6);
}

TEST_F(EvalCli, Float16FilesComputeInFloat32) {
  const Index n = 10, d = 4;
  const RowMatrix<float> qm = random_matrix<float>(n, d, 91), km = random_matrix<float>(n, d, 92),
                         vm = random_matrix<float>(n, d, 93);
  NpyWriteOptions half;
  half.dtype = NpyDtype::float16;
  write_npy(dir / "q.npy", qm, half);
  write_npy(dir / "k.npy", km, half);
  write_npy(dir / "v.npy", vm, half);
  const Outcome r = run("attention --q " + q(dir / "q.npy") + " --k " + q(dir / "k.npy") + " --v " +
                        q(dir / "v.npy") + " --method reference --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy_header(dir / "o.npy").dtype, NpyDtype::float32);
  // Every half is exactly a float: the inputs as read are the rounded ones.
  const RowMatrix<float> qh = qm.cast<Eigen::half>().cast<float>(), kh = km.cast<Eigen::half>().cast<float>(),
                         vh = vm.cast<Eigen::half>().cast<float>();
  const auto want = reference_attention(qh, kh, vh);
  EXPECT_TRUE(matrices_near(
      load<float>("o.npy", n, d), want.output,
      two_references_tolerance<float>(n, d, max_abs_logit(qh, kh, 0.5), vh.cwiseAbs().maxCoeff())));
}

TEST_F(EvalCli, CompareWithSixteenBitKvSeparatesTheTwoErrors) {
  const Index n = 48, d = 8;
  const RowMatrix<float> qm = random_matrix<float>(n, d, 95), km = random_matrix<float>(n, d, 96),
                         vm = random_matrix<float>(n, d, 97);
  const Outcome r =
      run("compare " + save_qkv(qm, km, vm) +
          " --mask causal --repeats 1 --methods flash,topk --kv-dtype bf16 --json " + q(dir / "r.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("K and V rounded to bf16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max_abs_error_rounded"), std::string::npos) << r.out;
  const auto doc = nlohmann::json::parse(read_file(dir / "r.json"));
  EXPECT_EQ(doc.at("workload").at("kv_dtype"), "bf16");
  EXPECT_EQ(doc.at("workload").at("similarity"), "dot");
  const auto& res = doc.at("results");
  ASSERT_EQ(res.size(), 5u);  // oracle, flash x 2, topk x 2
  // The oracle row: the rounding of K and V alone moves the exact output.
  const RowMatrix<float> kb = km.cast<Eigen::bfloat16>().cast<float>(),
                         vb = vm.cast<Eigen::bfloat16>().cast<float>();
  const auto exact = reference_attention(qm, km, vm, {Mask::causal()});
  const auto rounded = reference_attention(qm, kb, vb, {Mask::causal()});
  const double rounding = max_abs_error(exact.output, rounded.output);
  ASSERT_GT(rounding, 0.0);
  // Both references are within half an ulp of float of the exact results
  // (plus the wide type's rounding, far below): the reported difference is
  // within an ulp of float (times max|v| <= 1) of the one computed here.
  EXPECT_NEAR(res[0].at("max_abs_error_rounded").get<double>(), rounding, 2 * eps<float>());
  for (std::size_t i : {1u, 2u}) {
    ASSERT_EQ(res[i].at("method"), "flash");
    // flash keeps K and V in 16 bits.
    EXPECT_EQ(res[i].at("cache_bytes").get<std::int64_t>(), n * (d + d) * 2);
    // Its own error (against the reference on the rounded K and V) is the
    // fused kernel's rounding in float: within its worst-case bound.
    const Bound b = error_bound(qm, kb, vb, 1 / std::sqrt(8.0), 128, BoundKind::worst_case);
    EXPECT_LE(res[i].at("max_abs_error_rounded").get<double>(), b.output.maxCoeff() + eps<float>());
    // Against the unrounded reference the rounding of K and V adds up:
    // within the kernel's error of the rounding-only difference.
    EXPECT_NEAR(res[i].at("max_abs_error").get<double>(), rounding, b.output.maxCoeff() + 2 * eps<float>());
  }
}

TEST_F(EvalCli, ApproxWritesABoundThatHoldsAndMeetsItsTarget) {
  // 3-D grouped heads, causal: the binary's approx output against this
  // process's reference; the true error must be within the bound it wrote,
  // and the bound (certified mode) within eps * max_j |v_jc| over the keys a
  // row sees (here checked against the larger max over all keys of the head).
  const Index n = 96, d = 8, hq = 2, hk = 1;
  const RowMatrix<double> qm = random_matrix<double>(hq * n, d, 111),
                          km = random_matrix<double>(hk * n, d, 112),
                          vm = random_matrix<double>(hk * n, d, 113);
  const std::string files = "--q " + q(save3("q.npy", hq, qm)) + " --k " + q(save3("k.npy", hk, km)) +
                            " --v " + q(save3("v.npy", hk, vm));
  const double eps_target = 0.05;
  const Outcome r = run("attention " + files + " --mask causal --method approx --eps 0.05 --out " +
                        q(dir / "o.npy") + " --bound " + q(dir / "b.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy_header(dir / "b.npy").dtype, NpyDtype::float64);
  const RowMatrix<double> o = load<double>("o.npy", hq * n, d), b = load<double>("b.npy", hq * n, d);
  const double max_v = vm.cwiseAbs().maxCoeff();
  for (Index h = 0; h < hq; ++h) {
    const auto want =
        reference_attention(RowMatrix<double>(qm.middleRows(h * n, n)), km, vm, {Mask::causal()});
    for (Index i = 0; i < n; ++i)
      for (Index c = 0; c < d; ++c) {
        // The reference is within a few ulps of double of the exact value:
        // 1e-12 max|v| covers it (n_k + d = 104 terms, eps 2.2e-16).
        EXPECT_LE(std::fabs(o(h * n + i, c) - want.output(i, c)), b(h * n + i, c) + 1e-12 * max_v)
            << h << " " << i << " " << c;
        EXPECT_LE(b(h * n + i, c), eps_target * max_v) << h << " " << i << " " << c;
      }
  }
}

// --- prune -------------------------------------------------------------------

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
  const std::size_t header = static_cast<std::size_t>(static_cast<unsigned char>(bytes[8])) |
                             (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
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

/// The kept dimensions of head `h` in a (heads, D') array.
std::vector<std::int64_t> head_dims(const IndexArray& a, std::size_t h, std::size_t kept) {
  return {a.values.begin() + static_cast<std::ptrdiff_t>(h * kept),
          a.values.begin() + static_cast<std::ptrdiff_t>((h + 1) * kept)};
}

std::vector<std::int64_t> as_int64(const std::vector<Index>& v) {
  return {v.begin(), v.end()};
}

// The kernel part of the difference between the binary's pruned outputs and
// the library's computed here: each side's fused kernel is within its
// worst-case bound (flash_bounds.hpp, tile 128) of the exact attention over
// its pruned cache. A compressed key's logit is scale (q'_A . k_A + q_B .
// offset) with the folded query q'_A = q_A + M^T q_B, whose entries satisfy
// |q'_c| <= |q_c| + ||M||_F ||q||_2, so its absolute logit scale is at most
// scale (sum_c |q_c k_c| + ||M||_F ||q||_2 ||k||_1 + ||q||_2 ||offset||_2); a
// full-width key's is scale sum_c |q_c k_c|. The bound is taken with the
// larger for every pair, over every query and key. Two sides: twice.
template <typename Scalar>
double two_kernels_bound(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
                         double scale, double m_norm, double offset_norm) {
  const RowMatrix<double> qd = q.template cast<double>(), kd = k.template cast<double>();
  const Eigen::VectorXd q_norm = qd.rowwise().norm();
  RowMatrix<double> abs_logits = qd.cwiseAbs() * kd.cwiseAbs().transpose();
  abs_logits += m_norm * q_norm * kd.cwiseAbs().rowwise().sum().transpose();
  abs_logits.colwise() += offset_norm * q_norm;
  abs_logits *= scale;
  const double max_v = v.template cast<double>().cwiseAbs().maxCoeff();
  return 2 * error_bound_from_abs_logits<Scalar>(abs_logits, max_v, as_double(q.cols()) + 3, k.rows(), 128,
                                                 BoundKind::worst_case)
                 .output.maxCoeff();
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
  const Outcome r =
      run("prune " + files +
          " --ratio 0.5 --prompt 128 --query-window 16 --recent 8 --weights centered --select swap"
          " --compensation mean --out-dims " +
          q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("keep 8 of 16 key dimensions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("median output error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("query window 16, recent 8"), std::string::npos) << r.out;

  const auto want = run_prune_protocol(
      w.q, w.k, w.v,
      protocol_options(n0, 16, 0.5, 8,
                       {PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false}));
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  EXPECT_EQ(dims.shape, "(8,)");
  EXPECT_EQ(dims.values, as_int64(want.selection.kept()));
  const RowMatrix<double> got = load<double>("o.npy", n - n0, d);
  const double max_v = w.v.cwiseAbs().maxCoeff();
  const double qk = 0.25 * w.q.rowwise().norm().maxCoeff() * w.k.rowwise().norm().maxCoeff();  // scale 1/4
  const double mean_norm = key_statistics(w.k.topRows(n0 - 8)).mean.norm();  // bounds |offset| = |mu_B|
  const double tol =
      2 * as_double(n0) * eps<double>() * qk * max_v + two_kernels_bound(w.q, w.k, w.v, 0.25, 0.0, mean_norm);
  EXPECT_TRUE(matrices_near(got, want.output, tol));
  char expected_error[32];
  std::snprintf(expected_error, sizeof expected_error, "%.4g", want.output_error);
  EXPECT_NE(r.out.find(expected_error), std::string::npos) << r.out << " lacks " << expected_error;
}

// The regression-aware path end to end: the residual selector with regression
// compensation chooses the same dimensions as the library, and its judged
// outputs match the library's within the effect of the fit's rounding, which
// differs between the binary (-march=native) and this test. Derivation:
// M = S_BA (S_AA + rho I)^-1 is solved from the centred scatter S of the n_c
// compressed keys; each entry is an n_c-term sum, computed within
// (n_c + 3) u sum_m |k_mi - mu_i| |k_mj - mu_j| <= (n_c + 3) u n_c c^2 with
// c = max |k_mi - mu_i| (u the unit roundoff), so ||dS||_F <= D (n_c + 3) n_c u c^2,
// and the LDLT solve adds a backward error of at most D u ||S||_F. With
// ||(S_AA + rho I)^-1||_2 = 1 / lambda_min(S_AA + rho I) (computed here), to
// first order
//   ||dM||_F <= (||dS||_F + D u ||S||_F) (1 + ||M||_F) / lambda_min.
// A compressed key's logit scale q_B . (M (k_A - mu_A) + mu_B) then moves by at
// most dz = scale D max|q| ||dM||_F (c + max|mu|) (the offset
// mu_B - M mu_A moves with M; |q_B| <= sqrt(D) max|q|, |k_A - mu_A| <= sqrt(D) c),
// each output by at most 2 dz max|v| (a relative weight change of dz,
// flash_bounds.hpp's rule), plus both kernels' rounding.
TEST_F(EvalCli, PruneRegressionPathMatchesTheLibrary) {
  const Index n = 160, d = 16, n0 = 128, recent = 8;
  const auto w = make_llm_like_workload<double>({n, n, d, d}, 74);
  const std::string files = save_qkv(w.q, w.k, w.v);
  const Outcome r =
      run("prune " + files +
          " --ratio 0.5 --prompt 128 --query-window 16 --recent 8 --weights gram --select residual"
          " --compensation regression --out-dims " +
          q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("gram/residual/regression"), std::string::npos) << r.out;
  const auto want = run_prune_protocol(
      w.q, w.k, w.v,
      protocol_options(
          n0, 16, 0.5, recent,
          {PruneWeights::gram, PruneSelector::residual, PruneCompensation::regression, {}, false}));
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  ASSERT_EQ(dims.values, as_int64(want.selection.kept()));

  const Index n_c = n0 - recent;
  const RowMatrix<double> kc = w.k.topRows(n_c);
  const KeyStatistics stats = key_statistics(kc);
  const Compensation<double> comp =
      fit_compensation<double>(stats, want.selection, PruneCompensation::regression);
  const double u = 0.5 * eps<double>(), D = as_double(d);
  const double c = (kc.rowwise() - stats.mean.transpose()).cwiseAbs().maxCoeff();
  const double ds = D * as_double(n_c + 3) * as_double(n_c) * u * c * c + D * u * stats.scatter.norm();
  const double m_norm = comp.coefficients.norm();
  const auto& kept = want.selection.kept();
  Eigen::MatrixXd saa(kept.size(), kept.size());
  for (std::size_t i = 0; i < kept.size(); ++i)
    for (std::size_t j = 0; j < kept.size(); ++j)
      saa(static_cast<Index>(i), static_cast<Index>(j)) = stats.scatter(kept[i], kept[j]);
  saa.diagonal().array() += comp.ridge;
  const double lambda_min = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(saa).eigenvalues().minCoeff();
  ASSERT_GT(lambda_min, 0.0);
  const double dm = ds * (1 + m_norm) / lambda_min;
  const double dz = 0.25 * D * w.q.cwiseAbs().maxCoeff() * dm * (c + stats.mean.cwiseAbs().maxCoeff());
  const double tol =
      2 * dz * w.v.cwiseAbs().maxCoeff() + two_kernels_bound(w.q, w.k, w.v, 0.25, m_norm, comp.offset.norm());
  const RowMatrix<double> got = load<double>("o.npy", n - n0, d);
  EXPECT_TRUE(matrices_near(got, want.output, tol)) << "tolerance " << tol;
  // The tolerance is far below the pruning error itself: the comparison can
  // tell this configuration's outputs from the exact ones (and from another
  // compensation's).
  EXPECT_LT(tol, 0.01 * max_abs_error(want.output, want.exact));
}

// 3-D, grouped query heads: two query heads share one key head; without
// --shared-selection each chooses its own dimensions over it.
TEST_F(EvalCli, PruneHandlesThreeDimensionalGroupedHeads) {
  const Index n = 96, d = 8;
  const auto a = make_llm_like_workload<float>({n, n, d, d}, 72);
  const auto b = make_llm_like_workload<float>({n, n, d, d}, 73);
  RowMatrix<float> qs(2 * n, d);
  qs << a.q, b.q;
  const std::string files = "--q " + q(save3("q.npy", 2, qs)) + " --k " + q(save3("k.npy", 1, a.k)) +
                            " --v " + q(save3("v.npy", 1, a.v));
  const Outcome r =
      run("prune " + files + " --ratio 0.25 --prompt 64 --query-window 8 --recent 4 --out-dims " +
          q(dir / "dims.npy") + " --out " + q(dir / "o.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("one selection per query head"), std::string::npos) << r.out;
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  EXPECT_EQ(dims.shape, "(2, 6)");
  const NpyArray<float> o = read_npy<float>(dir / "o.npy");
  EXPECT_EQ(o.shape, (std::vector<Index>{2, 32, 8}));
  const PruneProtocolOptions po = protocol_options(64, 8, 0.25, 4);
  for (Index h = 0; h < 2; ++h) {
    const RowMatrix<float>& qh = h == 0 ? a.q : b.q;
    const auto want = run_prune_protocol(qh, a.k, a.v, po);
    EXPECT_EQ(head_dims(dims, static_cast<std::size_t>(h), 6), as_int64(want.selection.kept()))
        << "head " << h;
    // ThinK has no compensation: only the kernels' rounding separates them.
    const Eigen::Map<const RowMatrix<float>> got(o.data.data() + h * 32 * 8, 32, 8);
    EXPECT_TRUE(
        matrices_near(got, want.output, two_kernels_bound(qh, a.k, a.v, 1 / std::sqrt(8.0), 0.0, 0.0)))
        << "head " << h;
  }
}

// --shared-selection: one selection per key/value head from all its query
// heads' windows, exactly run_prune_protocol_shared; the key cache is then
// counted once per key/value head.
TEST_F(EvalCli, PruneSharedSelectionChoosesOncePerKeyValueHead) {
  const Index n = 96, d = 8, hq = 4, hkv = 2;
  const auto g = make_grouped_workload<float>(WorkloadKind::llm_like, {n, n, d, d}, hq, hkv, 9);
  const std::string files = "--q " + q(save3("q.npy", hq, g.stacked.q)) + " --k " +
                            q(save3("k.npy", hkv, g.stacked.k)) + " --v " +
                            q(save3("v.npy", hkv, g.stacked.v));
  const std::string args = "prune " + files +
                           " --ratio 0.5 --prompt 64 --query-window 8 --recent 4 --out-dims " +
                           q(dir / "dims.npy") + " --out " + q(dir / "o.npy");
  const Outcome r = run(args + " --shared-selection");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4 head(s) over 2 key/value head(s), one selection per key/value head"),
            std::string::npos)
      << r.out;
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  EXPECT_EQ(dims.shape, "(4, 4)");
  const NpyArray<float> o = read_npy<float>(dir / "o.npy");
  std::size_t pruned_bytes = 0, full_bytes = 0;
  const PruneProtocolOptions po = protocol_options(64, 8, 0.5, 4);
  for (Index kv = 0; kv < hkv; ++kv) {
    const RowMatrix<float> qg = g.stacked.q.middleRows(kv * 2 * n, 2 * n),
                           kg = g.stacked.k.middleRows(kv * n, n), vg = g.stacked.v.middleRows(kv * n, n);
    const auto want = run_prune_protocol_shared(qg, 2, kg, vg, po);
    pruned_bytes += want[0].memory.total_bytes();
    full_bytes += want[0].memory.unpruned_bytes;
    for (Index i = 0; i < 2; ++i) {
      const Index h = 2 * kv + i;
      EXPECT_EQ(head_dims(dims, static_cast<std::size_t>(h), 4), as_int64(want[0].selection.kept()))
          << "head " << h;
      const Eigen::Map<const RowMatrix<float>> got(o.data.data() + h * 32 * 8, 32, 8);
      const RowMatrix<float> qh = qg.middleRows(i * n, n);
      EXPECT_TRUE(matrices_near(got, want[static_cast<std::size_t>(i)].output,
                                two_kernels_bound(qh, kg, vg, 1 / std::sqrt(8.0), 0.0, 0.0)))
          << "head " << h;
    }
  }
  EXPECT_NE(r.out.find("key cache over all heads: " + std::to_string(full_bytes) +
                       " bytes at full width (one per key/value head), " + std::to_string(pruned_bytes) +
                       " bytes pruned (one cache per key/value head)"),
            std::string::npos)
      << r.out;
  // Per query head, the same inputs need one pruned cache per query head.
  const Outcome per_head = run(args);
  ASSERT_EQ(per_head.code, 0) << per_head.err;
  EXPECT_NE(per_head.out.find(std::to_string(2 * pruned_bytes) + " bytes pruned (one cache per query head)"),
            std::string::npos)
      << per_head.out;
}

TEST_F(EvalCli, PruneOnTheBuiltInGroupedWorkload) {
  const Outcome r =
      run("prune --n 96 --d 8 --heads 4 --kv-heads 2 --ratio 0.5 --prompt 64 --query-window 8 "
          "--recent 4 --shared-selection --out-dims " +
          q(dir / "dims.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  const IndexArray dims = read_index_npy(dir / "dims.npy");
  ASSERT_EQ(dims.shape, "(4, 4)");
  EXPECT_EQ(head_dims(dims, 0, 4), head_dims(dims, 1, 4)) << "heads 0 and 1 share key/value head 0";
  EXPECT_EQ(head_dims(dims, 2, 4), head_dims(dims, 3, 4)) << "heads 2 and 3 share key/value head 1";
}

// --- bad input: exit code 2, one line naming the flag or file, nothing lost --

struct BadCase {
  std::string args;
  std::vector<std::string> needles;
  std::string env = "";
};

class EvalCliBadInput : public EvalCli {
 protected:
  void SetUp() override {
    fs::create_directory(dir / "io");
    io = dir / "io";
    const auto put = [&](const std::string& name, const RowMatrix<float>& m) { write_npy(p(name), m); };
    const auto put3 = [&](const std::string& name, Index heads, const RowMatrix<float>& m) {
      write_npy(p(name), NpyArray<float>{{heads, m.rows() / heads, m.cols()},
                                         std::vector<float>(m.data(), m.data() + m.size())});
    };
    put("q.npy", random_matrix<float>(7, 5, 61));
    put("k.npy", random_matrix<float>(9, 5, 62));
    put("v.npy", random_matrix<float>(9, 3, 63));
    put("k6.npy", random_matrix<float>(9, 6, 64));
    put("v8.npy", random_matrix<float>(8, 3, 65));
    write_npy(p("kd.npy"), random_matrix<double>(9, 5, 66));
    put3("q3.npy", 3, random_matrix<float>(3 * 7, 5, 67));
    put3("k2.npy", 2, random_matrix<float>(2 * 9, 5, 68));
    put3("v2.npy", 2, random_matrix<float>(2 * 9, 3, 69));
    put3("v4.npy", 4, random_matrix<float>(4 * 9, 3, 70));
    // Square inputs for prune and compare (one query per token), d = 8.
    put("qs.npy", random_matrix<float>(16, 8, 71));
    put("ks.npy", random_matrix<float>(16, 8, 72));
    put("vs.npy", random_matrix<float>(16, 8, 73));
    RowMatrix<float> bad = random_matrix<float>(16, 8, 74);
    bad(3, 2) = std::numeric_limits<float>::quiet_NaN();
    put("knan.npy", bad);
    RowMatrix<float> bad3 = random_matrix<float>(2 * 16, 8, 75);
    bad3(16 + 5, 1) = std::numeric_limits<float>::infinity();  // head 1, row 5, col 1
    put3("vinf3.npy", 2, bad3);
    put3("qs3.npy", 2, random_matrix<float>(2 * 16, 8, 76));
    put3("ks3.npy", 2, random_matrix<float>(2 * 16, 8, 77));
    write_npy(p("one_d.npy"), NpyArray<float>{{5}, {1, 2, 3, 4, 5}});
    write_file(p("text.npy"), "this is not a numpy file\n");
    const std::string good = read_file(p("k.npy"));
    write_file(p("truncated.npy"), good.substr(0, good.size() - 4));
    std::string int_file = good;
    int_file.replace(int_file.find("<f4"), 3, "<i4");
    write_file(p("int.npy"), int_file);
    ASSERT_EQ(::mkfifo(p("fifo.npy").c_str(), 0644), 0);
    fs::create_directory(p("sub.npy"));
    fs::create_symlink(p("q.npy"), p("qlink.npy"));
    fs::create_hard_link(p("q.npy"), p("qhard.npy"));
    write_file(p("out.npy"), "precious");
    write_file(p("fail.py"), "import sys\nsys.exit(1)\n");
    files = "--q " + q(p("q.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v.npy"));
    square = "--q " + q(p("qs.npy")) + " --k " + q(p("ks.npy")) + " --v " + q(p("vs.npy"));
    out = " --out " + q(p("out.npy"));
  }

  /// Runs every case under `timeout 10` (a FIFO input must not hang it) and
  /// checks the documented promise: exit code 2, nothing on stdout, exactly
  /// one line on stderr naming the problem, and the directory of inputs and
  /// outputs unchanged: no file created, removed or modified.
  void expect_refused(const std::vector<BadCase>& cases) {
    for (const BadCase& c : cases) {
      const auto before = snapshot(io);
      const Outcome r = run(c.args, c.env, 10);
      EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
      EXPECT_EQ(r.out, "") << c.args;
      EXPECT_FALSE(r.err.empty()) << c.args;
      EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
      EXPECT_EQ(r.err.rfind("attnkit-eval", 0), 0u) << r.err;
      for (const std::string& needle : c.needles)
        EXPECT_NE(r.err.find(needle), std::string::npos) << c.args << "\n" << r.err << "lacks: " << needle;
      const auto after = snapshot(io);
      EXPECT_EQ(after, before) << "files created, removed or changed by: " << c.args;
      if (after != before) {
        // Put the inputs back for the next case.
        TearDown();
        fs::remove_all(io);
        SetUp();
      }
    }
  }

  std::string p(const std::string& name) const { return io + "/" + name; }

  std::string io, files, square, out;
};

TEST_F(EvalCliBadInput, Attention) {
  const std::string ref = "attention " + files + " --method reference";
  const std::string builtin = "attention --method reference --out " + q(p("o.npy"));
  expect_refused({
      {"attention --q " + q(p("missing.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"--q '" + p("missing.npy") + "'", "cannot open"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("text.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {p("text.npy"), "not a .npy file"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("truncated.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {p("truncated.npy"), "truncated"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("int.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {p("int.npy"), "unsupported dtype '<i4'"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("k6.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"--q '" + p("q.npy") + "' (7, 5)", "--k '" + p("k6.npy") + "' (9, 6)", "same width d"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v8.npy")) +
           " --method reference" + out,
       {"(9, 5)", "(8, 3)", "same number of tokens"}},
      {"attention --q " + q(p("one_d.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"one_d.npy' (5,)", "2-D (n, d) or 3-D (heads, n, d)"}},
      {"attention --q " + q(p("q3.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"(3, 7, 5)", "same number of dimensions"}},
      {"attention --q " + q(p("q3.npy")) + " --k " + q(p("k2.npy")) + " --v " + q(p("v2.npy")) +
           " --method reference" + out,
       {"3 heads", "multiple of the number of key/value heads"}},
      {"attention --q " + q(p("q3.npy")) + " --k " + q(p("k2.npy")) + " --v " + q(p("v4.npy")) +
           " --method reference" + out,
       {"(2, 9, 5)", "(4, 9, 3)", "same number of heads"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("kd.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"float32", "float64", "pass --dtype"}},
      {"attention --q " + q(p("q.npy")) + " --method reference" + out,
       {"give all three of --q, --k and --v"}},
      // Inputs that are not regular files: refused before anything reads them.
      {"attention --q " + q(p("fifo.npy")) + " --k " + q(p("k.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"--q '" + p("fifo.npy") + "'", "named pipe (FIFO)"}},
      {"attention --q /dev/stdin --k " + q(p("k.npy")) + " --v " + q(p("v.npy")) + " --method reference" +
           out,
       {"--q '/dev/stdin'", "regular .npy files only"}},
      {"attention --q " + q(p("q.npy")) + " --k " + q(p("sub.npy")) + " --v " + q(p("v.npy")) +
           " --method reference" + out,
       {"--k '" + p("sub.npy") + "'", "a directory"}},
      // Mask flags, validated against the shapes with the value as typed.
      {ref + " --mask diagonal" + out, {"--mask diagonal", "none|causal|strict"}},
      {ref + " --scale -1" + out, {"--scale -1: must be finite and > 0"}},
      {ref + " --scale nan" + out, {"--scale nan: not a finite number"}},
      {ref + " --mask causal --offset 100" + out, {"--offset 100", "causal"}},
      {ref + " --mask causal --offset -3" + out, {"--offset -3", "offset -3 leaves no valid causal layout"}},
      {ref + " --mask causal --offset 99999999999999999999" + out,
       {"--offset 99999999999999999999: must be an integer in [-9223372036854775808, 9223372036854775807]"}},
      {ref + " --offset 1" + out, {"--offset 1", "'none'"}},
      {ref + " --offset abc" + out, {"--offset abc", "integer"}},
      {ref + " --window 0" + out, {"--window 0: must be an integer >= 1"}},
      {ref + " --window -2" + out, {"--window -2"}},
      {ref + " --window 2.5" + out, {"--window 2.5"}},
      {ref + " --window 4 --sinks -1" + out, {"--sinks -1: must be an integer >= 0"}},
      {ref + " --window 4 --sinks 10" + out, {"--sinks 10: must be in [0, n_k] = [0, 9]"}},
      // Methods and their options.
      {"attention " + files + " --method nope" + out,
       {"--method nope", "available: reference, materialized"}},
      {"attention " + files + out, {"--method", "required"}},
      {ref, {"--out", "required"}},
      {ref + " --bogus 3" + out, {"--bogus"}},
      {ref + " --ratio 0.5" + out, {"--ratio is not an option of method 'reference'"}},
      {"attention " + files + " --method flash --threads 0" + out, {"--threads 0", "[1, 4096]"}},
      {"attention " + files + " --method prune --ratio 0.9" + out,
       {"--ratio 0.9", "keeps no key dimension of D = 5"}},
      {"attention " + files + " --method prune --shared-selection maybe" + out,
       {"--shared-selection maybe", "on|off"}},
      // attention accepts non-finite inputs, but not for a method that ranks them.
      {"attention --q " + q(p("qs.npy")) + " --k " + q(p("knan.npy")) + " --v " + q(p("vs.npy")) +
           " --method prune --query-window 8" + out,
       {"--k '" + p("knan.npy") + "'", "entry (head 0, row 3, col 2) is nan",
        "attention --method prune needs finite"}},
      // The built-in workload.
      {ref + " --n 64" + out, {"--n sets up the built-in workload"}},
      {builtin + " --n 0", {"--n 0: must be an integer >= 1"}},
      {builtin + " --n -5", {"--n -5: must be an integer >= 1"}},
      {builtin + " --n 99999999999999999999", {"--n 99999999999999999999", "[1, 9223372036854775807]"}},
      {builtin + " --d 7 --n 8", {"--d 7", "even"}},
      {builtin + " --workload zipf", {"--workload zipf", "iid|clustered|llm"}},
      {builtin + " --seed -1", {"--seed -1: must be an integer in [0, 18446744073709551615]"}},
      {builtin + " --seed 1.5", {"--seed 1.5"}},
      {builtin + " --heads 8 --kv-heads 3", {"--kv-heads 3: must divide --heads 8"}},
      {builtin + " --kv-heads 0", {"--kv-heads 0: must be an integer >= 1"}},
      {builtin + " --workload iid --d 7 --n 8 --heads 4 --kv-heads 2",
       {"--d 7", "grouped query heads", "even d"}},
      {"attention --method reference --n 100000000 --d 128 --heads 1000" + out,
       {"--heads 1000", "more than 1 TiB"}},
      // Outputs: creatable, and neither an input nor each other (resolved).
      {ref + " --out " + q(p("no/such/dir/o.npy")),
       {"--out '" + p("no/such/dir/o.npy") + "'", "does not exist"}},
      {ref + " --out " + q(io), {"--out", "is a directory"}},
      {ref + " --out /dev/null", {"--out '/dev/null'", "not a regular file"}},
      {ref + out + " --lse " + q(p("nope/l.npy")), {"--lse", "does not exist"}},
      {ref + " --out " + q(p("q.npy")), {"--out '" + p("q.npy") + "' is the same file as --q"}},
      {ref + " --out " + q(p("o.npy")) + " --lse " + q(p("v.npy")),
       {"--lse '" + p("v.npy") + "' is the same file as --v"}},
      {ref + " --out " + q(p("o.npy")) + " --lse " + q(p("o.npy")), {"--lse", "--out", "are the same file"}},
      {ref + " --out " + q(p("qlink.npy")), {"--out '" + p("qlink.npy") + "' is the same file as --q"}},
      {ref + " --out " + q(p("qhard.npy")), {"--out '" + p("qhard.npy") + "' is the same file as --q"}},
      {ref + " --out " + q(p("sub.npy/../k.npy")), {"is the same file as --k"}},
      {ref + " --out " + q(p("o.npy")) + " --lse " + q(p("sub.npy/../o.npy")),
       {"--lse", "--out", "are the same file"}},
  });
}

TEST_F(EvalCliBadInput, Prune) {
  const std::string dims = " --out-dims " + q(p("dims.npy"));
  const std::string prune = "prune " + square + " --ratio 0.5 --query-window 8 --recent 4";
  expect_refused({
      {prune + " --weights norm" + dims, {"--weights norm", "gram|centered|attention"}},
      {prune + " --select greedy" + dims, {"--select greedy", "greedy-remove"}},
      {"prune " + square + " --ratio 1.5" + dims, {"--ratio 1.5", "[0, 1)"}},
      {"prune " + square + " --ratio x" + dims, {"--ratio x: not a finite number"}},
      {prune + " --compensation full" + dims, {"--compensation full", "none|mean|regression"}},
      {prune + " --rope-pairs odd" + dims, {"--rope-pairs odd", "interleaved|half|none"}},
      {"prune " + square + " --ratio 0.5 --query-window 0" + dims,
       {"--query-window 0: must be an integer >= 1"}},
      {"prune " + square + " --ratio 0.5 --recent -1" + dims, {"--recent -1: must be an integer >= 0"}},
      {prune + " --prompt 0" + dims, {"--prompt 0: must be an integer >= 1"}},
      {"prune " + files + " --ratio 0.5" + dims, {"one query per token", "7", "9"}},
      {prune + " --mask strict" + dims, {"--mask strict", "causally"}},
      {prune + " --mask causal --offset 2" + dims, {"--offset 2", "no offset"}},
      {prune + " --window 4" + dims, {"--window 4", "without a sliding window", "--query-window"}},
      {prune + " --sinks 2" + dims, {"--sinks 2", "without attention sinks"}},
      {prune + " --scale 0" + dims, {"--scale 0: must be finite and > 0"}},
      {"prune --n 40 --ratio 0.5 --prompt 10 --query-window 20" + dims,
       {"--query-window 20", "longer than the prompt (N0 = 10)"}},
      {"prune --n 40 --ratio 0.5 --prompt 41" + dims, {"--prompt 41", "[1, 40]"}},
      {"prune --n 40 --d 8 --ratio 0.95" + dims, {"--ratio 0.95", "D = 8"}},
      {"prune --n 40 --d 32 --ratio 0.5 --select optimal" + dims,
       {"--select optimal", "24 units", "D = 32 has 32"}},
      {"prune --n 40 --d 8 --ratio 0.5 --rope-pairs half --heads 2 --seed -1" + dims, {"--seed -1"}},
      {"prune --n 40 --ratio 0.5", {"--out-dims", "required"}},
      {prune + " --out-dims " + q(p("qs.npy")), {"--out-dims '" + p("qs.npy") + "' is the same file as --q"}},
      {prune + dims + " --out " + q(p("ks.npy")), {"--out '" + p("ks.npy") + "' is the same file as --k"}},
      {prune + " --out-dims " + q(p("d.npy")) + " --out " + q(p("d.npy")),
       {"--out", "--out-dims", "are the same file"}},
      {prune + " --out-dims " + q(p("out.npy")) + " --out " + q(p("out.npy")), {"are the same file"}},
      {"prune --q " + q(p("fifo.npy")) + " --k " + q(p("ks.npy")) + " --v " + q(p("vs.npy")) +
           " --ratio 0.5" + dims,
       {"--q '" + p("fifo.npy") + "'", "named pipe (FIFO)"}},
      // Non-finite inputs: named by flag, file and the first bad entry.
      {"prune --q " + q(p("qs.npy")) + " --k " + q(p("knan.npy")) + " --v " + q(p("vs.npy")) +
           " --ratio 0.5 --query-window 8 --recent 4" + dims,
       {"--k '" + p("knan.npy") + "'", "entry (head 0, row 3, col 2) is nan", "prune needs finite"}},
      {"prune --q " + q(p("qs3.npy")) + " --k " + q(p("ks3.npy")) + " --v " + q(p("vinf3.npy")) +
           " --ratio 0.5 --query-window 8 --recent 4" + dims,
       {"--v '" + p("vinf3.npy") + "'", "entry (head 1, row 5, col 1) is inf"}},
  });
}

TEST_F(EvalCliBadInput, Compare) {
  const std::string compare = "compare " + square + " --repeats 1";
  const std::string plot = " --plot " + q(p("p.png"));
  expect_refused({
      {"compare " + square + " --repeats 0", {"--repeats 0: must be an integer in [1, 1000000]"}},
      {"compare " + square + " --repeats abc", {"--repeats abc"}},
      {compare + " --methods reference,fast", {"--methods", "'fast'"}},
      {compare + " --json " + q(p("none/r.json")), {"--json", "does not exist"}},
      {compare + " --json " + q(p("qs.npy")), {"--json '" + p("qs.npy") + "' is the same file as --q"}},
      {compare + " --csv " + q(p("vs.npy")), {"--csv '" + p("vs.npy") + "' is the same file as --v"}},
      {compare + " --json " + q(p("r.txt")) + " --csv " + q(p("r.txt")),
       {"--csv", "--json", "are the same file"}},
      {compare + " --json " + q(p("r.json")) + " --plot " + q(p("r.json")),
       {"--plot", "--json", "are the same file"}},
      {compare + " --window 0", {"--window 0"}},
      {compare + " --window 4 --sinks 17", {"--sinks 17: must be in [0, n_k] = [0, 16]"}},
      {compare + " --mask causal --offset 99999999999999999999", {"--offset 99999999999999999999"}},
      {"compare --n 16 --d 8 --heads 1 --seed -1", {"--seed -1"}},
      {"compare --n 100000000 --d 128 --heads 1000", {"--heads 1000", "more than 1 TiB"}},
      {"compare --q " + q(p("fifo.npy")) + " --k " + q(p("ks.npy")) + " --v " + q(p("vs.npy")),
       {"--q '" + p("fifo.npy") + "'", "named pipe (FIFO)"}},
      {"compare --q " + q(p("qs.npy")) + " --k " + q(p("knan.npy")) + " --v " + q(p("vs.npy")) + " --json " +
           q(p("r.json")),
       {"--k '" + p("knan.npy") + "'", "entry (head 0, row 3, col 2) is nan", "compare needs finite"}},
      // The plot step, checked before any work.
      {compare + " --json " + q(p("r.json")) + plot,
       {"--plot", "not a readable regular file"},
       "ATTNKIT_EVAL_PLOT_SCRIPT=" + q(p("missing.py"))},
      {compare + " --json " + q(p("r.json")) + plot,
       {"--plot: the plot script '/dev/null' is not a readable regular"},
       "ATTNKIT_EVAL_PLOT_SCRIPT=/dev/null"},
      {compare + plot,
       {"--plot", "is the same file as the plot script"},
       "ATTNKIT_EVAL_PLOT_SCRIPT=" + q(p("p.png")) + " ATTNKIT_PYTHON=true"},
      {compare + " --json " + q(p("r.json")) + plot,
       {"--plot: cannot run Python"},
       "ATTNKIT_EVAL_PLOT_SCRIPT=" + q(p("fail.py")) + " ATTNKIT_PYTHON=" + q(p("no-such-python"))},
  });
}

TEST_F(EvalCliBadInput, SimilarityStorageAndMethodFlags) {
  const std::string att = "attention " + files + out;
  expect_refused({
      {att + " --method linear --similarity rbf",
       {"--similarity rbf", "method 'linear'", "dot-product score only"}},
      {att + " --method lsh --alibi", {"--alibi", "method 'lsh'"}},
      {att + " --method flash --similarity euclid", {"--similarity euclid", "dot|rbf|cosine|hyperbolic"}},
      {att + " --method flash --similarity rbf --tau 0", {"--tau 0", "finite and > 0"}},
      {att + " --method flash --similarity cosine --tau nan", {"--tau nan"}},
      {att + " --method flash --tau 2", {"--tau 2", "--scale"}},
      {att + " --method flash --similarity hyperbolic --curvature -1", {"--curvature -1", "finite and > 0"}},
      {att + " --method flash --similarity rbf --curvature 1",
       {"--curvature 1", "only --similarity hyperbolic"}},
      {att + " --method flash --softcap 0", {"--softcap 0", "finite and > 0"}},
      {att + " --method flash --softcap 30 --alibi", {"--softcap 30", "--alibi", "choose one"}},
      {att + " --method flash --similarity cosine --softcap 30", {"--softcap 30", "cosine"}},
      {att + " --method flash --kv-dtype bf8", {"--kv-dtype bf8", "f32|f64|bf16|f16"}},
      {att + " --method flash --kv-dtype bf16 --dtype float64", {"--kv-dtype bf16", "--dtype float32"}},
      {att + " --method flash --kv-dtype f16 --similarity rbf",
       {"--similarity rbf", "--kv-dtype f16", "dot-product"}},
      {att + " --method topk --topk 0", {"--topk 0"}},
      {att + " --method linear --map cos", {"--map cos", "elu|relu|favor"}},
      {att + " --method linear --map favor --features 0", {"--features 0"}},
      {att + " --method linear --window 3", {"--window", "whole prefixes"}},
      {att + " --method lsh --bits 31", {"--bits 31"}},
      {att + " --method lsh --rounds 0", {"--rounds 0"}},
      {att + " --method flash --topk 4", {"--topk is not an option of method 'flash'"}},
      {att + " --method flash --bound " + q(p("b.npy")), {"--bound", "method 'flash' proves no error bound"}},
      {att + " --method approx --eps 0", {"--eps 0", "(0, 1)"}},
      {att + " --method approx --eps 1", {"--eps 1", "(0, 1)"}},
      {att + " --method approx --budget 0", {"--budget 0"}},
      {att + " --method approx --window 3", {"windows and sinks are not supported"}},
      {att + " --method approx --bound " + q(p("q.npy")),
       {"--bound '" + p("q.npy") + "' is the same file as --q"}},
      {"prune " + square + " --ratio 0.5 --query-window 8 --recent 4 --similarity rbf --out-dims " +
           q(p("d.npy")),
       {"--similarity", "prune ranks key dimensions"}},
      {"prune " + square + " --ratio 0.5 --query-window 8 --recent 4 --kv-dtype bf16 --out-dims " +
           q(p("d.npy")),
       {"--kv-dtype bf16", "prune keeps K"}},
      {"compare " + square + " --repeats 1 --kv-dtype bf16 --dtype float64", {"--kv-dtype bf16", "float32"}},
  });
}

TEST_F(EvalCliBadInput, NoOrUnknownSubcommand) {
  expect_refused({{"", {"subcommand"}}, {"frobnicate", {"frobnicate"}}});
}

}  // namespace
}  // namespace attnkit
