#pragma once

/// \file attnkit/approx/result.hpp
/// What approx_attention returns: the output, its log-sum-exp, a proven
/// error bound per output entry, and counters of what the algorithm did.

#include <cstddef>

#include "attnkit/core/types.hpp"

namespace attnkit {

/// Counters of one approx_attention call. Key counts are summed over query
/// rows: a key a row sees is counted once, as exact, summarised or skipped.
struct ApproxStats {
  /// Keys attended exactly (the kernel): near the diagonal, opened leaves,
  /// blocks handed to the kernel whole, and rows recomputed exactly.
  double exact_keys = 0;
  /// Keys inside summarised nodes.
  double summarised_keys = 0;
  /// Keys inside skipped nodes.
  double skipped_keys = 0;
  /// (query group, block) pairs handed to the exact kernel whole because
  /// too little could be summarised or skipped.
  Index exact_blocks = 0;
  /// (query group, block) pairs traversed.
  Index traversed_blocks = 0;
  /// (query group, tree node) pairs whose bounds were evaluated.
  Index evaluated_nodes = 0;
  /// Rows recomputed exactly over their whole prefix (certified mode, when
  /// the combined bound missed the target), and of those recomputed in
  /// double because the Scalar kernel's own bound missed it too.
  Index repaired_rows = 0;
  Index double_rows = 0;
  /// max over entries of bound_rc / max_{visible j} |V_jc| (0/0 counts as
  /// 0): the eps the call actually achieved.
  double max_bound_ratio = 0;
  /// True when every bound_rc <= eps * max_{visible j} |V_jc|.
  bool within_eps = true;
  /// Bytes of the key summaries the call built (the peak: the index is
  /// built one level at a time and freed after it).
  std::size_t index_bytes = 0;
};

/// Output of approx_attention.
template <typename Scalar>
struct ApproxResult {
  /// (n_q x d_v) approximate attention output O'.
  RowMatrix<Scalar> output;
  /// (n_q) natural-log normaliser of each row's approximation (-inf for a
  /// row that sees no key).
  Vector<Scalar> lse;
  /// (n_q x d_v) proven bound: |O'_rc - O_rc| <= bound_rc, rounding included
  /// (NaN where column c of row r sees a non-finite value).
  RowMatrix<double> bound;
  /// (n_q) proven bound on |lse'_r - lse_r|.
  Vector<double> lse_bound;
  ApproxStats stats;
};

}  // namespace attnkit
