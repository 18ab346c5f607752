#pragma once

/// \file attnkit/approx/detail/node_bounds.hpp
/// Proven bounds on the mass of a tree node for every query of a group, as
/// matrix products over the group's queries and a batch of nodes. Internal;
/// the proofs are in docs/approx.md ("Bounds").
///
/// For query q (scaled: q-hat = scale q, in the block's basis q~ = R^T q-hat)
/// and node g with keys x_j (block basis), let X_j = q~ . (x_j - mu_g): a
/// zero-mean variable over the node's keys (mu_g is their mean), so the
/// node's mass S_g = sum_j e^{q.k_j} = n_g e^{c} E e^{X}, c = q~ . mu_g. With
///   X_max = min(q~.(b - mu) + A, |q||r|, sqrt(q~^2 . var) rsd),  A = |q~| . h,
///   X_min = max(q~.(b - mu) - A, -|q||r|, -sqrt(q~^2 . var) rsd)
/// (the box, the ball and the diagonal-Mahalanobis ball; Cauchy-Schwarz),
/// W = X_max - X_min and
///   sigma^2 <= min((|q~| . sd)^2, |q|^2 tr(var), -X_min X_max)
/// (Cauchy-Schwarz on the covariance, on each key, and Bhatia-Davis):
///   Jensen:     E e^X >= 1
///   max:        E e^X <= e^{X_max}
///   Hoeffding:  E e^X <= e^{W^2 / 8}
///   Bennett:    E e^X <= 1 + sigma^2 (e^{X_max} - 1 - X_max) / X_max^2
/// so log S_g lies in [lo, hi] = log n_g + c + [0, min of the three]. The
/// node's weighted value mean differs from its unweighted mean, per column,
/// by at most
///   (max - min) tanh(W / 4)      (every weight within e^W of every other:
///                                 the two-point extremal), and by at most
///   sd_v sigma (e^b - 1) / b      (b = X_max; the difference is
///                                 Cov(e^X, v) / E e^X; Cauchy-Schwarz,
///                                 E e^X >= 1, and Var e^X <= E (e^X - 1)^2
///                                 <= E X^2 ((e^b - 1) / b)^2 since
///                                 |e^x - 1| <= |x| (e^b - 1) / b for x <= b);
/// docs/approx.md has the proofs.
///
/// Rounding: the logits the bounds speak of are those of exact arithmetic;
/// the double computation of x (rotation), q~ and the products, and the
/// rounded node mean, move every exponent by at most
///   zeta = |q| kmax_g (2 basis_error + (16 d + 64 + 2 n_g) sqrt(d) u_d) + 1e-14 (1 + |c| + log n_g),
/// which widens [lo, hi] and W, and in the second value bound sigma by
/// 2 zeta (E X^2 of the perturbed exponents, whose mean is within zeta of
/// 0) and the whole by e^zeta (their E e^X >= e^-zeta).

#include <algorithm>
#include <cmath>
#include <limits>

#include "attnkit/approx/detail/key_block.hpp"
#include "attnkit/approx/detail/products.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/core/types.hpp"

