#pragma once

/// \file attnkit/distributed/sharding.hpp
/// How the tokens of a sequence are split over the P ranks of a
/// sequence-parallel computation. Pure arithmetic: no MPI (the rest of
/// attnkit/distributed/ needs it), so a program can plan or check a layout
/// anywhere.
///
/// Two shardings of n tokens over P ranks, both balanced to one token:
///  - `Sharding::contiguous`: rank r holds one run of about n / P tokens,
///    rank 0 the first. Simple, but under a causal mask rank r's queries see
///    r + 1/2 shards' worth of keys, so the last rank does about 2 - 1/P
///    times the mean work.
///  - `Sharding::zigzag` (striped, as context-parallel training does): the
///    sequence is cut into 2P chunks and rank r holds chunks r and 2P - 1 - r.
///    Under a causal mask every rank then does the same work, and in ring
///    attention the same work at every step (docs/distributed.md).
/// Chunk sizes differ by at most one token: with n = q m + e (m the number of
/// parts: P or 2P), the first e parts have q + 1 tokens. With P = 1 both
/// shardings are the whole sequence.
///
/// A rank's SHARD is its tokens in position order: its pieces (one for
/// contiguous, up to two for zigzag) concatenated. Stacked heads
/// (attnkit/attention/heads.hpp) shard head by head: a (heads, n, d) array,
/// i.e. a row-major (heads n) x d matrix, gives rank r the
/// (heads n_r) x d matrix whose rows [h n_r, (h + 1) n_r) are head h's shard.

#include <optional>
#include <string_view>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

enum class Sharding { contiguous, zigzag };

/// Name used in messages and on command lines: "contiguous", "zigzag".
inline const char* to_string(Sharding sharding) {
  return sharding == Sharding::contiguous ? "contiguous" : "zigzag";
}

/// Parses exactly the names of to_string(Sharding).
inline std::optional<Sharding> parse_sharding(std::string_view name) {
  for (const Sharding s : {Sharding::contiguous, Sharding::zigzag})
    if (name == to_string(s)) return s;
  return std::nullopt;
}

/// The accepted names of parse_sharding, '|'-separated.
inline const char* sharding_names() {
  return "contiguous|zigzag";
}

/// A half-open range [begin, end) of token positions.
struct TokenRange {
  Index begin = 0;
  Index end = 0;
  Index size() const { return end > begin ? end - begin : 0; }
};

namespace detail {

/// [begin, end) of part `i` of n tokens cut into `parts` balanced parts.
inline TokenRange balanced_part(Index n, Index parts, Index i) {
  const Index q = n / parts, e = n % parts;
  const Index begin = i * q + (i < e ? i : e);
  return {begin, begin + q + (i < e ? 1 : 0)};
}

inline void check_sharding_arguments(const char* where, Index n, int ranks, int rank) {
  if (ranks < 1) fail(where, ": ranks = ", ranks, " must be >= 1");
  if (rank < 0 || rank >= ranks) fail(where, ": rank = ", rank, " must be in [0, ", ranks, ")");
  if (n < ranks)
    fail(where, ": n = ", n, " tokens cannot be sharded over ", ranks,
         " ranks (every rank needs at least one token)");
}

}  // namespace detail

/// The position ranges rank `rank` of `ranks` holds of n tokens, sorted,
/// non-empty, adjacent ranges joined (see the file comment).
/// \throws std::invalid_argument if ranks < 1, rank is outside [0, ranks) or
///         n < ranks (some rank would hold no token).
/// O(1).
inline std::vector<TokenRange> shard_ranges(Sharding sharding, Index n, int ranks, int rank) {
  detail::check_sharding_arguments("shard_ranges", n, ranks, rank);
  if (sharding == Sharding::contiguous) return {detail::balanced_part(n, ranks, rank)};
  const Index chunks = 2 * Index(ranks);
  const TokenRange a = detail::balanced_part(n, chunks, rank);
  const TokenRange b = detail::balanced_part(n, chunks, chunks - 1 - rank);
  if (b.size() == 0) return {a};
  if (a.end == b.begin) return {TokenRange{a.begin, b.end}};  // ranks == 1
  return {a, b};
}

/// How many tokens rank `rank` holds: the total size of shard_ranges.
/// \throws std::invalid_argument as shard_ranges.
inline Index shard_size(Sharding sharding, Index n, int ranks, int rank) {
  Index s = 0;
  for (const TokenRange& r : shard_ranges(sharding, n, ranks, rank))
    s += r.size();
  return s;
}

/// Rank `rank`'s shard of stacked heads: `full` is (heads n x d), head h in
/// rows [h n, (h + 1) n); the result is (heads n_r x d), head h's tokens of
/// the shard in rows [h n_r, (h + 1) n_r), in position order.
/// \throws std::invalid_argument if heads < 1, full's rows are not a multiple
///         of heads, or as shard_ranges.
/// O(heads n_r d).
template <typename Derived>
RowMatrix<typename Derived::Scalar> extract_shard(const Eigen::MatrixBase<Derived>& full, Index heads,
                                                  Sharding sharding, int ranks, int rank) {
  if (heads < 1 || full.rows() % heads != 0)
    detail::fail("extract_shard: ", detail::shape(full), " does not split into heads = ", heads,
                 " heads of equal rows");
  const Index n = full.rows() / heads;
  const std::vector<TokenRange> ranges = shard_ranges(sharding, n, ranks, rank);
  const Index n_r = shard_size(sharding, n, ranks, rank);
  RowMatrix<typename Derived::Scalar> shard(heads * n_r, full.cols());
  for (Index h = 0; h < heads; ++h) {
    Index row = h * n_r;
    for (const TokenRange& r : ranges) {
      shard.middleRows(row, r.size()) = full.middleRows(h * n + r.begin, r.size());
      row += r.size();
    }
  }
  return shard;
}

/// The inverse of extract_shard: writes rank `rank`'s shard (heads n_r x d)
/// into its rows of `full` (heads n x d); other rows are untouched.
/// \throws std::invalid_argument if the shapes do not match the sharding.
template <typename Derived, typename Scalar>
void insert_shard(const Eigen::MatrixBase<Derived>& shard, RowMatrix<Scalar>& full, Index heads,
                  Sharding sharding, int ranks, int rank) {
  if (heads < 1 || full.rows() % heads != 0)
    detail::fail("insert_shard: full ", detail::shape(full), " does not split into heads = ", heads,
                 " heads of equal rows");
  const Index n = full.rows() / heads;
  const std::vector<TokenRange> ranges = shard_ranges(sharding, n, ranks, rank);
  const Index n_r = shard_size(sharding, n, ranks, rank);
  if (shard.rows() != heads * n_r || shard.cols() != full.cols())
    detail::fail("insert_shard: shard ", detail::shape(shard), " must be (", heads * n_r, " x ", full.cols(),
                 ") for rank ", rank, " of the ", to_string(sharding), " sharding of ", n, " tokens over ",
                 ranks, " ranks");
  for (Index h = 0; h < heads; ++h) {
    Index row = h * n_r;
    for (const TokenRange& r : ranges) {
      full.middleRows(h * n + r.begin, r.size()) = shard.middleRows(row, r.size()).template cast<Scalar>();
      row += r.size();
    }
  }
}

}  // namespace attnkit
