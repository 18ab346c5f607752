#pragma once

/// \file attnkit/prune/cache.hpp
/// A key cache whose older tokens are stored with only the D' kept dimensions.
///
/// Tokens are kept in sequence order, token j at position j:
///  - the compressed part: tokens [0, n_c), their kept columns k_A (n_c x D'),
///    plus the compensation (offset, M) fitted on their full keys;
///  - the window: the most recent tokens [n_c, size), at full dimension (n_w x D).
/// A compressed token's logit uses the compensated restricted query, a window
/// token's the full query (attnkit/prune/compensation.hpp):
///
///   z_j = scale * ((c q_A + M^T q_B) . k_{j,A} + q_B . offset)   for j <  n_c,
///   z_j = scale * q . k_j                                        for j >= n_c,
///
/// scale defaulting to 1/sqrt(D) (D, not D'), c = sqrt(D / D') with scale
/// correction and 1 otherwise. When nothing is pruned (D' = D) both are the
/// exact logit and attention over the cache equals reference_attention up to
/// the final rounding (tested).
///
/// Appending: new keys enter the window at full dimension. With
/// compress_overflow (default) the window holds at most `recent` tokens and the
/// oldest are compressed as new ones arrive; otherwise appended tokens stay at
/// full dimension (the evaluation protocol of docs/pruning.md).
///
/// Refit schedule: when a compensation is on and refit_growth is set, the cache
/// keeps the mean and centred scatter of ALL compressed keys (D + D^2 doubles),
/// updated exactly (Chan et al. merge, O(D^2) per compressed token) as tokens
/// are compressed, and refits the compensation (O(D^3)) whenever the number of
/// compressed tokens reaches refit_growth times the count of the last fit (at
/// least 1), or on refit(). Refitting changes only the offset and M, which act
/// through the query, so it applies to every compressed token at once; stored
/// keys and the selection never change.
///
/// Attention runs through the fused kernel (attnkit/attention/flash.hpp) as
/// two partial results merged exactly (attnkit/attention/merge.hpp): the
/// compressed tokens with the folded query q'_A = c q_A + M^T q_B (D' columns,
/// the per-row constant scale q_B . offset added to that part's log-sum-exp)
/// and the window tokens at full dimension. It reads D' + d_v numbers per
/// compressed token instead of D + d_v, in the input's precision, with the
/// kernel's accuracy (docs/flash.md). logits() is computed in the wide type,
/// for analysis.
///
/// Thread safety: const member functions may run concurrently; append(),
/// refit() and assignment need exclusive access.

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/core/softmax.hpp"
#include "attnkit/detail/wider.hpp"
#include "attnkit/prune/compensation.hpp"
#include "attnkit/prune/detail/row_buffer.hpp"
#include "attnkit/prune/selection.hpp"
#include "attnkit/prune/statistics.hpp"

namespace attnkit {

/// Options of PrunedKeyCache.
struct PrunedCacheOptions {
  /// r: the number of most recent tokens kept at full dimension (>= 0).
  Index recent = 32;
  /// Which compensation to fit on the compressed keys.
  PruneCompensation compensation = PruneCompensation::none;
  /// Compensation fit options (the ridge).
  CompensationOptions fit{};
  /// Multiply the kept-dimension part of compressed logits by sqrt(D / D').
  bool scale_correction = false;
  /// True: the window holds at most `recent` tokens and appends compress the
  /// oldest. False: appended tokens stay at full dimension.
  bool compress_overflow = true;
  /// Refit the compensation when the number of compressed tokens has grown by
  /// this factor (> 1) since the last fit; std::nullopt: never refit and keep
  /// no statistics. Ignored without a compensation.
  std::optional<double> refit_growth = 2.0;
};

/// Exact byte counts of a PrunedKeyCache's contents.
struct PrunedCacheMemory {
  /// The same tokens' keys at full width: size() * D * sizeof(Storage) ("before").
  std::size_t unpruned_bytes = 0;
  /// Compressed keys, n_c * D' * sizeof(Storage).
  std::size_t compressed_key_bytes = 0;
  /// Window keys, n_w * D * sizeof(Storage).
  std::size_t window_key_bytes = 0;
  /// Offset and M, in Scalar.
  std::size_t compensation_bytes = 0;
  /// The kept and dropped index lists (D * sizeof(Index)).
  std::size_t selection_bytes = 0;
  /// Refit statistics (D + D^2 doubles), 0 when refits are off.
  std::size_t statistics_bytes = 0;
  /// Heap actually allocated for the key storage (valid rows plus spare
  /// capacity of the growable buffers).
  std::size_t allocated_key_bytes = 0;

