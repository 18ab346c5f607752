#pragma once

/// \file attnkit/core/mask.hpp
/// Attention masks. Every mask attnkit supports lets query row i see a PREFIX
/// of the keys, [0, end(i)), so a mask is fully described by its kind and one
/// integer offset.
///
/// Layout: query row i is the token at position `offset + i` of the key
/// sequence (keys are positions 0 .. n_k - 1).
///  - `MaskKind::none`:          every query sees all n_k keys;
///  - `MaskKind::causal`:        query i sees keys j <= i + offset;
///  - `MaskKind::strict_causal`: query i sees keys j <  i + offset (seed note
///    004: x_a uses q_{a+1} and the keys strictly before it).
/// The default offset is n_k - n_q: the queries are the LAST n_q tokens of the
/// key sequence (prefill when n_q == n_k, decode when n_q is small).
///
/// A layout is valid when every query position lies where its keys exist:
/// causal needs 0 <= offset <= n_k - n_q (a query's own key is present);
/// strict causal needs 0 <= offset <= n_k - n_q + 1 (its own key may not be
/// appended yet). Other offsets throw std::invalid_argument. A query that sees
/// no key (strict causal, position 0) is legal: its output row is zero and its
/// log-sum-exp is -infinity.

#include <algorithm>
#include <optional>

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

/// A mask request: kind plus an optional offset (default n_k - n_q).
struct Mask {
  MaskKind kind = MaskKind::none;
  /// Position of query row 0 in the key sequence; std::nullopt = n_k - n_q.
  std::optional<Index> offset;

  static Mask none() { return {}; }
  static Mask causal(std::optional<Index> offset = std::nullopt) { return {MaskKind::causal, offset}; }
  static Mask strict_causal(std::optional<Index> offset = std::nullopt) {
    return {MaskKind::strict_causal, offset};
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

  /// Query row i sees keys [0, key_end(i)). O(1).
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

  /// True when query i may see key j.
  bool visible(Index i, Index j) const { return j < key_end(i); }

 private:
  friend MaskLayout resolve_mask(const Mask& mask, Index n_q, Index n_k);
  MaskLayout(MaskKind kind, Index offset, Index n_q, Index n_k)
      : kind_(kind), offset_(offset), n_q_(n_q), n_k_(n_k) {}

  MaskKind kind_;
  Index offset_;
  Index n_q_;
  Index n_k_;
};

/// Validates `mask` for n_q queries over n_k keys and binds it.
/// \throws std::invalid_argument if n_q or n_k is not positive, if an offset is
///         given with MaskKind::none, or if the offset leaves no valid layout
///         (see the file comment); the message names the offset and the shapes.
inline MaskLayout resolve_mask(const Mask& mask, Index n_q, Index n_k) {
  if (n_q <= 0 || n_k <= 0) detail::fail("mask: n_q = ", n_q, " and n_k = ", n_k, " must both be positive");
  if (mask.kind == MaskKind::none) {
    if (mask.offset)
      detail::fail("mask: an offset (", *mask.offset,
                   ") was given with mask kind 'none', which has no offset");
    return MaskLayout(MaskKind::none, 0, n_q, n_k);
  }
  const Index offset = mask.offset.value_or(n_k - n_q);
  const Index max_offset = mask.kind == MaskKind::causal ? n_k - n_q : n_k - n_q + 1;
  if (offset < 0 || offset > max_offset)
    detail::fail("mask: offset ", offset, " leaves no valid ", to_string(mask.kind),
                 " layout for n_q = ", n_q, " queries over n_k = ", n_k,
                 " keys (need 0 <= offset <= ", max_offset,
                 mask.offset ? "" : "; the default offset is n_k - n_q", ")");
  return MaskLayout(mask.kind, offset, n_q, n_k);
}

}  // namespace attnkit
