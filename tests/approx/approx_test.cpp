// approx_attention (attnkit/approx/approx_attention.hpp): the proven bound
// against an independent long-double oracle (tests/naive_attention.hpp, which
// calls nothing of the library), over random and adversarial inputs, every
// mask, both modes and both scalar types.
//
// What is checked, per output entry (r, c), with O the oracle:
//   soundness  |O'_rc - O_rc| <= bound_rc + ref_rc          (both modes)
//   contract   bound_rc <= eps * max_{visible j} |V_jc|      (certified mode)
// ref_rc is the oracle's own rounding error, derived below; it is far below
// every reported bound (the oracle computes in long double, u = 2^-64).

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/approx/approx_attention.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::LD;

/// One input of the property test, generated in double and cast to Scalar
/// (the oracle sees exactly the Scalar values).
struct Case {
  std::string name;
  RowMatrix<double> q, k, v;
};

RowMatrix<double> normal(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  detail::Random rng(seed);
  return rng.normal_matrix(rows, cols, stddev);
}

/// Clustered keys (interleaved along the sequence), queries near the
/// centres: the structure the approximation exploits, so that the skip and
/// summarise tiers are exercised (ExercisesEveryTier checks they are).
Case clustered(Index n, Index d, Index clusters, double centre_std, double noise, std::uint64_t seed) {
  detail::Random rng(seed);
  const RowMatrix<double> centres = rng.normal_matrix(clusters, d, centre_std);
  Case c{"clustered_n" + std::to_string(n), RowMatrix<double>(n, d), RowMatrix<double>(n, d), rng.normal_matrix(n, 3)};
  for (Index j = 0; j < n; ++j)
    for (Index a = 0; a < d; ++a) {
      c.k(j, a) = centres(j % clusters, a) + noise * rng.normal();
      c.q(j, a) = centres(rng.index(clusters), a) + noise * rng.normal();
    }
  return c;
}

/// The inputs of the property test (fixed seeds). n is never a power of two
/// except where the case says so; d = 8, d_v = 3.
std::vector<Case> cases() {
  const Index d = 8;
  std::vector<Case> out;
  out.push_back({"iid_n300", normal(300, d, 1), normal(300, d, 2), normal(300, 3, 3)});
  out.push_back(clustered(517, d, 6, 2.0, 0.05, 4));
  out.push_back(clustered(1000, d, 3, 3.0, 0.01, 5));
  {
    Case c{"large_norm_keys", normal(300, d, 6), normal(300, d, 7, 30.0), normal(300, 3, 8)};
    out.push_back(c);
  }
  {
    // Keys within 1e-6 of one of two base keys: near-duplicates.
    Case c{"near_duplicate_keys", normal(333, d, 9), normal(333, d, 10, 1e-6), normal(333, 3, 11)};
    const RowMatrix<double> base = normal(2, d, 12, 2.0);
    for (Index j = 0; j < c.k.rows(); ++j) c.k.row(j) += base.row(j % 2);
    out.push_back(c);
  }
  {
    // Key 7 aligned with every query (logit about 40 above the others).
    Case c{"one_dominant_key", normal(260, d, 13, 0.3), normal(260, d, 14, 0.3), normal(260, 3, 15)};
    c.q.rowwise() += Eigen::RowVectorXd::Constant(d, 1.0);
    c.k.row(7) = Eigen::RowVectorXd::Constant(d, 6.0);
    out.push_back(c);
  }
  {
    Case c{"all_keys_identical", normal(256, d, 16), RowMatrix<double>(256, d), normal(256, 3, 17)};
    c.k.rowwise() = normal(1, d, 18).row(0);
    out.push_back(c);
  }
  {
    // Values of mixed sign around large offsets: +1e3 in column 0, -1e3 in
    // column 1, alternating +-1e3 in column 2.
    Case c = clustered(400, d, 4, 2.0, 0.1, 19);
    c.name = "mixed_sign_values";
    for (Index j = 0; j < c.v.rows(); ++j) {
      c.v(j, 0) += 1e3;
      c.v(j, 1) -= 1e3;
      c.v(j, 2) += (j % 2 ? 1e3 : -1e3);
    }
    out.push_back(c);
  }
  {
    // Logits of order +-80 (scale 1/sqrt(8)): e^80 is near float's range.
    Case c = clustered(300, d, 5, 5.0, 0.05, 20);
    c.name = "logits_near_float_range";
    out.push_back(c);
  }
  {
    // Logits of order +-5000: beyond the range of exp in double as well.
    Case c{"logits_beyond_exp_range", normal(300, d, 21, 40.0), normal(300, d, 22, 40.0), normal(300, 3, 23)};
    out.push_back(c);
  }
  out.push_back({"n1", normal(1, d, 24), normal(1, d, 25), normal(1, 3, 26)});
  out.push_back({"n2", normal(2, d, 27), normal(2, d, 28), normal(2, 3, 29)});
  return out;
}

