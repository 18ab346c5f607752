// Tests of attnkit/similarity/hyperbolic.hpp: the distance (the definition
// the reference evaluates) against the Mobius-addition closed form in long
// double, inside and near the boundary; its limit 2 ||x - y|| near the
// origin; projection of points on or outside the ball; the fused kernel
// against the reference within a per-pair bound derived from the rewrite's
// conditioning; bad parameters.

#include "attnkit/similarity/hyperbolic.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attnkit/detail/random.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "naive_attention.hpp"
#include "similarity/policy_check.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::LD;
using test::throws_invalid_argument;

// d_c(x, y) = (2 / sqrt c) artanh(sqrt c ||(-x) (+)_c y||), with Mobius addition
// a (+)_c b = ((1 + 2c <a,b> + c |b|^2) a + (1 - c |a|^2) b) / (1 + 2c <a,b> + c^2 |a|^2 |b|^2).
LD mobius_distance(const Eigen::Matrix<LD, Eigen::Dynamic, 1>& x,
                   const Eigen::Matrix<LD, Eigen::Dynamic, 1>& y, LD c) {
  const Eigen::Matrix<LD, Eigen::Dynamic, 1> a = -x;
  const LD ab = a.dot(y), aa = a.squaredNorm(), bb = y.squaredNorm();
  const Eigen::Matrix<LD, Eigen::Dynamic, 1> sum =
      ((1 + 2 * c * ab + c * bb) * a + (1 - c * aa) * y) / (1 + 2 * c * ab + c * c * aa * bb);
  return 2 / std::sqrt(c) * std::atanh(std::sqrt(c) * sum.norm());
}

TEST(HyperbolicDistance, MatchesTheMobiusFormInsideAndNearTheBoundary) {
  detail::Random rng(10000);
  const Index d = 8;
  for (const LD c : {LD(0.25), LD(1), LD(4)})
    for (const LD radius_fraction : {LD(0.1), LD(0.5), LD(0.9), LD(0.999), LD(0.99999)})
      for (int trial = 0; trial < 20; ++trial) {
        Eigen::Matrix<LD, Eigen::Dynamic, 1> x = rng.normal_matrix(d, 1, 1.0).cast<LD>().col(0);
        Eigen::Matrix<LD, Eigen::Dynamic, 1> y = rng.normal_matrix(d, 1, 1.0).cast<LD>().col(0);
        x *= radius_fraction / (std::sqrt(c) * x.norm());
        y *= LD(0.5) / (std::sqrt(c) * y.norm());
        // Margin 1e-9: no projection of these points.
        const HyperbolicScore p{static_cast<double>(c), 1.0, 1e-9};
        const LD got = p.distance(x.data(), y.data(), d), want = mobius_distance(x, y, c);
        // Both forms amplify relative rounding errors by at most
        // kappa = 1 / ((1 - c|x|^2)(1 - c|y|^2)) (their denominators); a few
        // dozen roundings each: 64 eps kappa relative.
        const LD kappa = 1 / ((1 - c * x.squaredNorm()) * (1 - c * y.squaredNorm()));
        EXPECT_NEAR(static_cast<double>(got), static_cast<double>(want),
                    static_cast<double>(64 * std::numeric_limits<LD>::epsilon() * kappa * want))
            << "c " << static_cast<double>(c) << " |x| sqrt(c) " << static_cast<double>(radius_fraction);
      }
}

TEST(HyperbolicDistance, TendsToTwiceTheEuclideanDistanceNearTheOrigin) {
  detail::Random rng(10100);
  for (const double c : {0.5, 1.0, 3.0})
    for (const double r : {1e-2, 1e-4}) {
      const Eigen::VectorXd x = rng.normal_matrix(16, 1, r / std::sqrt(c)).col(0);
      const Eigen::VectorXd y = rng.normal_matrix(16, 1, r / std::sqrt(c)).col(0);
      const double got = HyperbolicScore{c, 1.0, 1e-9}.distance(x.data(), y.data(), 16);
      const double e = 2 * (x - y).norm();
      // arcosh(1 + t) = sqrt(2 t) (1 - t / 12 + ...) with t = 2c|x - y|^2 /
      // ((1 - c|x|^2)(1 - c|y|^2)): d / (2|x - y|) - 1 is within
      // c (|x|^2 + |y|^2) + t / 12 (plus double rounding) of 0.
      const double t =
          2 * c * (x - y).squaredNorm() / ((1 - c * x.squaredNorm()) * (1 - c * y.squaredNorm()));
      EXPECT_NEAR(got / e, 1.0, c * (x.squaredNorm() + y.squaredNorm()) + t / 12 + 1e-13) << c << " " << r;
    }
}

TEST(HyperbolicDistance, PointsOnOrOutsideTheBallAreProjectedInside) {
  const HyperbolicScore p = hyperbolic_score<float>(1.0, 1.0);
  EXPECT_EQ(p.margin, 4e-3);
  EXPECT_EQ(hyperbolic_score<double>(1.0, 1.0).margin, 1e-5);
  const double x[2] = {3.0, 4.0}, y[2] = {0.0, 0.0}, on[2] = {1.0, 0.0};
  // x (norm 5) is moved to radius 1 - margin: its distance to the origin is
  // 2 artanh(1 - margin), finite.
  EXPECT_NEAR(p.distance(x, y, 2), 2 * std::atanh(1 - 4e-3), 1e-12);
  EXPECT_NEAR(p.distance(on, y, 2), 2 * std::atanh(1 - 4e-3), 1e-12);
  EXPECT_TRUE(std::isfinite(p.distance(x, on, 2)));
  // The same point twice: distance exactly 0, also where the compiler
  // fuses products into multiply-adds (distance() forms a (x - y) + (a - b) y).
  EXPECT_EQ(p.distance(x, x, 2), 0.0);
}

