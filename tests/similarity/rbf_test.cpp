// Tests of attnkit/similarity/rbf.hpp: the fused kernel with RbfScore
// against the reference evaluating -||q - k||^2 / (2 tau); RBF attention is
// dot-product attention on augmented inputs (the per-key bias as an extra
// dimension); the lse is the true logits' (the per-query constant included);
// bad parameters.

#include "attnkit/similarity/rbf.hpp"

#include <cmath>

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
class RbfTest : public ::testing::Test {};
TYPED_TEST_SUITE(RbfTest, test::Scalars);

TYPED_TEST(RbfTest, FusedKernelMatchesTheDefinition) {
  using Scalar = TypeParam;
  const double tau = 6.0;
  const auto w = make_llm_like_workload<Scalar>({120, 200, 32, 24}, 9000);
  // Logit error of the rewrite q . k / tau - ||k||^2 / (2 tau): the scaled
  // dot product ((d + 3) roundings of sum |q_c k_c| / tau) and the bias
  // (d + 2 roundings of ||k||^2 / (2 tau)). The per-query constant
  // -||q||^2 / (2 tau) reaches only the lse, with (d + 2) u of its size.
  const double u = 0.5 * eps<Scalar>();
  const Index d = 32;
  Eigen::VectorXd err(120), arg(120);
  for (Index i = 0; i < 120; ++i) {
    double e = 0, a = 0;
    for (Index j = 0; j < 200; ++j) {
      const double dot = (w.q.row(i).template cast<double>().cwiseAbs() *
                          w.k.row(j).template cast<double>().cwiseAbs().transpose())(0);
      const double kk = static_cast<double>(w.k.row(j).squaredNorm()) / 2;
      e = std::max(e, u * ((as_double(d) + 3) * dot + (as_double(d) + 2) * kk) / tau);
      a = std::max(a, (dot + kk) / tau);
    }
    // The row constant's error moves the lse, not the weights; counting it
    // as a logit error covers the lse and only loosens the output bound.
    err(i) = e + u * (as_double(d) + 2) * static_cast<double>(w.q.row(i).squaredNorm()) / (2 * tau);
    arg(i) = 2 * a;
  }
  EXPECT_TRUE(test::flash_matches_reference(w, RbfScore{tau}, err, arg));
}

// -||q - k||^2 / (2 tau) = ([q, 1] . [k, -||k||^2 / 2]) / tau - ||q||^2 / (2 tau):
// the same outputs as plain dot-product attention with scale 1 / tau on the
// augmented inputs, and lse shifted by the per-query constant. Both sides in
// long double (the reference), compared at the final rounding.
TYPED_TEST(RbfTest, EqualsDotProductAttentionWithAPerKeyBias) {
  using Scalar = TypeParam;
  const double tau = 4.0;
  const auto w = make_iid_workload<Scalar>({40, 60, 8, 5}, 9100);
  RowMatrix<Scalar> qa(40, 9), ka(60, 9);
  qa << w.q, RowMatrix<Scalar>::Ones(40, 1);
  ka << w.k, (-0.5 * w.k.rowwise().squaredNorm().array()).matrix();
  const auto dot = test::naive_attention(qa, ka, w.v, test::NaiveMask{MaskKind::causal, 20}, 1.0 / tau);
  const auto rbf = reference_attention(w.q, w.k, w.v, {Mask::causal()}, RbfScore{tau});
  const double max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
  // The augmented key's last entry was rounded to Scalar (u relative): a
  // logit moves by at most u ||k||^2 / (2 tau); with the reference's own
  // rounding, |difference| <= (2 u max ||k||^2 / (2 tau) + u) max|v|.
  const double u = 0.5 * eps<Scalar>();
  const double kk = static_cast<double>(w.k.rowwise().squaredNorm().maxCoeff()) / (2 * tau);
  EXPECT_TRUE(test::matrices_near(rbf.output, dot.output, (4 * u * kk + 2 * u) * max_v + 1e-300));
  for (Index i = 0; i < 40; ++i) {
    const long double shift = -static_cast<long double>(w.q.row(i).squaredNorm()) / (2 * tau);
    EXPECT_NEAR(
        static_cast<double>(rbf.lse(i)), static_cast<double>(dot.lse(i) + shift),
        4 * u * (kk + std::fabs(static_cast<double>(shift)) + std::fabs(static_cast<double>(dot.lse(i)))));
  }
}

TYPED_TEST(RbfTest, BadParametersThrow) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 6, 4, 4}, 9200);
  EXPECT_TRUE(
      throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, RbfScore{0.0}); }, {"tau = 0"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, RbfScore{-2.0}); }, {"tau = -2"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { flash_attention(w.q, w.k, w.v, {}, {}, RbfScore{std::numeric_limits<double>::infinity()}); },
      {"tau = inf"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention(w.q, w.k, w.v, {Mask::none(), 0.5}, {}, RbfScore{1.0});
      },
      {"RbfScore", "scale"}));
}

}  // namespace
}  // namespace attnkit