/// The oracle and what the checks need from it, for one case and mask.
struct Oracle {
  test::NaiveResult exact;
  RowMatrix<double> vmax;  ///< (n_q x d_v): max_{visible j} |V_jc|, 0 if none
  RowMatrix<double> ref;   ///< (n_q x d_v): the oracle's own error bound
};

/// The oracle's error bound. In long double (u = 2^-64) each logit
/// scale * q.k is a d-term dot product: error <= (d + 1) u a with
/// a = scale * max_j sum_c |q_c k_jc| (the products, the sum, the scale).
/// exp(z - m) adds 2 u relative (the subtraction and exp, taken as 1 ulp),
/// so every weight is within relative (d + 1) u a + 2 u, giving 2 times that
/// on the normalised output (numerator and denominator); the n-term sums and
/// the division add (n + 1) u each on a convex combination of |v| <= vmax.
/// Doubled for safety of the "1 ulp" libm assumption:
///   ref_rc = 2 (2 ((d + 1) u a + 2 u) + 2 (n + 1) u) vmax_rc.
template <typename Scalar>
Oracle oracle(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
              const test::NaiveMask& mask, double scale) {
  Oracle o{test::naive_attention(q, k, v, mask, scale), RowMatrix<double>::Zero(q.rows(), v.cols()),
           RowMatrix<double>::Zero(q.rows(), v.cols())};
  const double u = 0x1.0p-64;
  const double d = static_cast<double>(q.cols()), n = static_cast<double>(k.rows());
  for (Index i = 0; i < q.rows(); ++i) {
    double a = 0;
    for (Index j = 0; j < k.rows(); ++j) {
      if (!mask.visible(i, j, q.rows(), k.rows())) continue;
      double s = 0;
      for (Index c = 0; c < q.cols(); ++c) s += std::fabs(static_cast<double>(q(i, c)) * static_cast<double>(k(j, c)));
      a = std::max(a, scale * s);
      for (Index c = 0; c < v.cols(); ++c) o.vmax(i, c) = std::max(o.vmax(i, c), std::fabs(static_cast<double>(v(j, c))));
    }
    a *= 1.01;  // the double evaluation of a itself
    for (Index c = 0; c < v.cols(); ++c)
      o.ref(i, c) = 2 * (2 * ((d + 1) * u * a + 2 * u) + 2 * (n + 1) * u) * o.vmax(i, c);
  }
  return o;
}

test::NaiveMask naive_mask(MaskKind kind) {
  test::NaiveMask m;
  m.kind = kind;
  m.offset = 0;  // n_q = n_k: the default offset n_k - n_q
  return m;
}

/// Small blocks and leaves so that problems of a few hundred keys have
/// several levels and trees deep enough to skip and summarise.
ApproxOptions small_index(MaskKind kind) {
  ApproxOptions o;
  o.mask = Mask(kind);
  o.index.block = 16;
  o.index.leaf = 4;
  o.group_rows = 16;
  return o;
}