  /// Everything the pruned cache stores ("after").
  std::size_t total_bytes() const {
    return compressed_key_bytes + window_key_bytes + compensation_bytes + selection_bytes + statistics_bytes;
  }
};

/// \tparam Scalar the type of the queries, values, compensation and results
///         (float or double); \tparam Storage the type the keys are stored in:
///         Scalar (default) or a 16-bit type (Eigen::half, Eigen::bfloat16,
///         with Scalar = float), rounded once to nearest when they enter the
///         cache (attnkit/attention/kv_cache.hpp states the rounding).
template <typename Scalar, typename Storage = Scalar>
class PrunedKeyCache {
  static_assert(std::is_floating_point_v<Scalar>, "PrunedKeyCache needs a floating-point Scalar");
  static_assert(
      std::is_same_v<Storage, Scalar> || (detail::is_16bit_float_v<Storage> && std::is_same_v<Scalar, float>),
      "PrunedKeyCache stores its keys as Scalar, or as Eigen::half / Eigen::bfloat16 with Scalar = float");

 public:
  using Wide = detail::wider_t<Scalar>;

  /// Builds the cache from `keys` (n x D, the first n tokens): the last
  /// min(recent, n) at full dimension, the others compressed to the kept
  /// columns of `selection`, the compensation fitted on the compressed keys.
  /// O(n D^2 + D^3) with a compensation, O(n D) without.
  /// \throws std::invalid_argument if the widths differ, recent < 0, the ridge
  ///         is invalid or refit_growth <= 1.
  template <typename Derived>
  PrunedKeyCache(const Eigen::MatrixBase<Derived>& keys, DimSelection selection,
                 const PrunedCacheOptions& options = {})
      : PrunedKeyCache(keys, std::move(selection), options, nullptr) {}

  /// As above, with the statistics of the compressed rows keys[0, n - recent)
  /// already computed (key_statistics); they are not recomputed.
  /// \throws std::invalid_argument also if their count or width do not match.
  template <typename Derived>
  PrunedKeyCache(const Eigen::MatrixBase<Derived>& keys, DimSelection selection,
                 const PrunedCacheOptions& options, const KeyStatistics& compressed_statistics)
      : PrunedKeyCache(keys, std::move(selection), options, &compressed_statistics) {}

  /// Number of tokens (compressed + window).
  Index size() const { return compressed_.rows() + window_.rows(); }
  /// n_c, the compressed tokens [0, n_c).
  Index compressed_size() const { return compressed_.rows(); }
  /// n_w, the full-dimension tokens [n_c, size()).
  Index window_size() const { return window_.rows(); }
  /// D.
  Index dim() const { return selection_.dim(); }
  /// D'.
  Index kept_dim() const { return selection_.kept_count(); }
  const DimSelection& selection() const { return selection_; }
  const Compensation<Scalar>& compensation() const { return compensation_; }
  const PrunedCacheOptions& options() const { return options_; }
  /// (n_c x D') the stored kept columns of the compressed tokens.
  auto compressed_keys() const { return compressed_.view(); }
  /// (n_w x D) the window tokens.
  auto window_keys() const { return window_.view(); }
  /// The number of compressed tokens the current compensation was fitted on.
  Index fitted_count() const { return fitted_count_; }
  /// c: sqrt(D / D') with scale correction, else 1.
  double kept_scale() const { return kept_scale_; }

