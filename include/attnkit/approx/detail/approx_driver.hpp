#pragma once

/// \file attnkit/approx/detail/approx_driver.hpp
/// The phases of approx_attention over one set of inputs. Internal.
///
/// Row r sees the keys [0, e(r)). With F(r) = floor(e(r) / B_0) B_0 its
/// prefix splits into the binary-counter decomposition of F(r) / B_0 --
/// one dyadic block per set bit l, positions [m 2^l B_0, (m + 1) 2^l B_0)
/// with m = ((F / B_0) >> (l + 1)) << 1 -- and the rest [F(r), e(r)), fewer
/// than B_0 keys, attended exactly ("near"). Since e is non-decreasing in r,
/// the rows using one block form a contiguous run.
///
///  1. near: the kernel on runs of rows sharing F, with the mask;
///  2. signatures: each row's most massive node (second-order estimate)
///     among the top nodes of the largest block, to group rows by content;
///     with those nodes' means as a codebook, each row's mass floor (a
///     Jensen bound of its whole prefix's mass, to steer the allowances;
///     after the probe of step 3, and only if it found structure);
///  3. levels, largest first: each block's rows, in chunks, sorted by
///     signature and cut into groups, each group traversing the block
///     (group_traversal.hpp). A row uses at most one block per level, so the
///     chunks of a level update disjoint rows and run in parallel. Certified
///     mode first probes a few groups on the largest block at least two
///     groups use (blocks fewer than 64 rows use are not indexed): if all
///     of them hand the block to the kernel, the call stops building and
///     traversing and phase 5 computes every row;
///  4. finalise: each row's combination and bound (row_accumulator.hpp),
///     with its visible value range and key norms from one prefix scan;
///  5. certified mode: rows whose bound misses eps are recomputed exactly
///     over their whole prefix (in double if the Scalar kernel's own bound
///     misses too).

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/approx/detail/context.hpp"
#include "attnkit/approx/detail/group_traversal.hpp"
#include "attnkit/approx/detail/key_block.hpp"
#include "attnkit/approx/detail/products.hpp"
#include "attnkit/approx/detail/row_accumulator.hpp"
#include "attnkit/approx/kernel_bound.hpp"
#include "attnkit/approx/result.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit::detail {

/// Where the driver finds the blocks of a level.
class BlockSource {
 public:
  virtual ~BlockSource() = default;
  /// Called before level `level` is processed with the block indices m its
  /// rows use (outside any parallel region).
  virtual void prepare(Index level, const std::vector<Index>& ms, int threads) = 0;
  /// The block (level, m), or nullptr (its keys are then attended exactly).
  virtual const KeyBlock* find(Index level, Index m) const = 0;
  /// Called after the level.
  virtual void release(Index level) = 0;
  /// Bytes of the summaries held (the peak so far).
  virtual std::size_t peak_bytes() const = 0;
};

