// Tests of attnkit/similarity/softcap.hpp: the fused kernel with SoftcapScore
// against the reference; huge logits saturate at +-cap (no overflow, no NaN);
// a cap far above every logit is plain dot-product attention; bad cap; the
// packet tanh the policy uses against long-double tanh.

#include "attnkit/similarity/softcap.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/workload/synthetic.hpp"
#include "similarity/policy_check.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::throws_invalid_argument;

template <typename Scalar>
class SoftcapTest : public ::testing::Test {};
TYPED_TEST_SUITE(SoftcapTest, test::Scalars);

TYPED_TEST(SoftcapTest, FusedKernelMatchesTheDefinition) {
  using Scalar = TypeParam;
  const double cap = 3.0;
  const auto w = make_llm_like_workload<Scalar>({120, 200, 32, 24}, 9600);
  // tanh has slope <= 1: the dot product's (d + 3) u scale sum |q_c k_c| /
  // cap error passes through scaled by cap at most, plus the scaled tanh's
  // own error (below 21 u of cap in float, 4.5 u in double:
  // ScaledTanhIsWithinItsErrorBound) and the rounding of cap log2(e) (u of
  // cap).
  const double u = 0.5 * eps<Scalar>(), scale = 1.0 / std::sqrt(32.0);
  Eigen::VectorXd err(120), arg = Eigen::VectorXd::Constant(120, 2 * cap);
  for (Index i = 0; i < 120; ++i) {
    const double dot =
        (w.q.row(i).template cast<double>().cwiseAbs() * w.k.template cast<double>().cwiseAbs().transpose())
            .maxCoeff();
    err(i) = u * ((as_double(32) + 3) * scale * dot + 22 * cap);
  }
  EXPECT_TRUE(test::flash_matches_reference(w, SoftcapScore{cap}, err, arg));
}

TYPED_TEST(SoftcapTest, HugeLogitsSaturateAtTheCap) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> q(2, 1), k(3, 1), v(3, 1);
  q << Scalar(1e4), Scalar(-1e4);
  k << Scalar(1e4), Scalar(-1e4), Scalar(0);
  v << Scalar(1), Scalar(2), Scalar(3);
  // Logits: row 0 {cap, -cap, 0}, row 1 {-cap, cap, 0} with cap = 2.
  const auto r = flash_attention(q, k, v, {Mask::none(), 1.0}, {}, SoftcapScore{2.0});
  ASSERT_TRUE(r.output.allFinite());
  const long double e2 = std::exp(2.0L), em2 = std::exp(-2.0L), z = e2 + em2 + 1;
  EXPECT_NEAR(static_cast<double>(r.output(0, 0)), static_cast<double>((e2 + 2 * em2 + 3) / z),
              16 * eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(r.output(1, 0)), static_cast<double>((em2 + 2 * e2 + 3) / z),
              16 * eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(r.lse(0)), static_cast<double>(std::log(z)), 16 * eps<Scalar>());
}

TYPED_TEST(SoftcapTest, AHighCapIsTheDotProduct) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({30, 50, 16, 8}, 9700);
  // |scale q . k| < 20 here: cap tanh(x / cap) - x = O(x^3 / cap^2) < 1e-9
  // for cap = 1e7, far below the kernel's own error; the two runs are within
  // twice the kernel's bound of each other.
  const auto plain = flash_attention(w.q, w.k, w.v, {Mask::causal()});
  const auto capped = flash_attention(w.q, w.k, w.v, {Mask::causal()}, {}, SoftcapScore{1e7});
  const double u = 0.5 * eps<Scalar>(), max_v = static_cast<double>(w.v.cwiseAbs().maxCoeff());
  EXPECT_TRUE(test::matrices_near(capped.output, plain.output,
                                  max_v * u * (4 * (16 + 8) * 20 + 2 * 200) + 1e-9 * max_v));
}

