#pragma once

/// \file attnkit/approx/detail/group_traversal.hpp
/// One query group against one key block: the three tiers. Internal.
///
/// Every row r of the group sees the whole block. The traversal starts at
/// the block's root and classifies each node it evaluates, for every row, by
/// the bounds of node_bounds.hpp against the row's allowance
///   mass:  (mass share) eps / 2 * (n_g / F_r) * T_low,r
///   value: (value share) eps * (n_g / F_r) * T_low,r
/// (F_r the keys of the row's whole blocks, T_low,r a lower bound of its
/// total mass: the parts already folded plus the Jensen bounds of this
/// block's current nodes; the 2 is max_c R_c / max_j |v_jc|):
///  - skip when the node's upper mass bound fits the mass allowance;
///  - summarise when its estimate's mass error fits the mass allowance and
///    its value error (rho_g tanh(W / 4) times its weight) the value one;
///  - otherwise open it: a leaf's keys go to the exact kernel, an internal
///    node's children are evaluated next.
/// A node is closed only when every row of the group can close it (each row
/// picks skip or summarise); opened keys are attended by one kernel call for
/// the whole group. Since the shares n_g / F_r of a row's nodes sum to at
/// most 1 over all of its blocks, the closed nodes' errors sum to at most
/// the allowances; the final bound is nevertheless computed from the parts
/// themselves (row_accumulator.hpp), not from this argument.
///
/// Certified mode opens breadth first. From approx_probe_depth levels below
/// the root on, if more than 70 % of the block's keys are in nodes that some
/// row could not close even against an upper bound of its total mass (so
/// they will be opened whatever is found below them), the group hands the
/// block to the exact kernel whole (no gather, the kernel's own bound);
/// blocks of fewer than approx_min_leaves leaves go to the kernel directly.
/// Budgeted mode opens best first (largest error over allowance per key)
/// until its share of the budget is spent, then closes what is left with the
/// estimator of the options.

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <utility>
#include <vector>

#include "attnkit/approx/detail/context.hpp"
#include "attnkit/approx/detail/key_block.hpp"
#include "attnkit/approx/detail/node_bounds.hpp"
#include "attnkit/approx/detail/products.hpp"
#include "attnkit/approx/detail/row_accumulator.hpp"
#include "attnkit/approx/kernel_bound.hpp"
#include "attnkit/attention/flash.hpp"

