// attnkit-eval's `attention --method ring` (declared in ring.hpp, which
// describes the protocol between rank 0 and the other ranks). The MPI part is
// compiled only with ATTNKIT_EVAL_HAVE_MPI (bench/CMakeLists.txt: when the
// target attnkit::mpi exists).

#include "attnkit-eval/ring.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "attnkit-eval/cli.hpp"
#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/methods.hpp"
#include "attnkit-eval/numbers.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/distributed/sharding.hpp"

#ifdef ATTNKIT_EVAL_HAVE_MPI
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#include "attnkit/distributed/ring_attention.hpp"
#include "attnkit/distributed/scatter.hpp"
#endif

namespace attnkit_eval {

namespace {

const char* const ring_name = "ring";

#ifdef ATTNKIT_EVAL_HAVE_MPI

attnkit::Sharding ring_sharding(const MethodParams& p) {
  const std::string& text = p.text("sharding");
  const auto s = attnkit::parse_sharding(text);
  if (!s) throw UsageError("--sharding " + text + ": expected " + attnkit::sharding_names());
  return *s;
}

/// --threads: the kernel's threads on each rank, "all" (0) or a count.
int ring_threads(const MethodParams& p) {
  if (p.text("threads") == "all") return 0;
  return static_cast<int>(parse_integer("--threads", p.text("threads"), 1, attnkit::flash_max_threads));
}

/// This process's part in a ring run: set up by run_ring_cli.
struct RingSession {
  bool active = false;  ///< MPI initialised for the ring
  int rank = 0, ranks = 1;
  bool started = false;  ///< rank 0 sent the job (the other ranks are in the ring's collectives)
};

RingSession& session() {
  static RingSession s;
  return s;
}

const MPI_Comm ring_comm = MPI_COMM_WORLD;

/// What rank 0 sends the other ranks first: the exit code (the command ends
/// before any collective work) or the job.
enum class Message : std::int64_t { exit = 0, job = 1 };

/// Everything the other ranks need to take part in the ring: the same on
/// every rank, as the library's agreement checks verify again.
struct Job {
  std::int64_t scalar_size = 4;
  attnkit::HeadLayout heads{1, 1};
  attnkit::AttentionOptions options;
  attnkit::Sharding sharding = attnkit::Sharding::zigzag;
  int threads = 0;
};

constexpr int record_size = 16;

/// Rank 0's first broadcast: {exit, code} or {job, ...}.
void send_first(Message kind, std::int64_t code, const Job& j) {
  std::int64_t rec[record_size] = {};
  rec[0] = static_cast<std::int64_t>(kind);
  rec[1] = code;
  if (kind == Message::job) {
    const attnkit::Mask& m = j.options.mask;
    rec[2] = j.scalar_size;
    rec[3] = j.heads.q_heads;
    rec[4] = j.heads.kv_heads;
    rec[5] = static_cast<std::int64_t>(m.kind);
    rec[6] = m.offset ? 1 : 0;
    rec[7] = m.offset.value_or(0);
    rec[8] = m.window ? 1 : 0;
    rec[9] = m.window.value_or(0);
    rec[10] = m.sinks;
    rec[11] = j.options.scale ? 1 : 0;
    const double scale = j.options.scale.value_or(0.0);
    std::memcpy(&rec[12], &scale, sizeof scale);
    rec[13] = static_cast<std::int64_t>(j.sharding);
    rec[14] = j.threads;
  }
  MPI_Bcast(rec, record_size, MPI_INT64_T, 0, ring_comm);
}

/// The other ranks' side of send_first: the exit code, or the job.
Message receive_first(std::int64_t& code, Job& j) {
  std::int64_t rec[record_size] = {};
  MPI_Bcast(rec, record_size, MPI_INT64_T, 0, ring_comm);
  code = rec[1];
  if (static_cast<Message>(rec[0]) != Message::job) return Message::exit;
  j.scalar_size = rec[2];
  j.heads = {rec[3], rec[4]};
  attnkit::Mask m;
  m.kind = static_cast<attnkit::MaskKind>(rec[5]);
  if (rec[6]) m.offset = rec[7];
  if (rec[8]) m.window = rec[9];
  m.sinks = rec[10];
  j.options.mask = m;
  if (rec[11]) {
    double scale = 0;
    std::memcpy(&scale, &rec[12], sizeof scale);
    j.options.scale = scale;
  }
  j.sharding = static_cast<attnkit::Sharding>(rec[13]);
  j.threads = static_cast<int>(rec[14]);
  return Message::job;
}

/// Every rank: scatter Q, K, V from rank 0 (the others pass empty
/// matrices), the ring, the output and lse gathered on rank 0 (empty
/// elsewhere). The library's std::invalid_argument (bad shapes, counts over
/// MPI's int, ranks disagreeing) is thrown on every rank alike and passed
/// on; any other failure here would leave the other ranks waiting, so it
/// ends the job (MPI_Abort) with a message.
template <typename Scalar>
attnkit::AttentionResult<Scalar> ring_everywhere(const Job& j, const ConstRef<Scalar>& q,
                                                 const ConstRef<Scalar>& k, const ConstRef<Scalar>& v) {
  try {
    const attnkit::RowMatrix<Scalar> qs =
        attnkit::scatter_shards(ring_comm, 0, q, j.heads.q_heads, j.sharding);
    const attnkit::RowMatrix<Scalar> ks =
        attnkit::scatter_shards(ring_comm, 0, k, j.heads.kv_heads, j.sharding);
    const attnkit::RowMatrix<Scalar> vs =
        attnkit::scatter_shards(ring_comm, 0, v, j.heads.kv_heads, j.sharding);
    attnkit::RingConfig config;
    config.sharding = j.sharding;
    config.flash.threads = j.threads;
    const attnkit::AttentionResult<Scalar> mine =
        attnkit::ring_attention_heads(ring_comm, qs, ks, vs, j.heads, j.options, config);
    attnkit::RowMatrix<Scalar> out =
        attnkit::gather_shards(ring_comm, 0, mine.output, j.heads.q_heads, j.sharding);
    const attnkit::RowMatrix<Scalar> lse =
        attnkit::gather_shards(ring_comm, 0, mine.lse, j.heads.q_heads, j.sharding);
    return {std::move(out), lse.col(0)};
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attnkit-eval attention: internal error on rank %d of the ring: %s; aborting\n",
                 session().rank, e.what());
    std::fflush(stderr);
    MPI_Abort(ring_comm, 1);
    throw;  // not reached
  }
}

/// The ring method's kernel, on rank 0 inside `attention` (every check
/// passed, the inputs loaded): the job to the other ranks, then the ring.
template <typename Scalar>
attnkit::AttentionResult<Scalar> ring_root(const ConstRef<Scalar>& q, const ConstRef<Scalar>& k,
                                           const ConstRef<Scalar>& v, const attnkit::HeadLayout& heads,
                                           const attnkit::AttentionOptions& o, const MethodParams& p) {
  RingSession& s = session();
  if (!s.active || s.rank != 0 || s.started)
    throw std::logic_error("the ring method runs once, on rank 0 of an attention --method ring command");
  Job j;
  j.scalar_size = static_cast<std::int64_t>(sizeof(Scalar));
  j.heads = heads;
  j.options = o;
  j.sharding = ring_sharding(p);
  j.threads = ring_threads(p);
  send_first(Message::job, 0, j);
  s.started = true;
  return ring_everywhere<Scalar>(j, q, k, v);
}

/// A rank other than 0: waits for rank 0's verdict or job, takes part in the
/// ring, and returns the exit code rank 0 ends with.
int ring_worker() {
  std::int64_t code = 0;
  Job j;
  if (receive_first(code, j) == Message::exit) return static_cast<int>(code);
  try {
    if (j.scalar_size == static_cast<std::int64_t>(sizeof(float))) {
      const attnkit::RowMatrix<float> none;
      ring_everywhere<float>(j, none, none, none);
    } else {
      const attnkit::RowMatrix<double> none;
      ring_everywhere<double>(j, none, none, none);
    }
  } catch (const std::invalid_argument&) {
    // Thrown on every rank alike: rank 0 reports it and sends the exit code.
  }
  std::int64_t final_code = 0;
  MPI_Bcast(&final_code, 1, MPI_INT64_T, 0, ring_comm);
  return static_cast<int>(final_code);
}

/// The lowest rank whose arguments (argv[1..]) differ from rank 0's, or
/// `ranks` when all agree. Collective.
int first_disagreeing_rank(int argc, char** argv, int rank, int ranks) {
  std::string mine;
  for (int i = 1; i < argc; ++i) {
    mine += argv[i];
    mine.push_back('\0');
  }
  std::int64_t length = static_cast<std::int64_t>(mine.size());
  MPI_Bcast(&length, 1, MPI_INT64_T, 0, ring_comm);
  std::string root(static_cast<std::size_t>(length), '\0');
  if (rank == 0) root = mine;
  if (length > 0) MPI_Bcast(root.data(), static_cast<int>(length), MPI_CHAR, 0, ring_comm);
  const int differs = mine == root ? ranks : rank;
  int first = ranks;
  MPI_Allreduce(&differs, &first, 1, MPI_INT, MPI_MIN, ring_comm);
  return first;
}

/// MPI_Finalize on scope exit (every return path of run_ring_cli).
struct MpiFinalizer {
  ~MpiFinalizer() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

#endif  // ATTNKIT_EVAL_HAVE_MPI

}  // namespace

bool ring_requested(int argc, const char* const* argv) {
  if (argc < 2 || std::string_view(argv[1]) != "attention") return false;
  for (int i = 2; i < argc; ++i) {
    const std::string_view a(argv[i]);
    if (a == "--method=ring" ||
        (a == "--method" && i + 1 < argc && std::string_view(argv[i + 1]) == ring_name))
      return true;
  }
  return false;
}

void add_ring_method(Registry& registry) {
  // --threads means what it means for flash (the kernel's threads, here on
  // each rank): the registry wants one help text per option name.
  std::string threads_help = "ring: the kernel's threads on each rank, a count >= 1 or 'all' (default all)";
  for (const Method& m : registry.methods())
    for (const MethodOption& o : m.options)
      if (o.name == "threads") threads_help = o.help;
  Method m(ring_name,
           "exact ring attention over the MPI ranks of mpiexec (attnkit/distributed/ring_attention.hpp); "
           "rank 0 reads the inputs and writes the outputs",
           true);
  m.options = {{"sharding", "zigzag",
                std::string("ring: how the tokens are split over the ranks, ") + attnkit::sharding_names() +
                    " (zigzag balances a causal mask's work)"},
               {"threads", "all", threads_help}};
  m.check = [](const MethodParams& p) {
#ifndef ATTNKIT_EVAL_HAVE_MPI
    (void)p;
    throw UsageError(
        "--method ring: attnkit-eval was built without MPI (rebuild it with MPI, e.g. Debian's "
        "libopenmpi-dev, to run ring attention)");
#else
    ring_sharding(p);
    ring_threads(p);
    if (!session().active)
      throw UsageError(
          "--method ring: MPI is not initialized (run attnkit-eval attention --method ring ...)");
#endif
  };
  m.check_shape = [](const MethodParams&, const ProblemShape& s) {
#ifdef ATTNKIT_EVAL_HAVE_MPI
    const Index P = session().ranks;
    if (s.n_q < P || s.n_k < P)
      throw UsageError("--method ring: n_q = " + std::to_string(s.n_q) + " queries and n_k = " +
                       std::to_string(s.n_k) + " keys cannot be sharded over P = " + std::to_string(P) +
                       " ranks (every rank needs at least one query and one key; use at most " +
                       std::to_string(s.n_q < s.n_k ? s.n_q : s.n_k) + " ranks)");
#else
    (void)s;
#endif
  };
  m.set_kernel([](const auto& q, const auto& k, const auto& v, const RunContext& ctx, const MethodParams& p) {
    using Scalar = typename std::decay_t<decltype(q)>::Scalar;
#ifdef ATTNKIT_EVAL_HAVE_MPI
    return MethodResult<Scalar>(ring_root<Scalar>(q, k, v, ctx.heads, ctx.options, p));
#else
    (void)q, (void)k, (void)v, (void)ctx, (void)p;
    throw std::logic_error("attnkit-eval was built without MPI");
    return MethodResult<Scalar>(attnkit::AttentionResult<Scalar>{});
#endif
  });
  registry.add(std::move(m));
}

int run_ring_cli(int argc, char** argv, const Registry& registry, PeakMemoryProbe* probe, std::ostream& out,
                 std::ostream& err) {
#ifndef ATTNKIT_EVAL_HAVE_MPI
  return run_cli(argc, argv, registry, probe, out, err);
#else
  int provided = 0;
  // The kernel's OpenMP threads never call MPI: FUNNELED suffices.
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    err << "attnkit-eval attention: --method ring: MPI_Init failed\n";
    return 1;
  }
  const MpiFinalizer finalizer;
  RingSession& s = session();
  MPI_Comm_rank(ring_comm, &s.rank);
  MPI_Comm_size(ring_comm, &s.ranks);
  s.active = true;

