// End-to-end tests of `attnkit-eval attention --method ring`: the built
// binary is run under mpiexec on P = 1, 2, 3 ranks (oversubscribed; the
// launch command and environment are tests/distributed's,
// cmake/attnkitMPIExec.cmake) on small .npy files written here, and its
// output and lse files are compared with `--method flash` run on the same
// files: same shapes and dtype, with P = 1 the same bytes, otherwise within
// the merge's rounding (the bound below). Bad input must give exit code 2 and
// one attnkit-eval line on stderr, write no file and never hang (every run is
// under timeout(1)). Without mpiexec the MPI runs are skipped with a message;
// a binary built without MPI must refuse --method ring.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/io/npy.hpp"
#include "file_util.hpp"
#include "test_util.hpp"

#ifndef ATTNKIT_TEST_EVAL_HAS_MPI
#define ATTNKIT_TEST_EVAL_HAS_MPI 0
#endif

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using namespace test::flash_bounds;
using test::as_double;
using test::read_file;
using test::ScratchDir;

struct Outcome {
  int code = -1;
  std::string out, err;
};

std::string q(const std::string& s) {
  return "'" + s + "'";
}

/// The lines of `err` attnkit-eval wrote (mpiexec adds its own report of the
/// exit codes, which is not ours to check).
std::vector<std::string> tool_lines(const std::string& err) {
  std::vector<std::string> lines;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("attnkit", 0) == 0) lines.push_back(line);
  return lines;
}

/// The launch command with NPROCS and PROGRAM in place, or "" without MPI.
std::string mpiexec_command() {
#ifdef ATTNKIT_TEST_MPIEXEC_COMMAND
  return ATTNKIT_TEST_MPIEXEC_COMMAND;
#else
  return "";
#endif
}

std::string mpi_environment() {
#ifdef ATTNKIT_TEST_MPI_ENVIRONMENT
  return ATTNKIT_TEST_MPI_ENVIRONMENT;
#else
  return "OMP_NUM_THREADS=1";
#endif
}

std::string replaced(std::string s, const std::string& what, const std::string& with) {
  const std::size_t at = s.find(what);
  if (at != std::string::npos) s.replace(at, what.size(), with);
  return s;
}

/// The reason the MPI runs cannot be made, or "" when they can.
std::string mpi_missing() {
  if (!ATTNKIT_TEST_EVAL_HAS_MPI) return "attnkit-eval was built without MPI (libopenmpi-dev not found)";
  const std::string cmd = mpiexec_command();
  const std::string exe = cmd.substr(0, cmd.find(' '));
  if (exe.empty() || ::access(exe.c_str(), X_OK) != 0) return "mpiexec '" + exe + "' not found";
  return "";
}

#define SKIP_WITHOUT_MPI()                                                                              \
  do {                                                                                                  \
    const std::string why = mpi_missing();                                                              \
    if (!why.empty()) GTEST_SKIP() << why << ": the attnkit-eval ring tests under mpiexec are skipped"; \
  } while (0)

class EvalRing : public ::testing::Test {
 public:  // check_against_flash uses the helpers
  /// Runs `prefix` + attnkit-eval `args`, under timeout(1): a hang is exit code 124.
  Outcome shell(const std::string& command) {
    const std::string cmd = "env " + mpi_environment() + " timeout 120 " + command + " </dev/null >" +
                            q(dir / "stdout.txt") + " 2>" + q(dir / "stderr.txt");
    const int status = std::system(cmd.c_str());
    Outcome r;
    r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = read_file(dir / "stdout.txt");
    r.err = read_file(dir / "stderr.txt");
    return r;
  }
  /// attnkit-eval alone (no mpiexec).
  Outcome run(const std::string& args) { return shell(q(ATTNKIT_EVAL_BINARY) + " " + args); }
  /// attnkit-eval on `ranks` ranks.
  Outcome run_mpi(int ranks, const std::string& args) {
    const std::string cmd = replaced(replaced(mpiexec_command(), "NPROCS", std::to_string(ranks)), "PROGRAM",
                                     q(ATTNKIT_EVAL_BINARY));
    return shell(cmd + " " + args);
  }

  template <typename Scalar>
  std::string save3(const std::string& name, Index heads, const RowMatrix<Scalar>& stacked, bool three_d) {
    NpyArray<Scalar> a{three_d ? std::vector<Index>{heads, stacked.rows() / heads, stacked.cols()}
                               : std::vector<Index>{stacked.rows(), stacked.cols()},
                       std::vector<Scalar>(stacked.data(), stacked.data() + stacked.size())};
    write_npy(dir / name, a);
    return dir / name;
  }

