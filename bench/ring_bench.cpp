// Ring attention's speed (attnkit/distributed/ring_attention.hpp) under
// mpirun: the single-process fused kernel against the ring on all ranks, for
// both shardings, with the time spent waiting in MPI, the causal work
// imbalance, the bytes each rank moves, and the compute/communication model
// (measured and predicted side by side) that says how the ring scales on a
// real cluster.
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/release/bench/ring_bench                 # n = 65536, d = 128,
//   causal OMP_NUM_THREADS=1 mpirun -np 2 build/release/bench/ring_bench --n 16384 --reps 1   # a quick look
//   options: --n N --d D --heads Q[:KV] --mask causal|none --reps R --threads T (per rank, 0 = OpenMP's
//            default) --sharding both|contiguous|zigzag --no-single --bandwidth GB/s (the model's link)
//
// A plain timing binary, not Google Benchmark: a ring call is a collective,
// and Google Benchmark chooses each process's iteration count from its own
// clock, so the ranks could run different numbers of collectives and hang;
// each rank would also print its own report. Here every rank runs the same
// fixed repetitions, a repetition's time is the slowest rank's (MPI_Barrier,
// MPI_Wtime, MPI_MAX), the medians are reported by rank 0.
//
// The single-process baseline runs on rank 0 while the other ranks wait
// without spinning (MPI_Ibarrier polled every millisecond), so it has a core
// to itself as each ring rank has. Next to the wall-clock times the binary
// prints the process CPU times (the slowest rank's for the ring; a rank
// waiting in MPI spins, so waiting counts): on a quiet machine with a core per
// rank they equal the wall times, and on a loaded one they still estimate the
// speedup a core per rank would give. The workload is LLM-like (as flash_bench),
// generated on rank 0 and scattered with scatter_shards.
//
// The model (docs/distributed.md): a step of the ring moves one K/V shard,
// kv_heads (n / P) (d + d_v) scalars, while computing at most
// 2 (n / P)^2 (d + d_v) q_heads flops (half for causal steps, and a zigzag
// causal step is always exactly half); with a kernel rate F per rank and a
// link bandwidth B, communication is hidden when
//   ratio = (flops / F) / (bytes / B) = 2 (n / P) f (q_heads / kv_heads) B / (sizeof(scalar) F) > 1,
// f = 1/2 causal, 1 otherwise — d cancels (F itself depends on d).

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/attention/heads.hpp"
#include "attnkit/detail/parallel.hpp"
#include "attnkit/distributed/ring_attention.hpp"
#include "attnkit/distributed/scatter.hpp"
#include "attnkit/workload/llm_like.hpp"

