#pragma once

/// \file attnkit/linear/detail/linear_kernel.hpp
/// The pieces shared by linear_attention and LinearAttentionState: the
/// running state (S = sum phi(k) v^T, z = sum phi(k), one log-scale for
/// both), the chunk workspace, and the epilogue that divides by the guarded
/// normaliser. Everything is an Eigen product on row-major blocks.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit::detail {

/// Sum of phi(k_j) v_j^T and of phi(k_j) over the keys absorbed so far, in
/// units of exp(log_scale): the true sums are exp(log_scale) * (s, z).
template <typename Scalar>
struct LinearRunningState {
  RowMatrix<Scalar> s;  // (m x d_v)
  Vector<Scalar> z;     // (m)
  Scalar log_scale = 0;
  bool empty = true;

  void reset(Index m, Index d_v) {
    s.setZero(m, d_v);
    z.setZero(m);
    log_scale = 0;
    empty = true;
  }

  /// Puts the state and a key block whose true features are exp(c) * phi_k
  /// on one common factor, the larger of the two, rescaling whichever is
  /// smaller (phi_k in place): nothing grows, so nothing overflows.
  void align(Eigen::Ref<RowMatrix<Scalar>> phi_k, Scalar c) {
    if (empty) {
      log_scale = c;
      empty = false;
    } else if (c > log_scale) {
      const Scalar f = std::exp(log_scale - c);
      s *= f;
      z *= f;
      log_scale = c;
    } else if (c < log_scale) {
      phi_k *= std::exp(c - log_scale);
    }
  }

  /// Adds the keys summarised by `other` (disjoint from this state's),
  /// rescaling the smaller side to the larger log-scale.
  void merge(const LinearRunningState& other) {
    if (other.empty) return;
    if (empty) {
      *this = other;
      return;
    }
    const Scalar c = std::max(log_scale, other.log_scale);
    const Scalar fa = std::exp(log_scale - c), fb = std::exp(other.log_scale - c);
    s = fa * s + fb * other.s;
    z = fa * z + fb * other.z;
    log_scale = c;
  }

  /// s += phi_k^T v, z += phi_k^T 1 (phi_k already aligned).
  void absorb(const Eigen::Ref<const RowMatrix<Scalar>>& phi_k,
              const Eigen::Ref<const RowMatrix<Scalar>>& v) {
    s.noalias() += phi_k.transpose() * v;
    z.noalias() += phi_k.colwise().sum().transpose();
  }
};

/// Buffers of one chunk of at most `rows` queries and keys.
template <typename Scalar>
struct LinearWorkspace {
  RowMatrix<Scalar> phi_q, phi_k, a, num;
  Vector<Scalar> log_q, den;

  void reserve(const char* where, Index rows, Index m, Index d_v) {
    checked_product(where, "chunk x features", rows, m);
    checked_product(where, "chunk x d_v", rows, d_v);
    checked_product(where, "chunk x chunk", rows, rows);
    phi_q.resize(rows, m);
    phi_k.resize(rows, m);
    a.resize(rows, rows);
    num.resize(rows, d_v);
    log_q.resize(rows);
    den.resize(rows);
  }
};

/// out_r = num_r / max(den_r, floor), lse_r = log(den_r) + log_q_r + log_k
/// for the first `rows` rows of the workspace.
template <typename Scalar>
void linear_epilogue(const LinearWorkspace<Scalar>& ws, Index rows, Scalar log_k, Scalar floor,
                     Eigen::Ref<RowMatrix<Scalar>> out, Eigen::Ref<Vector<Scalar>> lse) {
  for (Index r = 0; r < rows; ++r) {
    const Scalar den = ws.den(r);
    const Scalar guarded = std::max(den, floor);  // NaN stays NaN (first argument)
    out.row(r) = ws.num.row(r) / guarded;
    lse(r) = std::log(den) + ws.log_q(r) + log_k;
  }
}

/// The floor of the normaliser: the option, or Scalar's smallest normal.
template <typename Scalar>
Scalar denominator_floor(const char* where, const std::optional<double>& floor) {
  if (!floor) return std::numeric_limits<Scalar>::min();
  if (!(std::isfinite(*floor) && *floor > 0))
    fail(where, ": denominator_floor = ", *floor, " must be finite and > 0");
  return std::max(static_cast<Scalar>(*floor), std::numeric_limits<Scalar>::min());
}

}  // namespace attnkit::detail
