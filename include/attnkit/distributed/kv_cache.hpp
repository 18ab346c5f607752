#pragma once

/// \file attnkit/distributed/kv_cache.hpp
/// Distributed decode: a key/value cache sharded over the ranks of a
/// communicator, attended with flash-decoding across processes.
///
/// Placement. Every token position belongs to one rank, which alone stores
/// its key and value rows:
///  - the prompt's n_0 positions, when the cache starts from a ring-attention
///    prefill (assign_prefill), as that prefill sharded them (contiguous or
///    zigzag, attnkit/distributed/sharding.hpp), so no row moves;
///  - every later position p in round-robin blocks of `block` tokens: rank
///    ((p - n_0) / block) mod P. Storage and decode work stay balanced to one
///    block per rank as the sequence grows, and a block of consecutive
///    tokens is contiguous in its owner's storage.
/// Each rank keeps its rows in position order in one KVCache per key/value
/// head, with the list of position runs they cover.
///
/// Decode. attend computes, on each rank, the partial (O, lse) of the new
/// queries over its own rows — one flash_attention_partial per key/value
/// head, the rank's rows passed as one K with the visible positions turned
/// into ranges of local rows: as the local rows are in position order, a
/// query's visible set (the sinks [0, s) and the band [b, e) of
/// attnkit/core/mask.hpp) is at most two ranges of them — and merges the P
/// partials with allreduce_attention's custom MPI reduction
/// (attnkit/distributed/reduce.hpp). Every rank receives the same result.
///
/// Collective calls. Every member function that changes the cache or
/// attends (the constructor, append, assign_prefill, attend*) is collective
/// over the communicator: every rank makes the same calls, with the same
/// arguments (append: the same new rows — each rank keeps those it owns).
/// Each runs the agreement check of attnkit/distributed/detail/collective.hpp
/// first, so bad input, or ranks whose caches or arguments disagree, throw
/// the same std::invalid_argument on every rank instead of hanging.
///
/// Lifetime: the communicator must outlive the cache. Not thread-safe for
/// concurrent calls on one cache.

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/kv_cache.hpp"
#include "attnkit/distributed/detail/collective.hpp"
#include "attnkit/distributed/reduce.hpp"
#include "attnkit/distributed/sharding.hpp"

namespace attnkit {

/// Settings of a DistributedKVCache.
struct DistributedKVCacheOptions {
  /// Round-robin block of the positions appended after the prefill (>= 1).
  Index block = 64;
  /// Query and key/value heads: keys and values are stacked by key/value head,
  /// queries by query head (attnkit/attention/heads.hpp).
  HeadLayout heads{};
};

/// A KV cache sharded over the ranks of a communicator (see the file comment).
/// \tparam Storage the element type of the stored rows (float, double,
///         Eigen::half, Eigen::bfloat16; as KVCache).
template <typename Storage = float>
class DistributedKVCache {
 public:
  /// The type attention computes and returns results in (float or double).
  using Compute = typename KVCache<Storage>::Compute;

  /// An empty cache for keys of width d and values of width d_v. Collective.
  /// \throws std::invalid_argument (on every rank) if d, d_v or block is not
  ///         positive, the head layout is invalid, or the ranks disagree.
  DistributedKVCache(MPI_Comm comm, Index d, Index d_v, const DistributedKVCacheOptions& options = {})
      : comm_(comm), d_(d), d_v_(d_v), block_(options.block), heads_(options.heads) {
    const char* where = "DistributedKVCache";
    detail::require_mpi(where, comm);
    detail::CollectiveCheck check(comm, where);
    check.agree("the storage size", static_cast<std::int64_t>(sizeof(Storage)));
    check.agree("d", d);
    check.agree("d_v", d_v);
    check.agree("block", options.block);
    check.agree("q_heads", options.heads.q_heads);
    check.agree("kv_heads", options.heads.kv_heads);
    check.local_checks([&] {
      if (d <= 0 || d_v <= 0) detail::fail(where, ": d = ", d, " and d_v = ", d_v, " must be positive");
      if (options.block < 1) detail::fail(where, ": block = ", options.block, " must be >= 1");
      const HeadLayout& h = options.heads;
      if (h.q_heads < 1 || h.kv_heads < 1 || h.q_heads % h.kv_heads != 0)
        detail::fail(where, ": q_heads = ", h.q_heads, " and kv_heads = ", h.kv_heads,
                     " must be >= 1 with q_heads a multiple of kv_heads");
    });
    check.run();
    rank_ = check.rank();
    ranks_ = check.ranks();
    for (Index g = 0; g < heads_.kv_heads; ++g)
      caches_.emplace_back(d, d_v, 0);
  }

