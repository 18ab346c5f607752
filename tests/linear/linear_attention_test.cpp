// Tests of attnkit/linear/linear_attention.hpp: every form (non-causal,
// chunked causal, strict causal, decode offsets) against a long-double brute
// force of the same formula, chunk sizes that do and do not divide n, the
// normaliser's guard, NaN reach and bad input.

#include "attnkit/linear/linear_attention.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/detail/parallel.hpp"
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_state.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "linear/linear_oracle.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::LD;
using test::linear_bound;
using test::linear_oracle;
using test::matrices_near;
using test::near_oracle;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class LinearAttentionTest : public ::testing::Test {};
TYPED_TEST_SUITE(LinearAttentionTest, test::Scalars);

/// Exact features of one of the maps under test (from the definitions in
/// linear_oracle.hpp) and the map's per-feature relative error bound.
enum class MapKind { elu, relu, favor, user };

template <typename Scalar>
struct Maps {
  Index d;
  PositiveRandomFeatures<Scalar> favor;
  explicit Maps(Index width) : d(width), favor(width, {48, 3}) {}
};

template <typename Scalar>
auto square_map(Index d) {
  return make_feature_map([](const auto& x) { return RowMatrix<Scalar>(x.array().square()); }, d);
}

template <typename Scalar>
RowMatrix<LD> exact_features(MapKind kind, const RowMatrix<Scalar>& x, const Maps<Scalar>& maps) {
  switch (kind) {
    case MapKind::elu:
      return test::elu_features_ld(x);
    case MapKind::relu:
      return test::relu_features_ld(x);
    case MapKind::favor:
      return test::favor_features_ld(x, maps.favor);
    case MapKind::user:
      return x.template cast<LD>().array().square().matrix();
  }
  return {};
}

template <typename Scalar>
double feature_error(MapKind kind, const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k,
                     const Maps<Scalar>& maps) {
  const double u = eps<Scalar>() / 2;
  switch (kind) {
    case MapKind::elu:
      return 4 * u;  // x + 1: one rounding; exp: Eigen's vectorised exp, within 2 ulp
    case MapKind::relu:
      return 0;  // exact
    case MapKind::favor:
      return std::max(test::favor_feature_error(q, maps.favor), test::favor_feature_error(k, maps.favor));
    case MapKind::user:
      return u;  // one product
  }
  return 0;
}

template <typename Scalar>
AttentionResult<Scalar> run(MapKind kind, const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k,
                            const RowMatrix<Scalar>& v, const Maps<Scalar>& maps,
                            const LinearAttentionOptions& o) {
  switch (kind) {
    case MapKind::elu:
      return linear_attention(q, k, v, EluFeatureMap{}, o);
    case MapKind::relu:
      return linear_attention(q, k, v, ReluFeatureMap{}, o);
    case MapKind::favor:
      return linear_attention(q, k, v, maps.favor, o);
    case MapKind::user:
      return linear_attention(q, k, v, square_map<Scalar>(q.cols()), o);
  }
  return {};
}

const char* name(MapKind kind) {
  switch (kind) {
    case MapKind::elu:
      return "elu";
    case MapKind::relu:
      return "relu";
    case MapKind::favor:
      return "favor";
    case MapKind::user:
      return "user";
  }
  return "?";
}