namespace attnkit::detail {

/// Certified mode hands a block to the kernel whole when more than 70 % of
/// its keys are still open after this many levels below its root, and does
/// not traverse blocks of fewer than approx_min_leaves leaves.
inline constexpr Index approx_probe_depth = 3;
inline constexpr Index approx_min_leaves = 16;
/// Groups the certified mode traverses first, on the largest indexed block,
/// before it decides whether the data has structure at all.
inline constexpr Index approx_probe_groups = 4;
/// Certified mode attends a block that fewer rows use with the kernel
/// instead of building its summaries.
inline constexpr Index approx_min_block_rows = 64;
/// A node whose log-mass interval is at most this wide is opened whole when
/// it cannot be closed (certified mode) instead of being descended.
inline constexpr double approx_tight_spread = 3.0;

/// Loads the group's queries into ws (qs, qhat and the block basis).
template <typename Scalar>
void load_group(const ApproxContext<Scalar>& ctx, const KeyBlock* block, const std::vector<Index>& rows,
                ApproxWorkspace<Scalar>& ws) {
  const auto m = static_cast<Index>(rows.size());
  ws.qs.resize(m, ctx.d);
  for (Index i = 0; i < m; ++i)
    for (Index c = 0; c < ctx.d; ++c)
      ws.qs(i, c) = ctx.q[rows[static_cast<std::size_t>(i)] * ctx.ldq + c];
  ws.qhat = ctx.scale * ws.qs.template cast<double>();
  if (!block) return;
  GroupQueries& g = ws.gq;
  g.m = m;
  if (block->basis.size() > 0)
    serial_product(g.qt, ws.qhat, block->basis);
  else
    g.qt = ws.qhat;
  g.qabs = g.qt.cwiseAbs();
  g.qsq = g.qt.cwiseAbs2();
  g.norm.resize(m);
  for (Index i = 0; i < m; ++i)
    g.norm(i) = ctx.qnorm[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
  g.qtnorm = g.qt.rowwise().norm() * (1 + 1e-12);
}

/// Folds an exact result (ws.out, ws.lse over n_keys keys with the given
/// absolute-logit bound per row and value bound per column) into the rows.
template <typename Scalar>
void fold_exact(ApproxContext<Scalar>& ctx, RowAccumulator& acc, const std::vector<Index>& rows,
                ApproxWorkspace<Scalar>& ws, Index n_keys, const Eigen::VectorXd& abs_logit,
                const Eigen::VectorXd& vabs) {
  ws.xi.resize(static_cast<std::size_t>(ctx.d_v));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Index r = rows[i];
    const double l = static_cast<double>(ws.lse(static_cast<Index>(i)));
    ctx.counts(r, 0) += static_cast<double>(n_keys);
    if (!(l > -std::numeric_limits<double>::infinity())) continue;  // every logit -inf: no mass
    const FlashRoundingBound fb = flash_rounding_bound<Scalar>(abs_logit(static_cast<Index>(i)), ctx.d,
                                                               n_keys, approx_block_k, std::fabs(l));
    for (Index c = 0; c < ctx.d_v; ++c)
      ws.xi[static_cast<std::size_t>(c)] = fb.output * vabs(c);
    acc.add(r, l, l - fb.lse, l + fb.lse, l + std::log(std::expm1(fb.lse)),
            ws.out.data() + static_cast<Index>(i) * ws.out.cols(), ws.xi.data(), true);
  }
}

/// The exact kernel on the group's rows over the contiguous key positions
/// [begin, begin + size) (a block handed over whole, or one the index lacks).
template <typename Scalar>
void exact_range(ApproxContext<Scalar>& ctx, RowAccumulator& acc, const std::vector<Index>& rows, Index begin,
                 Index size, double kmax, const Eigen::VectorXd& vabs, ApproxWorkspace<Scalar>& ws,
                 int inner_threads) {
  const auto m = static_cast<Index>(rows.size());
  ws.out.resize(m, ctx.d_v);
  ws.lse.resize(m);
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> kk(ctx.k, ctx.n_k, ctx.d,
                                                                        Eigen::OuterStride<>(ctx.ldk));
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> vv(ctx.v, ctx.n_k, ctx.d_v,
                                                                        Eigen::OuterStride<>(ctx.ldv));
  KeySet keys;
  keys.ranges = {KeyRange{begin, begin + size}};
  flash_attention_partial_into<Scalar>(ws.qs, kk, vv, keys, ws.out, ws.lse,
                                       AttentionOptions{Mask::none(), ctx.scale},
                                       FlashConfig{inner_threads, 0, approx_block_k});
  Eigen::VectorXd abs_logit(m);
  for (Index i = 0; i < m; ++i)
    abs_logit(i) = inflate(ctx.qnorm[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])] * kmax);
  fold_exact(ctx, acc, rows, ws, size, abs_logit, vabs);
}

/// max(|min|, |max|) of every value column of node g (NaN if either is).
inline Eigen::VectorXd node_vabs(const KeyBlock& b, Index g) {
  Eigen::VectorXd out(b.d_v);
  for (Index c = 0; c < b.d_v; ++c) {
    const double lo = b.vstat(g, b.d_v + c), hi = b.vstat(g, 2 * b.d_v + c);
    out(c) = (lo != lo || hi != hi) ? std::numeric_limits<double>::quiet_NaN()
                                    : std::max(std::fabs(lo), std::fabs(hi));
  }
  return out;
}