  /// Appends tokens (rows of `keys`, width D) at full dimension; with
  /// compress_overflow the oldest window tokens beyond `recent` are compressed
  /// (and the compensation refitted on schedule). O(rows D^2) with refit
  /// statistics, O(rows D) otherwise, plus O(D^3) per refit.
  /// \throws std::invalid_argument if the width differs (nothing is changed).
  template <typename Derived>
  void append(const Eigen::MatrixBase<Derived>& keys) {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>, "keys must have the cache's Scalar type");
    if (keys.cols() != dim())
      detail::fail("PrunedKeyCache::append: keys ", detail::shape(keys),
                   " must have the cache's width D = ", dim());
    window_.append(keys);
    if (!options_.compress_overflow || window_.rows() <= options_.recent) return;
    const Index overflow = window_.rows() - options_.recent;
    const RowMatrix<Scalar> moving = window_.view().topRows(overflow).template cast<Scalar>();
    compress_rows(moving);
    window_.drop_front(overflow);
    if (stats_ && static_cast<double>(stats_->count) >=
                      *options_.refit_growth * static_cast<double>(std::max<Index>(fitted_count_, 1)))
      refit();
  }

  /// Refits the compensation on all compressed tokens now (a no-op without
  /// refit statistics). O(D^3).
  void refit() {
    if (!stats_) return;
    compensation_ = fit_compensation<Scalar>(*stats_, selection_, options_.compensation, options_.fit);
    fitted_count_ = stats_->count;
  }

  /// The logits z (n_q x size()) of `queries` (n_q x D) against every cached
  /// token, as in the file comment, no mask. Wide accumulation, rounded once.
  /// \param scale std::nullopt = 1/sqrt(D); finite and > 0.
  /// \throws std::invalid_argument for an empty cache, empty queries, a width
  ///         other than D, or a bad scale.
  template <typename DQ>
  RowMatrix<Scalar> logits(const Eigen::MatrixBase<DQ>& queries, std::optional<double> scale = {}) const {
    const char* where = "PrunedKeyCache::logits";
    check_queries(where, queries);
    const Wide s = static_cast<Wide>(resolve_scale(where, scale));
    const Operands ops = operands();
    RowMatrix<Scalar> out(queries.rows(), size());
    for (Index r0 = 0; r0 < queries.rows(); r0 += block_rows) {
      const Index rows = std::min(block_rows, queries.rows() - r0);
      out.middleRows(r0, rows) = block_logits(ops, queries.middleRows(r0, rows), s).template cast<Scalar>();
    }
    return out;
  }

  /// Attention of `queries` (n_q x D) over the cached tokens with `values`
  /// (size() x d_v, row j = token j's value): O = softmax(z + mask) V and the
  /// per-row log-sum-exp, with z as in the file comment and the masks and
  /// conventions of attnkit/attention/problem.hpp (query row i is token
  /// offset + i; the default offset puts the queries at the end). Computed by
  /// the fused kernel (see the file comment), threads from `config`.
  /// O(n_q (n_c (D' + d_v) + n_w (D + d_v)) + n_q |B| D') time.
  /// \throws std::invalid_argument for an empty cache, empty or mis-shaped
  ///         queries or values, a bad scale or mask, or a bad config.
  template <typename DQ, typename DV>
  AttentionResult<Scalar> attention(const Eigen::MatrixBase<DQ>& queries, const Eigen::MatrixBase<DV>& values,
                                    const AttentionOptions& options = {},
                                    const FlashConfig& config = {}) const {
    static_assert(std::is_same_v<typename DV::Scalar, Scalar>, "values must have the cache's Scalar type");
    const char* where = "PrunedKeyCache::attention";
    check_queries(where, queries);
    detail::require_non_empty(where, "values", values);
    if (values.rows() != size())
      detail::fail(where, ": values ", detail::shape(values), " must have one row per cached token (", size(),
                   ")");
    AttentionOptions part = options;
    part.scale = resolve_scale(where, options.scale);
    resolve_mask(options.mask, queries.rows(), size());  // validated once, named for this call
    const Index n_c = compressed_.rows(), n_w = window_.rows();
    const Eigen::Ref<const RowMatrix<Scalar>> q(queries);
    const Eigen::Ref<const RowMatrix<Scalar>> v(values);
    std::optional<AttentionResult<Scalar>> result;
    if (n_c > 0) {
      Vector<Scalar> constant;
      const RowMatrix<Scalar> folded = fold_queries(q, *part.scale, constant);
      KeySet keys;
      keys.sequence_length = size();
      result = flash_attention_partial(folded, compressed_.view(), v.topRows(n_c), keys, part, config);
      if (constant.size() > 0)
        for (Index i = 0; i < q.rows(); ++i)
          if (result->lse(i) != -std::numeric_limits<Scalar>::infinity()) result->lse(i) += constant(i);
    }
    if (n_w > 0) {
      KeySet keys;
      keys.first_position = n_c;
      keys.sequence_length = size();
      AttentionResult<Scalar> window =
          flash_attention_partial(q, window_.view(), v.bottomRows(n_w), keys, part, config);
      if (result)
        merge_attention_into(*result, window);
      else
        result = std::move(window);
    }
    return std::move(*result);
  }