/// Checks output and lse of one call against the oracle with the derived
/// bound; lse within e_w/(1 - e_w) (the relative error of the normaliser)
/// plus the roundings of log and of adding the two stabilisers, each at most
/// max|E| in magnitude for FAVOR+ and 0 otherwise: 3 u (|lse| + 2 max|E|).
template <typename Scalar>
void check_against_oracle(MapKind kind, const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k,
                          const RowMatrix<Scalar>& v, const Maps<Scalar>& maps,
                          const LinearAttentionOptions& o) {
  const AttentionResult<Scalar> got = run(kind, q, k, v, maps, o);
  const test::LinearOracle want =
      linear_oracle(exact_features(kind, q, maps), exact_features(kind, k, maps), v, o.mask);
  const Index m = kind == MapKind::favor ? maps.favor.features() : q.cols();
  const double e_phi = feature_error(kind, q, k, maps);
  const double bound = linear_bound<Scalar>(e_phi, m, k.rows(), o.chunk, detail::resolve_threads(o.threads));
  const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
  EXPECT_TRUE(near_oracle(got.output, want.out, bound * max_v))
      << name(kind) << " mask " << to_string(o.mask.kind) << " chunk " << o.chunk;
  const double u = eps<Scalar>() / 2;
  for (Index i = 0; i < q.rows(); ++i) {
    const LD want_lse = want.lse(i);
    if (std::isinf(want_lse)) {
      EXPECT_EQ(static_cast<LD>(got.lse(i)), want_lse) << i;
      continue;
    }
    const double e_w = bound / 2;  // the relative error of the normaliser, as in linear_bound
    const double max_e = kind == MapKind::favor ? std::max(test::favor_max_exponent(q, maps.favor),
                                                           test::favor_max_exponent(k, maps.favor))
                                                : 0.0;
    const double stab = 3 * u * (std::fabs(static_cast<double>(want_lse)) + 2 * max_e);
    const double tol = e_w / (1 - e_w) + 2 * u * std::fabs(static_cast<double>(want_lse)) + stab;
    EXPECT_NEAR(static_cast<double>(got.lse(i)), static_cast<double>(want_lse), tol)
        << name(kind) << " row " << i;
  }
}

constexpr MapKind all_maps[] = {MapKind::elu, MapKind::relu, MapKind::favor, MapKind::user};

TYPED_TEST(LinearAttentionTest, NonCausalMatchesLongDoubleBruteForce) {
  using Scalar = TypeParam;
  const Index d = 8;
  const Maps<Scalar> maps(d);
  for (const auto& [n_q, n_k] : {std::pair<Index, Index>{1, 1}, {5, 37}, {37, 5}, {70, 70}}) {
    const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, 1, 0.7),
                            k = random_matrix<Scalar>(n_k, d, 2, 0.7), v = random_matrix<Scalar>(n_k, 5, 3);
    for (const MapKind kind : all_maps)
      for (const Index chunk : {Index{1}, Index{16}, Index{64}})
        check_against_oracle(kind, q, k, v, maps, {Mask::none(), chunk});
  }
}

TYPED_TEST(LinearAttentionTest, CausalChunkedMatchesLongDoubleBruteForce) {
  using Scalar = TypeParam;
  const Index d = 8, n = 53;
  const Maps<Scalar> maps(d);
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 4, 0.7), k = random_matrix<Scalar>(n, d, 5, 0.7),
                          v = random_matrix<Scalar>(n, 6, 6);
  // C = 1, C dividing nothing (7, 16), C = n and C > n.
  for (const MapKind kind : all_maps)
    for (const Index chunk : {Index{1}, Index{7}, Index{16}, Index{53}, Index{200}}) {
      check_against_oracle(kind, q, k, v, maps, {Mask::causal(), chunk});
      check_against_oracle(kind, q, k, v, maps, {Mask::strict_causal(), chunk});
    }
}

// Queries at the end of a longer key sequence, and explicit offsets: the
// prefix before the first chunk goes into the state in blocks.
TYPED_TEST(LinearAttentionTest, CausalOffsetsMatchLongDoubleBruteForce) {
  using Scalar = TypeParam;
  const Index d = 8, n_q = 11, n_k = 45;
  const Maps<Scalar> maps(d);
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, 7, 0.7),
                          k = random_matrix<Scalar>(n_k, d, 8, 0.7), v = random_matrix<Scalar>(n_k, 4, 9);
  for (const MapKind kind : all_maps)
    for (const Index chunk : {Index{1}, Index{4}, Index{64}}) {
      for (const std::optional<Index> off :
           {std::optional<Index>{}, std::optional<Index>{0}, std::optional<Index>{17}})
        check_against_oracle(kind, q, k, v, maps, {Mask::causal(off), chunk});
      for (const Index off : {Index{0}, Index{1}, Index{20}, n_k - n_q + 1})
        check_against_oracle(kind, q, k, v, maps, {Mask::strict_causal(off), chunk});
    }
}

