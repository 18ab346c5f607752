#pragma once

/// \file attnkit/approx/key_index.hpp
/// A key index for approximate attention that grows with the sequence
/// (decoding): keys and values are appended, and queries attend to the
/// keys held so far with the bounds of approx_attention
/// (attnkit/approx/approx_attention.hpp, docs/approx.md).
///
/// Layout: the index keeps the keys and values (owned copies, capacity
/// doubling) and, for c = floor(size / B_0) whole chunks of B_0 =
/// layout.block keys, the dyadic blocks of the binary-counter decomposition
/// of c: one block of B_0 2^l keys per set bit l of c, each with its tree and
/// node summaries (detail/key_block.hpp). A query at the end of the sequence
/// sees exactly these blocks plus the fewer than B_0 newest keys, which are
/// attended exactly. Appending a key never rebuilds the index: when c grows,
/// only the blocks of c's new decomposition are built (the carry of a binary
/// counter: the block for the lowest set bit, B_0 2^l keys when l bits
/// carry) and the blocks it no longer uses are freed. Amortised cost per
/// appended key: O(log(size / B_0)) key summaries, i.e. O(d^2 log n) with
/// the principal-axes basis; memory about (2 size / G)(5 d + 3 d_v + 6)
/// doubles for the summaries plus the keys and values.
///
/// Queries that are not at the end of the sequence (a causal prefill over
/// the index) are answered too: a block of their prefix that the index no
/// longer holds is attended exactly, so the bounds hold, only the speed
/// differs.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/approx/detail/approx_driver.hpp"
#include "attnkit/approx/detail/setup.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/approx/result.hpp"

namespace attnkit {

namespace detail {

/// The blocks an ApproxKeyIndex holds, as a BlockSource for the driver.
class HeldBlockSource final : public BlockSource {
 public:
  explicit HeldBlockSource(const std::vector<KeyBlock>& blocks) : blocks_(blocks) {}
  void prepare(Index, const std::vector<Index>&, int) override {}
  const KeyBlock* find(Index level, Index m) const override {
    for (const KeyBlock& b : blocks_)
      if (b.level == level && b.index == m) return &b;
    return nullptr;
  }
  void release(Index) override {}
  std::size_t peak_bytes() const override {
    std::size_t bytes = 0;
    for (const KeyBlock& b : blocks_)
      bytes += b.bytes();
    return bytes;
  }

 private:
  const std::vector<KeyBlock>& blocks_;
};

}  // namespace detail

/// A growing key index (see the file comment). Scalar: float or double.
template <typename Scalar>
class ApproxKeyIndex {
 public:
  /// An empty index for keys of width d and values of width d_v.
  /// \throws std::invalid_argument if d or d_v < 1 or the layout is invalid.
  ApproxKeyIndex(Index d, Index d_v, const ApproxIndexOptions& layout = {})
      : d_(d), d_v_(d_v), layout_(layout) {
    detail::approx_check_scalar<Scalar>();
    if (d < 1 || d_v < 1) detail::fail("ApproxKeyIndex: d = ", d, " and d_v = ", d_v, " must be >= 1");
    detail::check_index_options("ApproxKeyIndex", layout);
    keys_.resize(0, d);
    values_.resize(0, d_v);
  }

  Index size() const { return size_; }
  Index d() const { return d_; }
  Index d_v() const { return d_v_; }
  const ApproxIndexOptions& layout() const { return layout_; }
  /// Blocks held: one per set bit of size() / layout().block.
  Index blocks() const { return static_cast<Index>(blocks_.size()); }
  /// Key summaries built so far, in keys (each build counts its block's size).
  Index keys_summarised() const { return built_keys_; }
  /// Bytes of the summaries held.
  std::size_t index_bytes() const { return detail::HeldBlockSource(blocks_).peak_bytes(); }

