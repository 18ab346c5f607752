#pragma once

/// \file attnkit/prune/selection.hpp
/// A choice of key dimensions to keep, the kept count D' = floor((1 - lambda) D),
/// and the quadratic objective every Gram-type selector minimises:
///
///   F(B) = sum_{i in B} sum_{j in B} W_ij,     B = the dropped dimensions.
///
/// With W = (Q^T Q) o (K^T K), F(B) = ||Q K^T - Q S K^T||_F^2 exactly (S the 0/1
/// diagonal selector of the kept set A); see docs/pruning.md for the other
/// weights.

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/position/rotary.hpp"

namespace attnkit {

/// D' = floor((1 - ratio) * d), the number of dimensions kept when a fraction
/// `ratio` (lambda) is pruned. A relative allowance of 1e-12 absorbs the binary
/// rounding of decimal ratios (lambda = 0.71, d = 100 gives 29, not 28).
/// \throws std::invalid_argument if d < 1, ratio is not in [0, 1) or D' = 0.
inline Index kept_dimension_count(Index d, double ratio) {
  if (d < 1) detail::fail("kept_dimension_count: d = ", d, " must be >= 1");
  if (!(ratio >= 0.0 && ratio < 1.0))
    detail::fail("kept_dimension_count: ratio lambda = ", ratio, " must be in [0, 1)");
  const double exact = (1.0 - ratio) * static_cast<double>(d);
  const auto kept = static_cast<Index>(std::floor(exact * (1.0 + 1e-12)));
  if (kept < 1)
    detail::fail("kept_dimension_count: D' = floor((1 - ", ratio, ") * ", d,
                 ") = 0; at least one dimension must be kept");
  return std::min(kept, d);
}

/// The kept dimensions A of a D-dimensional key (sorted ascending, distinct,
/// non-empty) and their complement B. Immutable after construction.
class DimSelection {
 public:
  /// An empty selection of dimension 0 (a placeholder; not valid for use).
  DimSelection() = default;

  /// \param dim D >= 1. \param kept indices in [0, D), distinct, at least one;
  ///        any order (they are sorted).
  /// \throws std::invalid_argument naming the offending index for an
  ///         out-of-range or repeated index, or for an empty kept set.
  DimSelection(Index dim, std::vector<Index> kept) : dim_(dim), kept_(std::move(kept)) {
    if (dim_ < 1) detail::fail("DimSelection: dim = ", dim_, " must be >= 1");
    if (kept_.empty()) detail::fail("DimSelection: no dimension kept (D' = 0) out of D = ", dim_);
    for (const Index i : kept_)
      if (i < 0 || i >= dim_)
        detail::fail("DimSelection: kept index ", i, " is out of range [0, ", dim_, ")");
    std::sort(kept_.begin(), kept_.end());
    for (std::size_t t = 1; t < kept_.size(); ++t)
      if (kept_[t] == kept_[t - 1]) detail::fail("DimSelection: kept index ", kept_[t], " is repeated");
    std::vector<bool> is_kept(static_cast<std::size_t>(dim_), false);
    for (const Index i : kept_)
      is_kept[static_cast<std::size_t>(i)] = true;
    for (Index i = 0; i < dim_; ++i)
      if (!is_kept[static_cast<std::size_t>(i)]) dropped_.push_back(i);
  }

  /// Every dimension kept (nothing pruned).
  static DimSelection all(Index dim) {
    std::vector<Index> kept(static_cast<std::size_t>(std::max<Index>(dim, 0)));
    for (Index i = 0; i < dim; ++i)
      kept[static_cast<std::size_t>(i)] = i;
    return DimSelection(dim, std::move(kept));
  }

  /// D, the full key width.
  Index dim() const { return dim_; }
  /// D' = |A|.
  Index kept_count() const { return static_cast<Index>(kept_.size()); }
  /// D - D' = |B|.
  Index dropped_count() const { return static_cast<Index>(dropped_.size()); }
  /// A, ascending.
  const std::vector<Index>& kept() const { return kept_; }
  /// B, ascending.
  const std::vector<Index>& dropped() const { return dropped_; }
  /// True if dimension i is kept. O(log D').
  bool keeps(Index i) const { return std::binary_search(kept_.begin(), kept_.end(), i); }

  friend bool operator==(const DimSelection& a, const DimSelection& b) {
    return a.dim_ == b.dim_ && a.kept_ == b.kept_;
  }
  friend bool operator!=(const DimSelection& a, const DimSelection& b) { return !(a == b); }

 private:
  Index dim_ = 0;
  std::vector<Index> kept_;
  std::vector<Index> dropped_;
};

/// Options shared by every selector.
struct SelectOptions {
  /// Keep rotary pairs together: both dimensions of each pair (in this layout,
  /// attnkit/position/rotary.hpp) are kept or dropped together. The kept
  /// count is then rounded down to even (floor(D'/2) pairs; at least one).
  /// std::nullopt (default): dimensions are independent.
  std::optional<RotaryLayout> rope_pairs{};
};

namespace detail {

/// Throws unless w is a non-empty, square, finite matrix.
template <typename Derived>
void require_weight_matrix(const char* where, const Eigen::MatrixBase<Derived>& w) {
  require_non_empty(where, "W", w);
  if (w.rows() != w.cols()) fail(where, ": W ", shape(w), " must be square (D x D)");
  if (!w.allFinite()) fail(where, ": W ", shape(w), " has a NaN or infinite entry");
}

}  // namespace detail

/// F(B) = sum_{i,j in B} W_ij for the dropped set B of `selection`, accumulated
/// in long double. O(|B|^2).
/// \throws std::invalid_argument if W is not square, finite, of size selection.dim().
template <typename Derived>
double selection_objective(const Eigen::MatrixBase<Derived>& w, const DimSelection& selection) {
  detail::require_weight_matrix("selection_objective", w);
  if (w.rows() != selection.dim())
    detail::fail("selection_objective: W ", detail::shape(w),
                 " does not match a selection of D = ", selection.dim());
  long double f = 0;
  for (const Index i : selection.dropped())
    for (const Index j : selection.dropped())
      f += static_cast<long double>(w(i, j));
  return static_cast<double>(f);
}

/// sum_{i,j} W_ij: the objective of dropping every dimension (the normaliser
/// of a relative objective F(B) / F(all)). Long double accumulation. O(D^2).
template <typename Derived>
double total_objective(const Eigen::MatrixBase<Derived>& w) {
  detail::require_weight_matrix("total_objective", w);
  long double f = 0;
  for (Index i = 0; i < w.rows(); ++i)
    for (Index j = 0; j < w.cols(); ++j)
      f += static_cast<long double>(w(i, j));
  return static_cast<double>(f);
}

}  // namespace attnkit