// The chunked form against the token-by-token recurrence (append k_t, v_t,
// then query q_t: attnkit/linear/linear_state.hpp). Both are within
// linear_bound of the exact value, so within twice that of each other.
TYPED_TEST(LinearAttentionTest, ChunkedCausalEqualsTokenByToken) {
  using Scalar = TypeParam;
  const Index d = 8;
  const PositiveRandomFeatures<Scalar> favor(d, {32, 11});
  for (const Index n : {Index{1}, Index{2}, Index{29}, Index{64}}) {
    const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 12, 0.8),
                            k = random_matrix<Scalar>(n, d, 13, 0.8), v = random_matrix<Scalar>(n, 3, 14);
    LinearAttentionState<Scalar, PositiveRandomFeatures<Scalar>> state(favor, d, 3);
    RowMatrix<Scalar> scan(n, 3);
    for (Index t = 0; t < n; ++t) {
      state.append(k.row(t), v.row(t));
      scan.row(t) = state.query(q.row(t)).output;
    }
    const double e_phi = std::max(test::favor_feature_error(q, favor), test::favor_feature_error(k, favor));
    const double max_v = static_cast<double>(v.cwiseAbs().maxCoeff());
    for (const Index chunk : {Index{1}, Index{3}, Index{7}, n, n + 5}) {
      const auto got = linear_attention(q, k, v, favor, {Mask::causal(), chunk});
      const double tol =
          (linear_bound<Scalar>(e_phi, 32, n, chunk) + linear_bound<Scalar>(e_phi, 32, n, 1)) * max_v;
      EXPECT_TRUE(matrices_near(got.output, scan, tol)) << "n " << n << " chunk " << chunk;
    }
  }
}

// Rows whose weights are all zero, and the floor.
TYPED_TEST(LinearAttentionTest, NormaliserGuard) {
  using Scalar = TypeParam;
  constexpr LD inf = std::numeric_limits<LD>::infinity();
  // ReLU: query 0 is negative in every coordinate, so it overlaps no key.
  RowMatrix<Scalar> q(2, 2), k(2, 2), v(2, 2);
  q << -1, -2, 1, 1;
  k << 1, 0, 0, 1;
  v << 3, 4, 5, 6;
  const auto r = linear_attention(q, k, v, ReluFeatureMap{});
  EXPECT_TRUE(matrices_near(r.output.row(0), RowMatrix<Scalar>::Zero(1, 2), 0.0));
  EXPECT_EQ(static_cast<LD>(r.lse(0)), -inf);
  // Strict causal at position 0 sees no key: zero row, lse = -inf.
  const auto s = linear_attention(q, k, v, EluFeatureMap{}, {Mask::strict_causal()});
  EXPECT_TRUE(matrices_near(s.output.row(0), RowMatrix<Scalar>::Zero(1, 2), 0.0));
  EXPECT_EQ(static_cast<LD>(s.lse(0)), -inf);
  EXPECT_TRUE(std::isfinite(static_cast<double>(s.lse(1))));

  // One constant feature f, so den = n_k f^2 and num = f^2 sum v: below the
  // floor the output is num / floor = (den / floor) * mean(v).
  const auto constant = [](double f) {
    return make_feature_map(
        [f](const auto& x) { return RowMatrix<Scalar>::Constant(x.rows(), 1, static_cast<Scalar>(f)); }, 1);
  };
  const RowMatrix<Scalar> q1 = random_matrix<Scalar>(1, 2, 1), k1 = random_matrix<Scalar>(2, 2, 2);
  RowMatrix<Scalar> v1(2, 1);
  v1 << 1, 3;  // mean 2
  // Explicit floor 1e-3 with den = 2 * (1e-2)^2 = 2e-4: out = 0.2 * 2 = 0.4.
  const auto f1 = linear_attention(q1, k1, v1, constant(1e-2), {Mask::none(), 64, 1e-3});
  EXPECT_NEAR(static_cast<double>(f1.output(0, 0)), 0.4, 8 * eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(f1.lse(0)), std::log(2e-4), 8 * eps<Scalar>() * 9);
  // Above the floor: the plain ratio.
  const auto f2 = linear_attention(q1, k1, v1, constant(1.0), {Mask::none(), 64, 1e-3});
  EXPECT_NEAR(static_cast<double>(f2.output(0, 0)), 2.0, 8 * eps<Scalar>());
  // Default floor (smallest normal): a denominator that underflows into the
  // subnormals gives a finite output below mean(v), never NaN or inf;
  // features whose products underflow to exactly 0 give the zero row.
  const double tiny = std::sqrt(static_cast<double>(std::numeric_limits<Scalar>::min())) * 0.3;
  const auto f3 = linear_attention(q1, k1, v1, constant(tiny));
  EXPECT_TRUE(std::isfinite(static_cast<double>(f3.output(0, 0))));
  EXPECT_GT(static_cast<double>(f3.output(0, 0)), 0.0);
  EXPECT_LT(static_cast<double>(f3.output(0, 0)), 2.0);
  const auto f4 =
      linear_attention(q1, k1, v1, constant(static_cast<double>(std::numeric_limits<Scalar>::denorm_min())));
  EXPECT_EQ(static_cast<double>(f4.output(0, 0)), 0.0);
  EXPECT_EQ(static_cast<LD>(f4.lse(0)), -inf);
}