  /// Appends keys (n x d) and values (n x d_v) at the end of the sequence
  /// and builds the blocks the new length needs (see the file comment).
  /// \throws std::invalid_argument (nothing appended) for wrong widths,
  ///         differing row counts or a non-finite key.
  template <typename DK, typename DV>
  void append(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    const char* where = "ApproxKeyIndex::append";
    if (k.cols() != d_ || v.cols() != d_v_ || k.rows() != v.rows())
      detail::fail(where, ": keys ", detail::shape(k), " and values ", detail::shape(v),
                   " must be (n x d) and (n x d_v) with d = ", d_, ", d_v = ", d_v_);
    const RowMatrix<Scalar> kc = k.template cast<Scalar>(), vc = v.template cast<Scalar>();
    detail::require_finite(where, "K", kc);
    const Index n = k.rows();
    if (n > std::numeric_limits<Index>::max() / 2 - size_)
      detail::fail(where, ": ", n, " rows overflow the index");
    if (size_ + n > keys_.rows()) {
      const Index cap = std::max(size_ + n, 2 * keys_.rows());
      detail::checked_product(where, "capacity x d", cap, d_);
      detail::checked_product(where, "capacity x d_v", cap, d_v_);
      keys_.conservativeResize(cap, d_);
      values_.conservativeResize(cap, d_v_);
    }
    keys_.middleRows(size_, n) = kc;
    values_.middleRows(size_, n) = vc;
    size_ += n;
    update_blocks();
  }

  /// Attention of q (n_q x d) over the keys held, with the bounds and modes
  /// of approx_attention. options.index is ignored (the index's layout
  /// applies); the default mask offset places the queries at the end of the
  /// sequence (causal: their keys appended first; strict causal with
  /// offset = size(): the next tokens).
  /// \throws std::invalid_argument if the index is empty and as approx_attention.
  template <typename DQ>
  ApproxResult<Scalar> attend(const Eigen::MatrixBase<DQ>& q, const ApproxOptions& options = {}) const {
    static_assert(std::is_same_v<Scalar, typename DQ::Scalar>,
                  "ApproxKeyIndex::attend: Q must be of the index's type");
    if (size_ == 0) detail::fail("ApproxKeyIndex::attend: the index is empty (no key to attend to)");
    ApproxOptions opt = options;
    opt.index = layout_;
    const Eigen::Ref<const RowMatrix<Scalar>> qr(q);
    const Eigen::Ref<const RowMatrix<Scalar>> kr(keys_.topRows(size_)), vr(values_.topRows(size_));
    detail::ApproxContext<Scalar> ctx =
        detail::approx_context<Scalar>("ApproxKeyIndex::attend", qr, kr, vr, opt);
    ApproxResult<Scalar> res = detail::approx_allocate<Scalar>(ctx.n_q, ctx.d_v);
    detail::HeldBlockSource source(blocks_);
    detail::approx_run(ctx, source, res);
    return res;
  }

 private:
  /// Builds the blocks of the decomposition of size / B_0 that are missing
  /// and frees the others.
  void update_blocks() {
    const Index b0 = layout_.block, c = size_ / b0;
    std::vector<KeyBlock> kept;
    for (Index l = 0; (Index(1) << l) <= c; ++l) {
      if (!((c >> l) & 1)) continue;
      const Index m = (c >> (l + 1)) << 1;
      const auto it = std::find_if(blocks_.begin(), blocks_.end(),
                                   [&](const detail::KeyBlock& b) { return b.level == l && b.index == m; });
      if (it != blocks_.end()) {
        kept.push_back(std::move(*it));
        continue;
      }
      const Index size = b0 << l;
      kept.push_back(detail::build_key_block(keys_.data(), d_, values_.data(), d_v_, d_, d_v_, m * size, size,
                                             l, m, layout_, 1));
      built_keys_ += size;
    }
    blocks_.swap(kept);
  }

  using KeyBlock = detail::KeyBlock;
  Index d_, d_v_;
  ApproxIndexOptions layout_;
  RowMatrix<Scalar> keys_, values_;
  Index size_ = 0;
  Index built_keys_ = 0;
  std::vector<KeyBlock> blocks_;
};

}  // namespace attnkit
