#pragma once

/// \file attnkit/distributed/ring_attention.hpp
/// Exact sequence-parallel attention over MPI: ring attention for prefill.
///
/// The n_q queries and n_k keys/values of one attention are sharded over the
/// P ranks of a communicator (attnkit/distributed/sharding.hpp: contiguous,
/// or zigzag for causal balance); every rank passes its own shard. The K/V
/// shards travel around the ring, rank r sending to r + 1 and receiving from
/// r - 1, with non-blocking MPI_Isend / MPI_Irecv into a second buffer: the
/// next shard is in flight while the current one is computed. At step s rank
/// r holds the shard of rank r - s and attends its queries to it through
/// flash_attention_heads_partial_into, one call per (query piece, key piece)
/// — a zigzag shard is two pieces — with the piece's first position and the
/// whole sequence's length, so the mask is applied in positions of the whole
/// sequence; the partials are merged exactly by their lse
/// (attnkit/attention/merge.hpp). A (query piece, key piece) pair no query
/// sees (a causal mask's keys after every query, a window's keys before it)
/// is skipped: no kernel call, but the shard still travels on.
///
/// Result: rank r's rows of O and lse, in its shard layout (stacked heads,
/// position order), equal to the single-process flash_attention_heads over
/// the whole sequence within the kernel's rounding plus that of at most
/// 2P - 1 exact merges (docs/distributed.md, "Accuracy"); with P = 1 bit
/// for bit the single-process result.
///
/// Cost per rank: compute O(q_heads n_q n_k (d + d_v) / P) (half of it with
/// a causal mask, balanced over the ranks by the zigzag sharding); P - 1
/// messages of one K/V shard, kv_heads (n_k / P) (d + d_v) scalars each;
/// memory two shard buffers plus the rank's query pieces and accumulators.
///
/// Errors: before its first ring message every call runs a collective
/// agreement check (attnkit/distributed/detail/collective.hpp): shards that
/// do not fit together, ranks that disagree on shapes, heads, the sharding
/// or the options, more ranks than tokens, or a bad argument on any one rank
/// throw the same std::invalid_argument on every rank — no rank is left
/// waiting. Every rank must make the call.
///
/// Threads: call from the thread that initialised MPI; the kernel's OpenMP
/// threads (FlashConfig::threads per rank) never call MPI, so
/// MPI_THREAD_FUNNELED suffices. Each call duplicates the communicator for
/// its messages (collective), so it cannot match the caller's own messages.

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <tuple>
#include <vector>

#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/distributed/detail/collective.hpp"
#include "attnkit/distributed/sharding.hpp"

namespace attnkit {

/// How ring attention lays out and computes the work.
struct RingConfig {
  /// How the queries and the keys/values are sharded (the same for both).
  Sharding sharding = Sharding::zigzag;
  /// The kernel's configuration on each rank (threads per rank).
  FlashConfig flash{};
};

/// What one ring attention call did on this rank (optional output).
struct RingStats {
  /// The whole call, the agreement check (with the communicator's
  /// duplication), the kernel calls and merges, and the time blocked in
  /// MPI_Waitall for the next shard; seconds of MPI_Wtime.
  double total_seconds = 0, check_seconds = 0, compute_seconds = 0, wait_seconds = 0;
  /// Ring steps (P), kernel calls made, (query piece, key piece) pairs skipped.
  Index steps = 0, partial_calls = 0, skipped_calls = 0;
  /// (query, key) pairs this rank attended, over all query heads: its work.
  double visible_pairs = 0;
  /// Payload bytes this rank sent and received.
  double bytes_sent = 0, bytes_received = 0;
};

namespace detail {

/// |[a, b) ∩ r|.
inline Index overlap(Index a, Index b, TokenRange r) {
  const Index lo = std::max(a, r.begin), hi = std::min(b, r.end);
  return hi > lo ? hi - lo : 0;
}

/// The (query, key) pairs of query rows `qr` and keys `kr` (global rows and
/// positions) the mask lets through, per head. O(|qr|).
inline double visible_pairs(const MaskLayout& mask, TokenRange qr, TokenRange kr) {
  double pairs = 0;
  for (Index i = qr.begin; i < qr.end; ++i)
    pairs += static_cast<double>(overlap(0, mask.sink_end(i), kr) +
                                 overlap(mask.key_begin(i), mask.key_end(i), kr));
  return pairs;
}

/// The ring: see the file comment. q (q_heads n_q_r x d), k (kv_heads n_k_r
/// x d), v (kv_heads n_k_r x d_v): this rank's shards; out, lse: its rows.
template <typename Scalar, typename DQ, typename DK, typename DV>
void ring_call(const char* where, MPI_Comm user_comm, const Eigen::MatrixBase<DQ>& q,
               const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v, const HeadLayout& heads,
               Eigen::Ref<RowMatrix<Scalar>> out, Eigen::Ref<Vector<Scalar>> lse,
               const AttentionOptions& options, const RingConfig& config, RingStats* stats) {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "ring attention computes in float or double");
  static_assert(std::is_same_v<typename DQ::Scalar, Scalar> && std::is_same_v<typename DK::Scalar, Scalar> &&
                    std::is_same_v<typename DV::Scalar, Scalar>,
                "ring attention takes Q, K and V of one scalar type");
  RingStats st;
  const double t_start = MPI_Wtime();
  require_mpi(where, user_comm);
  const CommDup dup(user_comm);
  const MPI_Comm comm = dup.get();