  /// The entries of the scratch directory but the runs' stdout and stderr
  /// (no file may appear on error, not even a temporary).
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir.str())) {
      const std::string name = e.path().filename().string();
      if (name != "stdout.txt" && name != "stderr.txt") names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  ScratchDir dir;  // inputs, outputs, and the runs' stdout.txt and stderr.txt
};

/// One problem: shapes, flags beyond the files.
struct Case {
  HeadLayout heads;
  Index n_q, n_k, d, d_v;
  bool three_d;
  std::string flags;            // --mask ... --scale ... --sharding ...
  Mask mask;                    // what the flags say (for the bound: only its kind matters there)
  double scale;                 // 0: 1/sqrt(d)
  Index pieces;                 // key pieces per shard: 2 zigzag, 1 contiguous
  std::string ring_flags = "";  // flags of the ring only (--sharding)
};

/// The bound of |ring - flash| per row. Both are computed by the same fused
/// kernel: flash over all keys at once, the ring as a chain of at most
/// D = pieces P - 1 exact merges of partials (attnkit/attention/merge.hpp)
/// over the P ranks' key pieces. Each partial is within the kernel's
/// worst-case bound B of its exact value (tests/attention/flash_bounds.hpp;
/// the bound over the whole problem dominates each partial's), its lse within
/// B_lse + 4 u Λ; each merge adds 6 u max|v| to O and u (Λ + 4) to lse, and an
/// operand's lse error e moves O by e max|v| / 2 (docs/distributed.md,
/// "Accuracy"; tests/distributed/mpi_test_util.hpp merged_bound):
///   |O_ring - O_exact| <= B_O + D max|v| (6 u + B_lse + 4 u Λ + (D - 1) u (Λ + 4)),
///   |lse_ring - lse_exact| <= B_lse + D u (Λ + 4),
/// Λ_i = a_i + log n_k. flash is within B of the exact result, so
/// |ring - flash| <= the ring's bound + B.
template <typename Scalar>
Bound ring_vs_flash_bound(const Case& c, const RowMatrix<Scalar>& qm, const RowMatrix<Scalar>& km,
                          const RowMatrix<Scalar>& vm, int P) {
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(as_double(c.d));
  const double u = unit_roundoff<Scalar>(), D = as_double(c.pieces * P - 1);
  const double max_v = static_cast<double>(vm.cwiseAbs().maxCoeff());
  Bound all{Eigen::VectorXd(qm.rows()), Eigen::VectorXd(qm.rows())};
  for (Index h = 0; h < c.heads.q_heads; ++h) {
    const Index g = c.heads.kv_head(h);
    const RowMatrix<Scalar> qh = qm.middleRows(h * c.n_q, c.n_q), kh = km.middleRows(g * c.n_k, c.n_k),
                            vh = vm.middleRows(g * c.n_k, c.n_k);
    const Bound b = error_bound(qh, kh, vh, scale, 128, BoundKind::worst_case);
    const RowMatrix<double> abs_logits =
        scale * qh.template cast<double>().cwiseAbs() * kh.template cast<double>().cwiseAbs().transpose();
    for (Index i = 0; i < c.n_q; ++i) {
      const double lambda = abs_logits.row(i).maxCoeff() + std::log(as_double(c.n_k));
      const double step = u * (lambda + 4), e_leaf = b.lse(i) + 4 * u * lambda;
      const Index row = h * c.n_q + i;
      all.output(row) = 2 * b.output(i) + D * max_v * (6 * u + e_leaf + (D - 1) * step);
      all.lse(row) = 2 * b.lse(i) + D * step;
    }
  }
  return all;
}

template <typename Scalar>
AttentionResult<Scalar> load_result(const std::string& out, const std::string& lse,
                                    std::vector<Index>& shape) {
  const NpyArray<Scalar> o = read_npy<Scalar>(out), l = read_npy<Scalar>(lse);
  shape = o.shape;
  shape.insert(shape.end(), l.shape.begin(), l.shape.end());
  const Index cols = o.shape.back();
  AttentionResult<Scalar> r{RowMatrix<Scalar>(o.size() / cols, cols), Vector<Scalar>(l.size())};
  std::copy(o.data.begin(), o.data.end(), r.output.data());
  std::copy(l.data.begin(), l.data.end(), r.lse.data());
  return r;
}

