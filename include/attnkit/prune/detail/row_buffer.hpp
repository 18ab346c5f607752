#pragma once

/// \file attnkit/prune/detail/row_buffer.hpp
/// A row-major matrix that grows by appending rows (amortised doubling) and
/// shrinks from the front: the storage of attnkit::PrunedKeyCache.

#include <algorithm>
#include <cstddef>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit::detail {

template <typename Scalar>
class RowBuffer {
 public:
  explicit RowBuffer(Index cols = 0) : data_(0, cols) {}

  Index rows() const { return rows_; }
  Index cols() const { return data_.cols(); }
  Index capacity() const { return data_.rows(); }

  /// The valid rows, (rows() x cols()).
  auto view() const { return data_.topRows(rows_); }

  /// Appends the rows of `m` (same number of columns). `m` may be a view of
  /// this buffer's own rows: when the storage must grow, the rows are copied
  /// before it is replaced.
  template <typename Derived>
  void append(const Eigen::MatrixBase<Derived>& m) {
    const Index n = m.rows();
    if (rows_ + n > data_.rows()) {
      const RowMatrix<Scalar> copy = m.template cast<Scalar>();  // m may point into data_
      reserve(rows_ + n);
      data_.middleRows(rows_, n) = copy;
    } else {
      data_.middleRows(rows_, n) =
          m.template cast<Scalar>();  // rows past rows_: never overlap a view of the valid rows
    }
    rows_ += n;
  }

  /// Removes the first `count` rows, moving the others up. O(rows() cols()).
  void drop_front(Index count) {
    count = std::min(count, rows_);
    const Index rest = rows_ - count;
    for (Index r = 0; r < rest; ++r)
      data_.row(r) = data_.row(r + count);
    rows_ = rest;
  }

  /// Bytes of the valid rows.
  std::size_t bytes() const { return sizeof(Scalar) * static_cast<std::size_t>(rows_ * cols()); }
  /// Bytes allocated (valid rows plus spare capacity).
  std::size_t allocated_bytes() const { return sizeof(Scalar) * static_cast<std::size_t>(data_.size()); }

 private:
  void reserve(Index rows) {
    if (rows <= data_.rows()) return;
    checked_product("PrunedKeyCache", "rows x columns", rows, cols());
    const Index cap = std::max<Index>({rows, data_.rows() > (Index(1) << 61) ? rows : 2 * data_.rows(), 16});
    data_.conservativeResize(cap, Eigen::NoChange);
  }

  RowMatrix<Scalar> data_;
  Index rows_ = 0;
};

}  // namespace attnkit::detail