  // --- The agreement check: nothing has been sent yet. ---
  CollectiveCheck check(comm, where);
  const int P = check.ranks(), rank = check.rank();
  check.agree("the scalar size", static_cast<std::int64_t>(sizeof(Scalar)));
  check.agree("q_heads", heads.q_heads);
  check.agree("kv_heads", heads.kv_heads);
  check.agree("the sharding (0 = contiguous, 1 = zigzag)", static_cast<std::int64_t>(config.sharding));
  check.agree("d (columns of Q)", q.cols());
  check.agree("d_v (columns of V)", v.cols());
  check.agree("the mask kind (0 = none, 1 = causal, 2 = strict)",
              static_cast<std::int64_t>(options.mask.kind));
  check.agree("the mask offset", options.mask.offset ? std::optional<std::int64_t>(*options.mask.offset)
                                                     : std::optional<std::int64_t>());
  check.agree("the mask window", options.mask.window ? std::optional<std::int64_t>(*options.mask.window)
                                                     : std::optional<std::int64_t>());
  check.agree("the mask sinks", options.mask.sinks);
  check.agree("whether a scale is set", options.scale ? 1 : 0);
  check.agree_double("the scale", options.scale.value_or(0.0));
  const int q_rows = check.local(q.rows()), k_rows = check.local(k.rows());
  check.local_checks([&] {
    if (heads.q_heads < 1 || heads.kv_heads < 1 || heads.q_heads % heads.kv_heads != 0)
      fail(where, ": q_heads = ", heads.q_heads, " and kv_heads = ", heads.kv_heads,
           " must be >= 1 with q_heads a multiple of kv_heads");
    if (q.rows() % heads.q_heads != 0)
      fail(where, ": the Q shard ", shape(q), " does not split into q_heads = ", heads.q_heads,
           " heads of equal rows");
    if (k.rows() % heads.kv_heads != 0 || v.rows() != k.rows())
      fail(where, ": the K shard ", shape(k), " and the V shard ", shape(v),
           " must both split into kv_heads = ", heads.kv_heads, " heads of equal rows");
    if (k.cols() != q.cols())
      fail(where, ": the Q shard ", shape(q), " and the K shard ", shape(k),
           " must have the same width d (columns)");
    if (out.rows() != q.rows() || out.cols() != v.cols())
      fail(where, ": out (", out.rows(), " x ", out.cols(), ") must be (", q.rows(), " x ", v.cols(), ")");
    if (lse.size() != q.rows()) fail(where, ": lse has ", lse.size(), " entries, needs ", q.rows());
    const FlashConfig& f = config.flash;
    if (f.threads < 0 || f.block_q < 0 || f.block_k < 0 || f.threads > flash_max_threads)
      fail(where, ": config threads = ", f.threads, ", block_q = ", f.block_q, ", block_k = ", f.block_k,
           " must be >= 0 (0 = automatic), threads <= ", flash_max_threads);
  });
  check.run();

