// approx_attention (attnkit/approx/approx_attention.hpp): the proven bound
// against an independent long-double oracle (tests/naive_attention.hpp, which
// calls nothing of the library), over random and adversarial inputs, every
// mask, both modes and both scalar types.
//
// What is checked, per output entry (r, c), with O the oracle:
//   soundness  |O'_rc - O_rc| <= bound_rc + ref_rc          (both modes)
//   contract   bound_rc <= eps * max_{visible j} |V_jc|      (certified mode)
// ref_rc is the oracle's own rounding error, derived in approx_cases.hpp; far below
// every reported bound (the oracle computes in long double, u = 2^-64).

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "approx/approx_cases.hpp"

namespace attnkit {
namespace {

using namespace approx_test;
using test::LD;

template <typename Scalar>
class ApproxTest : public ::testing::Test {};
TYPED_TEST_SUITE(ApproxTest, test::Scalars);

TYPED_TEST(ApproxTest, CertifiedBoundIsSoundAndWithinContract) {
  using Scalar = TypeParam;
  for (const Case& cs : cases()) {
    const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.cols()));
    for (const MaskKind kind : kMasks) {
      const Oracle o = oracle(q, k, v, naive_mask(kind), scale);
      for (const double eps : {1e-1, 1e-2, 1e-3}) {
        ApproxOptions opt = small_index(kind);
        opt.eps = eps;
        const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
        const std::string what = cs.name + " mask " + to_string(kind) + " eps " + std::to_string(eps);
        check_result(res, o, eps, true, what);
        EXPECT_TRUE(res.stats.within_eps) << what << ": max bound ratio " << res.stats.max_bound_ratio;
        const double rows = static_cast<double>(q.rows());
        const double seen = res.stats.exact_keys + res.stats.summarised_keys + res.stats.skipped_keys;
        // Every visible key is counted once per row: n_q n_k (none),
        // n(n+1)/2 (causal), n(n-1)/2 (strict).
        const double expect = kind == MaskKind::none     ? rows * rows
                              : kind == MaskKind::causal ? rows * (rows + 1) / 2
                                                         : rows * (rows - 1) / 2;
        EXPECT_EQ(seen, expect) << what;
      }
    }
  }
}

TYPED_TEST(ApproxTest, CertifiedDefaultIndexOnLongerInput) {
  // The default layout (blocks of 512 keys, leaves of 32): three levels.
  using Scalar = TypeParam;
  const Case cs = clustered(1800, 8, 4, 3.0, 0.02, 30);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
  const double scale = 1.0 / std::sqrt(8.0);
  for (const MaskKind kind : {MaskKind::causal, MaskKind::strict_causal}) {
    const Oracle o = oracle(q, k, v, naive_mask(kind), scale);
    ApproxOptions opt;
    opt.mask = Mask(kind);
    const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
    check_result(res, o, opt.eps, true, std::string("default index mask ") + to_string(kind));
    EXPECT_GT(res.stats.summarised_keys + res.stats.skipped_keys, 0.0);
  }
}

TYPED_TEST(ApproxTest, BudgetedBoundIsSound) {
  using Scalar = TypeParam;
  for (const Case& cs : cases()) {
    const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.cols()));
    for (const MaskKind kind : kMasks) {
      const Oracle o = oracle(q, k, v, naive_mask(kind), scale);
      // Budget 1 (everything but the diagonal closed), 64, and the monopole
      // estimator at 16: three runs per case and mask keep the test short.
      for (const auto& [budget, est] : {std::pair{Index(1), ApproxEstimator::second_order},
                                        std::pair{Index(64), ApproxEstimator::second_order},
                                        std::pair{Index(16), ApproxEstimator::monopole}}) {
        ApproxOptions opt = small_index(kind);
        opt.budget = budget;
        opt.estimator = est;
        const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
        const std::string what = cs.name + " mask " + to_string(kind) + " budget " + std::to_string(budget) +
                                 (est == ApproxEstimator::monopole ? " monopole" : " second_order");
        check_result(res, o, opt.eps, false, what);
        // stats.max_bound_ratio is what the call reports it achieved.
        double worst = 0;
        for (Index r = 0; r < q.rows(); ++r)
          for (Index c = 0; c < v.cols(); ++c)
            if (o.vmax(r, c) > 0) worst = std::max(worst, res.bound(r, c) / o.vmax(r, c));
        EXPECT_LE(worst, res.stats.max_bound_ratio * (1 + 1e-12)) << what;
      }
    }
  }
}