template <typename Scalar>
class HyperbolicTest : public ::testing::Test {};
TYPED_TEST_SUITE(HyperbolicTest, test::Scalars);

// The kernel forms t = 2c max(0, c'|q|^2 + c'|k|^2 - 2c q.k) iq ik from the
// projected norms, their reciprocals iq = 1 / (1 - c|q|^2) and the tile
// product. Per pair, with u the unit roundoff:
//   dt <= u [(d + 6) 2c (|q|^2 + |k|^2 + 2 sum |q_c k_c|) iq ik
//            + t ((d + 3)(c|q|^2 iq + c|k|^2 ik) + 6)],
// the second term from 1 - c|.|^2 (an absolute (d + 2) u c|.|^2 error, i.e.
// a relative one times iq). arcosh(1 + t) is concave with slope
// 1 / sqrt(t (t + 2)), so it moves by at most
//   min(arcosh(1 + dt), dt / sqrt(t' (t' + 2))),  t' = max(t - dt, 0),
// plus 6 u of itself (log1p, sqrt, the products), over tau sqrt(c).
TYPED_TEST(HyperbolicTest, FusedKernelMatchesTheDefinitionWithinTheConditioningBound) {
  using Scalar = TypeParam;
  const double c = 2.0, tau = 0.3;
  const HyperbolicScore policy = hyperbolic_score<Scalar>(c, tau);
  const Index n_q = 120, n_k = 200, d = 16;
  auto w = make_iid_workload<Scalar>({n_q, n_k, d, 8}, 10200);
  w.q *= Scalar(0.08);
  w.k *= Scalar(0.08);
  // Some keys near (and beyond) the boundary, a near-duplicate of a query.
  for (Index j = 0; j < 10; ++j)
    w.k.row(j) *=
        Scalar((1.0 - 1e-3 * as_double(j)) / (std::sqrt(c) * static_cast<double>(w.k.row(j).norm())));
  w.k.row(10) *= Scalar(3.0 / (std::sqrt(c) * static_cast<double>(w.k.row(10).norm())));
  w.k.row(150) = w.q.row(70) + RowMatrix<Scalar>::Constant(1, d, Scalar(1e-4));
  const double u = 0.5 * eps<Scalar>();
  const double r = (1 - policy.margin) / std::sqrt(c);
  const auto projected = [&](const RowMatrix<Scalar>& x) {
    RowMatrix<LD> y = x.template cast<LD>();
    for (Index i = 0; i < y.rows(); ++i)
      if (y.row(i).norm() > static_cast<LD>(r)) y.row(i) *= static_cast<LD>(r) / y.row(i).norm();
    return y;
  };
  const RowMatrix<LD> qp = projected(w.q), kp = projected(w.k);
  Eigen::VectorXd err(n_q), arg(n_q);
  for (Index i = 0; i < n_q; ++i) {
    double e = 0, zmax = 0;
    for (Index j = 0; j < n_k; ++j) {
      const double nq = static_cast<double>(qp.row(i).squaredNorm()),
                   nk = static_cast<double>(kp.row(j).squaredNorm());
      const double iq = 1 / (1 - c * nq), ik = 1 / (1 - c * nk);
      const double t = 2 * c * static_cast<double>((qp.row(i) - kp.row(j)).squaredNorm()) * iq * ik;
      const double abs_dot =
          static_cast<double>((qp.row(i).cwiseAbs() * kp.row(j).cwiseAbs().transpose())(0));
      const double dt = u * ((as_double(d) + 6) * 2 * c * (nq + nk + 2 * abs_dot) * iq * ik +
                             t * ((as_double(d) + 3) * (c * nq * iq + c * nk * ik) + 6));
      const double tp = std::max(t - dt, 0.0);
      const double dd =
          tp > 0 ? std::min(std::acosh(1 + dt), dt / std::sqrt(tp * (tp + 2))) : std::acosh(1 + dt);
      const double dist = std::acosh(1 + t);
      e = std::max(e, (dd + 6 * u * dist) / (tau * std::sqrt(c)));
      zmax = std::max(zmax, dist / (tau * std::sqrt(c)));
    }
    err(i) = e;
    arg(i) = 2 * zmax;
  }
  EXPECT_TRUE(test::flash_matches_reference(w, policy, err, arg));
  const auto out = flash_attention(w.q, w.k, w.v, {}, {}, policy);
  EXPECT_TRUE(out.output.allFinite() && out.lse.allFinite());
}

TYPED_TEST(HyperbolicTest, BadParametersThrow) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 6, 4, 4}, 10300);
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention(w.q, w.k, w.v, {}, {}, HyperbolicScore{0.0, 1.0});
      },
      {"curvature c = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention(w.q, w.k, w.v, {}, {}, HyperbolicScore{1.0, -1.0});
      },
      {"tau = -1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention(w.q, w.k, w.v, {}, {}, HyperbolicScore{1.0, 1.0, 1.5});
      },
      {"margin = 1.5"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention(w.q, w.k, w.v, {Mask::none(), 1.0}, {}, HyperbolicScore{});
      },
      {"scale"}));
}

}  // namespace
}  // namespace attnkit