namespace attnkit::detail {

/// max_c R_c / max_j |v_jc| <= 2: the mass error's weight in the bound.
inline constexpr double approx_kappa = 2.0;

/// How the estimate inside [lo, hi] is chosen.
enum class EstimateRule { midpoint, second_order, monopole };

/// An upper bound of e^x - 1, elementwise, vectorised (e^x to a few ulps).
template <typename Derived>
Eigen::ArrayXXd expm1_upper(const Eigen::ArrayBase<Derived>& x) {
  const Eigen::ArrayXXd e = x.exp();
  return (e - 1) + 16 * 0x1.0p-53 * e;
}

/// The box bound costs two more products per batch and, measured on the
/// clustered and LLM-like workloads at d = 64, closes nothing the ball and
/// the Mahalanobis radius do not (in high dimension sum_c |q_c| h_c exceeds
/// |q| r by about sqrt(d)): it is used up to this d only.
inline constexpr Index approx_box_max_d = 16;

/// A query group expressed in one block's basis.
struct GroupQueries {
  Index m = 0;
  RowMatrix<double> qt;    ///< m x d: q~ = R^T q-hat
  RowMatrix<double> qabs;  ///< |q~|
  RowMatrix<double> qsq;   ///< q~^2
  Eigen::VectorXd norm;    ///< |q-hat| (rotation-invariant)
  Eigen::VectorXd qtnorm;  ///< |q~| as computed, rounded up
};

/// Bounds of a batch of nodes for every query of a group: m x nb arrays.
struct NodeBatchBounds {
  /// vt = tanh(W / 4), vs = e^zeta (sigma + 2 zeta) (e^b - 1) / b: the
  /// value error of a summary per unit of value range and of value sd.
  Eigen::ArrayXXd lo, hi, est, delta, vt, vs;
  /// The second-order estimate, whatever the rule.
  Eigen::ArrayXXd so;
  /// log of what closing the node adds to the row's bound, in units of its
  /// mass (approx_kappa E + S~ rho tanh): by skipping, by summarising.
  Eigen::ArrayXXd cskip, csumm;
};

/// Scratch of evaluate_nodes.
struct NodeEvalScratch {
  RowMatrix<double> geom;  ///< nb x 5d, gathered node rows
  Eigen::MatrixXd c, beta, a, s1, se;
};

/// Fills `out` for the nodes[0..nb) of block `b` and the group `g`.
/// `quad` (m x nb), when given, holds q~^T Sigma_g q~ computed in double
/// from the node's stored covariance (KeyBlock::cov; every node must have
/// one): the variance of X then is known to within
///   margin = |q~|^2 ((2e-9 + 4 d^2 u) tr_g + 2 (4 n_g + 4 d + 64) u kmax_g^2)
/// (the covariance's entries, formed in double from n_g keys and merged,
/// are off by at most gamma_{n_g + d} tr_g < 1e-9 tr_g for n_g < 10^6, plus
/// the merges' use of rounded child means, a cross term of at most
/// 2 |m_i - mu_i| |delta_i| per merge with each mean off by (n + 2) u kmax;
/// the product q~^T Sigma q~ by gamma_{2d} d tr_g |q~|^2 more), so
///   sigma^2 <= quad + margin, and, since e^x >= 1 + x + x^2 phi(X_min)
///   for x >= X_min (phi increasing), E e^X >= 1 - zeta + (quad - margin)
///   phi(X_min) (the mean of X within zeta of 0):
/// a lower end of the mass interval above Jensen's, so the interval's
/// width falls from about sigma^2 / 2 to sigma^2 (phi(X_max) - phi(X_min)).
inline void evaluate_nodes(const KeyBlock& b, const GroupQueries& g, const Index* nodes, Index nb,
                           EstimateRule rule, NodeEvalScratch& ws, NodeBatchBounds& out,
                           const Eigen::ArrayXXd* quad = nullptr) {
  const Index d = b.d, m = g.m;
  constexpr double u = 0x1.0p-53;
  ws.geom.resize(nb, 5 * d);
  Eigen::ArrayXd cnt(nb), rad(nb), rsd(nb), tr(nb), coef(nb), logn(nb), kq(nb);
  for (Index t = 0; t < nb; ++t) {
    const Index node = nodes[t];
    ws.geom.row(t) = b.geom.row(node);
    cnt(t) = b.count(node);
    rad(t) = b.radius(node);
    rsd(t) = b.rsd(node);
    tr(t) = b.trace(node);
    logn(t) = std::log(cnt(t));
    kq(t) = (2e-9 + 4 * static_cast<double>(d * d) * u) * tr(t) +
            2 * (4 * cnt(t) + 4 * static_cast<double>(d) + 64) * u * b.kmax(node) * b.kmax(node);
    coef(t) = b.kmax(node) * (2 * b.basis_error + (16 * static_cast<double>(d) + 64 + 2 * cnt(t)) *
                                                      std::sqrt(static_cast<double>(d)) * u);
  }
  serial_product(ws.c, g.qt, ws.geom.leftCols(d).transpose());
  const bool box = d <= approx_box_max_d;
  if (box) {
    serial_product(ws.beta, g.qt, ws.geom.middleCols(d, d).transpose());
    serial_product(ws.a, g.qabs, ws.geom.middleCols(2 * d, d).transpose());
  }
  serial_product(ws.s1, g.qabs, ws.geom.middleCols(3 * d, d).transpose());
  serial_product(ws.se, g.qsq, ws.geom.rightCols(d).transpose());
  const auto c = ws.c.array();
  const Eigen::ArrayXd qn = g.norm.array() * (1 + 1e-12);
  const Eigen::ArrayXXd base = c.rowwise() + logn.transpose();
  const Eigen::ArrayXXd zeta =
      (qn.matrix() * coef.matrix().transpose()).array() +
      1e-14 * (1 + c.abs() + (Eigen::ArrayXXd::Ones(m, nb).rowwise() * logn.transpose()));
  const Eigen::ArrayXXd se = ws.se.array() * (1 + 1e-12);
  const Eigen::ArrayXXd ball = (qn.matrix() * rad.matrix().transpose()).array();
  constexpr double inf = std::numeric_limits<double>::infinity();
  const Eigen::ArrayXXd mahal0 = se.sqrt().rowwise() * rsd.transpose();
  const Eigen::ArrayXXd mahal = (mahal0 == mahal0).select(mahal0, inf);  // 0 * inf: no bound
  Eigen::ArrayXXd xmax = ball.min(mahal), xmin = -xmax;
  if (box) {
    const Eigen::ArrayXXd shift = ws.beta.array() - c;
    const Eigen::ArrayXXd a = ws.a.array() * (1 + 1e-12);
    xmax = xmax.min(shift + a);
    xmin = xmin.max(shift - a);
  }
  xmax = (xmax + zeta).max(0.0);
  xmin = (xmin - zeta).min(0.0);
  const Eigen::ArrayXXd w = xmax - xmin;
  const Eigen::ArrayXXd s1 = ws.s1.array() * (1 + 1e-12);
  const Eigen::ArrayXd qt2 = g.qtnorm.array().square() * (1 + 1e-12);
  Eigen::ArrayXXd sig2 =
      (s1 * s1).min(((qn * qn).matrix() * tr.matrix().transpose()).array()).min(-xmin * xmax);
  // phi(b) = (e^b - 1 - b) / b^2, increasing; a series upper bound near 0.
  // (Transcendentals are evaluated into arrays before any select: Eigen's
  // select is not vectorised, the exp and log of double arrays are.)
  const Eigen::ArrayXXd phi_closed = (xmax.exp() - 1 - xmax) / (xmax * xmax).max(1e-300) * (1 + 1e-9);
  const Eigen::ArrayXXd phi = (xmax < 1e-3).select(0.5 + xmax / 6 + xmax * xmax / 12, phi_closed);
  // The lower end of log E e^X: Jensen's 0, or the exact variance's.
  Eigen::ArrayXXd lower = Eigen::ArrayXXd::Zero(m, nb);
  if (quad) {
    const Eigen::ArrayXXd margin = (qt2.matrix() * kq.matrix().transpose()).array();
    sig2 = sig2.min(*quad + margin);
    const Eigen::ArrayXXd slo = (*quad - margin).max(0.0);
    // phi(a) for a = X_min <= 0, from below: 1/2 + a/6 near 0 (the rest of
    // the series is positive there), the closed form less its rounding.
    const Eigen::ArrayXXd phia_closed = (xmin.exp() - 1 - xmin) / (xmin * xmin).max(1e-300) * (1 - 1e-9);
    const Eigen::ArrayXXd phia = (xmin > -1e-3).select(0.5 + xmin / 6, phia_closed);
    // log of the rounded 1 + y, less 4 u for that rounding and 4 u of
    // itself for the log's own.
    const Eigen::ArrayXXd lg = (1 - zeta + slo * phia).max(1e-300).log();
    lower = (lg - 4 * u - 4 * u * lg.abs()).max(0.0);
  }
  // log(1 + y) rather than log1p (which Eigen does not vectorise for
  // double), plus 4 u for the rounding of 1 + y and 4 u of itself for the
  // log's own.
  const Eigen::ArrayXXd bennett_closed = (1 + sig2 * phi).log() * (1 + 4 * u) + 4 * u;
  const Eigen::ArrayXXd bennett = (xmax > 700).select(inf, bennett_closed);
  const Eigen::ArrayXXd upper = xmax.min(w * w / 8).min(bennett).max(lower);
  out.so = base + (0.5 * se).min(upper).max(lower);
  out.lo = base + lower - zeta;
  out.hi = base + upper + zeta;
  switch (rule) {
    case EstimateRule::midpoint:
      out.est = base + 0.5 * (lower + upper);
      out.delta = 0.5 * (upper - lower) + zeta;
      break;
    case EstimateRule::second_order: {
      const Eigen::ArrayXXd e2 = (0.5 * se).min(upper).max(lower);
      out.est = base + e2;
      out.delta = (upper - e2).max(e2 - lower) + zeta;
      break;
    }
    case EstimateRule::monopole:
      out.est = base + lower;
      out.delta = upper - lower + zeta;
      break;
  }
  // tanh(W / 4) = 1 - 2 / (e^{W/2} + 1), vectorised, plus the rounding of
  // that form (a few ulps of 1).
  out.vt = (1 - 2 / ((0.5 * w).exp() + 1) + 8 * u).min(1.0);
  // (e^b - 1) / b = 1 + b phi(b), increasing in b >= 0 (1 at 0).
  out.vs = (zeta.exp() * (sig2.sqrt() + 2 * zeta) * (1 + xmax * phi)) * (1 + 1e-12);
  Eigen::ArrayXd rho(nb), rho_sd(nb);
  for (Index t = 0; t < nb; ++t) {
    rho(t) = b.rho(nodes[t]);
    rho_sd(t) = b.rho_sd(nodes[t]);
  }
  const double log_kappa = std::log(approx_kappa);
  out.cskip = out.hi + log_kappa;
  const Eigen::ArrayXXd serr = out.est + expm1_upper(out.delta).log() + log_kappa;
  const Eigen::ArrayXXd verr =
      out.est + (out.vt.rowwise() * rho.transpose()).min(out.vs.rowwise() * rho_sd.transpose()).log();
  const Eigen::ArrayXXd top = serr.max(verr);
  out.csumm = top + (1 + (serr.min(verr) - top).exp()).log();
  out.csumm = (top == -inf).select(-inf, out.csumm);
}

}  // namespace attnkit::detail