namespace {

using attnkit::AttentionOptions;
using attnkit::AttentionResult;
using attnkit::HeadLayout;
using attnkit::Index;
using attnkit::RingStats;
using attnkit::RowMatrix;
using attnkit::Sharding;
using attnkit::Vector;

struct Options {
  Index n = 65536, d = 128;
  HeadLayout heads{1, 1};
  bool causal = true;
  int reps = 3, threads = 0;
  std::vector<Sharding> shardings{Sharding::contiguous, Sharding::zigzag};
  bool single = true;
  double bandwidth = 25;  // GB/s: a 200 Gb/s link
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(
      stderr,
      "ring_bench: %s\nusage: ring_bench [--n N] [--d D] [--heads Q[:KV]] [--mask causal|none] [--reps R]\n"
      "                  [--threads T] [--sharding both|contiguous|zigzag] [--no-single] [--bandwidth "
      "GB/s]\n",
      why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--n") {
      o.n = std::stoll(value());
    } else if (a == "--d") {
      o.d = std::stoll(value());
    } else if (a == "--heads") {
      const std::string v = value();
      const auto colon = v.find(':');
      o.heads.q_heads = std::stoll(v.substr(0, colon));
      o.heads.kv_heads = colon == std::string::npos ? o.heads.q_heads : std::stoll(v.substr(colon + 1));
    } else if (a == "--mask") {
      const std::string v = value();
      if (v != "causal" && v != "none") usage("--mask takes causal or none");
      o.causal = v == "causal";
    } else if (a == "--reps") {
      o.reps = std::stoi(value());
    } else if (a == "--threads") {
      o.threads = std::stoi(value());
    } else if (a == "--sharding") {
      const std::string v = value();
      if (v == "both") {
        o.shardings = {Sharding::contiguous, Sharding::zigzag};
      } else if (const auto s = attnkit::parse_sharding(v)) {
        o.shardings = {*s};
      } else {
        usage("--sharding takes both, contiguous or zigzag");
      }
    } else if (a == "--no-single") {
      o.single = false;
    } else if (a == "--bandwidth") {
      o.bandwidth = std::stod(value());
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (o.n < 1 || o.d < 1 || o.reps < 1 || o.threads < 0 || o.heads.q_heads < 1 || o.heads.kv_heads < 1 ||
      o.heads.q_heads % o.heads.kv_heads != 0 || !(o.bandwidth > 0))
    usage("bad value");
  return o;
}

/// Attention flops: 2 n^2 (d + d_v) per query head (Q K^T and P V), halved
/// for a causal mask (the convention of bench/bench_util.hpp).
double attention_flops(Index n, Index d, Index d_v, Index q_heads, bool causal) {
  const double full = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(d + d_v) *
                      static_cast<double>(q_heads);
  return causal ? 0.5 * full : full;
}

/// This process's CPU time (all its threads), seconds.
double cpu_seconds() {
  return static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double max_over_ranks(double x) {
  double m = 0;
  MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

/// Waits for every rank without spinning (a sleeping rank leaves its core to
/// the rank that works).
void idle_barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Seconds to pass a buffer of `bytes` once around the ring (every rank
/// sends to the next and receives from the previous at once), median of 5.
double shift_seconds(double bytes) {
  int P = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (P == 1) return 0;
  const auto count = static_cast<std::size_t>(bytes / sizeof(float));
  std::vector<float> a(count, 1.0f), b(count);
  std::vector<double> times;
  for (int t = 0; t < 6; ++t) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    MPI_Request r[2];
    MPI_Irecv(b.data(), static_cast<int>(count), MPI_FLOAT, (rank + P - 1) % P, 1, MPI_COMM_WORLD, &r[0]);
    MPI_Isend(a.data(), static_cast<int>(count), MPI_FLOAT, (rank + 1) % P, 1, MPI_COMM_WORLD, &r[1]);
    MPI_Waitall(2, r, MPI_STATUSES_IGNORE);
    const double dt = max_over_ranks(MPI_Wtime() - t0);
    if (t > 0) times.push_back(dt);  // the first pass also faults the pages in
  }
  return median(times);
}

struct RingRun {
  double seconds = 0;  // median of the slowest rank's time
  RingStats stats;     // this rank's, from the median repetition
  double max_error = 0;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int P = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const Options o = parse(argc, argv);
  const Index n = o.n, d = o.d, d_v = o.d, hq = o.heads.q_heads, hkv = o.heads.kv_heads;
  const AttentionOptions opt{o.causal ? attnkit::Mask::causal() : attnkit::Mask::none(), {}};
  const attnkit::FlashConfig flash{o.threads};
  const int threads = attnkit::detail::resolve_threads(o.threads);

  // Environment.
  char library[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(library, &length);
  if (char* newline = std::strchr(library, '\n')) *newline = '\0';
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  MPI_Get_processor_name(host, &length);
  std::vector<char> hosts(static_cast<std::size_t>(P) * MPI_MAX_PROCESSOR_NAME);
  MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
             MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf(
        "ring_bench: P = %d ranks x %d kernel thread(s), n = %lld, d = d_v = %lld, heads %lld/%lld, %s, "
        "float, %d repetition(s), medians\n",
        P, threads, static_cast<long long>(n), static_cast<long long>(d), static_cast<long long>(hq),
        static_cast<long long>(hkv), o.causal ? "causal" : "no mask", o.reps);
    std::printf("MPI: %s\nhosts:", library);
    for (int r = 0; r < P; ++r)
      std::printf(" %s", &hosts[static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME]);
    const char* omp = std::getenv("OMP_NUM_THREADS");
    std::printf("; OMP_NUM_THREADS=%s; OpenMP %s\n\n", omp ? omp : "(unset)",
                attnkit::detail::openmp_enabled() ? "on" : "off");
    std::fflush(stdout);
  }

  // The workload on rank 0, scattered to every rank per sharding.
  attnkit::Workload<float> w;
  if (rank == 0) {
    w.q.resize(hq * n, d);
    w.k.resize(hkv * n, d);
    w.v.resize(hkv * n, d_v);
    for (Index h = 0; h < hq; ++h) {
      auto one = attnkit::make_llm_like_workload<float>({n, n, d, d_v}, 2026 + static_cast<std::uint64_t>(h));
      w.q.middleRows(h * n, n) = one.q;
      if (h < hkv) {
        w.k.middleRows(h * n, n) = one.k;
        w.v.middleRows(h * n, n) = one.v;
      }
    }
  }
  const double flops = attention_flops(n, d, d_v, hq, o.causal);

  // 1. One process: rank 0 alone.
  double single_seconds = 0, single_cpu = 0;
  AttentionResult<float> single;
  if (o.single) {
    std::vector<double> times, cpu;
    for (int t = 0; t < o.reps; ++t) {
      if (rank == 0) {
        const double t0 = MPI_Wtime(), c0 = cpu_seconds();
        single = attnkit::flash_attention_heads(w.q, w.k, w.v, o.heads, opt, flash);
        times.push_back(MPI_Wtime() - t0);
        cpu.push_back(cpu_seconds() - c0);
      }
      idle_barrier();
    }
    if (rank == 0) {
      single_seconds = median(times);
      single_cpu = median(cpu);
      std::printf("single process (rank 0, %d thread(s)): %.3f s, %.1f GFLOP/s (CPU time %.3f s)\n", threads,
                  single_seconds, flops / single_seconds / 1e9, single_cpu);
      std::fflush(stdout);
    }
  }

  // 2. The ring, per sharding.
  const double scalar = sizeof(float);
  for (const Sharding sharding : o.shardings) {
    const RowMatrix<float> qs = attnkit::scatter_shards(MPI_COMM_WORLD, 0, w.q, hq, sharding);
    const RowMatrix<float> ks = attnkit::scatter_shards(MPI_COMM_WORLD, 0, w.k, hkv, sharding);
    const RowMatrix<float> vs = attnkit::scatter_shards(MPI_COMM_WORLD, 0, w.v, hkv, sharding);
    RowMatrix<float> out(qs.rows(), d_v);
    Vector<float> lse(qs.rows());
    std::vector<double> times, cpu;
    std::vector<RingStats> stats;
    for (int t = 0; t < o.reps; ++t) {
      RingStats st;
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime(), c0 = cpu_seconds();
      attnkit::ring_attention_heads_into(MPI_COMM_WORLD, qs, ks, vs, o.heads, out, lse, opt,
                                         {sharding, flash}, &st);
      const double c1 = cpu_seconds();
      times.push_back(max_over_ranks(MPI_Wtime() - t0));
      cpu.push_back(max_over_ranks(c1 - c0));
      stats.push_back(st);
    }
    // The repetition with the median time (the same index on every rank).
    std::vector<std::size_t> order(times.size());
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return times[a] < times[b]; });
    const std::size_t mid = order[order.size() / 2];
    const double seconds = times[mid], ring_cpu = cpu[mid];
    const RingStats& st = stats[mid];

    // Correctness against one process (rank 0 gathers the output).
    const RowMatrix<float> gathered = attnkit::gather_shards(MPI_COMM_WORLD, 0, out, hq, sharding);

    // Per-rank figures to rank 0.
    const double mine[6] = {st.compute_seconds, st.wait_seconds,  st.bytes_sent,
                            st.bytes_received,  st.visible_pairs, st.total_seconds};
    std::vector<double> all(6 * static_cast<std::size_t>(P));
    MPI_Gather(mine, 6, MPI_DOUBLE, all.data(), 6, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    const double shard_bytes = static_cast<double>(hkv) * static_cast<double>((n + P - 1) / P) *
                               static_cast<double>(d + d_v) * scalar;
    const double shift = shift_seconds(shard_bytes);
    if (rank != 0) continue;

    double max_compute = 0, sum_compute = 0, max_pairs = 0, sum_pairs = 0, max_wait_share = 0;
    for (int r = 0; r < P; ++r) {
      const double* a = &all[6 * static_cast<std::size_t>(r)];
      max_compute = std::max(max_compute, a[0]);
      sum_compute += a[0];
      max_pairs = std::max(max_pairs, a[4]);
      sum_pairs += a[4];
      max_wait_share = std::max(max_wait_share, a[1] / a[5]);
    }
    std::printf("\nring, %s sharding: %.3f s, %.1f GFLOP/s", to_string(sharding), seconds,
                flops / seconds / 1e9);
    if (o.single) std::printf(", %.2fx one process", single_seconds / seconds);
    std::printf(" (slowest rank's CPU time %.3f s", ring_cpu);
    if (o.single) std::printf(": %.2fx by CPU time", single_cpu / ring_cpu);
    std::printf(")");
    if (o.single) {
      const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
      const double error = static_cast<double>((gathered - single.output).cwiseAbs().maxCoeff()) / max_v;
      std::printf("; max |ring - one process| = %.2g max|v|", error);
    }
    std::printf(
        "\n  causal work imbalance (max/mean over ranks): pairs %.3f, compute time %.3f; "
        "largest share of a rank's time waiting in MPI: %.2f %%\n",
        max_pairs / (sum_pairs / P), max_compute / (sum_compute / P), 100 * max_wait_share);
    std::printf("  %-5s %12s %10s %9s %14s %14s %12s\n", "rank", "compute (s)", "wait (s)", "wait %",
                "bytes sent", "bytes recv", "pairs");
    for (int r = 0; r < P; ++r) {
      const double* a = &all[6 * static_cast<std::size_t>(r)];
      std::printf("  %-5d %12.3f %10.4f %9.2f %14.0f %14.0f %12.4g\n", r, a[0], a[1], 100 * a[1] / a[5], a[2],
                  a[3], a[4]);
    }
    // The model, with this run's kernel rate and shift bandwidth.
    const double rate = sum_pairs * 2 * static_cast<double>(d + d_v) / sum_compute;  // flop/s per rank
    if (P > 1) {
      const double bandwidth = shard_bytes / shift;
      const double f = o.causal ? 0.5 : 1.0;
      const double c = static_cast<double>(n) / P;
      const double step_flops = 2 * c * c * static_cast<double>(d + d_v) * static_cast<double>(hq) * f;
      const double predicted = (step_flops / rate) / (shard_bytes / bandwidth);
      const double measured = (max_compute / P) / shift;
      std::printf(
          "  per step: %.4g bytes moved (a K/V shard), %.4g flops (%s); measured: kernel %.1f GFLOP/s per "
          "rank, "
          "ring shift of a shard %.4f s = %.2f GB/s\n",
          shard_bytes, step_flops, o.causal ? "half a shard pair, causal" : "a shard pair", rate / 1e9, shift,
          bandwidth / 1e9);
      std::printf(
          "  compute/communication per step: model %.1f, measured %.1f (the slowest rank's compute per step "
          "/ "
          "a shard's shift); communication is hidden when > 1\n",
          predicted, measured);
    }
    if (sharding == o.shardings.back()) {
      // The model's table for a user's cluster: ratio = 2 (n / P) f (q_heads / kv_heads) B / (4 F).
      const double f = o.causal ? 0.5 : 1.0, gqa = static_cast<double>(hq) / static_cast<double>(hkv);
      std::printf(
          "\nmodel: compute/communication ratio per ring step = 2 (n/P) f (q_heads/kv_heads) B / (4 bytes "
          "F), "
          "f = %.1f; d cancels (F depends on it)\n",
          f);
      std::printf("  with F = %.1f GFLOP/s per rank (measured here) and a link of B GB/s:\n", rate / 1e9);
      std::printf("  %10s", "n/P");
      for (const double b : {1.0, 12.5, o.bandwidth, 100.0}) {
        char label[32];
        std::snprintf(label, sizeof label, "%g GB/s", b);
        std::printf(" %12s", label);
      }
      std::printf("\n");
      for (const double c : {1024.0, 4096.0, 16384.0, 65536.0, 262144.0}) {
        std::printf("  %10.0f", c);
        for (const double b : {1.0, 12.5, o.bandwidth, 100.0})
          std::printf(" %12.1f", 2 * c * f * gqa * b * 1e9 / (scalar * rate));
        std::printf("\n");
      }
      std::printf(
          "  bytes moved per rank per call: (P - 1) shards = (P - 1) kv_heads (n/P) (d + d_v) 4 = %.4g "
          "here\n",
          (P - 1) * shard_bytes);
    }
    std::fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}