  /// Tokens in the whole cache (every rank).
  Index size() const { return size_; }
  /// Tokens stored on this rank.
  Index local_size() const { return local_size_; }
  /// Positions placed by assign_prefill (0 without one).
  Index prefill_size() const { return prefill_; }
  Index d() const { return d_; }
  Index d_v() const { return d_v_; }
  Index block() const { return block_; }
  const HeadLayout& heads() const { return heads_; }
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }
  MPI_Comm comm() const { return comm_; }

  /// The rank that stores (or will store) position p >= 0.
  int owner(Index position) const {
    if (position < prefill_) {
      for (int r = 0; r < ranks_; ++r)
        for (const TokenRange& t : shard_ranges(prefill_sharding_, prefill_, ranks_, r))
          if (position >= t.begin && position < t.end) return r;
    }
    return static_cast<int>(((position - prefill_) / block_) % ranks_);
  }

  /// This rank's keys (local_size x d) and values of key/value head g, in
  /// position order. Invalidated by the next append.
  typename KVCache<Storage>::ConstView local_keys(Index g = 0) const {
    return caches_.at(std::size_t(g)).keys();
  }
  typename KVCache<Storage>::ConstView local_values(Index g = 0) const {
    return caches_.at(std::size_t(g)).values();
  }

  /// How many of this rank's tokens have a position < p (the local row
  /// where position p would be). O(log runs).
  Index local_rows_before(Index p) const {
    auto it = std::upper_bound(runs_.begin(), runs_.end(), p,
                               [](Index x, const Run& run) { return x < run.position; });
    if (it == runs_.begin()) return 0;
    --it;
    return it->local + std::min(it->length, p - it->position);
  }

  /// Appends m new tokens at positions size() .. size() + m - 1: keys
  /// (kv_heads m x d) and values (kv_heads m x d_v), stacked by key/value
  /// head, THE SAME on every rank; each rank keeps the rows it owns.
  /// Collective.
  /// \throws std::invalid_argument (on every rank) for shapes that do not fit
  ///         the cache or ranks that disagree on them or on the cache's size;
  ///         nothing is appended then.
  template <typename DK, typename DV>
  void append(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    const char* where = "DistributedKVCache::append";
    detail::CollectiveCheck check(comm_, where);
    check.agree("the cache size (tokens)", size_);
    check.agree("the key rows", k.rows());
    check.agree("the value rows", v.rows());
    check.local_checks([&] {
      if (k.cols() != d_ || v.cols() != d_v_ || k.rows() != v.rows() || k.rows() % heads_.kv_heads != 0)
        detail::fail(where, ": keys ", detail::shape(k), " and values ", detail::shape(v),
                     " must be (kv_heads m x d) and (kv_heads m x d_v) with kv_heads = ", heads_.kv_heads,
                     ", d = ", d_, ", d_v = ", d_v_);
    });
    check.run();
    const Index m = k.rows() / heads_.kv_heads;
    Index t = 0;
    while (t < m) {
      if (owner(size_ + t) != rank_) {
        ++t;
        continue;
      }
      Index e = t + 1;
      while (e < m && owner(size_ + e) == rank_)
        ++e;
      for (Index g = 0; g < heads_.kv_heads; ++g)
        caches_[std::size_t(g)].append(k.middleRows(g * m + t, e - t), v.middleRows(g * m + t, e - t));
      add_run(size_ + t, e - t);
      t = e;
    }
    size_ += m;
  }