// A NaN in query row i reaches row i only; a NaN key reaches exactly the
// queries that see it (causal: from its position on).
TYPED_TEST(LinearAttentionTest, NanReachesOnlyTheRowsItEnters) {
  using Scalar = TypeParam;
  const Index n = 20, d = 4;
  const PositiveRandomFeatures<Scalar> favor(d, {16, 5});
  RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 1), k = random_matrix<Scalar>(n, d, 2);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(n, 2, 3);
  const auto clean = linear_attention(q, k, v, favor, {Mask::causal(), 8});
  q(3, 1) = std::numeric_limits<Scalar>::quiet_NaN();
  k(11, 2) = std::numeric_limits<Scalar>::quiet_NaN();
  const auto dirty = linear_attention(q, k, v, favor, {Mask::causal(), 8});
  for (Index i = 0; i < n; ++i) {
    const bool nan_row = i == 3 || i >= 11;
    EXPECT_EQ(std::isnan(static_cast<double>(dirty.output(i, 0))), nan_row) << i;
    if (!nan_row) {
      EXPECT_TRUE(matrices_near(dirty.output.row(i), clean.output.row(i), 0.0)) << i;
    }
  }
}

// Threads split the keys and queries into ranges whose states are merged:
// another summation order, so every thread count is checked against the
// long-double oracle with the same bound (the merges are rescalings the
// bound's R term counts), not bit for bit against one thread.
TYPED_TEST(LinearAttentionTest, ThreadsMatchLongDoubleBruteForce) {
  using Scalar = TypeParam;
#if defined(ATTNKIT_TEST_EXPECT_OPENMP)
  EXPECT_TRUE(detail::openmp_enabled());
#endif
  const Index d = 8;
  const Maps<Scalar> maps(d);
  for (const auto& [n_q, n_k] : {std::pair<Index, Index>{150, 150}, {20, 170}, {3, 120}}) {
    const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, 31, 0.7),
                            k = random_matrix<Scalar>(n_k, d, 32, 0.7), v = random_matrix<Scalar>(n_k, 4, 33);
    for (const int threads : {1, 2, 3, 0})
      for (const Mask mask :
           {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal(n_k - n_q - 1)}) {
        if (mask.offset && *mask.offset < 0) continue;
        LinearAttentionOptions o{mask, 8};
        o.threads = threads;
        check_against_oracle(MapKind::favor, q, k, v, maps, o);
        check_against_oracle(MapKind::elu, q, k, v, maps, o);
      }
  }
}