  int code = 0;
  const int first = first_disagreeing_rank(argc, argv, s.rank, s.ranks);
  if (first < s.ranks) {
    if (s.rank == 0)
      err << "attnkit-eval attention: --method ring: rank " << first << " of " << s.ranks
          << " was started with other arguments than rank 0 (every rank must run the same command line)"
          << std::endl;
    code = 2;
  } else if (s.rank == 0) {
    try {
      code = run_cli(argc, argv, registry, probe, out, err);
    } catch (const std::exception& e) {
      err << "attnkit-eval: internal error: " << e.what() << '\n';
      code = 1;
    }
    out.flush();
    err.flush();
    if (!s.started) {
      send_first(Message::exit, code, Job{});
    } else {
      std::int64_t final_code = code;
      MPI_Bcast(&final_code, 1, MPI_INT64_T, 0, ring_comm);
    }
  } else {
    try {
      code = ring_worker();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "attnkit-eval attention: internal error on rank %d: %s; aborting\n", s.rank,
                   e.what());
      std::fflush(stderr);
      MPI_Abort(ring_comm, 1);
    }
  }
  // Rank 0 has printed its message: no rank ends (and makes mpiexec stop the
  // job) before that.
  MPI_Barrier(ring_comm);
  s.active = false;
  return code;
#endif
}

}  // namespace attnkit_eval
