#pragma once

/// \file attnkit/core/mask.hpp
/// Attention masks. Query row i sees at most two contiguous ranges of keys:
///
///   sinks [0, sink_end(i))   and   band [key_begin(i), key_end(i)),
///
/// so a mask is described by its kind, an offset, an optional window w and a
/// sink count s.
///
/// Layout: query row i is the token at position `offset + i` of the key
/// sequence (keys are positions 0 .. n_k - 1). The kind fixes where the band
/// ends, e(i) = key_end(i):
///  - `MaskKind::none`:          e(i) = n_k (every key);
///  - `MaskKind::causal`:        e(i) = i + offset + 1 (keys j <= i + offset);
///  - `MaskKind::strict_causal`: e(i) = i + offset (keys j < i + offset: x_a
///    uses q_{a+1} and the keys strictly before it).
/// A sliding window of w keys starts the band at b(i) = max(0, e(i) - w)
/// (without a window b(i) = 0): query i sees its w most recent visible keys.
/// Attention sinks keep the first s keys visible as well, as streaming LLM
/// inference does: query i also sees keys j < min(s, b(i)), so
///
///   visible(i, j)  <=>  j < e(i)  and  (j >= b(i)  or  j < s).
///
/// e, b and sink_end are non-decreasing in i, which is what lets the kernels
/// skip every tile outside a query block's band. With MaskKind::none and a
/// window every query sees the last w keys (and the sinks). Sinks without a
/// window change nothing (every key before e(i) is visible anyway).
///
/// The default offset is n_k - n_q: the queries are the LAST n_q tokens of the
/// key sequence (prefill when n_q == n_k, decode when n_q is small); MaskKind::
/// none takes no offset and places its queries the same way (query_position).
///
/// A layout is valid when every query position lies where its keys exist:
/// causal needs 0 <= offset <= n_k - n_q (a query's own key is present);
/// strict causal needs 0 <= offset <= n_k - n_q + 1 (its own key may not be
/// appended yet); a window must be >= 1 and the sinks in [0, n_k]. Other
/// values throw std::invalid_argument. A query that sees no key (strict
/// causal, position 0) is legal: its output row is zero and its log-sum-exp
/// is -infinity.

#include <algorithm>
#include <optional>
#include <string_view>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

enum class MaskKind { none, causal, strict_causal };

/// Name used in messages and on the command line: "none", "causal", "strict".
inline const char* to_string(MaskKind kind) {
  switch (kind) {
    case MaskKind::none:
      return "none";
    case MaskKind::causal:
      return "causal";
    case MaskKind::strict_causal:
      return "strict";
  }
  return "?";
}

/// Parses exactly the names of to_string(MaskKind).
inline std::optional<MaskKind> parse_mask_kind(std::string_view name) {
  for (const MaskKind k : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal})
    if (name == to_string(k)) return k;
  return std::nullopt;
}

/// The accepted names of parse_mask_kind, '|'-separated.
inline const char* mask_kind_names() {
  return "none|causal|strict";
}

/// A mask request: kind plus an optional offset (default n_k - n_q), an
/// optional sliding window and a number of attention sinks.
struct Mask {
  Mask() = default;
  Mask(MaskKind k, std::optional<Index> off = std::nullopt, std::optional<Index> w = std::nullopt,
       Index s = 0)
      : kind(k), offset(off), window(w), sinks(s) {}

  MaskKind kind = MaskKind::none;
  /// Position of query row 0 in the key sequence; std::nullopt = n_k - n_q.
  std::optional<Index> offset;
  /// Sliding window w >= 1: query i sees only keys [e(i) - w, e(i)) (plus
  /// the sinks); std::nullopt = no window.
  std::optional<Index> window;
  /// The first `sinks` keys stay visible to every query whose band they
  /// precede (0 = none).
  Index sinks = 0;

  static Mask none() { return {}; }
  static Mask causal(std::optional<Index> offset = std::nullopt) { return {MaskKind::causal, offset}; }
  static Mask strict_causal(std::optional<Index> offset = std::nullopt) {
    return {MaskKind::strict_causal, offset};
  }
  /// This mask with a sliding window of w keys.
  Mask with_window(Index w) const {
    Mask m = *this;
    m.window = w;
    return m;
  }
  /// This mask with s attention sinks.
  Mask with_sinks(Index s) const {
    Mask m = *this;
    m.sinks = s;
    return m;
  }
};