/// Builds each level's blocks from K and V when asked, frees them after.
template <typename Scalar>
class BuildingBlockSource final : public BlockSource {
 public:
  BuildingBlockSource(const ApproxContext<Scalar>& ctx, const ApproxIndexOptions& options)
      : ctx_(ctx), options_(options) {}
  void prepare(Index level, const std::vector<Index>& ms, int threads) override {
    blocks_.clear();
    blocks_.resize(ms.size());
    const Index size = options_.block << level;
    if (ms.size() == 1 || threads <= 1) {
      for (std::size_t t = 0; t < ms.size(); ++t)
        blocks_[t] = build_key_block(ctx_.k, ctx_.ldk, ctx_.v, ctx_.ldv, ctx_.d, ctx_.d_v, ms[t] * size, size,
                                     level, ms[t], options_, threads, ctx_.certified);
    } else {
      std::exception_ptr error;
      const auto n = static_cast<Index>(ms.size());
      ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(threads))
      for (Index t = 0; t < n; ++t) {
        try {
          blocks_[static_cast<std::size_t>(t)] = build_key_block(
              ctx_.k, ctx_.ldk, ctx_.v, ctx_.ldv, ctx_.d, ctx_.d_v, ms[static_cast<std::size_t>(t)] * size,
              size, level, ms[static_cast<std::size_t>(t)], options_, 1, ctx_.certified);
        } catch (...) {
          ATTNKIT_PRAGMA(omp critical(attnkit_approx_error))
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
    }
    level_ = level;
    std::size_t bytes = 0;
    for (const KeyBlock& b : blocks_)
      bytes += b.bytes();
    peak_ = std::max(peak_, bytes);
  }
  const KeyBlock* find(Index level, Index m) const override {
    if (level != level_) return nullptr;
    for (const KeyBlock& b : blocks_)
      if (b.index == m) return &b;
    return nullptr;
  }
  void release(Index) override { blocks_.clear(); }
  std::size_t peak_bytes() const override { return peak_; }

 private:
  const ApproxContext<Scalar>& ctx_;
  ApproxIndexOptions options_;
  std::vector<KeyBlock> blocks_;
  Index level_ = -1;
  std::size_t peak_ = 0;
};

/// Runs f(item, thread, inner_threads) for item in [0, items): on the
/// calling thread with every thread for the kernel when there is one item,
/// else on `team` threads, one thread each. Exceptions are rethrown here.
template <typename F>
void approx_parallel(Index items, int team, F&& f) {
  if (items <= 0) return;
  if (items == 1 || team <= 1) {
    for (Index it = 0; it < items; ++it)
      f(it, 0, items == 1 ? team : 1);
    return;
  }
  std::exception_ptr error;
  const int threads = static_cast<int>(std::min<Index>(team, items));
  (void)threads;
  ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(threads))
  for (Index it = 0; it < items; ++it) {
    int tid = 0;
#if defined(_OPENMP)
    tid = omp_get_thread_num();
#endif
    try {
      f(it, tid, 1);
    } catch (...) {
      ATTNKIT_PRAGMA(omp critical(attnkit_approx_error))
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

/// The mask of rows [r0, ...) of the call as a mask of their own.
inline Mask shifted_mask(const MaskLayout& mask, Index r0) {
  if (mask.kind() == MaskKind::none) return Mask::none();
  return Mask(mask.kind(), mask.offset() + r0);
}

/// Phase 1: the keys [F(r), e(r)) of every row, exactly.
template <typename Scalar>
void approx_near(ApproxContext<Scalar>& ctx, RowAccumulator& acc, std::vector<ApproxWorkspace<Scalar>>& wss) {
  // Runs of rows with one F, at most 256 rows each.
  std::vector<std::pair<Index, Index>> runs;
  for (Index r = 0; r < ctx.n_q;) {
    Index s = r;
    while (s < ctx.n_q && s - r < 256 &&
           ctx.far[static_cast<std::size_t>(s)] == ctx.far[static_cast<std::size_t>(r)])
      ++s;
    if (ctx.end[static_cast<std::size_t>(s - 1)] > ctx.far[static_cast<std::size_t>(r)])
      runs.emplace_back(r, s);
    r = s;
  }
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> kk(ctx.k, ctx.n_k, ctx.d,
                                                                        Eigen::OuterStride<>(ctx.ldk));
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> vv(ctx.v, ctx.n_k, ctx.d_v,
                                                                        Eigen::OuterStride<>(ctx.ldv));
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> qq(ctx.q, ctx.n_q, ctx.d,
                                                                        Eigen::OuterStride<>(ctx.ldq));
  approx_parallel(static_cast<Index>(runs.size()), ctx.threads, [&](Index it, int tid, int inner) {
    ApproxWorkspace<Scalar>& ws = wss[static_cast<std::size_t>(tid)];
    const auto [r0, r1] = runs[static_cast<std::size_t>(it)];
    const Index len = r1 - r0, lo = ctx.far[static_cast<std::size_t>(r0)],
                hi = ctx.end[static_cast<std::size_t>(r1 - 1)];
    ws.out.resize(len, ctx.d_v);
    ws.lse.resize(len);
    KeySet keys;
    keys.ranges = {KeyRange{lo, hi}};
    flash_attention_partial_into<Scalar>(qq.middleRows(r0, len), kk, vv, keys, ws.out, ws.lse,
                                         AttentionOptions{shifted_mask(ctx.mask, r0), ctx.scale},
                                         FlashConfig{inner, 0, approx_block_k});
    // Per row: the largest key norm and |v| per column over its own keys.
    Eigen::VectorXd vabs = Eigen::VectorXd::Zero(ctx.d_v);
    double kmax = 0;
    Index seen = lo;
    ws.xi.resize(static_cast<std::size_t>(ctx.d_v));
    for (Index i = 0; i < len; ++i) {
      const Index r = r0 + i, e = ctx.end[static_cast<std::size_t>(r)];
      for (; seen < e; ++seen) {
        kmax = std::max(kmax, kk.row(seen).template cast<double>().norm());
        for (Index c = 0; c < ctx.d_v; ++c)
          vabs(c) = nan_max(vabs(c), std::fabs(static_cast<double>(vv(seen, c))));
      }
      ctx.counts(r, 0) += static_cast<double>(e - lo);
      const double l = static_cast<double>(ws.lse(i));
      if (!(l > -std::numeric_limits<double>::infinity())) continue;
      const FlashRoundingBound fb =
          flash_rounding_bound<Scalar>(inflate(ctx.qnorm[static_cast<std::size_t>(r)] * inflate(kmax)), ctx.d,
                                       hi - lo, approx_block_k, std::fabs(l));
      for (Index c = 0; c < ctx.d_v; ++c)
        ws.xi[static_cast<std::size_t>(c)] = fb.output * vabs(c);
      acc.add(r, l, l - fb.lse, l + fb.lse, l + std::log(std::expm1(fb.lse)), ws.out.data() + i * ctx.d_v,
              ws.xi.data(), true);
    }
  });
}

/// Rows per codeword below which approx_mass_floor is not computed: its
/// O(n_k W d) assignment must stay small against the O(n_q n_k d) work it
/// steers (a decode step of one query does without).
inline constexpr Index approx_floor_rows_per_word = 64;

/// Phase 2b: every row's mass floor (ApproxContext::floor_low). Each key of
/// the whole blocks [0, max F) goes to its nearest codeword (Euclidean; the
/// W rows of `words`, original basis); a row's keys [0, F(r)) grouped by
/// codeword have mass at least sum_w n_w e^{q-hat . mean_w} (Jensen, for any
/// grouping), which is added to its near part's. Keys are swept in runs of
/// B_0, rows with that F evaluated after each. O(n_k W d) + O(n_q W d);
/// memory O(W d) and one index per key.
template <typename Scalar>
void approx_mass_floor(ApproxContext<Scalar>& ctx, const RowMatrix<double>& words) {
  Index fmax = 0;
  for (const Index f : ctx.far)
    fmax = std::max(fmax, f);
  const Index nw = words.rows(), d = ctx.d, b0 = ctx.options->index.block;
  if (fmax == 0 || nw == 0) return;
  const Eigen::RowVectorXd w2 = words.rowwise().squaredNorm().transpose();
  std::vector<Index> word(static_cast<std::size_t>(fmax));
  const Index chunk = 2048, chunks = (fmax + chunk - 1) / chunk;
  approx_parallel(chunks, ctx.threads, [&](Index it, int, int) {
    const Index j0 = it * chunk, j1 = std::min(fmax, j0 + chunk);
    RowMatrix<double> kc(j1 - j0, d);
    for (Index j = j0; j < j1; ++j)
      for (Index c = 0; c < d; ++c)
        kc(j - j0, c) = static_cast<double>(ctx.k[j * ctx.ldk + c]);
    Eigen::MatrixXd g;
    serial_product(g, kc, words.transpose());
    for (Index j = j0; j < j1; ++j) {
      Index best = 0;
      (w2 - 2 * g.row(j - j0)).minCoeff(&best);
      word[static_cast<std::size_t>(j)] = best;
    }
  });
  // Rows by F.
  std::vector<Index> order;
  for (Index r = 0; r < ctx.n_q; ++r)
    if (ctx.far[static_cast<std::size_t>(r)] > 0) order.push_back(r);
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return ctx.far[static_cast<std::size_t>(a)] < ctx.far[static_cast<std::size_t>(b)];
  });
  RowMatrix<double> sum = RowMatrix<double>::Zero(nw, d);
  Eigen::VectorXd cnt = Eigen::VectorXd::Zero(nw);
  std::size_t next = 0;
  for (Index f = b0; f <= fmax && next < order.size(); f += b0) {
    for (Index j = f - b0; j < f; ++j) {
      const Index w = word[static_cast<std::size_t>(j)];
      cnt(w) += 1;
      for (Index c = 0; c < d; ++c)
        sum(w, c) += static_cast<double>(ctx.k[j * ctx.ldk + c]);
    }
    std::size_t last = next;
    while (last < order.size() && ctx.far[static_cast<std::size_t>(order[last])] == f)
      ++last;
    if (last == next) continue;
    std::vector<Index> used;
    for (Index w = 0; w < nw; ++w)
      if (cnt(w) > 0) used.push_back(w);
    const auto nu = static_cast<Index>(used.size());
    RowMatrix<double> mean(nu, d);
    Eigen::RowVectorXd logn(nu);
    for (Index t = 0; t < nu; ++t) {
      const Index w = used[static_cast<std::size_t>(t)];
      mean.row(t) = sum.row(w) / cnt(w);
      logn(t) = std::log(cnt(w));
    }
    const Index rows = static_cast<Index>(last - next), part = 256;
    approx_parallel((rows + part - 1) / part, ctx.threads, [&](Index it, int, int) {
      const Index a0 = it * part, a1 = std::min(rows, a0 + part);
      RowMatrix<double> qh(a1 - a0, d);
      for (Index i = a0; i < a1; ++i) {
        const Index r = order[next + static_cast<std::size_t>(i)];
        for (Index c = 0; c < d; ++c)
          qh(i - a0, c) = ctx.scale * static_cast<double>(ctx.q[r * ctx.ldq + c]);
      }
      Eigen::MatrixXd lg;
      serial_product(lg, qh, mean.transpose());
      for (Index i = a0; i < a1; ++i) {
        const Index r = order[next + static_cast<std::size_t>(i)];
        LogSum ls;
        ls.add(ctx.floor_low[static_cast<std::size_t>(r)]);
        for (Index t = 0; t < nu; ++t)
          ls.add(lg(i - a0, t) + logn(t));
        ctx.floor_low[static_cast<std::size_t>(r)] = ls.log();
      }
    });
    next = last;
  }
}

/// Phase 2: row signatures for grouping. The nodes of `ref` with at most
/// max(leaf, size / 64) keys whose parent has more form a cut of its tree;
/// a row picks the cut node with the largest second-order estimate
/// log n + q.mu + q^2.var / 2 and climbs from it while the ancestor's radius
/// stays within 1.5 times the node's (the same group of keys, not yet a
/// mixture of groups); the signature is that ancestor's first perm
/// position, so rows drawn to the same group of keys share it and rows
/// drawn to nearby groups sort next to each other.
/// Returns the cut's means (original basis): the codebook of the mass floors.
template <typename Scalar>
RowMatrix<double> approx_signatures(ApproxContext<Scalar>& ctx, const KeyBlock& ref,
                                    std::vector<ApproxWorkspace<Scalar>>& wss) {
  const Index cut_size = std::max<Index>(ctx.options->index.leaf, ref.size / 64);
  std::vector<Index> cut;
  for (Index g = 0; g < ref.nodes(); ++g) {
    if (ref.node_count(g) <= cut_size) cut.push_back(g);
  }
  // Keep the top-most of them: drop a node whose parent is small too.
  const std::vector<Index>& parent = ref.node_parent;
  std::vector<Index> top, climbed;
  for (const Index g : cut) {
    const Index p = parent[static_cast<std::size_t>(g)];
    if (p >= 0 && ref.node_count(p) <= cut_size) continue;
    top.push_back(g);
    Index a = g;
    while (parent[static_cast<std::size_t>(a)] >= 0 &&
           ref.radius(parent[static_cast<std::size_t>(a)]) <= 1.5 * ref.radius(g))
      a = parent[static_cast<std::size_t>(a)];
    climbed.push_back(ref.node_begin[static_cast<std::size_t>(a)]);
  }
  const auto nt = static_cast<Index>(top.size());
  RowMatrix<double> mu(nt, ref.d), var(nt, ref.d);
  Eigen::RowVectorXd logn(nt);
  for (Index t = 0; t < nt; ++t) {
    const Index g = top[static_cast<std::size_t>(t)];
    mu.row(t) = ref.geom.row(g).segment(0, ref.d);
    var.row(t) = ref.geom.row(g).segment(4 * ref.d, ref.d);
    logn(t) = std::log(ref.count(g));
  }
  const Index chunk = 512, chunks = (ctx.n_q + chunk - 1) / chunk;
  approx_parallel(chunks, ctx.threads, [&](Index it, int tid, int) {
    ApproxWorkspace<Scalar>& ws = wss[static_cast<std::size_t>(tid)];
    std::vector<Index> rows;
    for (Index r = it * chunk; r < std::min(ctx.n_q, (it + 1) * chunk); ++r)
      if (ctx.far[static_cast<std::size_t>(r)] > 0) rows.push_back(r);
    if (rows.empty()) return;
    load_group(ctx, &ref, rows, ws);
    Eigen::MatrixXd c, se;
    serial_product(c, ws.gq.qt, mu.transpose());
    serial_product(se, ws.gq.qsq, var.transpose());
    const Eigen::MatrixXd est = (c + 0.5 * se).rowwise() + logn;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      Index best = 0;
      est.row(static_cast<Index>(i)).maxCoeff(&best);
      ctx.sig[static_cast<std::size_t>(rows[i])] = climbed[static_cast<std::size_t>(best)];
    }
  });
  return ref.basis.size() > 0 ? RowMatrix<double>(mu * ref.basis.transpose()) : mu;
}