/// Writes the case's files, runs flash once and the ring on P = 1, 2, 3.
template <typename Scalar>
void check_against_flash(EvalRing& t, const Case& c, std::uint64_t seed) {
  const RowMatrix<Scalar> qm = test::random_matrix<Scalar>(c.heads.q_heads * c.n_q, c.d, seed),
                          km = test::random_matrix<Scalar>(c.heads.kv_heads * c.n_k, c.d, seed + 1),
                          vm = test::random_matrix<Scalar>(c.heads.kv_heads * c.n_k, c.d_v, seed + 2);
  const std::string files = "--q " + q(t.save3("q.npy", c.heads.q_heads, qm, c.three_d)) + " --k " +
                            q(t.save3("k.npy", c.heads.kv_heads, km, c.three_d)) + " --v " +
                            q(t.save3("v.npy", c.heads.kv_heads, vm, c.three_d)) + " --quiet " + c.flags;
  const std::string flash_out = t.dir / "flash.npy", flash_lse = t.dir / "flash_lse.npy";
  const Outcome f =
      t.run("attention --method flash " + files + " --out " + q(flash_out) + " --lse " + q(flash_lse));
  ASSERT_EQ(f.code, 0) << f.err;
  std::vector<Index> flash_shape;
  const AttentionResult<Scalar> flash = load_result<Scalar>(flash_out, flash_lse, flash_shape);
  for (const int P : {1, 2, 3}) {
    SCOPED_TRACE("P = " + std::to_string(P) + ": " + c.flags);
    const std::string out = t.dir / ("ring" + std::to_string(P) + ".npy"),
                      lse = t.dir / ("ring" + std::to_string(P) + "_lse.npy");
    const Outcome r = t.run_mpi(
        P, "attention --method ring " + files + " " + c.ring_flags + " --out " + q(out) + " --lse " + q(lse));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(tool_lines(r.err).size(), 0u) << r.err;  // --quiet
    std::vector<Index> shape;
    const AttentionResult<Scalar> ring = load_result<Scalar>(out, lse, shape);
    EXPECT_EQ(shape, flash_shape);
    if (P == 1) {
      // One rank: one kernel call with flash's arguments, the same bytes.
      EXPECT_EQ(read_file(out), read_file(flash_out));
      EXPECT_EQ(read_file(lse), read_file(flash_lse));
    } else {
      EXPECT_TRUE(within_bound(ring, flash, ring_vs_flash_bound(c, qm, km, vm, P)));
    }
  }
}

TEST_F(EvalRing, TwoDimensionalNoneAndCausalMatchFlash) {
  SKIP_WITHOUT_MPI();
  // n = 13: not divisible by 2 or 3 (nor into 2P zigzag chunks).
  check_against_flash<float>(*this, {{1, 1}, 13, 13, 8, 8, false, "--mask none", Mask::none(), 0, 2}, 1);
  check_against_flash<float>(*this, {{1, 1}, 13, 13, 8, 8, false, "--mask causal", Mask::causal(), 0, 2}, 4);
  check_against_flash<float>(
      *this, {{1, 1}, 13, 13, 8, 8, false, "--mask causal", Mask::causal(), 0, 1, "--sharding contiguous"},
      7);
}

TEST_F(EvalRing, ThreeDimensionalGroupedQueryMatchesFlash) {
  SKIP_WITHOUT_MPI();
  // 4 query heads over 2 key/value heads, d_v != d, in double and in float.
  check_against_flash<double>(*this, {{4, 2}, 11, 11, 6, 5, true, "--mask causal", Mask::causal(), 0, 2}, 10);
  check_against_flash<float>(*this, {{4, 2}, 11, 11, 6, 5, true, "--mask none", Mask::none(), 0, 2}, 13);
}

TEST_F(EvalRing, CrossLengthsOffsetScaleWindowAndSinksMatchFlash) {
  SKIP_WITHOUT_MPI();
  // 7 queries at the end of 12 keys (default offset 5), an explicit scale.
  check_against_flash<float>(
      *this, {{2, 1}, 7, 12, 8, 8, true, "--mask causal --scale 0.3", Mask::causal(), 0.3, 2}, 16);
  check_against_flash<float>(
      *this, {{1, 1}, 7, 12, 8, 8, false, "--mask causal --offset 3", Mask::causal(3), 0, 2}, 19);
  check_against_flash<double>(*this,
                              {{2, 2},
                               14,
                               14,
                               4,
                               4,
                               true,
                               "--mask causal --window 4 --sinks 1",
                               Mask::causal().with_window(4).with_sinks(1),
                               0,
                               2},
                              22);
}

