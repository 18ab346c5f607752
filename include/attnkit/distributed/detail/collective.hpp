#pragma once

/// \file attnkit/distributed/detail/collective.hpp
/// MPI plumbing of attnkit/distributed/: the datatype of a Scalar, a
/// duplicated communicator, and the collective agreement check every
/// distributed entry point runs before its first message.
///
/// The check makes bad input an error on EVERY rank instead of a hang: each
/// rank validates what it can see alone (catching the std::invalid_argument
/// of its local checks), then the ranks exchange a fixed record — the values
/// they must agree on (shapes, head counts, options) and their per-rank
/// values (shard rows) — in two MPI_Allgather calls. Every rank then holds
/// the same data and runs the same validation on it, so every rank throws the
/// same std::invalid_argument (or none does). A local failure is sent to all
/// ranks by the lowest failing rank (MPI_Bcast of its message).

#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit::detail {

/// The MPI datatype of float or double.
template <typename Scalar>
MPI_Datatype mpi_datatype() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "attnkit's distributed functions move float or double");
  return std::is_same_v<Scalar, float> ? MPI_FLOAT : MPI_DOUBLE;
}

/// Throws std::invalid_argument naming `where` unless MPI is initialised (and
/// not finalised) and `comm` is a communicator. Local: call it before any
/// collective.
inline void require_mpi(const char* where, MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) fail(where, ": MPI is not initialized (call MPI_Init first)");
  if (comm == MPI_COMM_NULL) fail(where, ": the communicator is MPI_COMM_NULL");
}

/// A duplicate of a communicator, freed on scope exit: point-to-point
/// messages of a call cannot match the caller's own messages.
class CommDup {
 public:
  explicit CommDup(MPI_Comm comm) { MPI_Comm_dup(comm, &comm_); }
  CommDup(const CommDup&) = delete;
  CommDup& operator=(const CommDup&) = delete;
  ~CommDup() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

inline int comm_rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

inline int comm_size(MPI_Comm comm) {
  int p = 0;
  MPI_Comm_size(comm, &p);
  return p;
}

/// A count for an MPI call, or std::invalid_argument when it exceeds int.
inline int mpi_count(const char* where, const char* what, Index count) {
  if (count < 0 || count > std::numeric_limits<int>::max())
    fail(where, ": ", what, " = ", count, " exceeds the largest MPI count (", std::numeric_limits<int>::max(),
         "); use more ranks or smaller shards");
  return static_cast<int>(count);
}

/// The collective agreement check (see the file comment). Usage, on every
/// rank of `comm`, in the same order:
///
///   CollectiveCheck check(comm, "ring_attention");
///   check.agree("d (columns of Q)", q.cols());          // same on every rank
///   const int rows = check.local(q.rows());             // gathered per rank
///   check.local_checks([&] { ...throw std::invalid_argument... });
///   check.run();   // collective; throws the same error on every rank
///   check.gathered(rows, r)                             // rank r's value
///   check.fail("...")                                   // after run(): a
///       // deterministic failure on gathered data, thrown on every rank
class CollectiveCheck {
 public:
  CollectiveCheck(MPI_Comm comm, const char* where)
      : comm_(comm), where_(where), rank_(comm_rank(comm)), ranks_(comm_size(comm)) {}

  int rank() const { return rank_; }
  int ranks() const { return ranks_; }
  const char* where() const { return where_; }

  /// An integer every rank must give identically.
  void agree(const char* what, std::int64_t value) { agreed_.push_back({what, Kind::integer, value}); }
  /// An optional integer: unset on every rank, or set to the same value.
  void agree(const char* what, const std::optional<std::int64_t>& value) {
    agreed_.push_back({what, Kind::optional, value ? 1 : 0});
    agreed_.push_back({what, Kind::optional_value, value.value_or(0)});
  }
  /// A double every rank must give bit for bit.
  void agree_double(const char* what, double value) {
    std::int64_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    agreed_.push_back({what, Kind::floating, bits});
  }

  /// A per-rank value, gathered by run(); returns its slot for gathered().
  int local(std::int64_t value) {
    locals_.push_back(value);
    return static_cast<int>(locals_.size() - 1);
  }

  /// Runs f, recording a std::invalid_argument it throws (the first one) as
  /// this rank's local failure, and a std::bad_alloc as a failure to allocate.
  template <typename F>
  void local_checks(F&& f) {
    if (!local_error_.empty()) return;
    try {
      f();
    } catch (const std::invalid_argument& e) {
      local_error_ = e.what();
    } catch (const std::bad_alloc&) {
      local_error_ = concat(where_, ": out of memory");
    }
  }