/// Checks soundness (and the contract when `certified`) on every entry;
/// returns the number of failures printed (at most a few).
template <typename Scalar>
int check_result(const ApproxResult<Scalar>& res, const Oracle& o, double eps, bool certified,
                 const std::string& what) {
  int failures = 0;
  const Index n_q = res.output.rows(), d_v = res.output.cols();
  EXPECT_EQ(res.bound.rows(), n_q);
  EXPECT_EQ(res.bound.cols(), d_v);
  for (Index r = 0; r < n_q; ++r) {
    const LD lse = o.exact.lse(r);
    if (lse == -std::numeric_limits<LD>::infinity()) {
      // A row that sees no key: zero output, lse -inf, bound 0.
      for (Index c = 0; c < d_v; ++c) {
        EXPECT_EQ(res.output(r, c), Scalar(0)) << what << " row " << r;
        EXPECT_EQ(res.bound(r, c), 0.0) << what << " row " << r;
      }
      EXPECT_EQ(res.lse(r), -std::numeric_limits<Scalar>::infinity()) << what << " row " << r;
      continue;
    }
    // lse: |lse' - lse| <= lse_bound (+ the oracle's error, below 1e-12 here).
    const double lerr = std::fabs(static_cast<double>(static_cast<LD>(res.lse(r)) - lse));
    if (!(lerr <= res.lse_bound(r) + 1e-12 * (1 + std::fabs(static_cast<double>(lse)))) && failures < 5) {
      ++failures;
      ADD_FAILURE() << what << ": lse row " << r << " error " << lerr << " > bound " << res.lse_bound(r);
    }
    for (Index c = 0; c < d_v; ++c) {
      const double err = static_cast<double>(std::fabs(static_cast<LD>(res.output(r, c)) - o.exact.output(r, c)));
      const double b = res.bound(r, c);
      if (!(err <= b + o.ref(r, c)) && failures < 5) {
        ++failures;
        ADD_FAILURE() << what << ": row " << r << " col " << c << " error " << err << " > bound " << b
                      << " (+ oracle " << o.ref(r, c) << ")";
      }
      if (certified && !(b <= eps * o.vmax(r, c)) && failures < 5) {
        ++failures;
        ADD_FAILURE() << what << ": row " << r << " col " << c << " bound " << b << " > eps max|v| "
                      << eps * o.vmax(r, c);
      }
    }
  }
  return failures;
}

template <typename Scalar>
class ApproxTest : public ::testing::Test {};
TYPED_TEST_SUITE(ApproxTest, test::Scalars);

constexpr MaskKind kMasks[] = {MaskKind::none, MaskKind::causal, MaskKind::strict_causal};

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
        const double expect = kind == MaskKind::none ? rows * rows
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
  EXPECT_GT(bud.stats.skipped_keys + bud.stats.summarised_keys, cert.stats.skipped_keys + cert.stats.summarised_keys);
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
      const std::string what = std::string("mask ") + to_string(kind) + (budgeted ? " budgeted" : " certified");
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
          const double err = static_cast<double>(std::fabs(static_cast<LD>(res.output(r, c)) - o.exact.output(r, c)));
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
    EXPECT_TRUE(test::throws_invalid_argument(with([eps](ApproxOptions& o) { o.eps = eps; }), {"eps"})) << eps;
  for (const Index budget : {Index(0), Index(-3)})
    EXPECT_TRUE(test::throws_invalid_argument(with([budget](ApproxOptions& o) { o.budget = budget; }), {"budget"}));
  EXPECT_TRUE(test::throws_invalid_argument(with([](ApproxOptions& o) { o.index.leaf = 0; }), {"index.leaf"}));
  EXPECT_TRUE(test::throws_invalid_argument(with([](ApproxOptions& o) { o.index.block = 2; }), {"index.block"}));
  EXPECT_TRUE(
      test::throws_invalid_argument(with([](ApproxOptions& o) { o.mask = Mask::causal().with_window(4); }), {"window"}));
  for (const Scalar bad : {std::numeric_limits<Scalar>::quiet_NaN(), std::numeric_limits<Scalar>::infinity()}) {
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
