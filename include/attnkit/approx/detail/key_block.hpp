#pragma once

/// \file attnkit/approx/detail/key_block.hpp
/// One dyadic block of key positions [begin, begin + size) and the tree over
/// its keys that approx_attention tests queries against. Internal.
///
/// The block's keys are first expressed in an orthonormal basis R (the
/// principal axes of the block's keys, or the identity): x_j = R^T k_j,
/// computed in double. A tree splits them in two (split_keys: a two-means
/// direction, cut at the gap between the two groups or at the median) down
/// to leaves of at most `leaf` keys; perm lists the block's positions in leaf order, so every node
/// owns the contiguous run perm[node_begin, node_end). Nodes are stored in
/// breadth-first order (children after parents, both children adjacent).
///
/// Every node g keeps, in the block's basis (x coordinates):
///  - count n_g, centroid mu_g (mean of x), per-axis variance var_g and
///    standard deviation sd_g, trace = sum of var_g;
///  - a box: centre b_g and half-widths h_g with |x_jc - b_gc| <= h_gc;
///  - radius r_g >= max_j |x_j - mu_g| and the diagonal Mahalanobis radius
///    rsd_g >= max_j sqrt(sum_c (x_jc - mu_gc)^2 / var_gc) (axes with
///    var = 0 on which every key sits at the centroid are left out; +inf if a
///    key is off it);
///  - for nodes of at least approx_cov_min keys, the keys' covariance
///    matrix Sigma_g = mean_j (x_j - mu_g)(x_j - mu_g)^T as computed in
///    double, so that the variance q~^T Sigma_g q~ of any query's logits over
///    the node is known (node_bounds.hpp says to what accuracy);
///  - kmax_g >= max_j |k_j| (Euclidean, original basis);
///  - the mean, minimum, maximum and standard deviation of every value
///    column (min/max/sd NaN if a value is NaN), rho_g = max_c (max - min)_gc
///    / max_j |v_jc| and rho_sd_g = max_c sd_gc / max_j |v_jc| over the whole
///    block (NaN columns ignored): how large the node's value spread is
///    against the values any query of the block sees.
/// Radii, half-widths, variances and kmax are rounded upwards (a
/// relative 1e-9 covers the double arithmetic that formed them); the mean is
/// the rounded mean, whose error the bounds add as slack
/// (approx/detail/node_bounds.hpp).
///
/// Cost: O(size d^2) for the basis (two products) and for the covariances
/// (formed from the keys of the nodes of at most approx_cov_base keys,
/// each key in at most a few of them, merged upwards in O(d^2) per node),
/// O(size d depth)
/// for the radii and
/// O(size (d log size)) for the splits, O(size (d + d_v)) for the other
/// summaries; memory after the build: nodes (about 2 size / leaf) x
/// (5 d + 4 d_v + 7) doubles, d^2 doubles per node of at least
/// approx_cov_min keys (2 size / approx_cov_min nodes for even splits,
/// up to about 5 size / 64 for splits of 1/8 to 7/8: size d^2 / 64 to
/// 5 size d^2 / 64 doubles in all, transiently those of the smaller base
/// nodes too), the perm (size indices) and R (d^2).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

#include <Eigen/Eigenvalues>

#include "attnkit/approx/detail/products.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit::detail {

/// NaN-propagating minimum and maximum.
inline double nan_min(double a, double b) {
  return (a != a || b != b) ? std::numeric_limits<double>::quiet_NaN() : (b < a ? b : a);
}
inline double nan_max(double a, double b) {
  return (a != a || b != b) ? std::numeric_limits<double>::quiet_NaN() : (b > a ? b : a);
}

/// The smallest double >= x * (1 + rel): an upward-rounded inflation.
inline double inflate(double x, double rel = 1e-9) {
  return std::nextafter(x * (1 + rel), std::numeric_limits<double>::infinity());
}

struct KeyBlock {
  Index level = 0;  ///< dyadic level l: size = B_0 2^l
  Index index = 0;  ///< m: begin = m * size
  Index begin = 0;  ///< first position
  Index size = 0;   ///< keys
  Index d = 0, d_v = 0;

  std::vector<Index> perm;        ///< positions in leaf order
  std::vector<Index> node_begin;  ///< run of perm owned by node g
  std::vector<Index> node_end;
  std::vector<Index> node_child;   ///< left child (right = left + 1); -1 for a leaf
  std::vector<Index> node_parent;  ///< -1 for the root
  std::vector<Index> node_depth;

