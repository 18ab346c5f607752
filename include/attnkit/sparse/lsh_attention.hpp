#pragma once

/// \file attnkit/sparse/lsh_attention.hpp
/// LSH bucketed attention (Reformer, Kitaev et al. 2020, without the shared
/// QK and the chunk approximation): every query attends exactly, with
/// softmax, to the visible keys that share one of its L hash buckets.
///
/// Definition. With bucket codes h_r (attnkit/sparse/lsh_hash.hpp; queries
/// and keys hashed by the same family), the mask's visible keys
/// V_i = [0, key_end(i)) (attnkit/core/mask.hpp: none, causal, strict causal,
/// with offsets), the candidate set of query i is the UNION
///   C_i = { j in V_i : h_r(q_i) = h_r(k_j) for some round r },
/// each key counted once however many rounds it collides in, and
///   O_i = sum_{j in C_i} e^{s_ij} v_j / sum_{j in C_i} e^{s_ij},
///   lse_i = log sum_{j in C_i} e^{s_ij},   s_ij = scale q_i . k_j.
/// When C_i is empty the fallback decides (LshFallback): by default the query
/// attends to its last visible key j = key_end(i) - 1 alone (its own position
/// under a causal mask, the one before under strict causal): O_i = v_j,
/// lse_i = s_ij; with LshFallback::zero_row, or when no key is visible at all,
/// O_i is the zero row and lse_i = -inf (attnkit's convention for a query that
/// sees no key). With B = 1 every key collides with every query and the
/// result is exact attention.
///
/// Exact within-bucket attention was chosen over Reformer's sorted chunks
/// (attend to your chunk and the previous one) so the result is a function of
/// the buckets alone, with no dependence on chunk boundaries, and can be
/// checked against a brute force and merged exactly.
///
/// Algorithm. The index sorts the keys of each round by bucket (counting
/// sort, stable: positions ascending inside a bucket). A query call hashes
/// the queries and, per round and bucket, takes tiles of up to 64 queries
/// against the bucket's keys visible to the tile: one GEMM for the scores,
/// the mask (keys at or beyond key_end(i)) and the de-duplication (a pair
/// already colliding in an earlier round r' < r is left out of round r, so
/// the rounds see disjoint key sets of each query whose union is C_i), a
/// row softmax, one GEMM by V. The L round results are merged exactly with
/// merge_attention_into (disjoint sets: the lse-weighted merge is exact).
///
/// Complexity. Build: O(L (n_k d w + n_k + B)), w = B/2 (angular) or log2 B
/// (simhash). Query: hashing O(L n_q d w), attention
/// O(L sum_b |Q_b| |K_b| (d + d_v + L)) summed over the buckets b of every
/// round (|Q_b|, |K_b| the queries and keys in bucket b). With balanced
/// buckets that is O(L n_q n_k (d + d_v + L) / B): sub-quadratic when B grows
/// with n (B ~ n / s for buckets of about s keys gives O(L n s (d + d_v)));
/// the worst case (every vector in one bucket, e.g. keys sharing a large
/// common direction) is exact attention's O(n_q n_k d). Memory: the index
/// holds a copy of K and V and L n_k indices; a query call O(n_q (L + d_v) +
/// 64 |K_b| + |K_b| (d + d_v)) for the largest bucket.
///
/// Accuracy (against the definition). Scores, softmax and sums run in Scalar
/// as in exact attention over |C_i| keys, plus one exact merge per round:
/// |O - O_def| is of order ((d + 2) u scale |q||k| + (|C_i| + L) u) max |v|,
/// the bound tests/sparse/lsh_attention_test.cpp derives and checks against a
/// long-double evaluation of the definition. The error against full softmax
/// attention is the mass of the keys outside C_i; it is measured, not
/// bounded (bench/lsh_bench.cpp, docs/lsh.md).
///
/// NaN: a NaN in query row i reaches row i only; a NaN in a key or value row
/// reaches the queries that attend to it and may reach the other queries of
/// its bucket tile (masked entries are multiplied by zero, and 0 * NaN is NaN).
///
/// Determinism: a call is a deterministic function of its inputs (same bits
/// every time); a query's row can differ within the rounding above between
/// calls that batch it with different queries (the tile's GEMM shapes differ).
///
/// Thread safety: attend() is const and safe to call concurrently; the index
/// owns copies of K and V (the inputs need not outlive it).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/sparse/lsh_hash.hpp"

