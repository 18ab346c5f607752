// The per-node bounds of approx_attention (attnkit/approx/detail/node_bounds.hpp
// over the summaries of attnkit/approx/detail/key_block.hpp), checked node by
// node against brute force in long double on the node's own keys:
//   cov_g        the keys' covariance (rotated back to the original
//                basis), to 1e-9 of its trace, for every node of at least
//                approx_cov_min keys;
//   [lo, hi]     contains log S_g = log sum_j e^{q.k_j}, with and without
//                the exact variances (`quad`), and est is within delta of it;
//   value sd     the stored sd of every value column >= the true one;
//   value error  |o_gc - m_gc| <= min(range_gc vt, sd_gc vs) + the mean's
//                slack 2 (n_g + 2) u max|v_c| (group_traversal.hpp's
//                fold_closed), o the node's softmax-weighted value mean and m
//                its unweighted mean.
// The long-double oracle's own error (u = 2^-64, sums of a few hundred terms)
// is below 1e-15 relative, far below every margin the bounds carry (1e-12
// and up), so no tolerance is added: a bound that is too tight fails.
// And the point of `quad`: on a tight isotropic cluster its mass interval
// is at least 4 times narrower (Jensen's lower end gives a width of about
// sigma^2 phi(X_max) with sigma bounded through the per-axis deviations;
// the exact variance's,
// sigma^2 (phi(X_max) - phi(X_min)) ~ sigma^2 W / 6 with W < 1 here).

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/approx/detail/key_block.hpp"
#include "attnkit/approx/detail/node_bounds.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using LD = long double;
using MatLD = Eigen::Matrix<LD, Eigen::Dynamic, Eigen::Dynamic>;

struct Keys {
  std::string name;
  RowMatrix<double> k, v;
};

std::vector<Keys> key_sets(Index d) {
  detail::Random rng(31);
  std::vector<Keys> out;
  {
    // One tight isotropic cluster far from the origin.
    Keys s{"tight_cluster", RowMatrix<double>(600, d), rng.normal_matrix(600, 3)};
    const RowMatrix<double> c = rng.normal_matrix(1, d, 2.0);
    for (Index j = 0; j < s.k.rows(); ++j)
      s.k.row(j) = c.row(0) + 0.02 * rng.normal_matrix(1, d).row(0);
    out.push_back(s);
  }
  {
    // Anisotropic: one axis 30 times wider than the others.
    Keys s{"anisotropic", rng.normal_matrix(500, d, 0.1), rng.normal_matrix(500, 3)};
    s.k.col(1) *= 30.0;
    out.push_back(s);
  }
  {
    // Four clusters, values tied to them plus mixed-sign offsets.
    Keys s{"four_clusters", RowMatrix<double>(700, d), RowMatrix<double>(700, 3)};
    const RowMatrix<double> c = rng.normal_matrix(4, d, 1.5), cv = rng.normal_matrix(4, 3);
    for (Index j = 0; j < s.k.rows(); ++j) {
      s.k.row(j) = c.row(j % 4) + 0.05 * rng.normal_matrix(1, d).row(0);
      s.v.row(j) = cv.row(j % 4) + 0.05 * rng.normal_matrix(1, 3).row(0);
      s.v(j, 2) += (j % 2 ? 1e3 : -1e3);
    }
    out.push_back(s);
  }
  {
    // Near-duplicates of a key of norm about 300, constant values.
    Keys s{"large_norm_near_duplicates", RowMatrix<double>(300, d), RowMatrix<double>::Constant(300, 3, 0.5)};
    const RowMatrix<double> c = rng.normal_matrix(1, d, 100.0);
    for (Index j = 0; j < s.k.rows(); ++j)
      s.k.row(j) = c.row(0) + 1e-7 * rng.normal_matrix(1, d).row(0);
    out.push_back(s);
  }
  {
    // Values of magnitude 1e-170 (zero in float): their squares underflow,
    // so no sd bound may be claimed from them.
    Keys s{"tiny_values", rng.normal_matrix(400, d, 0.02), 1e-170 * rng.normal_matrix(400, 3)};
    out.push_back(s);
  }
  return out;
}