TYPED_TEST(ApproxTest, ExercisesEveryTier) {
  // The property tests above would pass vacuously if everything were
  // attended exactly: on clustered keys some keys must be summarised or
  // skipped, in both modes.
  using Scalar = TypeParam;
  const Case cs = clustered(1000, 8, 3, 3.0, 0.01, 5);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
  ApproxOptions opt = small_index(MaskKind::causal);
  const ApproxResult<Scalar> cert = approx_attention(q, k, v, opt);
  EXPECT_GT(cert.stats.summarised_keys + cert.stats.skipped_keys, 0.0);
  EXPECT_GT(cert.stats.exact_keys, 0.0);
  opt.budget = 8;
  const ApproxResult<Scalar> bud = approx_attention(q, k, v, opt);
  EXPECT_GT(bud.stats.summarised_keys, 0.0);
  EXPECT_GT(bud.stats.skipped_keys + bud.stats.summarised_keys,
            cert.stats.skipped_keys + cert.stats.summarised_keys);
}

TYPED_TEST(ApproxTest, UnstructuredInputGoesToTheKernel) {
  // iid keys with large entries (logit std 4 at scale 1/sqrt(8)): nothing
  // can be closed, every visible pair is attended exactly, the bound is the
  // kernel's own and still sound and within the contract.
  using Scalar = TypeParam;
  const Index n = 700;
  const RowMatrix<Scalar> q = normal(n, 8, 80, 2.0).cast<Scalar>(), k = normal(n, 8, 81, 2.0).cast<Scalar>(),
                          v = normal(n, 3, 82).cast<Scalar>();
  for (const MaskKind kind : kMasks) {
    const ApproxOptions opt = small_index(kind);
    const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
    const Oracle o = oracle(q, k, v, naive_mask(kind), 1.0 / std::sqrt(8.0));
    check_result(res, o, opt.eps, true, std::string("unstructured mask ") + to_string(kind));
    EXPECT_EQ(res.stats.summarised_keys + res.stats.skipped_keys, 0.0);
  }
}

TYPED_TEST(ApproxTest, RowsSeeingNoKey) {
  using Scalar = TypeParam;
  for (const Index n : {Index(1), Index(5), Index(100)}) {
    const RowMatrix<Scalar> q = normal(n, 4, 40).cast<Scalar>(), k = normal(n, 4, 41).cast<Scalar>(),
                            v = normal(n, 2, 42).cast<Scalar>();
    ApproxOptions opt = small_index(MaskKind::strict_causal);
    for (const bool budgeted : {false, true}) {
      if (budgeted) opt.budget = 4;
      const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
      EXPECT_EQ(res.output.row(0).cwiseAbs().maxCoeff(), Scalar(0));
      EXPECT_EQ(res.lse(0), -std::numeric_limits<Scalar>::infinity());
      EXPECT_EQ(res.bound.row(0).cwiseAbs().maxCoeff(), 0.0);
      EXPECT_EQ(res.lse_bound(0), 0.0);
      if (n > 1) {
        EXPECT_TRUE(std::isfinite(static_cast<double>(res.lse(1))));
      }
    }
  }
}

