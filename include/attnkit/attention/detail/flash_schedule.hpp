#pragma once

/// \file attnkit/attention/detail/flash_schedule.hpp
/// The scheduler of the fused kernel: cuts a call (one or more heads, a list
/// of key ranges) into work items — (head, query block, key chunk) — runs
/// them on the threads, and merges the key chunks exactly. Internal.
///
/// Work split (deterministic for a given shape, thread count and config):
///  - query blocks of every head are distributed over the threads together,
///    most expensive first (the last blocks of a causal mask);
///  - when there are fewer than two (head, block) items per thread (decode,
///    or a short chunk against a long cache), the keys each block may see are
///    also split into `splits` chunks of at least four tiles; each chunk
///    yields a partial (O, lse) and the partials are merged exactly in key
///    order (attnkit/attention/merge.hpp), as flash-decoding does.
/// Per thread one workspace is allocated before the parallel region; nothing
/// is allocated in the loops.

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "attnkit/attention/detail/flash_decode.hpp"
#include "attnkit/attention/detail/flash_prefill.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit::detail {

/// One head of a call: its bound inputs and where its output rows (n_q x
/// d_v, row stride ldo) and lse (n_q) go.
template <typename In>
struct FlashHead {
  In in;
  typename In::Compute* out;
  Index ldo;
  typename In::Compute* lse;
};

/// The keys of `ranges` that query rows [i0, i1) may see at all, cut to
/// chunk s of `splits` (by count): appended to `segs`.
inline void block_segments(const std::vector<KeyRange>& ranges, const MaskLayout& mask, Index i0, Index i1,
                           Index s, Index splits, std::vector<KeyRange>& segs) {
  segs.clear();
  // The block sees the sinks [0, sink_hi) and the band [band_lo, ...): the
  // union over its rows (each non-decreasing in the row).
  const Index sink_hi = mask.sink_end(i1 - 1), band_lo = mask.key_begin(i0);
  Index total = 0;
  const auto for_each_piece = [&](auto&& f) {
    for (const KeyRange& r : ranges) {
      if (sink_hi >= band_lo) {
        f(r.begin, r.end);
      } else {
        f(r.begin, std::min(r.end, sink_hi));
        f(std::max(r.begin, band_lo), r.end);
      }
    }
  };
  for_each_piece([&](Index a, Index b) { total += b > a ? b - a : 0; });
  const Index lo = total * s / splits, hi = total * (s + 1) / splits;
  Index seen = 0;
  for_each_piece([&](Index a, Index b) {
    if (b <= a) return;
    const Index len = b - a;
    const Index from = std::max(lo, seen), to = std::min(hi, seen + len);
    if (from < to) segs.push_back({a + (from - seen), a + (to - seen)});
    seen += len;
  });
}

