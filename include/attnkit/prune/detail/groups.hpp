#pragma once

/// \file attnkit/prune/detail/groups.hpp
/// Selection units. Without rotary pairs every dimension is its own group;
/// with them each group is one rotary pair, and a selector works on the
/// reduced weight matrix Wg(a, b) = sum_{i in a, j in b} W_ij, whose objective
/// over groups equals F over their dimensions.

#include <optional>
#include <utility>
#include <vector>

#include "attnkit/prune/selection.hpp"

namespace attnkit::detail {

/// The groups of a D-dimensional key.
struct DimGroups {
  Index dim = 0;
  /// members[g] = the dimensions of group g (one, or a rotary pair).
  std::vector<std::vector<Index>> members;
  /// group_of[i] = the group of dimension i.
  std::vector<Index> group_of;

  Index size() const { return static_cast<Index>(members.size()); }
  Index width() const { return members.empty() ? 1 : static_cast<Index>(members.front().size()); }
};

/// Singletons, or the D/2 rotary pairs of `layout` (pair p is group p).
/// \throws std::invalid_argument for an odd D with rotary pairs.
inline DimGroups make_groups(const char* where, Index dim, std::optional<RotaryLayout> pairs) {
  DimGroups g;
  g.dim = dim;
  g.group_of.assign(static_cast<std::size_t>(dim), 0);
  if (!pairs) {
    for (Index i = 0; i < dim; ++i) {
      g.members.push_back({i});
      g.group_of[static_cast<std::size_t>(i)] = i;
    }
    return g;
  }
  if (dim % 2 != 0)
    fail(where, ": rotary pairs (", to_string(*pairs), ") need an even key width, got D = ", dim);
  for (Index p = 0; p < dim / 2; ++p) {
    const auto [a, b] = rotary_pair_dims(p, dim, *pairs);
    g.members.push_back({a, b});
    g.group_of[static_cast<std::size_t>(a)] = p;
    g.group_of[static_cast<std::size_t>(b)] = p;
  }
  return g;
}

/// Number of whole groups kept for a request of `kept` dimensions.
/// \throws std::invalid_argument if kept is not in [1, D] or rounds to no group.
inline Index kept_groups(const char* where, const DimGroups& g, Index kept) {
  if (kept < 1 || kept > g.dim)
    fail(where, ": kept = ", kept, " dimensions must be in [1, D] = [1, ", g.dim, "]");
  const Index k = kept / g.width();
  if (k < 1) fail(where, ": kept = ", kept, " dimension cannot hold a whole rotary pair; keep at least 2");
  return k;
}

/// The symmetrised reduced matrix Wg(a, b) = sum_{i in a, j in b} (W_ij + W_ji) / 2
/// in double. The objective only sees the symmetric part of W.
template <typename Derived>
RowMatrix<double> group_matrix(const Eigen::MatrixBase<Derived>& w, const DimGroups& g) {
  const Index n = g.size();
  RowMatrix<double> wg = RowMatrix<double>::Zero(n, n);
  for (Index a = 0; a < n; ++a)
    for (Index b = 0; b < n; ++b) {
      double s = 0;
      for (const Index i : g.members[static_cast<std::size_t>(a)])
        for (const Index j : g.members[static_cast<std::size_t>(b)])
          s += 0.5 * (static_cast<double>(w(i, j)) + static_cast<double>(w(j, i)));
      wg(a, b) = s;
    }
  return wg;
}

/// The selection keeping exactly the dimensions of the groups flagged in `kept`.
inline DimSelection expand_groups(const DimGroups& g, const std::vector<bool>& kept) {
  std::vector<Index> dims;
  for (Index a = 0; a < g.size(); ++a)
    if (kept[static_cast<std::size_t>(a)])
      for (const Index i : g.members[static_cast<std::size_t>(a)])
        dims.push_back(i);
  return DimSelection(g.dim, std::move(dims));
}

/// Group membership of a selection; throws if it splits a group.
inline std::vector<bool> selection_groups(const char* where, const DimGroups& g, const DimSelection& s) {
  if (s.dim() != g.dim) fail(where, ": selection of D = ", s.dim(), " does not match D = ", g.dim);
  std::vector<bool> kept(static_cast<std::size_t>(g.size()), false);
  for (const Index i : s.kept())
    kept[static_cast<std::size_t>(g.group_of[static_cast<std::size_t>(i)])] = true;
  for (Index a = 0; a < g.size(); ++a) {
    const auto& m = g.members[static_cast<std::size_t>(a)];
    if (m.size() == 2 && s.keeps(m[0]) != s.keeps(m[1]))
      fail(where, ": the selection splits the rotary pair (", m[0], ", ", m[1],
           "); with rope_pairs both must be kept or dropped");
  }
  return kept;
}

}  // namespace attnkit::detail