/// Cuts rows (one chunk of a block's rows), in signature order, into
/// groups of at most group_rows; a group also ends where the signature
/// changes once it has an eighth of that many rows.
inline std::vector<std::vector<Index>> approx_groups(const std::vector<Index>& sig, Index r0, Index r1,
                                                     Index group_rows) {
  std::vector<Index> order(static_cast<std::size_t>(r1 - r0));
  std::iota(order.begin(), order.end(), r0);
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return sig[static_cast<std::size_t>(a)] < sig[static_cast<std::size_t>(b)];
  });
  const auto half = static_cast<std::size_t>(std::max<Index>(1, group_rows / 8));
  std::vector<std::vector<Index>> groups;
  std::vector<Index> cur;
  for (const Index r : order) {
    const bool change =
        !cur.empty() && sig[static_cast<std::size_t>(r)] != sig[static_cast<std::size_t>(cur.back())];
    if (!cur.empty() && (static_cast<Index>(cur.size()) >= group_rows || (change && cur.size() >= half))) {
      groups.push_back(std::move(cur));
      cur.clear();
    }
    cur.push_back(r);
  }
  if (!cur.empty()) groups.push_back(std::move(cur));
  return groups;
}

/// Phase 3: every level's blocks.
template <typename Scalar>
void approx_levels(ApproxContext<Scalar>& ctx, RowAccumulator& acc, BlockSource& src,
                   std::vector<ApproxWorkspace<Scalar>>& wss) {
  const Index b0 = ctx.options->index.block;
  Index cmax = 0;
  for (const Index f : ctx.far)
    cmax = std::max(cmax, f / b0);
  if (cmax == 0) return;
  Index top = 0;
  while ((Index(2) << top) <= cmax)
    ++top;
  bool signed_rows = false, probed_level = false, floored = false;
  RowMatrix<double> words;
  for (Index level = top; level >= 0; --level) {
    // The blocks of this level and the runs of rows using them.
    struct Use {
      Index m, r0, r1;
    };
    std::vector<Use> uses;
    for (Index r = 0; r < ctx.n_q; ++r) {
      const Index c = ctx.far[static_cast<std::size_t>(r)] / b0;
      if (!((c >> level) & 1)) continue;
      const Index m = (c >> (level + 1)) << 1;
      if (!uses.empty() && uses.back().m == m && uses.back().r1 == r)
        ++uses.back().r1;
      else
        uses.push_back({m, r, r + 1});
    }
    if (uses.empty()) continue;
    const Index size = b0 << level;
    // Certified mode sends blocks of fewer than approx_min_leaves leaves to
    // the kernel whole: they are not built.
    const bool build = !ctx.certified || size >= approx_min_leaves * ctx.options->index.leaf;
    std::vector<Index> ms;
    // Certified mode does not build a block fewer than approx_min_block_rows
    // rows use (the last rows' top block, say): summarising S keys costs
    // O(S d^2), more than the kernel's O(rows S d) for those rows.
    std::vector<std::pair<Index, Index>> rows_of;  // (m, rows)
    for (const Use& u : uses) {
      if (rows_of.empty() || rows_of.back().first != u.m) rows_of.emplace_back(u.m, 0);
      rows_of.back().second += u.r1 - u.r0;
    }
    for (const auto& [m, rows] : rows_of)
      if (build && (!ctx.certified || rows >= approx_min_block_rows)) ms.push_back(m);
    src.prepare(level, ms, ctx.threads);
    if (!signed_rows) {
      // The largest block present gives the signatures.
      for (const Index m : ms)
        if (const KeyBlock* ref = src.find(level, m)) {
          words = approx_signatures(ctx, *ref, wss);
          signed_rows = true;
          break;
        }
    }
    // Items: chunks of at most 4096 rows of one block.
    struct Item {
      Index m, r0, r1;
    };
    std::vector<Item> items;
    for (const Use& u : uses)
      for (Index a = u.r0; a < u.r1; a += 4096)
        items.push_back({u.m, a, std::min(u.r1, a + 4096)});
    // Certified mode, first level whose first item is indexed and has two
    // groups or more: probe approx_probe_groups groups of it, spread over its
    // signature order. If every
    // one of them handed the block to the kernel, the data has no structure
    // the bounds can use: the call stops here and every row is computed by
    // the kernel over its whole prefix (phase 5), at about the kernel's cost.
    std::vector<std::vector<Index>> first_groups;
    std::vector<char> probed;
    if (ctx.certified && !probed_level && !items.empty()) {
      const KeyBlock* block = src.find(level, items[0].m);
      if (block) first_groups = approx_groups(ctx.sig, items[0].r0, items[0].r1, ctx.options->group_rows);
      const auto ng = static_cast<Index>(first_groups.size());
      if (ng < 2) first_groups.clear();  // too few rows to tell (the last rows' top block): the next level
      if (ng >= 2) {
        probed_level = true;
        const Index probes = std::min(ng, approx_probe_groups);
        probed.assign(first_groups.size(), 0);
        ApproxWorkspace<Scalar>& ws = wss[0];
        const Index exact0 = ws.stats.exact_blocks, traversed0 = ws.stats.traversed_blocks;
        for (Index p = 0; p < probes; ++p) {
          const Index g = p * ng / probes;
          probed[static_cast<std::size_t>(g)] = 1;
          traverse_group(ctx, acc, *block, first_groups[static_cast<std::size_t>(g)], ws, ctx.threads);
        }
        const Index exact = ws.stats.exact_blocks - exact0,
                    traversed = ws.stats.traversed_blocks - traversed0;
        if (exact == probes && traversed == probes) {
          ctx.unstructured = true;
          src.release(level);
          return;
        }
      }
    }
    // The mass floors, once the probe (if any) has found structure: on data
    // without any they would be wasted.
    if (signed_rows && !floored && (!ctx.certified || probed_level)) {
      floored = true;
      if (ctx.n_q >= approx_floor_rows_per_word * words.rows()) approx_mass_floor(ctx, words);
    }
    approx_parallel(static_cast<Index>(items.size()), ctx.threads, [&](Index it, int tid, int inner) {
      ApproxWorkspace<Scalar>& ws = wss[static_cast<std::size_t>(tid)];
      const Item& item = items[static_cast<std::size_t>(it)];
      const KeyBlock* block = src.find(level, item.m);
      if (it == 0 && !probed.empty()) {
        for (std::size_t g = 0; g < first_groups.size(); ++g)
          if (!probed[g]) traverse_group(ctx, acc, *block, first_groups[g], ws, inner);
        return;
      }
      if (!block) {
        // Not in the index: the kernel on the block's positions.
        std::vector<Index> rows(static_cast<std::size_t>(item.r1 - item.r0));
        std::iota(rows.begin(), rows.end(), item.r0);
        double kmax = 0;
        Eigen::VectorXd vabs = Eigen::VectorXd::Zero(ctx.d_v);
        for (Index j = item.m * size; j < (item.m + 1) * size; ++j) {
          double n2 = 0;
          for (Index c = 0; c < ctx.d; ++c) {
            const double x = static_cast<double>(ctx.k[j * ctx.ldk + c]);
            n2 += x * x;
          }
          kmax = std::max(kmax, std::sqrt(n2));
          for (Index c = 0; c < ctx.d_v; ++c)
            vabs(c) = nan_max(vabs(c), std::fabs(static_cast<double>(ctx.v[j * ctx.ldv + c])));
        }
        for (Index a = 0; a < static_cast<Index>(rows.size()); a += 256) {
          const std::vector<Index> part(
              rows.begin() + a, rows.begin() + std::min<Index>(a + 256, static_cast<Index>(rows.size())));
          load_group(ctx, nullptr, part, ws);
          exact_range(ctx, acc, part, item.m * size, size, inflate(kmax), vabs, ws, inner);
        }
        for (const Index r : rows)
          ctx.far_left[static_cast<std::size_t>(r)] -= size;
        return;
      }
      for (const std::vector<Index>& group :
           approx_groups(ctx.sig, item.r0, item.r1, ctx.options->group_rows))
        traverse_group(ctx, acc, *block, group, ws, inner);
    });
    src.release(level);
  }
}

