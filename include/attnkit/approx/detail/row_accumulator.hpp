#pragma once

/// \file attnkit/approx/detail/row_accumulator.hpp
/// Per query row, the parts approx_attention combines -- exact partial
/// results, summarised nodes, skipped nodes -- folded one by one in the log
/// domain, and the error bound of their combination. Internal; the proof is
/// in docs/approx.md ("Combining the parts").
///
/// A part p has an estimated mass S~_p = e^{l_p} (0 for a skipped node), a
/// proven interval e^{lo_p} <= S_p <= e^{hi_p}, a mass error
/// |S_p - S~_p| <= e^{err_p}, a value estimate o~_p (row of d_v) and a
/// per-column error xi_pc >= |o_p - o~_p| of that estimate against the part's
/// own softmax mean o_p. With T' = sum S~_p, w'_p = S~_p / T',
/// T_min = sum e^{lo_p} and E = sum e^{err_p}:
///
///   O' = sum_p w'_p o~_p,
///   |O_c - O'_c| <= R_c E / T_min + sum_p w'_p xi_pc   (+ rounding),
///
/// R_c the range of column c over the keys the row sees. Every sum is kept
/// as (max, scaled sum) so masses like e^300 neither overflow nor underflow.

#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "attnkit/core/types.hpp"

namespace attnkit::detail {

/// A log-sum-exp accumulator: the sum is e^m s.
struct LogSum {
  double m = -std::numeric_limits<double>::infinity();
  double s = 0;
  /// Adds e^x; returns the factor the previous terms were rescaled by.
  double add(double x) {
    if (!(x > -std::numeric_limits<double>::infinity())) return 1.0;  // nothing (or NaN: see value)
    if (x > m) {
      const double f = std::exp(m - x);
      s = s * f + 1;
      m = x;
      return f;
    }
    s += std::exp(x - m);
    return 1.0;
  }
  double log() const { return s > 0 ? m + std::log(s) : -std::numeric_limits<double>::infinity(); }
};

/// log(e^a + e^b), elementwise (-inf + -inf = -inf). log(1 + x) rather
/// than log1p: vectorised, and these sums only steer decisions (the bound
/// is formed by LogSum).
inline Eigen::ArrayXd log_add(const Eigen::ArrayXd& a, const Eigen::ArrayXd& b) {
  const Eigen::ArrayXd hi = a.max(b), lo = a.min(b);
  const Eigen::ArrayXd sum = hi + (1 + (lo - hi).exp()).log();
  return (hi == -std::numeric_limits<double>::infinity()).select(hi, sum);
}

/// log(e^a - e^b) for b <= a, elementwise; -inf where b >= a (decisions only).
inline Eigen::ArrayXd log_sub(const Eigen::ArrayXd& a, const Eigen::ArrayXd& b) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const Eigen::ArrayXd diff = a + (1 - (b - a).exp()).log();
  return (b >= a).select(Eigen::ArrayXd::Constant(a.size(), -inf), (b == -inf).select(a, diff));
}

/// Per column j of x (k x m): log sum_i e^{x_ij}; -inf for k = 0.
template <typename Derived>
Eigen::ArrayXd colwise_log_sum(const Eigen::DenseBase<Derived>& x) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (x.rows() == 0) return Eigen::ArrayXd::Constant(x.cols(), -inf);
  const Eigen::ArrayXd mx = x.derived().array().colwise().maxCoeff().transpose();
  const Eigen::ArrayXd safe = (mx == -inf).select(0.0, mx);
  const Eigen::ArrayXd sum =
      (x.derived().array().rowwise() - safe.transpose()).exp().colwise().sum().transpose();
  const Eigen::ArrayXd ls = safe + sum.log();  // evaluated first: vectorised log
  return (mx == -inf).select(mx, ls);
}

/// Accumulators of n rows with d_v value columns. `w` is the caller's
/// (n x d_v) matrix that ends as the bound (it holds sum e^{l - m} xi first).
class RowAccumulator {
 public:
  RowAccumulator(Index rows, Index d_v, RowMatrix<double>& w)
      : d_v_(d_v),
        est_(static_cast<std::size_t>(rows)),
        lo_(est_),
        hi_(est_),
        err_(est_),
        parts_(static_cast<std::size_t>(rows), 0),
        exact_(static_cast<std::size_t>(rows), 0),
        o_(RowMatrix<double>::Zero(rows, d_v)),
        w_(w) {
    w_.setZero(rows, d_v);
  }

  /// Folds one part into row r: o (d_v, stride 1, any scalar; nullptr for
  /// a skipped node), xi (d_v; nullptr = 0). `parts` > 1 folds several
  /// parts pre-combined by the caller (their sums, o and xi their S~-weighted
  /// means), counted for the rounding of the combination.
  template <typename T>
  void add(Index r, double l, double lo, double hi, double err, const T* o, const double* xi, bool exact,
           int parts = 1) {
    const auto i = static_cast<std::size_t>(r);
    parts_[i] += parts;
    if (exact) ++exact_[i];
    lo_[i].add(lo);
    hi_[i].add(hi);
    err_[i].add(err);
    if (!o || !(l > -std::numeric_limits<double>::infinity())) return;
    const double f = est_[i].add(l);
    const double wt = std::exp(l - est_[i].m);
    double* orow = o_.data() + r * d_v_;
    double* wrow = w_.data() + r * d_v_;
    if (f != 1.0)
      for (Index c = 0; c < d_v_; ++c) {
        orow[c] *= f;
        wrow[c] *= f;
      }
    for (Index c = 0; c < d_v_; ++c)
      orow[c] += wt * static_cast<double>(o[c]);
    if (xi)
      for (Index c = 0; c < d_v_; ++c)
        wrow[c] += wt * xi[c];
  }

  /// log of the row's current mass lower bound T_min (-inf if none yet).
  double log_tmin(Index r) const { return lo_[static_cast<std::size_t>(r)].log(); }
  int parts(Index r) const { return parts_[static_cast<std::size_t>(r)]; }
  bool single_exact(Index r) const {
    const auto i = static_cast<std::size_t>(r);
    return parts_[i] == 1 && exact_[i] == 1;
  }
  const LogSum& est(Index r) const { return est_[static_cast<std::size_t>(r)]; }
  const LogSum& lo(Index r) const { return lo_[static_cast<std::size_t>(r)]; }
  const LogSum& hi(Index r) const { return hi_[static_cast<std::size_t>(r)]; }
  const LogSum& err(Index r) const { return err_[static_cast<std::size_t>(r)]; }
  const double* o(Index r) const { return o_.data() + r * d_v_; }
  double* w(Index r) { return w_.data() + r * d_v_; }

  /// Forgets row r (before it is recomputed).
  void reset(Index r) {
    const auto i = static_cast<std::size_t>(r);
    est_[i] = lo_[i] = hi_[i] = err_[i] = LogSum{};
    parts_[i] = exact_[i] = 0;
    o_.row(r).setZero();
    w_.row(r).setZero();
  }

 private:
  Index d_v_;
  std::vector<LogSum> est_, lo_, hi_, err_;
  std::vector<int> parts_, exact_;
  RowMatrix<double> o_;
  RowMatrix<double>& w_;
};

}  // namespace attnkit::detail