TEST_F(EvalRing, BuiltInWorkloadMatchesFlash) {
  SKIP_WITHOUT_MPI();
  const std::string args = " --n 29 --d 8 --heads 2 --kv-heads 1 --mask causal --quiet --out ";
  const Outcome f = run("attention --method flash" + args + q(dir / "f.npy"));
  ASSERT_EQ(f.code, 0) << f.err;
  const Outcome r = run_mpi(1, "attention --method ring" + args + q(dir / "r.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(dir / "r.npy"), read_file(dir / "f.npy"));
  const Outcome r2 = run_mpi(2, "attention --method ring" + args + q(dir / "r2.npy"));
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_EQ(read_npy<float>(dir / "r2.npy").shape, (std::vector<Index>{2, 29, 8}));
}

TEST_F(EvalRing, WithoutMpiexecIsOneRank) {
  SKIP_WITHOUT_MPI();
  // Started alone (MPI's singleton): P = 1, flash's bytes.
  const std::string args = " --n 17 --d 8 --heads 1 --mask causal --quiet --out ";
  ASSERT_EQ(run("attention --method flash" + args + q(dir / "f.npy")).code, 0);
  const Outcome r = run("attention --method ring" + args + q(dir / "r.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(dir / "r.npy"), read_file(dir / "f.npy"));
}

TEST_F(EvalRing, BadInputIsExitTwoOneLineNoFileNoHang) {
  SKIP_WITHOUT_MPI();
  const RowMatrix<float> qm = test::random_matrix<float>(2, 4, 1), km = test::random_matrix<float>(2, 4, 2),
                         k_wide = test::random_matrix<float>(5, 6, 3),
                         vm = test::random_matrix<float>(2, 4, 4);
  const std::string qf = q(save3("q.npy", 1, qm, false)), kf = q(save3("k.npy", 1, km, false)),
                    vf = q(save3("v.npy", 1, vm, false)), wide = q(save3("wide.npy", 1, k_wide, false));
  const std::string inputs = "--q " + qf + " --k " + kf + " --v " + vf;
  const std::string outs = " --out " + q(dir / "out.npy") + " --lse " + q(dir / "lse.npy");
  const std::vector<std::string> before = listing();
  struct Bad {
    int ranks;
    std::string args, needle;
  };
  const std::vector<Bad> bad = {
      {3, inputs + outs, "cannot be sharded over P = 3 ranks"},
      {2, "--q " + qf + " --k " + wide + " --v " + vf + outs, "--k"},
      {2, inputs + outs + " --sharding diagonal", "--sharding diagonal"},
      {3, inputs + outs + " --mask sideways", "--mask sideways"},
      {2, "--q " + q(dir / "missing.npy") + " --k " + kf + " --v " + vf + outs, "missing.npy"},
      {2, inputs + " --out " + q(dir / "out.npy") + " --lse " + qf, "--lse"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(std::to_string(b.ranks) + " ranks: " + b.args);
    const Outcome r = run_mpi(b.ranks, "attention --method ring " + b.args);
    EXPECT_EQ(r.code, 2) << r.err;  // 124: a hang
    const std::vector<std::string> lines = tool_lines(r.err);
    ASSERT_EQ(lines.size(), 1u) << r.err;
    EXPECT_EQ(lines[0].rfind("attnkit-eval attention: ", 0), 0u) << lines[0];
    EXPECT_NE(lines[0].find(b.needle), std::string::npos) << lines[0];
    EXPECT_EQ(lines[0].find("internal error"), std::string::npos) << lines[0];
    EXPECT_EQ(listing(), before);
  }
  // Ranks started with different arguments (an MPMD launch): refused before
  // any collective work.
  const std::string args = "attention --method ring " + inputs + outs;
  const Outcome r = run_mpi(1, args + " : -n 1 " + q(ATTNKIT_EVAL_BINARY) + " " + args + " --mask causal");
  EXPECT_EQ(r.code, 2) << r.err;
  const std::vector<std::string> lines = tool_lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("rank 1 of 2 was started with other arguments"), std::string::npos) << lines[0];
  EXPECT_EQ(listing(), before);
}

TEST_F(EvalRing, BuiltWithoutMpiRefusesRing) {
  if (ATTNKIT_TEST_EVAL_HAS_MPI) GTEST_SKIP() << "attnkit-eval was built with MPI";
  const Outcome r = run("attention --method ring --n 8 --d 4 --heads 1 --out " + q(dir / "out.npy"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("attnkit-eval was built without MPI"), std::string::npos) << r.err;
  EXPECT_EQ(tool_lines(r.err).size(), 1u) << r.err;
  EXPECT_TRUE(listing().empty());
}

}  // namespace
}  // namespace attnkit