  /// nodes x 5d: [mu | box centre | box half-width | sd | var] (block basis).
  RowMatrix<double> geom;
  /// nodes x 4 d_v: [mean | min | max | sd] of the values.
  RowMatrix<double> vstat;
  Eigen::VectorXd count, radius, rsd, trace, kmax, rho, rho_sd;
  /// The keys' covariance Sigma_g (d x d, block basis, as computed in
  /// double) of every node of at least approx_cov_min keys; empty for the
  /// others.
  std::vector<Eigen::MatrixXd> cov;
  /// d x d orthonormal basis (column c = axis c); empty = identity.
  RowMatrix<double> basis;
  /// ||R^T R - I||_F, an upper bound of the basis' departure from orthonormal.
  double basis_error = 0;

  Index nodes() const { return static_cast<Index>(node_begin.size()); }
  bool is_leaf(Index g) const { return node_child[static_cast<std::size_t>(g)] < 0; }
  Index node_count(Index g) const {
    return node_end[static_cast<std::size_t>(g)] - node_begin[static_cast<std::size_t>(g)];
  }
  std::size_t bytes() const {
    const auto n = static_cast<std::size_t>(nodes());
    std::size_t covs = 0;
    for (const Eigen::MatrixXd& c : cov)
      covs += static_cast<std::size_t>(c.size());
    return sizeof(double) * static_cast<std::size_t>(geom.size() + vstat.size() + basis.size()) +
           sizeof(double) * (7 * n + covs) + sizeof(Index) * (perm.size() + 5 * n);
  }
};

/// Splits the keys of rows [lo, hi) of x (their block indices in local) in
/// two, reordering both so that the first part comes first; returns where
/// the second part starts. Two-means
/// on up to 64 evenly spaced keys (seeds: a farthest pair, two Lloyd
/// steps) gives a direction w = c_2 - c_1; along w the keys split at the
/// widest gap among the central three quarters of them when it is at least
/// 4 times their mean spacing there (groups of keys are not cut), else at
/// the midpoint of the two centres when each side keeps at least an eighth
/// of them, else at the median. Identical keys split at the middle.
/// O(n log n + n d), on contiguous rows.
inline Index split_keys(RowMatrix<double>& x, std::vector<Index>& local, Index lo, Index hi,
                        std::vector<std::pair<double, Index>>& proj) {
  const Index n = hi - lo, d = x.cols();
  const Index samples = std::min<Index>(n, 64);
  RowMatrix<double> s(samples, d);
  for (Index t = 0; t < samples; ++t)
    s.row(t) = x.row(lo + t * n / samples);
  Index i1 = 0, i2 = 0;
  (s.rowwise() - s.row(0)).rowwise().squaredNorm().maxCoeff(&i1);
  (s.rowwise() - s.row(i1)).rowwise().squaredNorm().maxCoeff(&i2);
  Eigen::RowVectorXd c1 = s.row(i1), c2 = s.row(i2);
  for (int it = 0; it < 2; ++it) {
    Eigen::RowVectorXd n1 = Eigen::RowVectorXd::Zero(d), n2 = Eigen::RowVectorXd::Zero(d);
    Index k1 = 0, k2 = 0;
    for (Index t = 0; t < samples; ++t) {
      if ((s.row(t) - c1).squaredNorm() <= (s.row(t) - c2).squaredNorm()) {
        n1 += s.row(t);
        ++k1;
      } else {
        n2 += s.row(t);
        ++k2;
      }
    }
    if (k1 == 0 || k2 == 0) break;
    c1 = n1 / static_cast<double>(k1);
    c2 = n2 / static_cast<double>(k2);
  }
  const Eigen::RowVectorXd w = c2 - c1;
  if (!(w.squaredNorm() > 0)) return lo + n / 2;
  proj.resize(static_cast<std::size_t>(n));
  {
    const Eigen::VectorXd along = x.middleRows(lo, n) * w.transpose();
    for (Index t = 0; t < n; ++t)
      proj[static_cast<std::size_t>(t)] = {along(t), t};
  }
  // Rows (and their indices) in the order of proj.
  const auto reorder = [&] {
    RowMatrix<double> rows(n, d);
    std::vector<Index> idx(static_cast<std::size_t>(n));
    for (Index t = 0; t < n; ++t) {
      const Index from = proj[static_cast<std::size_t>(t)].second;
      rows.row(t) = x.row(lo + from);
      idx[static_cast<std::size_t>(t)] = local[static_cast<std::size_t>(lo + from)];
    }
    x.middleRows(lo, n) = rows;
    std::copy(idx.begin(), idx.end(), local.begin() + lo);
  };
  // A pronounced gap among the central three quarters of the projections
  // (at least 4 times their mean spacing there) is where groups of keys
  // part: cut at the widest one.
  if (n >= 16) {
    std::sort(proj.begin(), proj.end());
    const Index a = n / 8, z = n - n / 8;
    const double spacing =
        (proj[static_cast<std::size_t>(z - 1)].first - proj[static_cast<std::size_t>(a)].first) /
        static_cast<double>(z - 1 - a);
    Index best = -1;
    double widest = 0;
    for (Index t = a + 1; t < z; ++t) {
      const double gap =
          proj[static_cast<std::size_t>(t)].first - proj[static_cast<std::size_t>(t - 1)].first;
      if (gap > widest) {
        widest = gap;
        best = t;
      }
    }
    if (best > 0 && widest > 4 * spacing) {
      reorder();
      return lo + best;
    }
  }
  const double cut = 0.5 * (c1.dot(w) + c2.dot(w));
  Index left = 0;
  for (const auto& pr : proj)
    left += pr.first < cut ? 1 : 0;
  Index mid;
  if (left * 8 >= n && (n - left) * 8 >= n) {
    std::partition(proj.begin(), proj.end(),
                   [&](const std::pair<double, Index>& pr) { return pr.first < cut; });
    mid = left;
  } else {
    mid = n / 2;
    std::nth_element(proj.begin(), proj.begin() + mid, proj.end());
  }
  reorder();
  return lo + mid;
}