  // Every rank holds the same records now: the checks below fail on every
  // rank alike or on none.
  Index total_q = 0, total_k = 0;
  for (int r = 0; r < P; ++r) {
    total_q += check.gathered(q_rows, r);
    total_k += check.gathered(k_rows, r);
  }
  const Index n_q = total_q / heads.q_heads, n_k = total_k / heads.kv_heads;
  if (n_q < P || n_k < P)
    fail(where, ": n_q = ", n_q, " queries and n_k = ", n_k, " keys cannot be sharded over P = ", P,
         " ranks (every rank needs at least one query and one key; use fewer ranks)");
  const Sharding sharding = config.sharding;
  for (const auto& [slot, n, h, name] :
       {std::tuple{q_rows, n_q, heads.q_heads, "Q"}, std::tuple{k_rows, n_k, heads.kv_heads, "K/V"}}) {
    bool fits = true;
    std::ostringstream expected;
    expected << '[';
    for (int r = 0; r < P; ++r) {
      const Index rows = h * shard_size(sharding, n, P, r);
      fits = fits && rows == check.gathered(slot, r);
      expected << (r ? ", " : "") << rows;
    }
    expected << ']';
    if (!fits)
      fail(where, ": the ", name, " shards do not fit together: the ranks hold ", check.gathered_list(slot),
           " rows, but the ", to_string(sharding), " sharding of ", n, " tokens (x ", h, " heads) over ", P,
           " ranks gives ", expected.str());
  }
  MaskLayout layout = resolve_mask(Mask{}, 1, 1);
  try {
    layout = resolve_mask(options.mask, n_q, n_k);
  } catch (const std::invalid_argument& e) {
    fail(where, ": ", e.what(), " (the whole sequence: n_q = ", n_q, ", n_k = ", n_k, ")");
  }
  const Index d = q.cols(), d_v = v.cols();
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));
  if (!(std::isfinite(scale) && scale > 0)) fail(where, ": scale = ", scale, " must be finite and > 0");
  const auto shard_elements = [&](int r) {
    return heads.kv_heads * shard_size(sharding, n_k, P, r) * (d + d_v);
  };
  Index max_elements = 0;
  for (int r = 0; r < P; ++r)
    max_elements = std::max(max_elements, shard_elements(r));
  mpi_count(where, "the K/V shard's scalars", max_elements);

  // --- Buffers: allocated by every rank, failure agreed on. ---
  const std::vector<TokenRange> q_ranges = shard_ranges(sharding, n_q, P, rank);
  const Index n_qr = q.rows() / heads.q_heads, n_kr = k.rows() / heads.kv_heads;
  std::vector<RowMatrix<Scalar>> q_pieces;
  std::vector<AttentionResult<Scalar>> acc;
  std::vector<Scalar> ring[2];
  RowMatrix<Scalar> part_out;
  Vector<Scalar> part_lse;
  Index max_piece = 0;
  for (const TokenRange& r : q_ranges)
    max_piece = std::max(max_piece, r.size());
  collective_allocation(comm, where, [&] {
    for (const TokenRange& r : q_ranges) {
      q_pieces.emplace_back(heads.q_heads * r.size(), d);
      acc.push_back(
          {RowMatrix<Scalar>::Zero(heads.q_heads * r.size(), d_v),
           Vector<Scalar>::Constant(heads.q_heads * r.size(), -std::numeric_limits<Scalar>::infinity())});
    }
    ring[0].resize(static_cast<std::size_t>(max_elements));
    if (P > 1) ring[1].resize(static_cast<std::size_t>(max_elements));
    part_out.resize(heads.q_heads * max_piece, d_v);
    part_lse.resize(heads.q_heads * max_piece);
  });

  // Query pieces, stacked by head; this rank's K/V shard into ring[0] as
  // [K_0 V_0 K_1 V_1], piece p's K and V stacked by head.
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  {
    Index off = 0;
    for (std::size_t p = 0; p < q_ranges.size(); ++p) {
      const Index len = q_ranges[p].size();
      for (Index h = 0; h < heads.q_heads; ++h)
        q_pieces[p].middleRows(h * len, len) = qr.middleRows(h * n_qr + off, len);
      off += len;
    }
  }
  struct KVPiece {
    TokenRange range;
    Eigen::Map<RowMatrix<Scalar>> k, v;
  };
  const auto kv_pieces = [&](Scalar* buffer, int owner) {
    std::vector<KVPiece> pieces;
    Index at = 0;
    for (const TokenRange& r : shard_ranges(sharding, n_k, P, owner)) {
      const Index rows = heads.kv_heads * r.size();
      pieces.push_back({r, Eigen::Map<RowMatrix<Scalar>>(buffer + at, rows, d),
                        Eigen::Map<RowMatrix<Scalar>>(buffer + at + rows * d, rows, d_v)});
      at += rows * (d + d_v);
    }
    return pieces;
  };
  {
    Index off = 0;
    for (KVPiece& piece : kv_pieces(ring[0].data(), rank)) {
      const Index len = piece.range.size();
      for (Index g = 0; g < heads.kv_heads; ++g) {
        piece.k.middleRows(g * len, len) = kr.middleRows(g * n_kr + off, len);
        piece.v.middleRows(g * len, len) = vr.middleRows(g * n_kr + off, len);
      }
      off += len;
    }
  }
  const double t_checked = MPI_Wtime();
  st.check_seconds = t_checked - t_start;

  // --- The ring, and this rank's rows of the result. ---
  abort_on_exception(comm, where, [&] {
    const MPI_Datatype type = mpi_datatype<Scalar>();
    const int right = (rank + 1) % P, left = (rank + P - 1) % P, tag = 0;
    MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    int cur = 0;
    for (int s = 0; s < P; ++s) {
      const int owner = (rank - s + P) % P;
      const bool shifting = s + 1 < P;
      if (shifting) {
        const int next_owner = (rank - s - 1 + 2 * P) % P;
        MPI_Irecv(ring[1 - cur].data(), static_cast<int>(shard_elements(next_owner)), type, left, tag, comm,
                  &requests[0]);
        MPI_Isend(ring[cur].data(), static_cast<int>(shard_elements(owner)), type, right, tag, comm,
                  &requests[1]);
        st.bytes_sent += static_cast<double>(shard_elements(owner)) * sizeof(Scalar);
        st.bytes_received += static_cast<double>(shard_elements(next_owner)) * sizeof(Scalar);
      }
      const double t_compute = MPI_Wtime();
      for (const KVPiece& kp : kv_pieces(ring[cur].data(), owner)) {
        for (std::size_t p = 0; p < q_ranges.size(); ++p) {
          const TokenRange qrange = q_ranges[p];
          const double pairs = visible_pairs(layout, qrange, kp.range);
          if (pairs == 0) {
            ++st.skipped_calls;
            continue;
          }
          const Index rows = heads.q_heads * qrange.size();
          Mask mask = options.mask;
          if (mask.kind != MaskKind::none) mask.offset = layout.offset() + qrange.begin;
          KeySet keys;
          keys.first_position = kp.range.begin;
          keys.sequence_length = n_k;
          auto o = part_out.topRows(rows);
          auto l = part_lse.head(rows);
          flash_attention_heads_partial_into<Scalar>(q_pieces[p], kp.k, kp.v, heads, keys, o, l,
                                                     AttentionOptions{mask, scale}, config.flash);
          merge_rows(acc[p].output.data(), d_v, acc[p].lse.data(), part_out.data(), d_v, part_lse.data(),
                     rows, d_v);
          ++st.partial_calls;
          st.visible_pairs += pairs * static_cast<double>(heads.q_heads);
          if (shifting) {  // let the transfer progress between kernel calls
            int done = 0;
            MPI_Testall(2, requests, &done, MPI_STATUSES_IGNORE);
          }
        }
      }
      const double t_wait = MPI_Wtime();
      st.compute_seconds += t_wait - t_compute;
      if (shifting) {
        MPI_Waitall(2, requests, MPI_STATUSES_IGNORE);
        st.wait_seconds += MPI_Wtime() - t_wait;
      }
      cur = 1 - cur;
    }
    st.steps = P;

    // --- This rank's rows of the result, in its shard layout. ---
    Index off = 0;
    for (std::size_t p = 0; p < q_ranges.size(); ++p) {
      const Index len = q_ranges[p].size();
      for (Index h = 0; h < heads.q_heads; ++h) {
        out.middleRows(h * n_qr + off, len) = acc[p].output.middleRows(h * len, len);
        lse.segment(h * n_qr + off, len) = acc[p].lse.segment(h * len, len);
      }
      off += len;
    }
  });
  st.total_seconds = MPI_Wtime() - t_start;
  if (stats) *stats = st;
}

}  // namespace detail

