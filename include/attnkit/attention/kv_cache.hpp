#pragma once

/// \file attnkit/attention/kv_cache.hpp
/// A key/value cache for autoregressive decoding: appends keys and values row
/// by row and answers attention queries over everything appended so far,
/// exactly as reference_attention would over the same K and V (through
/// flash_attention, so decode queries split the keys across threads).

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Growable row-major K (size x d) and V (size x d_v) storage, in the
/// element type Storage: float, double, or a 16-bit type — Eigen::half
/// (binary16) or Eigen::bfloat16 — which halves the cache's memory and its
/// decode traffic. Attention computes in Compute (double for double storage,
/// float otherwise): 16-bit rows are converted to float in the kernel, tile by
/// tile, never as a converted copy of the cache.
///
/// Appended rows of another type are rounded to Storage once, to nearest
/// (ties to even); for half, values beyond its largest finite 65504 become
/// +-inf and those below 2^-24 in magnitude become zero (its subnormals
/// between); bfloat16 keeps float's range. NaN stays NaN, +-inf stay +-inf.
///
/// Appending n rows costs O(n (d + d_v)) amortised: the capacity doubles when
/// it runs out, so a sequence of single-token appends reallocates only
/// O(log size) times (never once per token). Views returned by keys() and
/// values() are invalidated by the next append, reserve or clear; appending
/// rows of such a view to the same cache is safe.
/// Not thread-safe for concurrent appends; concurrent const queries are safe.
template <typename Storage>
class KVCache {
  static_assert(std::is_same_v<Storage, float> || std::is_same_v<Storage, double> ||
                    detail::is_16bit_float_v<Storage>,
                "KVCache stores float, double, Eigen::half or Eigen::bfloat16");

 public:
  using Scalar = Storage;
  /// The type attention computes and returns results in.
  using Compute = std::conditional_t<std::is_same_v<Storage, double>, double, float>;
  using ConstView = Eigen::Map<const RowMatrix<Storage>>;

  /// An empty cache for keys of width d and values of width d_v.
  /// \throws std::invalid_argument if d or d_v is not positive or
  ///         initial_capacity is negative.
  KVCache(Index d, Index d_v, Index initial_capacity = 256) : d_(d), d_v_(d_v) {
    if (d <= 0 || d_v <= 0) detail::fail("KVCache: d = ", d, " and d_v = ", d_v, " must be positive");
    if (initial_capacity < 0) detail::fail("KVCache: initial_capacity = ", initial_capacity, " must be >= 0");
    reserve(initial_capacity);
  }

  Index size() const { return size_; }
  Index capacity() const { return capacity_; }
  Index d() const { return d_; }
  Index d_v() const { return d_v_; }
  /// How many times the storage has been reallocated (growth events).
  Index reallocations() const { return reallocations_; }
  /// Bytes held by the storage (capacity, not size).
  std::size_t bytes() const { return (keys_.capacity() + values_.capacity()) * sizeof(Storage); }

  /// Makes room for at least `rows` tokens without reallocation.
  /// \throws std::invalid_argument if rows * d or rows * d_v overflows, and
  ///         std::bad_alloc if the storage cannot be allocated; the cache is
  ///         unchanged then.
  void reserve(Index rows) {
    if (rows <= capacity_) return;
    const Index nk = detail::checked_product("KVCache", "capacity x d", rows, d_);
    const Index nv = detail::checked_product("KVCache", "capacity x d_v", rows, d_v_);
    std::vector<Storage, Eigen::aligned_allocator<Storage>> k(static_cast<std::size_t>(nk));
    std::vector<Storage, Eigen::aligned_allocator<Storage>> v(static_cast<std::size_t>(nv));
    if (size_ > 0) {
      std::copy(keys_.begin(), keys_.begin() + size_ * d_, k.begin());
      std::copy(values_.begin(), values_.begin() + size_ * d_v_, v.begin());
      ++reallocations_;
    }
    keys_.swap(k);
    values_.swap(v);
    capacity_ = rows;
  }

  /// Appends rows of keys (n x d) and values (n x d_v), of any floating
  /// type (rounded to Storage as the class comment says).
  /// \throws std::invalid_argument (and appends nothing) if the widths are
  ///         wrong or the row counts differ.
  template <typename DK, typename DV>
  void append(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    if (k.cols() != d_ || v.cols() != d_v_ || k.rows() != v.rows())
      detail::fail("KVCache::append: keys ", detail::shape(k), " and values ", detail::shape(v),
                   " must be (n x d) and (n x d_v) with d = ", d_, ", d_v = ", d_v_);
    const Index n = k.rows();
    if (n > std::numeric_limits<Index>::max() - size_)
      detail::fail("KVCache::append: ", n, " rows after ", size_, " overflow the cache's size");
    if (size_ + n > capacity_) {
      // The rows may be views of this cache (e.g. keys().row(0)): copy them
      // before the storage they point into is replaced.
      const RowMatrix<Storage> kc = k.template cast<Storage>(), vc = v.template cast<Storage>();
      const Index doubled = capacity_ > std::numeric_limits<Index>::max() / 2 ? size_ + n : 2 * capacity_;
      reserve(std::max(doubled, size_ + n));
      write_rows(kc, vc);
    } else {
      write_rows(k, v);
    }
  }

  /// Forgets every token; keeps the capacity.
  void clear() { size_ = 0; }

  /// The cached keys (size x d) and values (size x d_v).
  ConstView keys() const { return ConstView(keys_.data(), size_, d_); }
  ConstView values() const { return ConstView(values_.data(), size_, d_v_); }

  /// Attention of queries q (n_q x d) over the cache, written into out
  /// (n_q x d_v) and lse (n_q). With a causal mask and the default offset the
  /// queries are the newest n_q tokens (append their keys first); with
  /// strict causal and offset = size() they are the next tokens, not yet
  /// appended.
  /// \throws std::invalid_argument if the cache is empty or as flash_attention_into.
  /// The queries may be float, double or 16-bit (any floating Eigen
  /// expression); outputs are in Compute.
  template <typename DQ>
  void attend_into(const Eigen::MatrixBase<DQ>& q, Eigen::Ref<RowMatrix<Compute>> out,
                   Eigen::Ref<Vector<Compute>> lse, const AttentionOptions& options = {},
                   const FlashConfig& config = {}) const {
    if (size_ == 0) detail::fail("KVCache::attend: the cache is empty (no key to attend to)");
    flash_attention_into<Compute>(q, keys(), values(), out, lse, options, config);
  }

  /// As attend_into, returning the result.
  template <typename DQ>
  AttentionResult<Compute> attend(const Eigen::MatrixBase<DQ>& q, const AttentionOptions& options = {},
                                  const FlashConfig& config = {}) const {
    AttentionResult<Compute> r{RowMatrix<Compute>(q.rows(), d_v_), Vector<Compute>(q.rows())};
    attend_into(q, r.output, r.lse, options, config);
    return r;
  }

 private:
  template <typename DK, typename DV>
  void write_rows(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    const Index n = k.rows();
    Eigen::Map<RowMatrix<Storage>>(keys_.data() + size_ * d_, n, d_) = k.template cast<Storage>();
    Eigen::Map<RowMatrix<Storage>>(values_.data() + size_ * d_v_, n, d_v_) = v.template cast<Storage>();
    size_ += n;
  }

  Index d_, d_v_;
  Index size_ = 0;
  Index capacity_ = 0;
  Index reallocations_ = 0;
  std::vector<Storage, Eigen::aligned_allocator<Storage>> keys_, values_;
};

}  // namespace attnkit