/// A row whose bound missed eps: what its exact recomputation needs.
struct ApproxRepair {
  Index row;
  double kmax;
  Eigen::VectorXd vabs;
};

/// Phase 4: each row's combination, bound and stats; returns the rows to
/// repair (certified mode).
template <typename Scalar>
std::vector<ApproxRepair> approx_finalise(ApproxContext<Scalar>& ctx, RowAccumulator& acc,
                                          ApproxResult<Scalar>& res) {
  constexpr double inf = std::numeric_limits<double>::infinity(),
                   nan = std::numeric_limits<double>::quiet_NaN();
  constexpr double ud = 0x1.0p-53;
  const double us = unit_roundoff<Scalar>();
  const double eps = ctx.options->eps;
  const int team =
      static_cast<int>(std::min<Index>(std::max(1, ctx.threads), std::max<Index>(1, ctx.n_q / 256)));
  std::vector<std::vector<ApproxRepair>> repairs(static_cast<std::size_t>(team));
  approx_parallel(team, team, [&](Index t, int, int) {
    const Index r0 = ctx.n_q * t / team, r1 = ctx.n_q * (t + 1) / team;
    Eigen::VectorXd vmin = Eigen::VectorXd::Constant(ctx.d_v, inf),
                    vmax = Eigen::VectorXd::Constant(ctx.d_v, -inf);
    Eigen::VectorXd vabs(ctx.d_v), range(ctx.d_v);
    double kmax = 0;
    Index seen = 0;
    for (Index r = r0; r < r1; ++r) {
      double worst = 0;
      const Index e = ctx.end[static_cast<std::size_t>(r)];
      for (; seen < e; ++seen) {
        double n2 = 0;
        for (Index c = 0; c < ctx.d; ++c) {
          const double x = static_cast<double>(ctx.k[seen * ctx.ldk + c]);
          n2 += x * x;
        }
        kmax = std::max(kmax, std::sqrt(n2));
        for (Index c = 0; c < ctx.d_v; ++c) {
          const double x = static_cast<double>(ctx.v[seen * ctx.ldv + c]);
          vmin(c) = nan_min(vmin(c), x);
          vmax(c) = nan_max(vmax(c), x);
        }
      }
      auto out = res.output.row(r);
      auto bound = res.bound.row(r);
      if (ctx.unstructured && e > 0) {
        // Phase 5 computes the row; NaN marks the columns with a non-finite value.
        for (Index c = 0; c < ctx.d_v; ++c) {
          const bool finite = std::isfinite(vmin(c)) && std::isfinite(vmax(c));
          vabs(c) = finite ? std::max(std::fabs(vmin(c)), std::fabs(vmax(c))) : nan;
          bound(c) = finite ? 0.0 : nan;
        }
        repairs[static_cast<std::size_t>(t)].push_back({r, kmax, vabs});
        continue;
      }
      if (acc.parts(r) == 0 || !(acc.est(r).s > 0)) {
        // No key (or no mass): zero row, lse -inf.
        out.setZero();
        res.lse(r) = -std::numeric_limits<Scalar>::infinity();
        bound.setZero();
        res.lse_bound(r) = 0;
        continue;
      }
      for (Index c = 0; c < ctx.d_v; ++c) {
        const bool finite = std::isfinite(vmin(c)) && std::isfinite(vmax(c));
        vabs(c) = finite ? std::max(std::fabs(vmin(c)), std::fabs(vmax(c))) : nan;
        range(c) = finite ? vmax(c) - vmin(c) : nan;
      }
      const LogSum& est = acc.est(r);
      const double* o = acc.o(r);
      double* w = acc.w(r);
      const double lse = est.log();
      if (acc.single_exact(r)) {
        // One exact part: the kernel's own result and bound.
        for (Index c = 0; c < ctx.d_v; ++c)
          out(c) = static_cast<Scalar>(o[c]);
        res.lse(r) = static_cast<Scalar>(est.m);
        res.lse_bound(r) = acc.hi(r).m - est.m;
      } else {
        const double log_tmin = acc.lo(r).log();
        const double mass = std::exp(acc.err(r).log() - log_tmin);
        const double parts = static_cast<double>(acc.parts(r));
        for (Index c = 0; c < ctx.d_v; ++c) {
          out(c) = static_cast<Scalar>(o[c] / est.s);
          w[c] =
              (range(c) > 0 ? range(c) * mass : 0.0) + w[c] / est.s + (us + (32 + 8 * parts) * ud) * vabs(c);
        }
        res.lse(r) = static_cast<Scalar>(lse);
        res.lse_bound(r) =
            std::max(lse - log_tmin, acc.hi(r).log() - lse) + (us + 16 * ud) * (std::fabs(lse) + 1);
      }
      bool miss = false;
      for (Index c = 0; c < ctx.d_v; ++c) {
        if (vabs(c) != vabs(c)) {  // a non-finite value in the row's keys: the column is NaN
          out(c) = std::numeric_limits<Scalar>::quiet_NaN();
          bound(c) = nan;
          continue;
        }
        if (bound(c) > eps * vabs(c)) miss = true;
        worst = std::max(worst, bound(c) > 0 ? (vabs(c) > 0 ? bound(c) / vabs(c) : inf) : 0.0);
      }
      ctx.ratio[static_cast<std::size_t>(r)] = worst;
      if (miss && ctx.certified) repairs[static_cast<std::size_t>(t)].push_back({r, kmax, vabs});
    }
  });
  std::vector<ApproxRepair> all;
  for (auto& v : repairs)
    all.insert(all.end(), std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
  return all;
}

/// Phase 5: the kernel on each repaired row's whole prefix (in double when
/// the Scalar kernel's bound misses eps too).
template <typename Scalar>
void approx_repair(ApproxContext<Scalar>& ctx, const std::vector<ApproxRepair>& rows,
                   ApproxResult<Scalar>& res) {
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> kk(ctx.k, ctx.n_k, ctx.d,
                                                                        Eigen::OuterStride<>(ctx.ldk));
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> vv(ctx.v, ctx.n_k, ctx.d_v,
                                                                        Eigen::OuterStride<>(ctx.ldv));
  const Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>> qq(ctx.q, ctx.n_q, ctx.d,
                                                                        Eigen::OuterStride<>(ctx.ldq));
  const double eps = ctx.options->eps;
  const double us = unit_roundoff<Scalar>();
  const auto row_ratio = [&](Index r, const Eigen::VectorXd& vabs) {
    double worst = 0;
    for (Index c = 0; c < ctx.d_v; ++c) {
      const double bc = res.bound(r, c);
      if (bc == bc && bc > 0)
        worst = std::max(worst, vabs(c) > 0 ? bc / vabs(c) : std::numeric_limits<double>::infinity());
    }
    return worst;
  };
  for (std::size_t a = 0; a < rows.size();) {
    std::size_t b = a + 1;
    while (b < rows.size() && rows[b].row == rows[b - 1].row + 1)
      ++b;
    const Index r0 = rows[a].row, len = static_cast<Index>(b - a);
    const AttentionOptions opt{shifted_mask(ctx.mask, r0), ctx.scale};
    const FlashConfig config{ctx.threads, 0, approx_block_k};
    const AttentionResult<Scalar> exact =
        flash_attention<Scalar>(qq.middleRows(r0, len), kk, vv, opt, config);
    std::optional<AttentionResult<double>> wide;
    for (Index i = 0; i < len; ++i) {
      const ApproxRepair& rep = rows[a + static_cast<std::size_t>(i)];
      const Index r = rep.row;
      const double logit = inflate(ctx.qnorm[static_cast<std::size_t>(r)] * inflate(rep.kmax));
      const double l = static_cast<double>(exact.lse(i));
      const FlashRoundingBound fb =
          flash_rounding_bound<Scalar>(logit, ctx.d, ctx.n_k, approx_block_k, std::fabs(l));
      bool miss = false;
      for (Index c = 0; c < ctx.d_v; ++c)
        miss = miss || fb.output * rep.vabs(c) > eps * rep.vabs(c);
      ++res.stats.repaired_rows;
      const double visible = static_cast<double>(ctx.end[static_cast<std::size_t>(r)]);
      ctx.counts.row(r) << visible, 0, 0;
      if (!miss || std::is_same_v<Scalar, double>) {
        res.output.row(r) = exact.output.row(i);
        res.lse(r) = exact.lse(i);
        for (Index c = 0; c < ctx.d_v; ++c)
          if (res.bound(r, c) == res.bound(r, c)) res.bound(r, c) = fb.output * rep.vabs(c);
        res.lse_bound(r) = fb.lse;
        ctx.ratio[static_cast<std::size_t>(r)] = row_ratio(r, rep.vabs);
        continue;
      }
      if (!wide) wide = flash_attention<double>(qq.middleRows(r0, len), kk, vv, opt, config);
      ++res.stats.double_rows;
      const double lw = wide->lse(i);
      const FlashRoundingBound fw =
          flash_rounding_bound<double>(logit, ctx.d, ctx.n_k, approx_block_k, std::fabs(lw));
      for (Index c = 0; c < ctx.d_v; ++c) {
        res.output(r, c) = static_cast<Scalar>(wide->output(i, c));
        if (res.bound(r, c) == res.bound(r, c)) res.bound(r, c) = (fw.output + us) * rep.vabs(c);
      }
      res.lse(r) = static_cast<Scalar>(lw);
      res.lse_bound(r) = fw.lse + us * (std::fabs(lw) + 1);
      ctx.ratio[static_cast<std::size_t>(r)] = row_ratio(r, rep.vabs);
    }
    a = b;
  }
}

/// Runs phases 1-5 into res (allocated by the caller).
template <typename Scalar>
void approx_run(ApproxContext<Scalar>& ctx, BlockSource& src, ApproxResult<Scalar>& res) {
  const int team = std::max(1, ctx.threads);
  std::vector<ApproxWorkspace<Scalar>> wss(static_cast<std::size_t>(team));
  RowAccumulator acc(ctx.n_q, ctx.d_v, res.bound);
  approx_near(ctx, acc, wss);
  for (Index r = 0; r < ctx.n_q; ++r)
    ctx.floor_low[static_cast<std::size_t>(r)] = acc.log_tmin(r);
  approx_levels(ctx, acc, src, wss);
  const std::vector<ApproxRepair> repairs = approx_finalise(ctx, acc, res);
  if (!repairs.empty()) approx_repair(ctx, repairs, res);
  ApproxStats& st = res.stats;
  for (const ApproxWorkspace<Scalar>& ws : wss) {
    st.exact_blocks += ws.stats.exact_blocks;
    st.traversed_blocks += ws.stats.traversed_blocks;
    st.evaluated_nodes += ws.stats.evaluated_nodes;
  }
  st.exact_keys = ctx.counts.col(0).sum();
  st.summarised_keys = ctx.counts.col(1).sum();
  st.skipped_keys = ctx.counts.col(2).sum();
  st.index_bytes = src.peak_bytes();
  st.max_bound_ratio = ctx.ratio.empty() ? 0.0 : *std::max_element(ctx.ratio.begin(), ctx.ratio.end());
  st.within_eps = st.max_bound_ratio <= ctx.options->eps;
}

}  // namespace attnkit::detail