  /// Starts the cache from the key/value shards of a ring-attention prefill:
  /// on every rank its shards (kv_heads n_r x d) and (kv_heads n_r x d_v) of
  /// the prompt's n_0 tokens, laid out by `sharding` as ring_attention takes
  /// them. The cache must be empty. Collective.
  /// \throws std::invalid_argument (on every rank) if the cache is not empty,
  ///         the shards do not fit together, or the ranks disagree.
  template <typename DK, typename DV>
  void assign_prefill(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v, Sharding sharding) {
    const char* where = "DistributedKVCache::assign_prefill";
    detail::CollectiveCheck check(comm_, where);
    check.agree("the cache size (tokens)", size_);
    check.agree("the sharding (0 = contiguous, 1 = zigzag)", static_cast<std::int64_t>(sharding));
    const int rows = check.local(k.rows());
    check.local_checks([&] {
      if (size_ != 0)
        detail::fail(where, ": the cache holds ", size_, " tokens; a prefill needs an empty cache");
      if (k.cols() != d_ || v.cols() != d_v_ || k.rows() != v.rows() || k.rows() % heads_.kv_heads != 0)
        detail::fail(where, ": the key shard ", detail::shape(k), " and value shard ", detail::shape(v),
                     " must be (kv_heads n_r x d) and (kv_heads n_r x d_v) with kv_heads = ", heads_.kv_heads,
                     ", d = ", d_, ", d_v = ", d_v_);
    });
    check.run();
    Index total = 0;
    for (int r = 0; r < ranks_; ++r)
      total += check.gathered(rows, r);
    const Index n = total / heads_.kv_heads;
    if (n < ranks_)
      detail::fail(where, ": n = ", n, " tokens cannot be sharded over ", ranks_,
                   " ranks (every rank needs at least one token)");
    for (int r = 0; r < ranks_; ++r)
      if (check.gathered(rows, r) != heads_.kv_heads * shard_size(sharding, n, ranks_, r))
        detail::fail(where, ": the shards do not fit together: the ranks hold ", check.gathered_list(rows),
                     " rows, but the ", to_string(sharding), " sharding of ", n, " tokens (x ",
                     heads_.kv_heads, " heads) over ", ranks_, " ranks gives rank ", r, " ",
                     heads_.kv_heads * shard_size(sharding, n, ranks_, r));
    const Index n_r = k.rows() / heads_.kv_heads;
    Index off = 0;
    for (const TokenRange& t : shard_ranges(sharding, n, ranks_, rank_)) {
      for (Index g = 0; g < heads_.kv_heads; ++g)
        caches_[std::size_t(g)].append(k.middleRows(g * n_r + off, t.size()),
                                       v.middleRows(g * n_r + off, t.size()));
      add_run(t.begin, t.size());
      off += t.size();
    }
    size_ = prefill_ = n;
    prefill_sharding_ = sharding;
  }

  /// This rank's partial result: the attention of the queries over this
  /// rank's tokens only (zero rows and lse = -inf where it holds none they
  /// see). Collective (the agreement check), no reduction.
  /// \param q (q_heads n_q x d), stacked by query head, the same on every
  ///        rank; with the default mask offset the queries are the last n_q
  ///        positions (append their keys first), with strict causal and
  ///        offset = size() the next ones.
  template <typename DQ>
  AttentionResult<Compute> attend_local(const Eigen::MatrixBase<DQ>& q, const AttentionOptions& options = {},
                                        const FlashConfig& config = {}) const {
    return local_partial("DistributedKVCache::attend_local", q, options, config);
  }

  /// The attention of the queries over the whole cache, on every rank (the
  /// same bits): the ranks' partials merged by allreduce_attention's exact
  /// reduction. Collective.
  /// \returns output (q_heads n_q x d_v) and lse (q_heads n_q), stacked by
  ///          query head.
  /// \throws std::invalid_argument (on every rank) when the cache is empty,
  ///         the queries' shape or the options are invalid, or the ranks
  ///         disagree on them or on the cache's size.
  template <typename DQ>
  AttentionResult<Compute> attend(const Eigen::MatrixBase<DQ>& q, const AttentionOptions& options = {},
                                  const FlashConfig& config = {}) const {
    AttentionResult<Compute> r = local_partial("DistributedKVCache::attend", q, options, config);
    if (ranks_ > 1) detail::allreduce_packed_result(comm_, r);
    return r;
  }

 private:
  struct Run {
    Index position;  // first position
    Index local;     // its local row
    Index length;
  };

  void add_run(Index position, Index length) {
    if (!runs_.empty() && runs_.back().position + runs_.back().length == position)
      runs_.back().length += length;
    else
      runs_.push_back({position, local_size_, length});
    local_size_ += length;
  }

  /// The local rows query row i (of `mask`) sees: at most two ranges.
  std::vector<KeyRange> local_ranges(const MaskLayout& mask, Index i) const {
    const Index s = local_rows_before(mask.sink_end(i)), b = local_rows_before(mask.key_begin(i)),
                e = local_rows_before(mask.key_end(i));
    std::vector<KeyRange> ranges;
    if (s > 0) ranges.push_back({0, s});
    if (e > b) {
      if (!ranges.empty() && ranges.back().end == b)
        ranges.back().end = e;
      else
        ranges.push_back({b, e});
    }
    return ranges;
  }