  /// Exact byte counts (see PrunedCacheMemory).
  PrunedCacheMemory memory() const {
    PrunedCacheMemory m;
    m.unpruned_bytes = sizeof(Storage) * static_cast<std::size_t>(size() * dim());
    m.compressed_key_bytes = compressed_.bytes();
    m.window_key_bytes = window_.bytes();
    m.compensation_bytes = compensation_.bytes();
    m.selection_bytes = sizeof(Index) * static_cast<std::size_t>(dim());
    m.statistics_bytes =
        stats_ ? sizeof(double) * static_cast<std::size_t>(stats_->mean.size() + stats_->scatter.size()) : 0;
    m.allocated_key_bytes = compressed_.allocated_bytes() + window_.allocated_bytes();
    return m;
  }

 private:
  static constexpr Index block_rows = 64;

  /// Wide copies of everything a logit needs, made once per call.
  struct Operands {
    RowMatrix<Wide> compressed;    // (n_c x D')
    RowMatrix<Wide> window;        // (n_w x D)
    RowMatrix<Wide> coefficients;  // (|B| x D') or empty
    Vector<Wide> offset;           // (|B|) or empty
  };

  template <typename Derived>
  PrunedKeyCache(const Eigen::MatrixBase<Derived>& keys, DimSelection selection,
                 const PrunedCacheOptions& options, const KeyStatistics* given)
      : selection_(std::move(selection)),
        options_(options),
        compressed_(selection_.kept_count()),
        window_(selection_.dim()) {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>, "keys must have the cache's Scalar type");
    const char* where = "PrunedKeyCache";
    if (selection_.dim() < 1) detail::fail(where, ": the selection is empty (default-constructed)");
    if (keys.cols() != selection_.dim())
      detail::fail(where, ": keys ", detail::shape(keys),
                   " do not match a selection of D = ", selection_.dim());
    if (options_.recent < 0) detail::fail(where, ": recent = ", options_.recent, " must be >= 0");
    detail::check_ridge(where, options_.fit.ridge);
    if (options_.refit_growth && !(std::isfinite(*options_.refit_growth) && *options_.refit_growth > 1.0))
      detail::fail(where, ": refit_growth = ", *options_.refit_growth, " must be finite and > 1");
    kept_scale_ =
        options_.scale_correction
            ? std::sqrt(static_cast<double>(selection_.dim()) / static_cast<double>(selection_.kept_count()))
            : 1.0;
    const Index n = keys.rows();
    const Index n_c = std::max<Index>(0, n - options_.recent);
    const bool with_comp = options_.compensation != PruneCompensation::none;
    KeyStatistics stats;
    if (with_comp) {
      if (given) {
        if (given->count != n_c || given->dim() != selection_.dim())
          detail::fail(where, ": the given statistics (count ", given->count, ", width ", given->dim(),
                       ") do not describe the ", n_c, " compressed rows of width ", selection_.dim());
        stats = *given;
      } else {
        stats = key_statistics(keys.topRows(n_c));
      }
    }
    if (with_comp)
      compensation_ = fit_compensation<Scalar>(stats, selection_, options_.compensation, options_.fit);
    fitted_count_ = n_c;
    if (with_comp && options_.refit_growth) stats_ = std::move(stats);
    append_compressed(keys.topRows(n_c));
    window_.append(keys.bottomRows(n - n_c));
  }

  template <typename Derived>
  void append_compressed(const Eigen::MatrixBase<Derived>& rows) {
    if (rows.rows() == 0) return;
    RowMatrix<Scalar> kept(rows.rows(), kept_dim());
    for (Index t = 0; t < kept_dim(); ++t)
      kept.col(t) = rows.col(selection_.kept()[static_cast<std::size_t>(t)]);
    compressed_.append(kept);
  }

  void compress_rows(const RowMatrix<Scalar>& rows) {
    append_compressed(rows);
    if (stats_) stats_->merge(key_statistics(rows));
  }

  template <typename DQ>
  void check_queries(const char* where, const Eigen::MatrixBase<DQ>& queries) const {
    static_assert(std::is_same_v<typename DQ::Scalar, Scalar>, "queries must have the cache's Scalar type");
    detail::require_non_empty(where, "queries", queries);
    if (size() == 0) detail::fail(where, ": the cache holds no token");
    if (queries.cols() != dim())
      detail::fail(where, ": queries ", detail::shape(queries), " must have the cache's width D = ", dim());
  }

  double resolve_scale(const char* where, std::optional<double> scale) const {
    const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(dim())));
    if (!(std::isfinite(s) && s > 0)) detail::fail(where, ": scale = ", s, " must be finite and > 0");
    return s;
  }

  Operands operands() const {
    Operands ops;
    ops.compressed = compressed_.view().template cast<Wide>();
    ops.window = window_.view().template cast<Wide>();
    ops.coefficients = compensation_.coefficients.template cast<Wide>();
    ops.offset = compensation_.offset.template cast<Wide>();
    return ops;
  }

  /// The compressed part's queries q'_A = c q_A + M^T q_B (n_q x D') and,
  /// with a compensation, the per-row constants scale q_B . offset.
  RowMatrix<Scalar> fold_queries(const Eigen::Ref<const RowMatrix<Scalar>>& q, double scale,
                                 Vector<Scalar>& constant) const {
    const Index rows = q.rows(), na = kept_dim(), nb = selection_.dropped_count();
    RowMatrix<Scalar> qa(rows, na);
    for (Index t = 0; t < na; ++t)
      qa.col(t) = q.col(selection_.kept()[static_cast<std::size_t>(t)]);
    if (kept_scale_ != 1.0) qa *= static_cast<Scalar>(kept_scale_);
    if (compensation_.kind == PruneCompensation::none || nb == 0) return qa;
    RowMatrix<Scalar> qb(rows, nb);
    for (Index t = 0; t < nb; ++t)
      qb.col(t) = q.col(selection_.dropped()[static_cast<std::size_t>(t)]);
    if (compensation_.kind == PruneCompensation::regression) qa.noalias() += qb * compensation_.coefficients;
    constant = static_cast<Scalar>(scale) * (qb * compensation_.offset);
    return qa;
  }

  /// Scaled logits (rows x size()) of a block of queries, in the wide type.
  template <typename DQ>
  RowMatrix<Wide> block_logits(const Operands& ops, const Eigen::MatrixBase<DQ>& q, Wide s) const {
    const Index rows = q.rows(), n_c = compressed_.rows();
    const RowMatrix<Wide> qw = q.template cast<Wide>();
    RowMatrix<Wide> z(rows, size());
    if (n_c > 0) {
      const Index na = kept_dim(), nb = selection_.dropped_count();
      RowMatrix<Wide> qa(rows, na), qb(rows, nb);
      for (Index t = 0; t < na; ++t)
        qa.col(t) = qw.col(selection_.kept()[static_cast<std::size_t>(t)]);
      for (Index t = 0; t < nb; ++t)
        qb.col(t) = qw.col(selection_.dropped()[static_cast<std::size_t>(t)]);
      qa *= static_cast<Wide>(kept_scale_);
      Vector<Wide> constant = Vector<Wide>::Zero(rows);
      if (compensation_.kind == PruneCompensation::regression) qa.noalias() += qb * ops.coefficients;
      if (compensation_.kind != PruneCompensation::none) constant = qb * ops.offset;
      z.leftCols(n_c).noalias() = qa * ops.compressed.transpose();
      z.leftCols(n_c).colwise() += constant;
      z.leftCols(n_c) *= s;
    }
    if (window_.rows() > 0) {
      z.rightCols(window_.rows()).noalias() = qw * ops.window.transpose();
      z.rightCols(window_.rows()) *= s;
    }
    return z;
  }

  DimSelection selection_;
  PrunedCacheOptions options_;
  detail::RowBuffer<Storage> compressed_;
  detail::RowBuffer<Storage> window_;
  Compensation<Scalar> compensation_;
  std::optional<KeyStatistics> stats_;
  Index fitted_count_ = 0;
  double kept_scale_ = 1.0;
};

}  // namespace attnkit