/// Folds the closed entries `closed` of table t into the rows: per row, the
/// skipped ones by their bounds, the summarised ones by their estimates,
/// combined first (sums in the log domain, value means by one product).
template <typename Scalar>
void fold_closed(ApproxContext<Scalar>& ctx, RowAccumulator& acc, const KeyBlock& b,
                 const std::vector<Index>& rows, const std::vector<Index>& node,
                 const std::vector<Index>& closed, ApproxWorkspace<Scalar>& ws) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  constexpr double u = 0x1.0p-53;
  const auto k = static_cast<Index>(closed.size());
  if (k == 0) return;
  const auto m = static_cast<Index>(rows.size());
  const Index d_v = ctx.d_v;
  EntryTable& t = ws.entries;
  Eigen::ArrayXXd lo(k, m), hi(k, m), est(k, m), err(k, m), vt(k, m), vs(k, m), skip(k, m);
  RowMatrix<double> vmean(k, d_v), range(k, d_v), vsd(k, d_v), slack(k, d_v);
  Eigen::ArrayXd count(k);
  for (Index j = 0; j < k; ++j) {
    const Index e = closed[static_cast<std::size_t>(j)], g = node[static_cast<std::size_t>(e)];
    lo.row(j) = t(EntryTable::lo, e).array();
    hi.row(j) = t(EntryTable::hi, e).array();
    est.row(j) = t(EntryTable::est, e).array();
    err.row(j) = t(EntryTable::delta, e).array();  // delta for now
    vt.row(j) = t(EntryTable::vt, e).array();
    vs.row(j) = t(EntryTable::vs, e).array();
    skip.row(j) = t(EntryTable::skip, e).array();
    count(j) = b.count(g);
    for (Index c = 0; c < d_v; ++c) {
      const double vlo = b.vstat(g, d_v + c), vhi = b.vstat(g, 2 * d_v + c);
      vmean(j, c) = b.vstat(g, c);
      range(j, c) = vhi - vlo;
      vsd(j, c) = b.vstat(g, 3 * d_v + c);
      slack(j, c) = 2 * (count(j) + 2) * u * std::max(std::fabs(vlo), std::fabs(vhi));
    }
  }
  // A row with no estimate yet (nothing folded before) that would skip every
  // node here summarises them instead: an estimate is needed for O' and
  // summarising is sound wherever skipping is (budgeted mode, whose forced
  // closures may skip everything; certified skips never cover a whole row).
  for (Index i = 0; i < m; ++i)
    if ((skip.col(i) > 0).all() && !(acc.est(rows[static_cast<std::size_t>(i)]).s > 0)) {
      skip.col(i).setZero();
    }
  // Mass error: U for a skipped node, S~ (e^delta - 1) for a summarised one.
  const Eigen::ArrayXXd summ_err = est + expm1_upper(err).log();  // vectorised before the select
  err = (skip > 0).select(hi, summ_err);
  const Eigen::ArrayXXd sest = (skip > 0).select(Eigen::ArrayXXd::Constant(k, m, -inf), est);
  const Eigen::ArrayXd lo_tot = colwise_log_sum(lo), hi_tot = colwise_log_sum(hi),
                       err_tot = colwise_log_sum(err);
  const Eigen::ArrayXd top = sest.colwise().maxCoeff().transpose();
  const Eigen::ArrayXd safe = (top == -inf).select(0.0, top);
  ws.weights = ((sest.rowwise() - safe.transpose()).exp()).matrix();  // k x m, 0 where skipped
  const Eigen::ArrayXd wsum = ws.weights.colwise().sum().transpose().array();
  RowMatrix<double> o(m, d_v), xi(m, d_v);
  serial_product(o, ws.weights.transpose(), vmean);
  // Per node, the smaller of its two value bounds (range tanh(W / 4) and
  // sd sigma (e^b - 1) / b, node_bounds.hpp), weighted.
  xi.setZero();
  for (Index j = 0; j < k; ++j)
    for (Index i = 0; i < m; ++i) {
      const double wji = ws.weights(j, i);
      if (!(wji > 0)) continue;
      xi.row(i) += (wji * vt(j, i) * range.row(j)).cwiseMin(wji * vs(j, i) * vsd.row(j));
    }
  serial_product_add(xi, ws.weights.transpose(), slack);
  const Eigen::ArrayXd summ_keys = ((1 - skip).matrix().transpose() * count.matrix()).array();
  const Eigen::ArrayXd skip_keys = (skip.matrix().transpose() * count.matrix()).array();
  for (Index i = 0; i < m; ++i) {
    const Index r = rows[static_cast<std::size_t>(i)];
    ctx.counts(r, 1) += summ_keys(i);
    ctx.counts(r, 2) += skip_keys(i);
    if (wsum(i) > 0) {
      o.row(i) /= wsum(i);
      xi.row(i) /= wsum(i);
      acc.add(r, top(i) + std::log(wsum(i)), lo_tot(i), hi_tot(i), err_tot(i), o.data() + i * d_v,
              xi.data() + i * d_v, false, static_cast<int>(k));
    } else {
      acc.add<double>(r, -inf, lo_tot(i), hi_tot(i), err_tot(i), nullptr, nullptr, false,
                      static_cast<int>(k));
    }
  }
}