/// Runs every head of `heads` over the key ranges (sorted, disjoint
/// positions) with blocks of block_q queries and tiles of block_k keys
/// (block_k a multiple of the packet size) on `threads` threads.
///
/// A policy's key terms (key_terms scalars per key) are computed once per
/// call when more than one query block reads them, into a table per head of
/// key_terms x (positions from the first range's begin to the last range's
/// end) values of Compute; else tile by tile.
template <typename In>
void flash_run(std::vector<FlashHead<In>> heads, const std::vector<KeyRange>& ranges, Index block_q,
               Index block_k, int threads) {
  using C = typename In::Compute;
  const Index n_heads = static_cast<Index>(heads.size());
  const In& in0 = heads[0].in;
  const Index n_q = in0.n_q, d_v = in0.d_v;
  const Index blocks = (n_q + block_q - 1) / block_q;
  const Index head_blocks = checked_product("flash_attention", "heads x query blocks", n_heads, blocks);
  Index keys = 0;
  for (const KeyRange& r : ranges)
    keys += r.size();

  // The key-term tables (see above), filled over the ranges cut into pieces
  // of at most 1024 keys (the work items).
  std::vector<C, Eigen::aligned_allocator<C>> key_table;
  std::vector<KeyRange> table_pieces;
  const Index table_first = ranges.front().begin, span = ranges.back().end - table_first;
  Index per_head = 0;
  if (In::key_terms > 0 && blocks > 1 && keys > 0) {
    per_head = checked_product("flash_attention", "key terms x keys", Index(In::key_terms), span);
    key_table.resize(
        static_cast<std::size_t>(checked_product("flash_attention", "key-term table", n_heads, per_head)));
    for (Index h = 0; h < n_heads; ++h) {
      In& in = heads[static_cast<std::size_t>(h)].in;
      in.key_table = key_table.data() + h * per_head;
      in.key_table_first = table_first;
      in.key_table_stride = span;
    }
    for (const KeyRange& r : ranges)
      for (Index a = r.begin; a < r.end; a += 1024)
        table_pieces.push_back({a, std::min(a + 1024, r.end)});
  }
  const Index pieces = static_cast<Index>(table_pieces.size());

  // Split the keys when there are too few (head, block) items to keep every
  // thread busy: chunks of at least 4 tiles.
  Index splits = 1;
  if (threads > 1 && head_blocks < 2 * Index(threads)) {
    const Index wanted = (2 * Index(threads) + head_blocks - 1) / head_blocks;
    splits = std::max<Index>(1, std::min(wanted, keys / (4 * block_k)));
  }
  const Index items = head_blocks * splits;
  const int team = static_cast<int>(std::min<Index>(threads, items));

  // Partial results of key chunks 1.. (chunk 0 writes straight into out).
  const Index head_out = checked_product("flash_attention", "n_q x d_v", n_q, d_v);
  const Index parts = checked_product("flash_attention", "key chunks x heads", splits - 1, n_heads);
  std::vector<C, Eigen::aligned_allocator<C>> part_o(
      static_cast<std::size_t>(checked_product("flash_attention", "partial outputs", parts, head_out)));
  std::vector<C> part_lse(
      static_cast<std::size_t>(checked_product("flash_attention", "partial lse", parts, n_q)));
  std::vector<FlashWorkspace<C>> workspaces(static_cast<std::size_t>(team));
  std::vector<std::vector<KeyRange>> segments(static_cast<std::size_t>(team));
  for (std::size_t t = 0; t < workspaces.size(); ++t) {
    workspaces[t].reserve(in0.d, d_v, block_q, block_k, In::key_terms, In::query_terms,
                          !std::is_same_v<typename In::StoredK, C> && !In::bf16_dot,
                          !std::is_same_v<typename In::StoredV, C>, In::bf16_dot);
    segments[t].reserve(2 * ranges.size() + 2);
  }

  ATTNKIT_PRAGMA(omp parallel num_threads(team)) {
#if defined(_OPENMP)
    const auto tid = static_cast<std::size_t>(omp_get_thread_num());
#else
    const std::size_t tid = 0;
#endif
    FlashWorkspace<C>& ws = workspaces[tid];
    std::vector<KeyRange>& segs = segments[tid];
    if constexpr (In::key_terms > 0) {
      // The key-term tables, before any block reads them (the barrier at the
      // end of this loop).
      ATTNKIT_PRAGMA(omp for schedule(static))
      for (Index item = 0; item < n_heads * pieces; ++item) {
        const Index h = item / pieces;
        const KeyRange& piece = table_pieces[static_cast<std::size_t>(item % pieces)];
        const In& hin = heads[static_cast<std::size_t>(h)].in;
        C* table = key_table.data() + h * per_head;
        for (Index j = piece.begin; j < piece.end; ++j) {
          C t[In::key_terms] = {};
          hin.score.key(hin.key_row(j), hin.d, j, t);
          for (int q = 0; q < In::key_terms; ++q)
            table[q * span + (j - table_first)] = t[q];
        }
      }
    }
    // Most expensive items first (causal: the last query blocks of every head).
    ATTNKIT_PRAGMA(omp for schedule(dynamic, 1))
    for (Index item = 0; item < items; ++item) {
      const Index hb = item / splits, s = item % splits;
      const Index b = blocks - 1 - hb / n_heads, h = hb % n_heads;
      const FlashHead<In>& head = heads[static_cast<std::size_t>(h)];
      const Index i0 = b * block_q, i1 = std::min(n_q, i0 + block_q);
      block_segments(ranges, head.in.mask, i0, i1, s, splits, segs);
      C* po = s == 0 ? head.out + i0 * head.ldo : part_o.data() + (((s - 1) * n_heads + h) * n_q + i0) * d_v;
      C* pl = s == 0 ? head.lse + i0 : part_lse.data() + ((s - 1) * n_heads + h) * n_q + i0;
      const Index ld = s == 0 ? head.ldo : d_v;
      const int nseg = static_cast<int>(segs.size());
      if (i1 - i0 <= decode_max_rows<C>())
        decode_block(head.in, i0, i1, segs.data(), nseg, block_k, ws, po, ld, pl);
      else
        flash_block(head.in, i0, i1, segs.data(), nseg, block_k, ws, po, ld, pl);
    }
  }
  // Merge the chunks in key order (deterministic).
  for (Index s = 1; s < splits; ++s)
    for (Index h = 0; h < n_heads; ++h) {
      const FlashHead<In>& head = heads[static_cast<std::size_t>(h)];
      const Index p = (s - 1) * n_heads + h;
      merge_rows(head.out, head.ldo, head.lse, part_o.data() + p * head_out, d_v, part_lse.data() + p * n_q,
                 n_q, d_v);
    }
}

}  // namespace attnkit::detail