/// Nodes of at most approx_cov_base keys whose parent has more, or of at
/// least approx_cov_min, form their covariance from their keys; larger ones
/// merge their children's:
/// Sigma_p = sum_i (n_i / n_p) (Sigma_i + delta_i delta_i^T), delta_i =
/// mu_i - mu_p. Those of fewer than approx_cov_min keys do not keep it.
inline constexpr Index approx_cov_base = 256;
inline constexpr Index approx_cov_min = 128;

/// Builds the block of positions [begin, begin + size) of row-major K
/// (row stride ldk) and V (stride ldv). `threads` > 1 runs the per-node
/// scans in an OpenMP loop (call it outside a parallel region then).
/// `covariances` = false leaves KeyBlock::cov empty (only certified mode's
/// traversal uses it).
template <typename Scalar>
KeyBlock build_key_block(const Scalar* k, Index ldk, const Scalar* v, Index ldv, Index d, Index d_v,
                         Index begin, Index size, Index level, Index index, const ApproxIndexOptions& options,
                         int threads = 1, bool covariances = true) {
  KeyBlock b;
  b.level = level;
  b.index = index;
  b.begin = begin;
  b.size = size;
  b.d = d;
  b.d_v = d_v;
  constexpr double inf = std::numeric_limits<double>::infinity();

  // Keys in double, then in the block's basis.
  RowMatrix<double> x(size, d);
  for (Index j = 0; j < size; ++j)
    for (Index c = 0; c < d; ++c)
      x(j, c) = static_cast<double>(k[(begin + j) * ldk + c]);
  Eigen::VectorXd key_norm(size);
  for (Index j = 0; j < size; ++j)
    key_norm(j) = x.row(j).norm();
  if (options.pca && d > 1 && size > 1) {
    const Eigen::RowVectorXd mean = x.colwise().mean();
    const RowMatrix<double> centred = x.rowwise() - mean;
    Eigen::MatrixXd cov(d, d);
    serial_product(cov, centred.transpose(), centred);
    cov /= static_cast<double>(size);
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);
    // Descending eigenvalues: axis 0 is the widest.
    b.basis = eig.eigenvectors().rowwise().reverse();
    RowMatrix<double> gram(d, d), rotated(size, d);
    serial_product(gram, b.basis.transpose(), b.basis);
    b.basis_error = (gram - RowMatrix<double>::Identity(d, d)).norm();
    serial_product(rotated, x, b.basis);
    x.swap(rotated);
  }

  // Tree, breadth first.
  const Index leaf = options.leaf;
  std::vector<Index> local(static_cast<std::size_t>(size));
  for (Index j = 0; j < size; ++j)
    local[static_cast<std::size_t>(j)] = j;
  b.node_begin.push_back(0);
  b.node_end.push_back(size);
  b.node_depth.push_back(0);
  b.node_child.push_back(-1);
  b.node_parent.push_back(-1);
  std::vector<std::pair<double, Index>> proj;
  for (std::size_t g = 0; g < b.node_begin.size(); ++g) {
    const Index lo = b.node_begin[g], hi = b.node_end[g], n = hi - lo;
    if (n <= leaf) continue;
    const Index mid = split_keys(x, local, lo, hi, proj);
    b.node_child[g] = static_cast<Index>(b.node_begin.size());
    for (const auto& [s, e] : {std::pair{lo, mid}, std::pair{mid, hi}}) {
      b.node_begin.push_back(s);
      b.node_end.push_back(e);
      b.node_depth.push_back(b.node_depth[g] + 1);
      b.node_child.push_back(-1);
      b.node_parent.push_back(static_cast<Index>(g));
    }
  }
  // The splits leave x in leaf order: every node's keys are contiguous rows
  // (row t is the key of block index local[t]).
  const Index nodes = b.nodes();
  b.geom.setZero(nodes, 5 * d);
  b.vstat.setZero(nodes, 4 * d_v);
  b.count.resize(nodes);
  b.radius.resize(nodes);
  b.rsd.resize(nodes);
  b.trace.resize(nodes);
  b.kmax.resize(nodes);
  b.rho.resize(nodes);
  b.rho_sd.resize(nodes);

  // Leaf summaries from the keys; lo/hi of the box kept in the centre and
  // half-width columns until the box is finalised.
  const auto leaf_summary = [&](Index g) {
    const Index lo = b.node_begin[static_cast<std::size_t>(g)], hi = b.node_end[static_cast<std::size_t>(g)];
    const double n = static_cast<double>(hi - lo);
    auto mu = b.geom.row(g).segment(0, d);
    auto bmin = b.geom.row(g).segment(d, d);
    auto bmax = b.geom.row(g).segment(2 * d, d);
    auto var = b.geom.row(g).segment(4 * d, d);
    auto vmean = b.vstat.row(g).segment(0, d_v);
    auto vmin = b.vstat.row(g).segment(d_v, d_v);
    auto vmax = b.vstat.row(g).segment(2 * d_v, d_v);
    auto vvar = b.vstat.row(g).segment(3 * d_v, d_v);
    mu.setZero();
    bmin.setConstant(inf);
    bmax.setConstant(-inf);
    vmean.setZero();
    vmin.setConstant(inf);
    vmax.setConstant(-inf);
    double km = 0;
    for (Index t = lo; t < hi; ++t) {
      const Index j = local[static_cast<std::size_t>(t)];
      for (Index c = 0; c < d; ++c) {
        const double val = x(t, c);
        mu(c) += val;
        bmin(c) = std::min(bmin(c), val);
        bmax(c) = std::max(bmax(c), val);
      }
      const Scalar* vr = v + (begin + j) * ldv;
      for (Index c = 0; c < d_v; ++c) {
        const double val = static_cast<double>(vr[c]);
        vmean(c) += val;
        vmin(c) = nan_min(vmin(c), val);
        vmax(c) = nan_max(vmax(c), val);
      }
      km = std::max(km, key_norm(j));
    }
    mu /= n;
    vmean /= n;
    var.setZero();
    for (Index t = lo; t < hi; ++t) {
      for (Index c = 0; c < d; ++c) {
        const double dev = x(t, c) - mu(c);
        var(c) += dev * dev;
      }
    }
    var /= n;
    vvar.setZero();
    for (Index t = lo; t < hi; ++t) {
      const Scalar* vr = v + (begin + local[static_cast<std::size_t>(t)]) * ldv;
      for (Index c = 0; c < d_v; ++c) {
        const double dev = static_cast<double>(vr[c]) - vmean(c);
        vvar(c) += dev * dev;
      }
    }
    vvar /= n;
    b.count(g) = n;
    b.kmax(g) = km;
  };
  // Internal nodes from their children (children have larger indices).
  const auto internal_summary = [&](Index g) {
    const Index l = b.node_child[static_cast<std::size_t>(g)], r = l + 1;
    const double nl = b.count(l), nr = b.count(r), n = nl + nr;
    b.count(g) = n;
    for (Index c = 0; c < d; ++c) {
      const double ml = b.geom(l, c), mr = b.geom(r, c);
      const double m = (nl * ml + nr * mr) / n;
      b.geom(g, c) = m;
      b.geom(g, d + c) = std::min(b.geom(l, d + c), b.geom(r, d + c));
      b.geom(g, 2 * d + c) = std::max(b.geom(l, 2 * d + c), b.geom(r, 2 * d + c));
      b.geom(g, 4 * d + c) = (nl * (b.geom(l, 4 * d + c) + (ml - m) * (ml - m)) +
                              nr * (b.geom(r, 4 * d + c) + (mr - m) * (mr - m))) /
                             n;
    }
    for (Index c = 0; c < d_v; ++c) {
      const double ml = b.vstat(l, c), mr = b.vstat(r, c);
      const double m = (nl * ml + nr * mr) / n;
      b.vstat(g, c) = m;
      b.vstat(g, 3 * d_v + c) = (nl * (b.vstat(l, 3 * d_v + c) + (ml - m) * (ml - m)) +
                                 nr * (b.vstat(r, 3 * d_v + c) + (mr - m) * (mr - m))) /
                                n;
      b.vstat(g, d_v + c) = nan_min(b.vstat(l, d_v + c), b.vstat(r, d_v + c));
      b.vstat(g, 2 * d_v + c) = nan_max(b.vstat(l, 2 * d_v + c), b.vstat(r, 2 * d_v + c));
    }
    b.kmax(g) = std::max(b.kmax(l), b.kmax(r));
  };
  {
    const int team = threads > 1 ? threads : 1;
    (void)team;
    ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 16) num_threads(team) if (team > 1))
    for (Index g = 0; g < nodes; ++g)
      if (b.is_leaf(g)) leaf_summary(g);
  }
  for (Index g = nodes - 1; g >= 0; --g)
    if (!b.is_leaf(g)) internal_summary(g);

  // Finalise: inflate variances, box as centre and half-width, radii by a scan.
  const auto finalise = [&](Index g) {
    auto var = b.geom.row(g).segment(4 * d, d);
    auto sd = b.geom.row(g).segment(3 * d, d);
    double tr = 0;
    for (Index c = 0; c < d; ++c) {
      var(c) = var(c) > 0 ? inflate(var(c)) : 0.0;
      sd(c) = var(c) > 0 ? inflate(std::sqrt(var(c))) : 0.0;
      tr += var(c);
    }
    b.trace(g) = inflate(tr);
    for (Index c = 0; c < d; ++c) {
      const double lo = b.geom(g, d + c), hi = b.geom(g, 2 * d + c);
      const double centre = 0.5 * (lo + hi);
      b.geom(g, d + c) = centre;
      b.geom(g, 2 * d + c) = std::nextafter(std::max(hi - centre, centre - lo), inf);
    }
    const Eigen::RowVectorXd mu = b.geom.row(g).segment(0, d);
    Eigen::RowVectorXd inv_var(d), on_axis(d);
    for (Index c = 0; c < d; ++c) {
      inv_var(c) = var(c) > 0 ? 1.0 / var(c) : 0.0;
      on_axis(c) = var(c) > 0 ? 0.0 : 1.0;
    }
    const Index lo = b.node_begin[static_cast<std::size_t>(g)], cnt = b.node_count(g);
    const RowMatrix<double> dev2 = (x.middleRows(lo, cnt).rowwise() - mu).array().square().matrix();
    const double r2 = dev2.rowwise().sum().maxCoeff();
    const double m2 = (dev2 * inv_var.transpose()).maxCoeff();
    const double off = (dev2 * on_axis.transpose()).maxCoeff();
    const bool off_axis = off > 0;
    b.radius(g) = inflate(std::sqrt(r2));
    b.rsd(g) = off_axis ? inf : inflate(std::sqrt(m2));
    b.kmax(g) = inflate(b.kmax(g));
  };
  {
    const int team = threads > 1 ? threads : 1;
    (void)team;
    ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 4) num_threads(team) if (team > 1))
    for (Index g = 0; g < nodes; ++g)
      finalise(g);
  }
  // The covariances of the nodes of at least approx_cov_min keys.
  const std::vector<Index>& parent = b.node_parent;
  b.cov.assign(static_cast<std::size_t>(nodes), Eigen::MatrixXd());
  if (covariances) {
    // From the keys: the base nodes (at most approx_cov_base keys, parent
    // larger or at least approx_cov_min keys); merged upwards above them.
    std::vector<Eigen::MatrixXd>& cov = b.cov;
    std::vector<Index> base, above;
    for (Index g = 0; g < nodes; ++g) {
      const Index p = parent[static_cast<std::size_t>(g)];
      if (b.node_count(g) > approx_cov_base && !b.is_leaf(g))
        above.push_back(g);
      else if (p < 0 || b.node_count(p) > approx_cov_base || b.node_count(g) >= approx_cov_min)
        base.push_back(g);
    }
    const auto nbase = static_cast<Index>(base.size());
    const int team = threads > 1 ? threads : 1;
    (void)team;
    ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 4) num_threads(team) if (team > 1))
    for (Index t = 0; t < nbase; ++t) {
      const Index g = base[static_cast<std::size_t>(t)];
      const Index lo = b.node_begin[static_cast<std::size_t>(g)], n = b.node_count(g);
      const RowMatrix<double> dev = x.middleRows(lo, n).rowwise() - b.geom.row(g).segment(0, d);
      Eigen::MatrixXd& cg = cov[static_cast<std::size_t>(g)];
      cg.resize(d, d);
      serial_product(cg, dev.transpose(), dev);
      cg /= static_cast<double>(n);
      // A small one is kept until its parent merges it.
      if (n < approx_cov_min && parent[static_cast<std::size_t>(g)] < 0) cg = Eigen::MatrixXd();
    }
    for (auto it = above.rbegin(); it != above.rend(); ++it) {
      const Index g = *it, l = b.node_child[static_cast<std::size_t>(g)], r = l + 1;
      const double nl = b.count(l), nr = b.count(r), n = nl + nr;
      const Eigen::VectorXd dl = b.geom.row(l).segment(0, d).transpose() -
                                 b.geom.row(g).segment(0, d).transpose(),
                            dr = b.geom.row(r).segment(0, d).transpose() -
                                 b.geom.row(g).segment(0, d).transpose();
      Eigen::MatrixXd& cg = cov[static_cast<std::size_t>(g)];
      cg = (nl / n) * (cov[static_cast<std::size_t>(l)] + dl * dl.transpose()) +
           (nr / n) * (cov[static_cast<std::size_t>(r)] + dr * dr.transpose());
      for (const Index ch : {l, r})
        if (b.node_count(ch) < approx_cov_min) cov[static_cast<std::size_t>(ch)] = Eigen::MatrixXd();
    }
  }
  // Value range and spread against the block's largest |v| per column.
  Eigen::VectorXd vabs(d_v);
  for (Index c = 0; c < d_v; ++c)
    vabs(c) = std::fmax(std::fabs(b.vstat(0, d_v + c)), std::fabs(b.vstat(0, 2 * d_v + c)));
  for (Index g = 0; g < nodes; ++g) {
    double rho = 0, rho_sd = 0;
    for (Index c = 0; c < d_v; ++c) {
      // sd: NaN with the values; rounded up: the relative 1e-9, plus the
      // absolute 2 (n + 2) u max|v| of the rounded means the variances
      // were formed around; +inf (no bound: the range's is used) where the
      // squares may have underflowed (an sd below 1e-140).
      double& sd = b.vstat(g, 3 * d_v + c);
      const bool finite =
          b.vstat(g, d_v + c) == b.vstat(g, d_v + c) && b.vstat(g, 2 * d_v + c) == b.vstat(g, 2 * d_v + c);
      const double vmag = std::fmax(std::fabs(b.vstat(g, d_v + c)), std::fabs(b.vstat(g, 2 * d_v + c)));
      const double root = sd > 0 ? std::sqrt(inflate(sd)) : 0.0;
      sd = (!finite || sd != sd) ? std::numeric_limits<double>::quiet_NaN()
           : b.vstat(g, 2 * d_v + c) == b.vstat(g, d_v + c)
               ? 0.0  // every value equal: no spread at all
               : (root < 1e-140 ? inf : inflate(root + 2 * (b.count(g) + 2) * 0x1.0p-53 * vmag));
      const double range = b.vstat(g, 2 * d_v + c) - b.vstat(g, d_v + c);
      if (range > 0 && vabs(c) > 0) rho = std::fmax(rho, range / vabs(c));
      if (sd > 0 && vabs(c) > 0) rho_sd = std::fmax(rho_sd, sd / vabs(c));
    }
    b.rho(g) = rho;
    b.rho_sd(g) = rho_sd;
  }
  b.perm.resize(static_cast<std::size_t>(size));
  for (Index t = 0; t < size; ++t)
    b.perm[static_cast<std::size_t>(t)] = begin + local[static_cast<std::size_t>(t)];
  return b;
}

}  // namespace attnkit::detail
