#pragma once

/// \file attnkit/approx/detail/context.hpp
/// The bound inputs of one approx_attention call, the per-row bookkeeping
/// and the per-thread workspace shared by its phases. Internal.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "attnkit/approx/detail/node_bounds.hpp"
#include "attnkit/approx/detail/row_accumulator.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/approx/result.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"

namespace attnkit::detail {

/// Share of eps the traversals may spend on closed nodes (the rest is left
/// for the exact parts' rounding and the combination's).
inline constexpr double approx_eps_share = 0.9;

/// Tile of every exact kernel call (the bound uses it).
inline constexpr Index approx_block_k = 128;

template <typename Scalar>
struct ApproxContext {
  const Scalar* q = nullptr;
  Index ldq = 0;
  const Scalar* k = nullptr;
  Index ldk = 0;
  const Scalar* v = nullptr;
  Index ldv = 0;
  Index n_q = 0, n_k = 0, d = 0, d_v = 0;
  double scale = 1;
  MaskLayout mask = resolve_mask(Mask::none(), 1, 1);
  const ApproxOptions* options = nullptr;
  bool certified = true;
  EstimateRule rule = EstimateRule::midpoint;
  int threads = 1;

  std::vector<Index> end;     ///< e(r): row r sees keys [0, e(r))
  std::vector<Index> far;     ///< F(r) = floor(e(r) / B_0) B_0: keys in whole blocks
  std::vector<double> qnorm;  ///< |scale q_r|
  std::vector<Index> sig;     ///< content signature of row r (grouping)
  RowMatrix<double> counts;   ///< (n_q x 3): exact, summarised, skipped keys
  std::vector<double> ratio;  ///< max_c bound_rc / max_j |v_jc| per row
  /// Per row: the bound already spent on closed nodes, in units of the
  /// row's mass (log-sum: kappa E + sum S~ rho tanh), and the keys of its
  /// blocks not yet traversed.
  std::vector<LogSum> spent;
  std::vector<Index> far_left;
  /// Per row: an estimate from below of log T, its total mass (the exact
  /// near part plus a Jensen bound of its whole blocks over a codebook,
  /// approx_mass_floor in approx_driver.hpp), -inf if none. It only steers
  /// the traversal's allowances (a block's share of eps T is then set
  /// against the row's whole mass, not against the part found so far); every
  /// reported bound comes from the parts themselves.
  std::vector<double> floor_low;
  /// Certified mode: the probe found no structure (approx_driver.hpp); every
  /// row is then computed by the kernel over its whole prefix.
  bool unstructured = false;
};

/// The nodes a traversal has evaluated ("entries"), one row per entry and
/// one column per query of the group: their bounds (node_bounds.hpp), the
/// cost of closing them and, once closed, each query's choice (1 = skip).
struct EntryTable {
  enum Column { lo, hi, est, delta, vt, vs, cskip, csumm, skip, columns };
  RowMatrix<double> col[columns];
  Index size = 0;
  void clear(Index m) {
    size = 0;
    for (RowMatrix<double>& c : col)
      if (c.cols() != m) c.resize(0, m);
  }
  /// Room for `more` entries (capacity doubles).
  void grow(Index more, Index m) {
    if (size + more <= col[0].rows()) return;
    const Index cap = std::max<Index>(2 * col[0].rows(), size + more);
    for (RowMatrix<double>& c : col)
      c.conservativeResize(cap, m);
  }
  auto operator()(Column c, Index e) { return col[c].row(e); }
  auto used(Column c) const { return col[c].topRows(size); }
};

/// Per-thread buffers.
template <typename Scalar>
struct ApproxWorkspace {
  RowMatrix<Scalar> qs;    ///< group queries
  RowMatrix<double> qhat;  ///< scale * qs
  GroupQueries gq;
  NodeEvalScratch scratch;
  NodeBatchBounds bounds;
  RowMatrix<Scalar> kbuf, vbuf, out;
  Vector<Scalar> lse;
  std::vector<double> xi;
  EntryTable entries;
  RowMatrix<double> gathered, weights;
  ApproxStats stats;
};

}  // namespace attnkit::detail