namespace attnkit {

/// What a query whose buckets hold no visible key gets.
enum class LshFallback {
  /// Its last visible key alone (see the file comment); the zero row and
  /// lse = -inf only when no key is visible.
  last_visible_key,
  /// The zero row and lse = -inf.
  zero_row,
};

/// Per-call options of LshIndex::attend.
struct LshQueryOptions {
  /// Which keys each query may see (default: all), as in exact attention.
  Mask mask{};
  /// Logit scale; std::nullopt = 1/sqrt(d). Finite and > 0.
  std::optional<double> scale{};
  /// See LshFallback.
  LshFallback fallback = LshFallback::last_visible_key;
};

/// Options of lsh_attention: the hash family and the per-call options.
struct LshAttentionOptions {
  LshHashOptions hash{};
  Mask mask{};
  std::optional<double> scale{};
  LshFallback fallback = LshFallback::last_visible_key;
};

/// Keys and values bucketed by L rounds of an LSH family (build once), with
/// a const, batched attention query (see the file comment).
template <typename Scalar>
class LshIndex {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "LshIndex supports float and double");

 public:
  /// Builds the index over k (n_k x d) and v (n_k x d_v), copying both.
  /// \throws std::invalid_argument for empty inputs, k and v with different
  ///         row counts, or bad hash options (see LshHasher).
  template <typename DK, typename DV>
  LshIndex(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v, const LshHashOptions& options = {})
      : hasher_(checked_width(k, v), options), k_(k), v_(v) {
    detail::checked_product("LshIndex", "rounds x n_k", hasher_.rounds(), k_.rows());
    key_codes_ = hasher_.codes(k_);
    const Index n_k = k_.rows(), rounds = hasher_.rounds(), b = hasher_.buckets();
    order_.assign(static_cast<std::size_t>(rounds), std::vector<Index>(static_cast<std::size_t>(n_k)));
    starts_.assign(static_cast<std::size_t>(rounds), std::vector<Index>(static_cast<std::size_t>(b + 1), 0));
    for (Index r = 0; r < rounds; ++r)
      bucket_sort(key_codes_.col(r), b, order_[static_cast<std::size_t>(r)],
                  starts_[static_cast<std::size_t>(r)]);
  }

  Index keys() const { return k_.rows(); }
  Index dim() const { return k_.cols(); }
  Index value_dim() const { return v_.cols(); }
  const LshHasher<Scalar>& hasher() const { return hasher_; }
  /// Bucket codes of the keys (n_k x L).
  const LshCodes& key_codes() const { return key_codes_; }
  /// Keys of bucket b in round r, ascending: [begin, end) of
  /// sorted_keys(r), with begin = bucket_begin(r, b), end = bucket_begin(r, b + 1).
  const std::vector<Index>& sorted_keys(Index r) const { return order_[static_cast<std::size_t>(r)]; }
  Index bucket_begin(Index r, Index b) const {
    return starts_[static_cast<std::size_t>(r)][static_cast<std::size_t>(b)];
  }

