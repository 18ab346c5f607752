// Tests of attnkit/similarity/cosine.hpp: the fused kernel with CosineScore
// against the reference; cosine attention is dot-product attention on
// row-normalised inputs with scale 1 / tau; zero rows have logit 0 (never
// NaN); bad parameters.

#include "attnkit/similarity/cosine.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attnkit/workload/synthetic.hpp"
#include "naive_attention.hpp"
#include "similarity/policy_check.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::throws_invalid_argument;

template <typename Scalar>
class CosineTest : public ::testing::Test {};
TYPED_TEST_SUITE(CosineTest, test::Scalars);

TYPED_TEST(CosineTest, FusedKernelMatchesTheDefinition) {
  using Scalar = TypeParam;
  const double tau = 0.1;
  auto w = make_llm_like_workload<Scalar>({120, 200, 32, 24}, 9300);
  w.k.row(17).setZero();   // a zero key: logit 0 from every query
  w.q.row(100).setZero();  // a zero query: uniform attention
  // |z| <= 1 / tau; the normalisations (d + 2 roundings each for ||q|| and
  // 1 / ||k||) and the d-term dot product of unit vectors: (2 d + 5) u / tau.
  const double u = 0.5 * eps<Scalar>();
  const Eigen::VectorXd err = Eigen::VectorXd::Constant(120, (2 * 32.0 + 5) * u / tau);
  const Eigen::VectorXd arg = Eigen::VectorXd::Constant(120, 2 / tau);
  EXPECT_TRUE(test::flash_matches_reference(w, CosineScore{tau}, err, arg));
  const auto r = flash_attention(w.q, w.k, w.v, {}, {}, CosineScore{tau});
  EXPECT_TRUE(r.output.allFinite());
  // The zero query: uniform weights over every key, lse = log(n_k).
  EXPECT_NEAR(static_cast<double>(r.lse(100)), std::log(200.0), 4 * eps<Scalar>() * std::log(200.0));
}

// Cosine with tau = dot product with scale 1 / tau on normalised rows: the
// oracle normalises in long double.
TYPED_TEST(CosineTest, EqualsDotProductOnNormalisedInputs) {
  using Scalar = TypeParam;
  const double tau = 0.25;
  const auto w = make_clustered_workload<Scalar>({50, 80, 16, 8}, 9400);
  RowMatrix<test::LD> qn = w.q.template cast<test::LD>(), kn = w.k.template cast<test::LD>();
  qn.rowwise().normalize();
  kn.rowwise().normalize();
  const auto want = test::naive_attention(qn, kn, w.v, test::NaiveMask{MaskKind::causal, 30}, 1.0 / tau);
  const auto got = flash_attention(w.q, w.k, w.v, {Mask::causal()}, {}, CosineScore{tau});
  const double u = 0.5 * eps<Scalar>(), max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
  // Kernel bound with logit error (2 d + 5) u / tau and |z - max| <= 2 / tau.
  const Eigen::VectorXd err = Eigen::VectorXd::Constant(50, (2 * 16.0 + 5) * u / tau);
  const Eigen::VectorXd arg = Eigen::VectorXd::Constant(50, 2 / tau);
  const auto bound = test::flash_bounds::error_bound_from_logit_errors<Scalar>(err, arg, max_v, 80, 128);
  for (Index i = 0; i < 50; ++i)
    for (Index c = 0; c < 8; ++c)
      EXPECT_LE(std::fabs(static_cast<double>(got.output(i, c)) - static_cast<double>(want.output(i, c))),
                bound.output(i));
}

TYPED_TEST(CosineTest, BadParametersThrow) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 6, 4, 4}, 9500);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, CosineScore{0.0}); },
                                      {"tau = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { flash_attention(w.q, w.k, w.v, {}, {}, CosineScore{std::numeric_limits<double>::quiet_NaN()}); },
      {"CosineScore", "tau = nan"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        reference_attention(w.q, w.k, w.v, {Mask::none(), 2.0}, CosineScore{});
      },
      {"CosineScore", "scale"}));
}

}  // namespace
}  // namespace attnkit