  /// The collective exchange. Throws std::invalid_argument on every rank
  /// when a rank failed locally (the lowest such rank's message, with its
  /// rank) or the ranks disagree on an agreed value (the first such value,
  /// with two ranks' values).
  void run() {
    // 1. A fixed header: the call's identity, the record's length, the
    //    local error's length. Ranks in different calls are told so instead
    //    of exchanging records of different lengths.
    const std::int64_t header[3] = {static_cast<std::int64_t>(std::hash<std::string>{}(where_)),
                                    static_cast<std::int64_t>(2 * agreed_.size() + locals_.size()),
                                    static_cast<std::int64_t>(local_error_.size())};
    std::vector<std::int64_t> headers(3 * static_cast<std::size_t>(ranks_));
    MPI_Allgather(header, 3, MPI_INT64_T, headers.data(), 3, MPI_INT64_T, comm_);
    const auto at = [&](int r, int field) {  // rank r's header field
      return headers[3 * static_cast<std::size_t>(r) + static_cast<std::size_t>(field)];
    };
    for (int r = 1; r < ranks_; ++r)
      if (at(r, 0) != headers[0] || at(r, 1) != headers[1])
        fail(where_, ": rank ", r, " is in a different collective call than rank 0 (every rank must call ",
             where_, " with the same arguments)");
    for (int r = 0; r < ranks_; ++r) {
      const std::int64_t length = at(r, 2);
      if (length == 0) continue;
      std::string message(static_cast<std::size_t>(length), '\0');
      if (r == rank_) message = local_error_;
      MPI_Bcast(message.data(), static_cast<int>(length), MPI_CHAR, r, comm_);
      fail(message, ranks_ > 1 ? concat(" (on rank ", r, " of ", ranks_, ")") : std::string());
    }
    // 2. The records: agreed values with their kinds, then local values.
    const std::size_t width = 2 * agreed_.size() + locals_.size();
    std::vector<std::int64_t> mine;
    mine.reserve(width);
    for (const Agreed& a : agreed_) {
      mine.push_back(static_cast<std::int64_t>(a.kind));
      mine.push_back(a.value);
    }
    mine.insert(mine.end(), locals_.begin(), locals_.end());
    records_.assign(width * static_cast<std::size_t>(ranks_), 0);
    if (width > 0)
      MPI_Allgather(mine.data(), static_cast<int>(width), MPI_INT64_T, records_.data(),
                    static_cast<int>(width), MPI_INT64_T, comm_);
    width_ = width;
    for (std::size_t i = 0; i < agreed_.size(); ++i) {
      const Agreed& a = agreed_[i];
      if (a.kind == Kind::optional_value) continue;  // compared with its flag
      for (int r = 1; r < ranks_; ++r) {
        const bool same = a.kind == Kind::optional ? record(r, 2 * i + 1) == record(0, 2 * i + 1) &&
                                                         (record(0, 2 * i + 1) == 0 ||
                                                          record(r, 2 * i + 3) == record(0, 2 * i + 3))
                                                   : record(r, 2 * i + 1) == record(0, 2 * i + 1);
        if (!same)
          fail(where_, ": ranks disagree on ", a.what, ": rank 0 has ", describe(0, i), ", rank ", r, " has ",
               describe(r, i));
      }
    }
  }

  /// Rank r's value in local slot `slot` (after run()).
  std::int64_t gathered(int slot, int r) const {
    return record(r, 2 * agreed_.size() + static_cast<std::size_t>(slot));
  }

  /// Every rank's value in local slot `slot`, as "[a, b, c]".
  std::string gathered_list(int slot) const {
    std::ostringstream os;
    os << '[';
    for (int r = 0; r < ranks_; ++r)
      os << (r ? ", " : "") << gathered(slot, r);
    os << ']';
    return os.str();
  }

 private:
  enum class Kind : std::int64_t { integer, optional, optional_value, floating };
  struct Agreed {
    const char* what;
    Kind kind;
    std::int64_t value;
  };

  std::int64_t record(int r, std::size_t i) const {
    return records_[static_cast<std::size_t>(r) * width_ + i];
  }

  std::string describe(int r, std::size_t i) const {
    const Agreed& a = agreed_[i];
    const std::int64_t v = record(r, 2 * i + 1);
    if (a.kind == Kind::optional) return v ? concat(record(r, 2 * i + 3)) : std::string("unset");
    if (a.kind == Kind::floating) {
      double x = 0;
      std::memcpy(&x, &v, sizeof x);
      return concat(x);
    }
    return concat(v);
  }

  MPI_Comm comm_;
  const char* where_;
  int rank_, ranks_;
  std::vector<Agreed> agreed_;
  std::vector<std::int64_t> locals_;
  std::string local_error_;
  std::vector<std::int64_t> records_;
  std::size_t width_ = 0;
};

/// Runs `f`, the part of a distributed call after its agreement check, where
/// the ranks exchange messages. Nothing in it throws for bad input (the check
/// has refused that on every rank); should it throw anyway (a bug, or memory
/// running out inside the kernel), the other ranks would wait for this one
/// forever, so the job is ended instead: the message on stderr, then
/// MPI_Abort.
template <typename F>
void abort_on_exception(MPI_Comm comm, const char* where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attnkit: %s: unexpected error on rank %d after the agreement check: %s; aborting\n",
                 where, comm_rank(comm), e.what());
    std::fflush(stderr);
    MPI_Abort(comm, 1);
  }
}

/// After a CollectiveCheck, a second, one-integer agreement: whether every
/// rank could allocate its buffers (run `f`, which allocates). Throws the
/// same std::invalid_argument on every rank if one could not.
template <typename F>
void collective_allocation(MPI_Comm comm, const char* where, F&& f) {
  int failed = 0;
  try {
    f();
  } catch (const std::bad_alloc&) {
    failed = comm_rank(comm) + 1;
  }
  int highest = 0;  // the highest failing rank + 1, 0 when none failed
  MPI_Allreduce(&failed, &highest, 1, MPI_INT, MPI_MAX, comm);
  if (highest > 0) fail(where, ": rank ", highest - 1, " could not allocate its buffers (out of memory)");
}

}  // namespace attnkit::detail