  template <typename DQ>
  AttentionResult<Compute> local_partial(const char* where, const Eigen::MatrixBase<DQ>& q,
                                         const AttentionOptions& options, const FlashConfig& config) const {
    detail::CollectiveCheck check(comm_, where);
    check.agree("the cache size (tokens)", size_);
    check.agree("the query rows", q.rows());
    check.agree("the query columns", q.cols());
    check.agree("the mask kind (0 = none, 1 = causal, 2 = strict)",
                static_cast<std::int64_t>(options.mask.kind));
    check.agree("the mask offset", options.mask.offset ? std::optional<std::int64_t>(*options.mask.offset)
                                                       : std::optional<std::int64_t>());
    check.agree("the mask window", options.mask.window ? std::optional<std::int64_t>(*options.mask.window)
                                                       : std::optional<std::int64_t>());
    check.agree("the mask sinks", options.mask.sinks);
    check.agree("whether a scale is set", options.scale ? 1 : 0);
    check.agree_double("the scale", options.scale.value_or(0.0));
    check.local_checks([&] {
      if (q.cols() != d_ || q.rows() == 0 || q.rows() % heads_.q_heads != 0)
        detail::fail(where, ": queries ", detail::shape(q),
                     " must be (q_heads n_q x d) with q_heads = ", heads_.q_heads, ", n_q >= 1, d = ", d_);
      const FlashConfig& f = config;
      if (f.threads < 0 || f.block_q < 0 || f.block_k < 0 || f.threads > flash_max_threads)
        detail::fail(where, ": config threads = ", f.threads, ", block_q = ", f.block_q,
                     ", block_k = ", f.block_k,
                     " must be >= 0 (0 = automatic), threads <= ", flash_max_threads);
      detail::mpi_count(where, "query rows", q.rows());
    });
    check.run();
    if (size_ == 0) detail::fail(where, ": the cache is empty (no key to attend to)");
    const Index n_q = q.rows() / heads_.q_heads;
    MaskLayout mask = resolve_mask(Mask{}, 1, 1);
    try {
      mask = resolve_mask(options.mask, n_q, size_);
    } catch (const std::invalid_argument& e) {
      detail::fail(where, ": ", e.what());
    }
    const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(d_)));
    if (!(std::isfinite(scale) && scale > 0))
      detail::fail(where, ": scale = ", scale, " must be finite and > 0");

    AttentionResult<Compute> r{
        RowMatrix<Compute>::Zero(q.rows(), d_v_),
        Vector<Compute>::Constant(q.rows(), -std::numeric_limits<Compute>::infinity())};
    if (local_size_ == 0) return r;
    // Nothing below throws for bad input; an unexpected exception would leave
    // the other ranks in the reduction, so it ends the job.
    detail::abort_on_exception(comm_, where, [&] {
      const Eigen::Ref<const RowMatrix<typename DQ::Scalar>> qr(q);
      const Index group = heads_.q_heads / heads_.kv_heads;
      Index i = 0;
      while (i < n_q) {
        // Rows i .. j - 1 see the same local rows: one call per key/value head.
        const std::vector<KeyRange> ranges = local_ranges(mask, i);
        Index j = i + 1;
        while (j < n_q && same_ranges(local_ranges(mask, j), ranges))
          ++j;
        const Index rows = j - i;
        if (!ranges.empty()) {
          KeySet keys;
          keys.sequence_length = local_size_;
          keys.ranges = ranges;
          RowMatrix<Compute> qg(group * rows, d_);
          for (Index g = 0; g < heads_.kv_heads; ++g) {
            for (Index hh = 0; hh < group; ++hh)
              qg.middleRows(hh * rows, rows) =
                  qr.middleRows((g * group + hh) * n_q + i, rows).template cast<Compute>();
            const KVCache<Storage>& cache = caches_[std::size_t(g)];
            const AttentionResult<Compute> part = flash_attention_partial<Compute>(
                qg, cache.keys(), cache.values(), keys, AttentionOptions{Mask::none(), scale}, config);
            for (Index hh = 0; hh < group; ++hh) {
              const Index row = (g * group + hh) * n_q + i;
              r.output.middleRows(row, rows) = part.output.middleRows(hh * rows, rows);
              r.lse.segment(row, rows) = part.lse.segment(hh * rows, rows);
            }
          }
        }
        i = j;
      }
    });
    return r;
  }

  static bool same_ranges(const std::vector<KeyRange>& a, const std::vector<KeyRange>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t t = 0; t < a.size(); ++t)
      if (a[t].begin != b[t].begin || a[t].end != b[t].end) return false;
    return true;
  }

  MPI_Comm comm_;
  Index d_, d_v_, block_;
  HeadLayout heads_;
  int rank_ = 0, ranks_ = 1;
  Index size_ = 0, local_size_ = 0, prefill_ = 0;
  Sharding prefill_sharding_ = Sharding::contiguous;
  std::vector<KVCache<Storage>> caches_;
  std::vector<Run> runs_;
};

}  // namespace attnkit
