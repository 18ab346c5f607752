#pragma once

/// \file attnkit/core/types.hpp
/// Matrix conventions shared by every attnkit header.
///
/// **Tokens are rows.** Q is (n_q x d), K is (n_k x d), V is (n_k x d_v); one
/// token per row, as PyTorch and NumPy lay them out.
///
/// **Storage order.** The kernels prefer row-major storage (each token's
/// vector contiguous; a key/value cache grows by appending rows). Public entry
/// points accept any Eigen expression (`Eigen::MatrixBase<Derived>`) and
/// convert it ONCE at the boundary into `RowMatrix<Scalar>` when it is not
/// already a row-major, contiguous matrix; results are returned as
/// `RowMatrix<Scalar>`, which assigns to a column-major matrix implicitly.

#include <Eigen/Core>

namespace attnkit {

using Index = Eigen::Index;

/// Dense row-major matrix: the layout attnkit's kernels work in.
template <typename Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dense column vector (one value per token / per query row).
template <typename Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

}  // namespace attnkit