TYPED_TEST(SoftcapTest, ScaledTanhIsWithinItsErrorBound) {
  using Scalar = TypeParam;
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  constexpr int P = Eigen::internal::packet_traits<Scalar>::size;
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  // packet_scaled_tanh with scale s over xs, padded to whole packets (the
  // pad is dropped).
  const auto packet_tanh_of = [](std::vector<Scalar> xs, double s) {
    const std::size_t n = xs.size();
    xs.resize((n + P - 1) / P * P, Scalar(0.5));
    std::vector<Scalar> ys(xs.size());
    const detail::ScaledTanh<Scalar> t(s);
    for (std::size_t i = 0; i < xs.size(); i += P)
      Eigen::internal::pstoreu(ys.data() + i,
                               detail::packet_scaled_tanh(Eigen::internal::ploadu<Packet>(xs.data() + i), t));
    ys.resize(n);
    return ys;
  };
  // Arguments: a fine grid over [-10, 10] (past the clamp at 9), powers of
  // two down to 2^-60 and their negatives, both sides of the clamp, float
  // subnormals.
  std::vector<Scalar> xs;
  for (int i = -40000; i <= 40000; ++i)
    xs.push_back(static_cast<Scalar>(i * 2.5e-4));
  for (int e = -60; e <= 3; ++e)
    for (const double m : {1.0, 1.37, 1.99})
      for (const double sign : {1.0, -1.0})
        xs.push_back(static_cast<Scalar>(sign * m * std::ldexp(1.0, e)));
  for (const double x : {8.99999, 9.0, 9.00001, -9.00001, 40.0, -1e30, 1e-40, -1e-42})
    xs.push_back(static_cast<Scalar>(x));
  // Float, relative to s |tanh x| (u = 2^-24, the relative error of one
  // rounding): the rational function with its float coefficients is within
  // 0.77 u of tanh on [0, 9] in exact arithmetic (and within 0.6 + 0.5 u
  // beyond the clamp, tanh 9 being 1 - 0.5 u); Horner's rule rounds 4 times
  // in the numerator and 4 in the denominator with FMA, 8 and 8 without (a
  // product, then a sum), each step's sum having nonnegative terms (u each,
  // relative); x^2 rounds (u, passed on through d log(tanh x / x) / d log x^2
  // in (-1/2, 0]: u / 2); x times the numerator (u), the quotient (u); s P's
  // coefficients each round once (u on the numerator, whose terms are all
  // positive). At most 1.1 + 16 + 0.5 + 1 + 1 + 1 < 21 u (first order; the
  // second-order terms are below 1e-4 u). A wrong coefficient, a dropped
  // Horner step or a division by an unrefined estimate (2^-12 = 4096 u)
  // exceeds it by orders of magnitude. Double, absolute in units of s:
  // in 1 - 2 / (1 + E), E = e^(2|x|) within 2 u (relative) moves the result by
  // 2 E / (1 + E)^2 <= 1/2 times that (u); the sum 1 + E rounds (u, then
  // through the quotient <= 1: u), the quotient (u), the difference (u / 2:
  // exact when the quotient is >= 1/2, else a result in (1/2, 1)), the
  // product by s (u): 4.5 u.
  const double u = 0.5 * eps<Scalar>();
  for (const double s : {1.0, 50.0 * detail::log2e, 1e7}) {
    const std::vector<Scalar> ys = packet_tanh_of(xs, s);
    double worst = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const long double t = static_cast<long double>(s) * std::tanh(static_cast<long double>(xs[i]));
      const double err = static_cast<double>(std::fabs(static_cast<long double>(ys[i]) - t));
      // (+ the spacing of float subnormals: a product that lands there
      // rounds absolutely.)
      const double bound = std::is_same_v<Scalar, float>
                               ? 21 * u * static_cast<double>(std::fabs(t)) +
                                     static_cast<double>(std::numeric_limits<float>::denorm_min())
                               : 4.5 * u * s;
      EXPECT_LE(err, bound) << "x = " << xs[i] << ", s = " << s;
      if (bound > 0) worst = std::max(worst, err / bound);
    }
    EXPECT_GT(worst, 0.0);  // the comparison saw rounding (the sweep is not vacuous)
    // +-inf saturate (within the bound of the clamp), NaN stays NaN, -0
    // stays -0 in float (x times the numerator; double's select gives +0).
    const std::vector<Scalar> out =
        packet_tanh_of({inf, -inf, std::numeric_limits<Scalar>::quiet_NaN(), Scalar(-0.0)}, s);
    EXPECT_NEAR(static_cast<double>(out[0]), s, 2 * u * s);
    EXPECT_NEAR(static_cast<double>(out[1]), -s, 2 * u * s);
    EXPECT_TRUE(std::isnan(out[2]));
    EXPECT_EQ(out[3], Scalar(0));
    if (std::is_same_v<Scalar, float>) {
      EXPECT_TRUE(std::signbit(out[3]));
    }
  }
}

TYPED_TEST(SoftcapTest, BadCapThrows) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 6, 4, 4}, 9800);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{0.0}); },
                                      {"cap = 0"}));
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{-1.0}); },
                                      {"cap = -1"}));
  // Float: x s P(x^2) reaches 602 cap at the clamp, past the float range
  // for a cap above 5.6e35, and s P's smallest coefficient is subnormal for
  // a cap below 6e-31: outside [1e-30, 1e35] the cap is refused. Double
  // takes both; with cap = 1e300 every logit is 0: uniform attention.
  if (std::is_same_v<Scalar, float>) {  // the kernel computes in the inputs' type
    EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{1e36}); },
                                        {"cap = 1e+36", "1e+35"}));
    EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{1e-31}); },
                                        {"cap = 1e-31", "1e-30"}));
    EXPECT_TRUE(flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{1e35}).output.allFinite());
    EXPECT_TRUE(flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{1e-30}).output.allFinite());
  } else {
    const auto r = flash_attention(w.q, w.k, w.v, {}, {}, SoftcapScore{1e300});
    const Eigen::RowVectorXd mean = w.v.template cast<double>().colwise().mean();
    // Each row is then the mean of V's 6 rows: 5 roundings of partial sums
    // below 6 max|v| (30 u max|v|, over 6: 5 u), the division (u); the
    // online softmax's rescalings by e^0 = 1 are exact. 32 u (16 eps) holds it.
    const double tol = 16 * eps<Scalar>() * static_cast<double>(w.v.cwiseAbs().maxCoeff());
    for (Index i = 0; i < r.output.rows(); ++i)
      EXPECT_TRUE(test::matrices_near(r.output.row(i).template cast<double>(), mean, tol)) << "row " << i;
  }
}

}  // namespace
}  // namespace attnkit