  /// LSH attention of the rows of q (n_q x d) over the indexed keys.
  /// \returns output (n_q x d_v) and lse (n_q) as in the file comment.
  /// \throws std::invalid_argument for an empty q, a width other than d, a
  ///         bad scale or mask offset.
  template <typename DQ>
  AttentionResult<Scalar> attend(const Eigen::MatrixBase<DQ>& q, const LshQueryOptions& options = {}) const {
    static_assert(std::is_same_v<typename DQ::Scalar, Scalar>, "attend: q must have the index's Scalar type");
    const AttentionProblem pb =
        make_attention_problem("lsh_attention", q, k_, v_, {options.mask, options.scale});
    if (pb.mask.banded() || pb.mask.sinks() > 0)
      detail::fail("lsh_attention: sliding windows and attention sinks are not supported (window = ",
                   pb.mask.window(), ", sinks = ", pb.mask.sinks(), ")");
    detail::checked_product("lsh_attention", "n_q x d_v", pb.n_q, pb.d_v);
    detail::checked_product("lsh_attention", "n_q x rounds", pb.n_q, hasher_.rounds());
    const RowMatrix<Scalar> qr = q;
    const LshCodes q_codes = hasher_.codes(qr);
    const Index n_q = pb.n_q, d = pb.d, d_v = pb.d_v, rounds = hasher_.rounds(), buckets = hasher_.buckets();
    const Scalar scale = static_cast<Scalar>(pb.scale);
    constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
    constexpr Index tile = 64;

    AttentionResult<Scalar> acc{RowMatrix<Scalar>::Zero(n_q, d_v), Vector<Scalar>::Constant(n_q, -inf)};
    AttentionResult<Scalar> part{RowMatrix<Scalar>(n_q, d_v), Vector<Scalar>(n_q)};
    std::vector<Index> q_order(static_cast<std::size_t>(n_q)), q_starts;
    RowMatrix<Scalar> qg, kg, vg, s, og;
    std::vector<Index> visible(tile);
    for (Index r = 0; r < rounds; ++r) {
      part.output.setZero();
      part.lse.setConstant(-inf);
      bucket_sort(q_codes.col(r), buckets, q_order, q_starts);
      const std::vector<Index>& k_order = order_[static_cast<std::size_t>(r)];
      const std::vector<Index>& k_starts = starts_[static_cast<std::size_t>(r)];
      for (Index b = 0; b < buckets; ++b) {
        const Index q0 = q_starts[static_cast<std::size_t>(b)],
                    q1 = q_starts[static_cast<std::size_t>(b + 1)];
        const Index k0 = k_starts[static_cast<std::size_t>(b)],
                    k1 = k_starts[static_cast<std::size_t>(b + 1)];
        if (q0 == q1 || k0 == k1) continue;
        const Index* bucket_keys = k_order.data() + k0;
        const Index nk = k1 - k0;
        kg.resize(nk, d);
        vg.resize(nk, d_v);
        for (Index t = 0; t < nk; ++t) {
          kg.row(t) = k_.row(bucket_keys[t]);
          vg.row(t) = v_.row(bucket_keys[t]);
        }
        for (Index t0 = q0; t0 < q1; t0 += tile) {
          const Index nt = std::min(tile, q1 - t0);
          // Keys of the bucket each query may see: a prefix (keys ascending).
          Index widest = 0;
          for (Index a = 0; a < nt; ++a) {
            const Index end = pb.mask.key_end(q_order[static_cast<std::size_t>(t0 + a)]);
            visible[static_cast<std::size_t>(a)] =
                std::lower_bound(bucket_keys, bucket_keys + nk, end) - bucket_keys;
            widest = std::max(widest, visible[static_cast<std::size_t>(a)]);
          }
          if (widest == 0) continue;
          qg.resize(nt, d);
          for (Index a = 0; a < nt; ++a)
            qg.row(a) = qr.row(q_order[static_cast<std::size_t>(t0 + a)]);
          s.resize(nt, widest);
          s.noalias() = qg * kg.topRows(widest).transpose();
          s *= scale;
          for (Index a = 0; a < nt; ++a) {
            const Index i = q_order[static_cast<std::size_t>(t0 + a)];
            const Index vis = visible[static_cast<std::size_t>(a)];
            auto row = s.row(a);
            row.tail(widest - vis).setConstant(-inf);
            for (Index c = 0; c < vis && r > 0; ++c) {
              const Index j = bucket_keys[c];
              for (Index e = 0; e < r; ++e)
                if (q_codes(i, e) == key_codes_(j, e)) {
                  row(c) = -inf;  // counted in round e already
                  break;
                }
            }
            const Scalar m = row.template maxCoeff<Eigen::PropagateNaN>();
            if (m == -inf) {
              row.setZero();
              continue;  // part keeps the zero row and lse = -inf
            }
            // -inf entries selected to exactly 0 (Eigen's exp would give a
            // denormal for them).
            row = (row.array() == -inf).select(Scalar(0), (row.array() - m).exp());
            const Scalar sum = row.sum();
            row /= sum;
            part.lse(i) = m + std::log(sum);
          }
          og.resize(nt, d_v);
          og.noalias() = s * vg.topRows(widest);
          for (Index a = 0; a < nt; ++a) {
            const Index i = q_order[static_cast<std::size_t>(t0 + a)];
            if (part.lse(i) != -inf) part.output.row(i) = og.row(a);  // NaN rows too
          }
        }
      }
      merge_attention_into(acc, part);
    }

    if (options.fallback == LshFallback::last_visible_key)
      for (Index i = 0; i < n_q; ++i) {
        const Index end = pb.mask.key_end(i);
        if (acc.lse(i) != -inf || end == 0) continue;
        acc.output.row(i) = v_.row(end - 1);
        acc.lse(i) = scale * qr.row(i).dot(k_.row(end - 1));
      }
    return acc;
  }