TYPED_TEST(ApproxTest, NanInValueColumnStaysInItsColumn) {
  using Scalar = TypeParam;
  const Case cs = clustered(300, 8, 4, 2.0, 0.05, 50);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>();
  RowMatrix<Scalar> v = cs.v.cast<Scalar>();
  const Index bad = 123, col = 1;
  v(bad, col) = std::numeric_limits<Scalar>::quiet_NaN();
  const double scale = 1.0 / std::sqrt(8.0);
  for (const MaskKind kind : kMasks)
    for (const bool budgeted : {false, true}) {
      ApproxOptions opt = small_index(kind);
      if (budgeted) opt.budget = 16;
      const ApproxResult<Scalar> res = approx_attention(q, k, v, opt);
      const test::NaiveMask nm = naive_mask(kind);
      // The oracle of the other columns: V without column `col` is not
      // needed, the oracle computes each column independently.
      const Oracle o = oracle(q, k, v, nm, scale);
      const std::string what =
          std::string("mask ") + to_string(kind) + (budgeted ? " budgeted" : " certified");
      for (Index r = 0; r < q.rows(); ++r) {
        const bool sees = nm.visible(r, bad, q.rows(), k.rows());
        for (Index c = 0; c < v.cols(); ++c) {
          const bool nan_out = std::isnan(static_cast<double>(res.output(r, c)));
          if (c == col && sees) {
            EXPECT_TRUE(nan_out) << what << " row " << r;
            EXPECT_TRUE(std::isnan(res.bound(r, c))) << what << " row " << r;
            continue;
          }
          ASSERT_FALSE(nan_out) << what << " row " << r << " col " << c;
          if (o.exact.lse(r) == -std::numeric_limits<LD>::infinity()) continue;
          const double err =
              static_cast<double>(std::fabs(static_cast<LD>(res.output(r, c)) - o.exact.output(r, c)));
          EXPECT_LE(err, res.bound(r, c) + o.ref(r, c)) << what << " row " << r << " col " << c;
          if (!budgeted) {
            EXPECT_LE(res.bound(r, c), opt.eps * o.vmax(r, c)) << what << " row " << r << " col " << c;
          }
        }
      }
    }
}

TYPED_TEST(ApproxTest, BadInputNamesTheArgument) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = normal(20, 4, 60).cast<Scalar>(), k = normal(20, 4, 61).cast<Scalar>(),
                          v = normal(20, 2, 62).cast<Scalar>();
  const auto with = [&](auto edit) {
    return [&, edit] {
      ApproxOptions o;
      edit(o);
      approx_attention(q, k, v, o);
    };
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double eps : {0.0, 1.0, -0.5, 2.0, nan})
    EXPECT_TRUE(test::throws_invalid_argument(with([eps](ApproxOptions& o) { o.eps = eps; }), {"eps"}))
        << eps;
  for (const Index budget : {Index(0), Index(-3)})
    EXPECT_TRUE(
        test::throws_invalid_argument(with([budget](ApproxOptions& o) { o.budget = budget; }), {"budget"}));
  EXPECT_TRUE(
      test::throws_invalid_argument(with([](ApproxOptions& o) { o.index.leaf = 0; }), {"index.leaf"}));
  EXPECT_TRUE(
      test::throws_invalid_argument(with([](ApproxOptions& o) { o.index.block = 2; }), {"index.block"}));
  EXPECT_TRUE(test::throws_invalid_argument(
      with([](ApproxOptions& o) { o.mask = Mask::causal().with_window(4); }), {"window"}));
  for (const Scalar bad :
       {std::numeric_limits<Scalar>::quiet_NaN(), std::numeric_limits<Scalar>::infinity()}) {
    RowMatrix<Scalar> qb = q, kb = k;
    qb(3, 1) = bad;
    kb(7, 2) = -bad;
    EXPECT_TRUE(test::throws_invalid_argument([&] { approx_attention(qb, k, v); }, {"Q", "non-finite"}));
    EXPECT_TRUE(test::throws_invalid_argument([&] { approx_attention(q, kb, v); }, {"K", "non-finite"}));
  }
  const RowMatrix<Scalar> k5 = normal(20, 5, 63).cast<Scalar>(), v19 = normal(19, 2, 64).cast<Scalar>();
  EXPECT_TRUE(test::throws_invalid_argument([&] { approx_attention(q, k5, v); }, {"Q", "K", "width"}));
  EXPECT_TRUE(test::throws_invalid_argument([&] { approx_attention(q, k, v19); }, {"K", "V", "rows"}));
  const RowMatrix<Scalar> empty(0, 4);
  EXPECT_TRUE(test::throws_invalid_argument([&] { approx_attention(empty, k, v); }, {"Q", "empty"}));
}

TYPED_TEST(ApproxTest, ResultDoesNotDependOnThreads) {
  using Scalar = TypeParam;
  const Case cs = clustered(700, 8, 5, 2.0, 0.05, 70);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
  ApproxOptions opt = small_index(MaskKind::causal);
  opt.threads = 1;
  const ApproxResult<Scalar> one = approx_attention(q, k, v, opt);
  opt.threads = 3;
  const ApproxResult<Scalar> three = approx_attention(q, k, v, opt);
  EXPECT_TRUE(test::matrices_near(one.output, three.output, 0.0));
  EXPECT_TRUE(test::matrices_near(one.bound, three.bound, 0.0));
}

}  // namespace
}  // namespace attnkit