template <typename Scalar>
class NodeBoundsTest : public ::testing::Test {};
TYPED_TEST_SUITE(NodeBoundsTest, test::Scalars);

TYPED_TEST(NodeBoundsTest, EveryNodeBoundHoldsAgainstBruteForce) {
  using Scalar = TypeParam;
  for (const Index d : {Index(8), Index(64)}) {
    for (const Keys& s : key_sets(d)) {
      const RowMatrix<Scalar> k = s.k.cast<Scalar>(), v = s.v.cast<Scalar>();
      const Index n = k.rows(), d_v = v.cols();
      ApproxIndexOptions io;
      io.leaf = 16;
      const detail::KeyBlock b =
          detail::build_key_block<Scalar>(k.data(), d, v.data(), d_v, d, d_v, 0, n, 0, 0, io, 1);
      // Queries: near the keys' mean direction and random, scale 1/sqrt(d).
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      detail::Random rng(77);
      RowMatrix<double> qs = rng.normal_matrix(6, d);
      qs.row(0) = s.k.colwise().mean();
      qs.row(1) = -0.5 * s.k.colwise().mean();
      detail::GroupQueries g;
      g.m = qs.rows();
      const RowMatrix<double> qhat = scale * qs.cast<Scalar>().template cast<double>();
      g.qt = b.basis.size() > 0 ? RowMatrix<double>(qhat * b.basis) : qhat;
      g.qabs = g.qt.cwiseAbs();
      g.qsq = g.qt.cwiseAbs2();
      g.norm = qhat.rowwise().norm();
      g.qtnorm = g.qt.rowwise().norm() * (1 + 1e-12);
      std::vector<Index> nodes(static_cast<std::size_t>(b.nodes()));
      for (Index i = 0; i < b.nodes(); ++i)
        nodes[static_cast<std::size_t>(i)] = i;
      detail::NodeEvalScratch scratch;
      detail::NodeBatchBounds plain;
      detail::evaluate_nodes(b, g, nodes.data(), b.nodes(), detail::EstimateRule::midpoint, scratch, plain);
      double width_plain = 0, width_quad = 0;
      Index with_cov = 0;
      for (Index node = 0; node < b.nodes(); ++node) {
        const std::string what = s.name + " d " + std::to_string(d) + " node " + std::to_string(node);
        const Index cnt = b.node_count(node);
        // The node's keys and values in long double.
        MatLD kk(cnt, d), vv(cnt, d_v);
        for (Index t = 0; t < cnt; ++t) {
          const Index j = b.perm[static_cast<std::size_t>(b.node_begin[static_cast<std::size_t>(node)] + t)];
          for (Index c = 0; c < d; ++c)
            kk(t, c) = static_cast<LD>(k(j, c));
          for (Index c = 0; c < d_v; ++c)
            vv(t, c) = static_cast<LD>(v(j, c));
        }
        const MatLD centred = kk.rowwise() - kk.colwise().mean();
        const MatLD cov = centred.transpose() * centred / static_cast<LD>(cnt);
        // The stored covariance (nodes of at least approx_cov_min keys) is
        // the keys' own, to the accuracy the bounds assume (1e-9 tr).
        if (b.cov[static_cast<std::size_t>(node)].size() > 0) {
          const MatLD stored = b.basis.size() > 0 ? MatLD(b.basis.cast<LD>() *
                                                          b.cov[static_cast<std::size_t>(node)].cast<LD>() *
                                                          b.basis.cast<LD>().transpose())
                                                  : MatLD(b.cov[static_cast<std::size_t>(node)].cast<LD>());
          EXPECT_LE((stored - cov).cwiseAbs().maxCoeff(),
                    1e-9L * cov.trace() + 1e-12L * kk.cwiseAbs2().rowwise().sum().maxCoeff())
              << what;
        } else {
          EXPECT_LT(cnt, detail::approx_cov_min) << what;
        }
        // Stored covariance => the exact-variance evaluation.
        detail::NodeBatchBounds refined;
        const bool has_cov = b.cov[static_cast<std::size_t>(node)].size() > 0;
        if (has_cov) {
          ++with_cov;
          RowMatrix<double> y = g.qt * b.cov[static_cast<std::size_t>(node)];
          const Eigen::ArrayXXd quad = (y.array() * g.qt.array()).rowwise().sum();
          Index one = node;
          detail::evaluate_nodes(b, g, &one, 1, detail::EstimateRule::midpoint, scratch, refined, &quad);
        }
        for (Index i = 0; i < g.m; ++i) {
          Eigen::Matrix<LD, Eigen::Dynamic, 1> logit(cnt);
          for (Index t = 0; t < cnt; ++t) {
            LD x = 0;
            for (Index c = 0; c < d; ++c)
              x += static_cast<LD>(qhat(i, c)) * kk(t, c);
            logit(t) = x;
          }
          const LD top = logit.maxCoeff();
          const Eigen::Matrix<LD, Eigen::Dynamic, 1> w = (logit.array() - top).exp().matrix();
          const LD logs = top + std::log(w.sum());
          struct View {
            const char* tag;
            double lo, hi, est, delta, vt, vs;
          };
          std::vector<View> views{{"plain", plain.lo(i, node), plain.hi(i, node), plain.est(i, node),
                                   plain.delta(i, node), plain.vt(i, node), plain.vs(i, node)}};
          if (has_cov)
            views.push_back({"quad", refined.lo(i, 0), refined.hi(i, 0), refined.est(i, 0),
                             refined.delta(i, 0), refined.vt(i, 0), refined.vs(i, 0)});
          for (const View& vw : views) {
            const std::string at = what + " row " + std::to_string(i) + " " + vw.tag;
            EXPECT_LE(static_cast<LD>(vw.lo), logs) << at;
            EXPECT_GE(static_cast<LD>(vw.hi), logs) << at;
            EXPECT_LE(std::fabs(static_cast<LD>(vw.est) - logs), static_cast<LD>(vw.delta)) << at;
            for (Index c = 0; c < d_v; ++c) {
              const LD o = w.dot(vv.col(c)) / w.sum(), mean = vv.col(c).mean();
              if (i == 0) {
                const LD sd_true = std::sqrt((vv.col(c).array() - mean).square().mean());
                EXPECT_GE(static_cast<LD>(b.vstat(node, 3 * d_v + c)), sd_true) << at << " column " << c;
              }
              const double range = b.vstat(node, 2 * d_v + c) - b.vstat(node, d_v + c);
              const double sd = b.vstat(node, 3 * d_v + c);
              const double vabs =
                  std::max(std::fabs(b.vstat(node, d_v + c)), std::fabs(b.vstat(node, 2 * d_v + c)));
              const double slack = 2 * (static_cast<double>(cnt) + 2) * 0x1.0p-53 * vabs;
              // The bound is about the node's stored (rounded) mean.
              const LD err = std::fabs(o - static_cast<LD>(b.vstat(node, c)));
              EXPECT_LE(err, static_cast<LD>(std::min(range * vw.vt, sd * vw.vs) + slack))
                  << at << " column " << c << " (range " << range << " vt " << vw.vt << ", sd " << sd
                  << " vs " << vw.vs << ", mean " << static_cast<double>(mean) << ")";
            }
          }
          if (has_cov) {
            // Never wider (up to rounding of the two forms).
            EXPECT_LE(refined.hi(i, 0) - refined.lo(i, 0), plain.hi(i, node) - plain.lo(i, node) + 1e-12)
                << what;
            if (s.name == "tight_cluster" && node == 0) {
              width_plain += plain.hi(i, node) - plain.lo(i, node);
              width_quad += refined.hi(i, 0) - refined.lo(i, 0);
            }
          }
        }
      }
      EXPECT_GT(with_cov, 0) << s.name << ": no node keeps a covariance, the exact-variance path is untested";
      if (s.name == "tight_cluster") {
        EXPECT_LE(4 * width_quad, width_plain) << "d " << d;
      }
    }
  }
}

}  // namespace
}  // namespace attnkit
