// Tests of attnkit/linear/feature_maps.hpp: elu + 1 and ReLU against their
// definitions in long double, the user-callable adaptor, and its shape check.

#include "attnkit/linear/feature_maps.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "linear/linear_oracle.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class FeatureMapTest : public ::testing::Test {};
TYPED_TEST_SUITE(FeatureMapTest, test::Scalars);

template <typename Scalar, typename Map>
RowMatrix<Scalar> queries(const Map& map, const RowMatrix<Scalar>& x, Vector<Scalar>* log_scale) {
  RowMatrix<Scalar> phi(x.rows(), map.features(x.cols()));
  Vector<Scalar> ls(x.rows());
  map.map_queries(Eigen::Ref<const RowMatrix<Scalar>>(x), Eigen::Ref<RowMatrix<Scalar>>(phi),
                  Eigen::Ref<Vector<Scalar>>(ls));
  *log_scale = ls;
  return phi;
}

template <typename Scalar, typename Map>
RowMatrix<Scalar> keys(const Map& map, const RowMatrix<Scalar>& x, Scalar* c) {
  RowMatrix<Scalar> phi(x.rows(), map.features(x.cols()));
  *c = map.map_keys(Eigen::Ref<const RowMatrix<Scalar>>(x), Eigen::Ref<RowMatrix<Scalar>>(phi));
  return phi;
}

TYPED_TEST(FeatureMapTest, EluPlusOneMatchesDefinition) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> x = random_matrix<Scalar>(7, 6, 1, 3.0);
  x(0, 0) = 0;
  x(0, 1) = Scalar(-200);  // exp underflows to 0 (float) or to a tiny value
  x(0, 2) = Scalar(200);   // the exp branch would overflow; x + 1 is used
  const EluFeatureMap elu;
  EXPECT_EQ(elu.features(6), 6);
  Vector<Scalar> ls;
  Scalar c = 1;
  const RowMatrix<Scalar> pq = queries(elu, x, &ls), pk = keys(elu, x, &c);
  const RowMatrix<test::LD> want = test::elu_features_ld(x);
  // x + 1: one rounding, u |x + 1|; exp: Eigen's vectorised exp, within 2 ulp
  // (4 u) relative; |phi| <= 201 here, so 4 u * 201 covers both absolutely.
  const double tol = 4 * eps<Scalar>() / 2 * 201;
  EXPECT_TRUE(test::near_oracle(pq, want, tol));
  EXPECT_TRUE(matrices_near(pk, pq, 0.0));
  EXPECT_TRUE(matrices_near(ls, Vector<Scalar>::Zero(7), 0.0));
  EXPECT_EQ(c, Scalar(0));
  EXPECT_TRUE((pq.array() >= 0).all());
  EXPECT_EQ(pq(0, 0), Scalar(1));
  EXPECT_EQ(pq(0, 2), Scalar(201));
}

TYPED_TEST(FeatureMapTest, ReluIsExact) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(5, 4, 2);
  Vector<Scalar> ls;
  const RowMatrix<Scalar> phi = queries(ReluFeatureMap{}, x, &ls);
  EXPECT_TRUE(test::near_oracle(phi, test::relu_features_ld(x), 0.0));
}

TYPED_TEST(FeatureMapTest, CallableAdaptorAndItsShapeCheck) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(3, 4, 3);
  // Features [x, x^2]: m = 2d.
  const auto map = make_feature_map(
      [](const auto& in) {
        RowMatrix<Scalar> out(in.rows(), 2 * in.cols());
        out << in, in.array().square().matrix();
        return out;
      },
      8);
  EXPECT_EQ(map.features(4), 8);
  Vector<Scalar> ls;
  const RowMatrix<Scalar> phi = queries(map, x, &ls);
  EXPECT_TRUE(matrices_near(phi.leftCols(4), x, 0.0));
  EXPECT_TRUE(matrices_near(phi.rightCols(4), RowMatrix<Scalar>(x.array().square()), 0.0));
  EXPECT_TRUE(matrices_near(ls, Vector<Scalar>::Zero(3), 0.0));
  const auto short_map = make_feature_map([](const auto& in) { return RowMatrix<Scalar>(in); }, 5);
  EXPECT_TRUE(throws_invalid_argument([&] { queries(short_map, x, &ls); },
                                      {"FunctionFeatureMap", "returned (3 x 4)", "(3 x 5)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { make_feature_map([](const auto& in) { return in; }, 0); },
                                      {"features = 0"}));
}

}  // namespace
}  // namespace attnkit