/// One group of rows against block b (see the file comment).
template <typename Scalar>
void traverse_group(ApproxContext<Scalar>& ctx, RowAccumulator& acc, const KeyBlock& b,
                    const std::vector<Index>& rows, ApproxWorkspace<Scalar>& ws, int inner_threads) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const auto m = static_cast<Index>(rows.size());
  const ApproxOptions& opt = *ctx.options;
  const auto leave = [&] {
    for (const Index r : rows)
      ctx.far_left[static_cast<std::size_t>(r)] -= b.size;
  };
  const auto whole_block = [&](bool loaded) {
    if (!loaded) load_group(ctx, nullptr, rows, ws);
    ++ws.stats.exact_blocks;
    exact_range(ctx, acc, rows, b.begin, b.size, b.kmax(0), node_vabs(b, 0), ws, inner_threads);
    leave();
  };
  if (ctx.certified && b.size < approx_min_leaves * opt.index.leaf) return whole_block(false);
  const bool budgeted = !ctx.certified;
  Index budget_left = 0;
  if (budgeted) {
    Index far_max = 0;
    for (const Index r : rows)
      far_max = std::max(far_max, ctx.far[static_cast<std::size_t>(r)]);
    const double share =
        static_cast<double>(*opt.budget) * static_cast<double>(b.size) / static_cast<double>(far_max);
    budget_left = static_cast<Index>(std::min(share, static_cast<double>(b.size)));
    if (budget_left >= b.size * 7 / 10) return whole_block(false);  // most of the block: the kernel
  }
  load_group(ctx, &b, rows, ws);
  ++ws.stats.traversed_blocks;

  // Per row: bounds settled so far (the folded parts, then this block's
  // closed and opened entries), the budget spent before this block and this
  // block's share of the keys not yet traversed.
  Eigen::ArrayXd settled_lo(m), settled_hi(m), spent(m), block_share(m), logfar(m), floor(m);
  for (Index i = 0; i < m; ++i) {
    const Index r = rows[static_cast<std::size_t>(i)];
    const auto ri = static_cast<std::size_t>(r);
    settled_lo(i) = acc.log_tmin(r);
    settled_hi(i) = acc.hi(r).log();
    spent(i) = ctx.spent[ri].log();
    block_share(i) = std::log(static_cast<double>(b.size) / static_cast<double>(ctx.far_left[ri]));
    logfar(i) = std::log(static_cast<double>(ctx.far[ri]));
    floor(i) = ctx.floor_low[ri];
  }
  const double log_eps = std::log(approx_eps_share * opt.eps);
  Eigen::ArrayXd used = Eigen::ArrayXd::Constant(m, -inf), allow(m), rest(m), tup(m);

  // deferred: to be opened unless it can be closed once the rest of the
  // block is settled (and its share of the allowance has grown).
  enum State : int { pending = 0, expanded = 1, opened = 2, closed = 3, deferred = 4 };
  EntryTable& t = ws.entries;
  t.clear(m);
  std::vector<Index> node;
  std::vector<int> state;
  Index undecided = b.size;  // keys in entries neither closed nor opened

  // Entry e's bounds from column j of the last evaluation.
  const auto store = [&](Index e, Index j) {
    const NodeBatchBounds& nbb = ws.bounds;
    t(EntryTable::lo, e) = nbb.lo.col(j).transpose().matrix();
    t(EntryTable::hi, e) = nbb.hi.col(j).transpose().matrix();
    t(EntryTable::est, e) = nbb.est.col(j).transpose().matrix();
    t(EntryTable::delta, e) = nbb.delta.col(j).transpose().matrix();
    t(EntryTable::vt, e) = nbb.vt.col(j).transpose().matrix();
    t(EntryTable::vs, e) = nbb.vs.col(j).transpose().matrix();
    t(EntryTable::cskip, e) = nbb.cskip.col(j).transpose().matrix();
    t(EntryTable::csumm, e) = nbb.csumm.col(j).transpose().matrix();
  };
  const auto evaluate = [&](const std::vector<Index>& batch) {
    const auto nb = static_cast<Index>(batch.size());
    evaluate_nodes(b, ws.gq, batch.data(), nb, ctx.rule, ws.scratch, ws.bounds);
    ws.stats.evaluated_nodes += nb;
    t.grow(nb, m);
    for (Index j = 0; j < nb; ++j) {
      const Index e = t.size + j;
      node.push_back(batch[static_cast<std::size_t>(j)]);
      state.push_back(pending);
      store(e, j);
      t(EntryTable::skip, e).setZero();
    }
    t.size += nb;
  };
  const auto cost = [&](Index e) -> Eigen::ArrayXd {
    return t(EntryTable::cskip, e).array().min(t(EntryTable::csumm, e).array()).transpose();
  };
  // What remains of the block's allowance after `used`.
  const auto update_rest = [&] { rest = log_sub(allow, used); };
  // T_low (settled and pending lower bounds) gives the allowance: eps T_low
  // minus what was spent before, times this block's share. T_up likewise
  // (for the cost check only).
  const auto update = [&] {
    std::vector<Index> pend;
    for (std::size_t e = 0; e < node.size(); ++e)
      if (state[e] == pending || state[e] == deferred) pend.push_back(static_cast<Index>(e));
    RowMatrix<double> plo(static_cast<Index>(pend.size()), m), phi(static_cast<Index>(pend.size()), m);
    for (std::size_t j = 0; j < pend.size(); ++j) {
      plo.row(static_cast<Index>(j)) = t(EntryTable::lo, pend[j]);
      phi.row(static_cast<Index>(j)) = t(EntryTable::hi, pend[j]);
    }
    // Not below the row's mass floor: later blocks' mass counts too.
    const Eigen::ArrayXd tlow = log_add(settled_lo, colwise_log_sum(plo)).max(floor);
    tup = log_add(settled_hi, colwise_log_sum(phi)).max(floor);
    allow = log_sub(tlow + log_eps, spent) + block_share;
    update_rest();
  };
  const auto settle = [&](Index e) {
    settled_lo = log_add(settled_lo, t(EntryTable::lo, e).transpose().array());
    settled_hi = log_add(settled_hi, t(EntryTable::hi, e).transpose().array());
  };
  // Closes entry e when every row can afford it, each row its option (skip
  // when it costs no more than summarising or at most a quarter of the
  // allowance); `force` closes it regardless.
  const auto try_close = [&](Index e, bool force) {
    const Index g = node[static_cast<std::size_t>(e)];
    const double share = std::log(b.count(g) / static_cast<double>(std::max<Index>(1, undecided)));
    const Eigen::ArrayXd a = rest + share;
    const Eigen::ArrayXd cs = t(EntryTable::cskip, e).transpose().array(),
                         cm = t(EntryTable::csumm, e).transpose().array();
    if (!force && (cs.min(cm) > a).any()) return false;
    const Eigen::Array<bool, Eigen::Dynamic, 1> sk = (cs <= cm) || (cs <= a - std::log(4.0));
    t(EntryTable::skip, e) = sk.cast<double>().transpose().matrix();
    used = log_add(used, sk.select(cs, cm));
    update_rest();
    state[static_cast<std::size_t>(e)] = closed;
    undecided -= b.node_count(g);
    settle(e);
    return true;
  };
  const auto open = [&](Index e) {
    state[static_cast<std::size_t>(e)] = opened;
    undecided -= b.node_count(node[static_cast<std::size_t>(e)]);
    settle(e);
  };
  // Some row could not afford entry e against T_up with its whole budget:
  // it will be opened whatever is found below it.
  const auto hopeless = [&](Index e) {
    const double logn = std::log(b.count(node[static_cast<std::size_t>(e)]));
    return (cost(e) > log_eps + tup + logn - logfar).any();
  };

  // Entry e's bounds again with the exact variances of its node's keys'
  // logits (node_bounds.hpp); false if the node keeps no covariance.
  const auto refine = [&](Index e) {
    Index g = node[static_cast<std::size_t>(e)];
    const Eigen::MatrixXd& cov = b.cov[static_cast<std::size_t>(g)];
    if (cov.size() == 0) return false;
    RowMatrix<double> y;
    serial_product(y, ws.gq.qt, cov);
    const Eigen::ArrayXXd quad = (y.array() * ws.gq.qt.array()).rowwise().sum();
    evaluate_nodes(b, ws.gq, &g, 1, ctx.rule, ws.scratch, ws.bounds, &quad);
    ++ws.stats.evaluated_nodes;
    store(e, 0);
    return true;
  };
  // Entry e is descended: its children join `batch`.
  const auto expand = [&](Index e, std::vector<Index>& batch) {
    state[static_cast<std::size_t>(e)] = expanded;
    const Index l = b.node_child[static_cast<std::size_t>(node[static_cast<std::size_t>(e)])];
    batch.push_back(l);
    batch.push_back(l + 1);
  };

  bool fallback = false;
  evaluate({0});
  update();
  std::vector<Index> batch;
  if (!budgeted) {
    std::vector<Index> fresh{0};
    for (Index depth = 0;; ++depth) {
      // Cheapest first (worst row, per key), so cheap nodes leave their share.
      std::vector<std::pair<double, Index>> keyed;
      for (const Index e : fresh)
        keyed.emplace_back(cost(e).maxCoeff() - std::log(b.count(node[static_cast<std::size_t>(e)])), e);
      std::sort(keyed.begin(), keyed.end());
      batch.clear();
      Index live = 0;
      for (const auto& [c, e] : keyed) {
        (void)c;
        if (try_close(e, false)) continue;
        const Index g = node[static_cast<std::size_t>(e)];
        // Only nodes small enough to tell (2^-probe_depth of the block or
        // less) count: a large node is expected to be descended.
        if (depth >= approx_probe_depth && (b.node_count(g) << approx_probe_depth) <= b.size && hopeless(e))
          live += b.node_count(g);
        // A leaf, or a tight node (every key's weight within e^3 of the
        // others') that some row cannot afford to close: deferred until the
        // rest of the block is settled (its share of the allowance has
        // grown by then); a leaf or a hopeless one is then opened whole if
        // it still cannot be closed (its keys carry that row's mass, and so
        // would its children's), another descended.
        const bool tight = (t(EntryTable::hi, e) - t(EntryTable::lo, e)).maxCoeff() <= approx_tight_spread;
        if (b.is_leaf(g) || tight) {
          state[static_cast<std::size_t>(e)] = deferred;
        } else {
          expand(e, batch);
        }
      }
      // And the earlier rounds' opened and deferred nodes (this round's
      // are counted above): a deferred node is likely to be opened.
      for (std::size_t e = 0; e < node.size(); ++e)
        if ((state[e] == opened || state[e] == deferred) &&
            std::find(fresh.begin(), fresh.end(), static_cast<Index>(e)) == fresh.end())
          live += b.node_count(node[e]);
      // Most keys certain to be opened: the kernel on the whole block is cheaper.
      if (depth >= approx_probe_depth && live * 10 > b.size * 7) fallback = true;
      if (fallback) break;
      if (batch.empty()) {
        // The deferred nodes, cheapest first, with what the rest left.
        update();
        std::vector<std::pair<double, Index>> later;
        for (std::size_t e = 0; e < node.size(); ++e)
          if (state[e] == deferred)
            later.emplace_back(cost(static_cast<Index>(e)).maxCoeff() - std::log(b.count(node[e])),
                               static_cast<Index>(e));
        std::sort(later.begin(), later.end());
        for (const auto& [c, e] : later) {
          (void)c;
          if (try_close(e, false) || (refine(e) && try_close(e, false))) continue;
          const Index g = node[static_cast<std::size_t>(e)];
          if (b.is_leaf(g) || hopeless(e)) {
            open(e);
          } else {
            expand(e, batch);
          }
        }
        if (batch.empty()) break;
      }
      fresh.clear();
      const Index e0 = t.size;
      evaluate(batch);
      for (Index e = e0; e < t.size; ++e)
        fresh.push_back(e);
      update();
    }
  } else {
    // Best first: the entry whose cheaper closure exceeds its allowance most.
    std::priority_queue<std::pair<double, Index>> heap;
    const auto offer = [&](Index e) {
      if (try_close(e, false)) return;
      const double share = std::log(b.count(node[static_cast<std::size_t>(e)]) /
                                    static_cast<double>(std::max<Index>(1, undecided)));
      heap.emplace((cost(e) - rest - share).maxCoeff(), e);
    };
    offer(0);
    const Index min_leaf = std::max<Index>(1, opt.index.leaf / 2);
    Index expansions = 0;
    const Index max_expansions = 4 * (*opt.budget / std::max<Index>(1, opt.index.leaf) + 16);
    while (!heap.empty() && budget_left >= min_leaf && expansions < max_expansions) {
      batch.clear();
      for (int k = 0; k < 8 && !heap.empty(); ++k) {
        const Index e = heap.top().second;
        heap.pop();
        if (try_close(e, false)) continue;  // T_low has grown
        const Index g = node[static_cast<std::size_t>(e)];
        if (b.is_leaf(g)) {
          if (b.node_count(g) <= budget_left) {
            open(e);
            budget_left -= b.node_count(g);
          } else {
            try_close(e, true);
          }
        } else {
          expand(e, batch);
          ++expansions;
        }
      }
      if (batch.empty()) continue;
      const Index e0 = t.size;
      evaluate(batch);
      update();
      for (Index e = e0; e < t.size; ++e)
        offer(e);
    }
    update();
    while (!heap.empty()) {
      try_close(heap.top().second, true);
      heap.pop();
    }
  }
  if (fallback) return whole_block(true);

  // Opened leaves: one kernel call over their gathered keys.
  Index n_open = 0;
  double kmax_open = 0;
  Eigen::VectorXd vabs_open = Eigen::VectorXd::Zero(ctx.d_v);
  std::vector<Index> closed_entries;
  for (std::size_t e = 0; e < node.size(); ++e) {
    if (state[e] == closed) closed_entries.push_back(static_cast<Index>(e));
    if (state[e] != opened) continue;
    const Index g = node[e];
    n_open += b.node_count(g);
    kmax_open = std::max(kmax_open, b.kmax(g));
    const Eigen::VectorXd va = node_vabs(b, g);
    for (Index c = 0; c < ctx.d_v; ++c)
      vabs_open(c) = nan_max(vabs_open(c), va(c));
  }
  if (n_open > 0) {
    ws.kbuf.resize(n_open, ctx.d);
    ws.vbuf.resize(n_open, ctx.d_v);
    Index row = 0;
    for (std::size_t e = 0; e < node.size(); ++e) {
      if (state[e] != opened) continue;
      const Index g = node[e];
      for (Index p = b.node_begin[static_cast<std::size_t>(g)]; p < b.node_end[static_cast<std::size_t>(g)];
           ++p, ++row) {
        const Index pos = b.perm[static_cast<std::size_t>(p)];
        std::copy(ctx.k + pos * ctx.ldk, ctx.k + pos * ctx.ldk + ctx.d, ws.kbuf.data() + row * ctx.d);
        std::copy(ctx.v + pos * ctx.ldv, ctx.v + pos * ctx.ldv + ctx.d_v, ws.vbuf.data() + row * ctx.d_v);
      }
    }
    ws.out.resize(m, ctx.d_v);
    ws.lse.resize(m);
    flash_attention_into<Scalar>(ws.qs, ws.kbuf, ws.vbuf, ws.out, ws.lse,
                                 AttentionOptions{Mask::none(), ctx.scale},
                                 FlashConfig{inner_threads, 0, approx_block_k});
    Eigen::VectorXd abs_logit(m);
    for (Index i = 0; i < m; ++i)
      abs_logit(i) = inflate(ws.gq.norm(i) * kmax_open);
    fold_exact(ctx, acc, rows, ws, n_open, abs_logit, vabs_open);
  }
  fold_closed(ctx, acc, b, rows, node, closed_entries, ws);
  for (Index i = 0; i < m; ++i)
    ctx.spent[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])].add(used(i));
  leave();
}

}  // namespace attnkit::detail