/// A mask bound to a problem size: answers "which keys does row i see?".
/// Obtain it from resolve_mask(), which validates the layout.
class MaskLayout {
 public:
  MaskKind kind() const { return kind_; }
  Index offset() const { return offset_; }
  Index n_q() const { return n_q_; }
  Index n_k() const { return n_k_; }
  /// The window w, or 0 when there is none.
  Index window() const { return window_; }
  Index sinks() const { return sinks_; }
  /// True when some query sees only part of its prefix (a window is set).
  bool banded() const { return window_ > 0; }

  /// Position of query row i in the key sequence: offset + i (for
  /// MaskKind::none, n_k - n_q + i).
  Index query_position(Index i) const { return kind_ == MaskKind::none ? n_k_ - n_q_ + i : offset_ + i; }

  /// End e(i) of query row i's band: it sees no key j >= key_end(i). O(1).
  Index key_end(Index i) const {
    switch (kind_) {
      case MaskKind::none:
        return n_k_;
      case MaskKind::causal:
        return std::clamp<Index>(i + offset_ + 1, 0, n_k_);
      case MaskKind::strict_causal:
        return std::clamp<Index>(i + offset_, 0, n_k_);
    }
    return n_k_;
  }

  /// Start b(i) of query row i's band: max(0, e(i) - w), or 0 without a window.
  Index key_begin(Index i) const { return window_ > 0 ? std::max<Index>(0, key_end(i) - window_) : 0; }

  /// Query row i also sees the sinks [0, sink_end(i)) = [0, min(s, b(i))).
  Index sink_end(Index i) const { return std::min(sinks_, key_begin(i)); }

  /// True when query i may see key j.
  bool visible(Index i, Index j) const { return j < key_end(i) && (j >= key_begin(i) || j < sinks_); }

  /// How many keys query row i sees.
  Index visible_count(Index i) const { return sink_end(i) + key_end(i) - key_begin(i); }

 private:
  friend MaskLayout resolve_mask(const Mask& mask, Index n_q, Index n_k);
  MaskLayout(MaskKind kind, Index offset, Index n_q, Index n_k, Index window, Index sinks)
      : kind_(kind), offset_(offset), n_q_(n_q), n_k_(n_k), window_(window), sinks_(sinks) {}

  MaskKind kind_;
  Index offset_;
  Index n_q_;
  Index n_k_;
  Index window_;
  Index sinks_;
};

/// Validates `mask` for n_q queries over n_k keys and binds it.
/// \throws std::invalid_argument if n_q or n_k is not positive, if an offset is
///         given with MaskKind::none, if the offset leaves no valid layout, if
///         the window is < 1 or the sinks are outside [0, n_k] (see the file
///         comment); the message names the value and the shapes.
inline MaskLayout resolve_mask(const Mask& mask, Index n_q, Index n_k) {
  if (n_q <= 0 || n_k <= 0) detail::fail("mask: n_q = ", n_q, " and n_k = ", n_k, " must both be positive");
  if (mask.window && *mask.window < 1)
    detail::fail("mask: window = ", *mask.window, " must be >= 1 (keys per query)");
  if (mask.sinks < 0 || mask.sinks > n_k)
    detail::fail("mask: sinks = ", mask.sinks, " must be in [0, n_k] = [0, ", n_k, "]");
  const Index window = mask.window.value_or(0);
  if (mask.kind == MaskKind::none) {
    if (mask.offset)
      detail::fail("mask: an offset (", *mask.offset,
                   ") was given with mask kind 'none', which has no offset");
    return MaskLayout(MaskKind::none, 0, n_q, n_k, window, mask.sinks);
  }
  const Index offset = mask.offset.value_or(n_k - n_q);
  const Index max_offset = mask.kind == MaskKind::causal ? n_k - n_q : n_k - n_q + 1;
  if (offset < 0 || offset > max_offset)
    detail::fail("mask: offset ", offset, " leaves no valid ", to_string(mask.kind),
                 " layout for n_q = ", n_q, " queries over n_k = ", n_k,
                 " keys (need 0 <= offset <= ", max_offset,
                 mask.offset ? "" : "; the default offset is n_k - n_q", ")");
  return MaskLayout(mask.kind, offset, n_q, n_k, window, mask.sinks);
}

}  // namespace attnkit