 private:
  template <typename DK, typename DV>
  static Index checked_width(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    static_assert(std::is_same_v<typename DK::Scalar, Scalar> && std::is_same_v<typename DV::Scalar, Scalar>,
                  "LshIndex: k and v must have the index's Scalar type");
    detail::require_non_empty("LshIndex", "K", k);
    detail::require_non_empty("LshIndex", "V", v);
    if (k.rows() != v.rows())
      detail::fail("LshIndex: K ", detail::shape(k), " and V ", detail::shape(v),
                   " must have the same number of rows n_k (one per key)");
    return k.cols();
  }

  /// Stable counting sort of the items by code: order lists the items bucket
  /// by bucket (ascending inside one), starts[b] where bucket b begins.
  template <typename Codes>
  static void bucket_sort(const Codes& codes, Index buckets, std::vector<Index>& order,
                          std::vector<Index>& starts) {
    const Index n = codes.size();
    starts.assign(static_cast<std::size_t>(buckets + 1), 0);
    for (Index i = 0; i < n; ++i)
      ++starts[static_cast<std::size_t>(codes(i) + 1)];
    for (Index b = 0; b < buckets; ++b)
      starts[static_cast<std::size_t>(b + 1)] += starts[static_cast<std::size_t>(b)];
    std::vector<Index> next(starts.begin(), starts.end() - 1);
    order.resize(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i)
      order[static_cast<std::size_t>(next[static_cast<std::size_t>(codes(i))]++)] = i;
  }

  LshHasher<Scalar> hasher_;
  RowMatrix<Scalar> k_, v_;
  LshCodes key_codes_;
  std::vector<std::vector<Index>> order_, starts_;
};

/// LSH bucketed attention in one call: builds an LshIndex over (k, v) and
/// attends q (see the file comment).
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v).
/// \throws std::invalid_argument as LshIndex and LshIndex::attend.
///
/// \code
///   attnkit::LshAttentionOptions o;
///   o.hash = {attnkit::LshHashKind::angular, /*buckets=*/64, /*rounds=*/4, /*seed=*/1};
///   o.mask = attnkit::Mask::causal();
///   auto r = attnkit::lsh_attention(q, k, v, o);
/// \endcode
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> lsh_attention(const Eigen::MatrixBase<DQ>& q,
                                                   const Eigen::MatrixBase<DK>& k,
                                                   const Eigen::MatrixBase<DV>& v,
                                                   const LshAttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  // Shapes and mask first, so a bad call names lsh_attention and builds nothing.
  make_attention_problem("lsh_attention", q, k, v, {options.mask, options.scale});
  const LshIndex<Scalar> index(k, v, options.hash);
  return index.attend(q, {options.mask, options.scale, options.fallback});
}

}  // namespace attnkit