/// Ring attention over stacked heads (grouped-query when kv_heads <
/// q_heads), into caller-owned outputs: see the file comment. Collective over
/// `comm`.
/// \param q this rank's query shard (q_heads n_q_r x d), \param k and \param v
///        its key/value shards (kv_heads n_k_r x d) and (kv_heads n_k_r x d_v):
///        for each head the rank's tokens of config.sharding
///        (attnkit/distributed/sharding.hpp: extract_shard), in position
///        order. n_q and n_k are the sums over the ranks.
/// \param out (q_heads n_q_r x d_v) and \param lse (q_heads n_q_r): this rank's
///        rows of the result, in the layout of q.
/// \param options the mask (in positions of the whole sequence: query row i of
///        the whole Q is at position offset + i, default n_k - n_q) and scale,
///        the same on every rank.
/// \param stats when not null, what the call did on this rank.
/// \throws std::invalid_argument, on every rank, as the file comment says;
///         nothing is written then.
template <typename DQ, typename DK, typename DV>
void ring_attention_heads_into(MPI_Comm comm, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                               const Eigen::MatrixBase<DV>& v, const HeadLayout& heads,
                               Eigen::Ref<RowMatrix<typename DQ::Scalar>> out,
                               Eigen::Ref<Vector<typename DQ::Scalar>> lse,
                               const AttentionOptions& options = {}, const RingConfig& config = {},
                               RingStats* stats = nullptr) {
  detail::ring_call<typename DQ::Scalar>("ring_attention", comm, q, k, v, heads, out, lse, options, config,
                                         stats);
}