// A feature map that throws inside the parallel region: the exception
// reaches the caller (not std::terminate).
TYPED_TEST(LinearAttentionTest, MapExceptionsCrossTheThreads) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> k = random_matrix<Scalar>(200, 4, 1);
  const RowMatrix<Scalar> q = random_matrix<Scalar>(200, 4, 2), v = random_matrix<Scalar>(200, 2, 3);
  k(150, 0) = Scalar(1e6);  // the map rejects this row; rows 0 (the probe) are fine
  const auto picky = make_feature_map(
      [](const auto& x) {
        if ((x.array().abs() > Scalar(1e5)).any())
          throw std::invalid_argument("picky map: value out of range");
        return RowMatrix<Scalar>(x.array().square());
      },
      4);
  for (const int threads : {1, 2}) {
    LinearAttentionOptions o{Mask::causal(), 8};
    o.threads = threads;
    EXPECT_TRUE(throws_invalid_argument([&] { linear_attention(q, k, v, picky, o); }, {"picky map"}))
        << threads;
  }
}

TEST(LinearAttentionInput, BadInputThrows) {
  const RowMatrix<double> q = RowMatrix<double>::Ones(3, 4), k = RowMatrix<double>::Ones(5, 4),
                          v = RowMatrix<double>::Ones(5, 2), k3 = RowMatrix<double>::Ones(5, 3),
                          v4 = RowMatrix<double>::Ones(4, 2), empty(0, 4);
  const EluFeatureMap elu;
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        linear_attention(q, k, v, elu, {Mask::none(), 0});
      },
      {"linear_attention", "chunk = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        linear_attention(q, k, v, elu, {Mask::none(), -3});
      },
      {"chunk = -3"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { linear_attention(q, k3, v, elu); }, {"(3 x 4)", "(5 x 3)", "width"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { linear_attention(q, k, v4, elu); }, {"(5 x 4)", "(4 x 2)", "rows"}));
  EXPECT_TRUE(throws_invalid_argument([&] { linear_attention(empty, k, v, elu); }, {"empty"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { linear_attention(q, k, v, elu, {Mask::causal(3)}); }, {"offset 3"}));
  // A prefix-sum state has no band: windows and sinks are refused, not ignored.
  EXPECT_TRUE(
      throws_invalid_argument([&] { linear_attention(q, k, v, elu, {Mask::causal().with_window(2)}); },
                              {"linear_attention", "window = 2"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { linear_attention(q, k, v, elu, {Mask::causal().with_window(4).with_sinks(1)}); }, {"sinks = 1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        linear_attention(q, k, v, elu, {Mask::none(), 64, 0.0});
      },
      {"denominator_floor = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        linear_attention(q, k, v, elu, {Mask::none(), 64, std::numeric_limits<double>::quiet_NaN()});
      },
      {"denominator_floor = nan"}));
  const PositiveRandomFeatures<double> favor6(6, {8, 1});
  EXPECT_TRUE(throws_invalid_argument([&] { linear_attention(q, k, v, favor6); }, {"d = 4", "d = 6"}));
  const auto wrong = make_feature_map([](const auto& x) { return RowMatrix<double>::Ones(x.rows(), 3); }, 2);
  EXPECT_TRUE(throws_invalid_argument([&] { linear_attention(q, k, v, wrong); },
                                      {"returned (1 x 3)", "features = 2"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        LinearAttentionOptions o;
        o.threads = -1;
        linear_attention(q, k, v, elu, o);
      },
      {"threads = -1"}));
  RowMatrix<double> out(3, 3);
  Vector<double> lse(3);
  EXPECT_TRUE(
      throws_invalid_argument([&] { linear_attention_into(q, k, v, elu, out, lse); }, {"out (3 x 3)"}));
}

}  // namespace
}  // namespace attnkit