/// As ring_attention_heads_into, returning this rank's rows of the result.
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> ring_attention_heads(
    MPI_Comm comm, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
    const Eigen::MatrixBase<DV>& v, const HeadLayout& heads, const AttentionOptions& options = {},
    const RingConfig& config = {}, RingStats* stats = nullptr) {
  using Scalar = typename DQ::Scalar;
  AttentionResult<Scalar> r{RowMatrix<Scalar>(q.rows(), v.cols()), Vector<Scalar>(q.rows())};
  ring_attention_heads_into(comm, q, k, v, heads, r.output, r.lse, options, config, stats);
  return r;
}

/// Single-head ring attention: q (n_q_r x d), k (n_k_r x d), v (n_k_r x d_v).
///
/// \code
///   // Every rank: its zigzag shard of a causal self-attention over n tokens.
///   const int P = ..., r = ...;
///   RowMatrix<float> q = attnkit::extract_shard(q_all, 1, attnkit::Sharding::zigzag, P, r);  // likewise k,
///   v auto mine = attnkit::ring_attention(MPI_COMM_WORLD, q, k, v, {attnkit::Mask::causal()});
/// \endcode
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> ring_attention(MPI_Comm comm, const Eigen::MatrixBase<DQ>& q,
                                                    const Eigen::MatrixBase<DK>& k,
                                                    const Eigen::MatrixBase<DV>& v,
                                                    const AttentionOptions& options = {},
                                                    const RingConfig& config = {},
                                                    RingStats* stats = nullptr) {
  return ring_attention_heads(comm, q, k, v, HeadLayout{1, 1}, options, config, stats);
}

}  // namespace attnkit
