// Tests of attnkit/prune/compensation.hpp: the mean compensation leaves exactly
// the centred residual (and its energy is the centred objective); regression
// is never worse than mean on the fitted keys (a theorem of least squares,
// checked with tolerances from rounding the fit to Scalar); it recovers keys
// that are exactly linear; singular fits stay finite.

#include "attnkit/prune/compensation.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>

#include "attnkit/prune/weights.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class CompensationTest : public ::testing::Test {};
TYPED_TEST_SUITE(CompensationTest, test::Scalars);

TYPED_TEST(CompensationTest, NoneAndMeanPredictions) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(100, 7, 1, 4.0);
  const DimSelection sel(7, {1, 4, 5});
  const Compensation<Scalar> none = fit_compensation(k, sel, PruneCompensation::none);
  EXPECT_EQ(none.kind, PruneCompensation::none);
  EXPECT_EQ(none.bytes(), 0u);
  const Compensation<Scalar> mean = fit_compensation(k, sel, PruneCompensation::mean);
  ASSERT_EQ(mean.offset.size(), 4);
  EXPECT_EQ(mean.coefficients.size(), 0);
  EXPECT_EQ(mean.bytes(), 4 * sizeof(Scalar));
  for (Index t = 0; t < 4; ++t) {
    const Index b = sel.dropped()[static_cast<std::size_t>(t)];
    const LD mu = k.col(b).template cast<LD>().sum() / LD(100);
    // The mean is a 100-term double sum (at most 100 eps_d max|k_b| off),
    // then rounded to Scalar (eps_S / 2 relative).
    const double kmax = static_cast<double>(k.col(b).cwiseAbs().maxCoeff());
    EXPECT_NEAR(
        static_cast<double>(mean.offset(t)), static_cast<double>(mu),
        0.5 * test::eps<Scalar>() * std::fabs(static_cast<double>(mu)) + 100 * test::eps<double>() * kmax);
  }
  // The residual of "none" is k_B itself, of "mean" k_B - mu_B.
  const RowMatrix<double> r_none = compensation_residual(k, sel, none);
  const RowMatrix<double> r_mean = compensation_residual(k, sel, mean);
  for (Index m = 0; m < 100; ++m)
    for (Index t = 0; t < 4; ++t) {
      const Index b = sel.dropped()[static_cast<std::size_t>(t)];
      EXPECT_EQ(r_none(m, t), static_cast<double>(k(m, b)));
      EXPECT_EQ(r_mean(m, t), static_cast<double>(k(m, b)) - static_cast<double>(mean.offset(t)));
    }
}

// Theorem: with mean compensation the window queries' logit error on the fitted
// keys has energy sum_{n,m} (q_{n,B} . (k_{m,B} - mu_B))^2 = F(B) of the centred weights.
TYPED_TEST(CompensationTest, MeanResidualEnergyIsTheCentredObjective) {
  using Scalar = TypeParam;
  const Index d = 10;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(12, d, 2);
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(150, d, 3, 6.0);
  const RowMatrix<double> wc = centered_weights(q, k);
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const DimSelection sel = test::random_selection(d, 4, seed);
    // Exact means in long double (not the Scalar-rounded offset).
    LD energy = 0, abs_energy = 0;
    std::vector<LD> mu(static_cast<std::size_t>(d), 0);
    for (Index c = 0; c < d; ++c)
      mu[static_cast<std::size_t>(c)] = k.col(c).template cast<LD>().sum() / k.rows();
    for (Index n = 0; n < q.rows(); ++n)
      for (Index m = 0; m < k.rows(); ++m) {
        LD e = 0, a = 0;
        for (const Index b : sel.dropped()) {
          const LD term =
              static_cast<LD>(q(n, b)) * (static_cast<LD>(k(m, b)) - mu[static_cast<std::size_t>(b)]);
          e += term;
          a += std::fabs(term);
        }
        energy += e * e;
        abs_energy += a * a;
      }
    // Each weight W_ij is the product of a 12-term query Gram entry and a
    // 150-term centred key Gram entry (the mean subtracted first: 150 more
    // roundings), summed in double over |B|^2 = 36 entries: relative
    // (12 + 2 * 150 + 36 + 2) eps_d of the absolute energy.
    EXPECT_NEAR(selection_objective(wc, sel), static_cast<double>(energy),
                (12 + 2 * 150 + 36 + 2) * test::eps<double>() * static_cast<double>(abs_energy));
  }
}

// Theorem (least squares): per dropped dimension, the regression residual's sum
// of squares on the fitted keys is at most the mean residual's. The fit is
// rounded to Scalar, which moves each residual entry by at most
// eps_Scalar (sum_a |M_ba| |k_a| + |offset_b|) (+ the same for the mean).
TYPED_TEST(CompensationTest, RegressionNeverWorseThanMeanOnFittedKeys) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    const Index d = 3 + static_cast<Index>(seed % 12);
    const Index n = 5 + static_cast<Index>(seed * 13 % 200);
    const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 50 + seed, 3.0);
    const DimSelection sel =
        test::random_selection(d, 1 + static_cast<Index>(seed % static_cast<std::uint64_t>(d - 1)), seed);
    for (const double ridge : {0.0, 1e-6, 1e-2}) {
      const Compensation<Scalar> mean = fit_compensation(k, sel, PruneCompensation::mean);
      const Compensation<Scalar> reg = fit_compensation(k, sel, PruneCompensation::regression, {ridge});
      ASSERT_TRUE(reg.coefficients.allFinite());
      const RowMatrix<double> rm = compensation_residual(k, sel, mean),
                              rr = compensation_residual(k, sel, reg);
      const Eigen::VectorXd kmax = k.template cast<double>().cwiseAbs().colwise().maxCoeff().transpose();
      for (Index t = 0; t < sel.dropped_count(); ++t) {
        double spread =
            std::fabs(static_cast<double>(reg.offset(t))) + std::fabs(static_cast<double>(mean.offset(t)));
        for (Index a = 0; a < sel.kept_count(); ++a)
          spread += std::fabs(static_cast<double>(reg.coefficients(t, a))) *
                    kmax(sel.kept()[static_cast<std::size_t>(a)]);
        const double slack = std::sqrt(static_cast<double>(n)) * 2.0 * test::eps<Scalar>() * spread;
        EXPECT_LE(rr.col(t).norm(), rm.col(t).norm() + slack)
            << "seed " << seed << ", ridge " << ridge << ", dropped "
            << sel.dropped()[static_cast<std::size_t>(t)];
      }
    }
  }
}

// Keys whose dropped dimensions are an exact affine function of the kept ones
// are predicted to rounding (ridge 0: minimum-norm least squares).
TYPED_TEST(CompensationTest, RegressionRecoversAffineKeys) {
  using Scalar = TypeParam;
  const Index n = 120, na = 4, nb = 3;
  const RowMatrix<double> ka = test::correlated_rows<double>(n, na, 7, 2.0);
  const RowMatrix<double> l = test::random_matrix<double>(nb, na, 8);
  const Eigen::RowVectorXd c = test::random_matrix<double>(1, nb, 9, 5.0);
  RowMatrix<double> kd(n, na + nb);
  kd.leftCols(na) = ka;
  kd.rightCols(nb) = ka * l.transpose();
  kd.rightCols(nb).rowwise() += c;
  const RowMatrix<Scalar> k = kd.cast<Scalar>();
  const DimSelection sel(na + nb, {0, 1, 2, 3});
  const Compensation<Scalar> reg = fit_compensation(k, sel, PruneCompensation::regression, {0.0});
  const RowMatrix<double> r = compensation_residual(k, sel, reg);
  // The least-squares residual is at most that of the true affine map on the
  // rounded keys, whose entries are within u (|k_B| + sum_a |L_ba| |k_a|) <=
  // u scale (u = eps_S / 2, the rounding of the keys to Scalar); the fit is
  // solved in double from the centred scatter (relative error kappa n eps_d,
  // kappa the condition number of S_AA) and rounded to Scalar (u per
  // coefficient and offset): each residual entry moves by (u + kappa n
  // eps_d) scale more. In Frobenius norm over the n nb entries:
  const double scale = kd.cwiseAbs().maxCoeff() * (1.0 + l.cwiseAbs().rowwise().sum().maxCoeff());
  RowMatrix<double> kac = k.template cast<double>().leftCols(na);
  kac.rowwise() -= kac.colwise().mean();
  const Eigen::VectorXd ev =
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(kac.transpose() * kac).eigenvalues();
  const double kappa = ev.maxCoeff() / ev.minCoeff();
  const double u = 0.5 * test::eps<Scalar>();
  EXPECT_LE(r.norm(),
            std::sqrt(static_cast<double>(n * nb)) * (2 * u + kappa * n * test::eps<double>()) * scale);
  const Compensation<Scalar> mean = fit_compensation(k, sel, PruneCompensation::mean);
  EXPECT_GT(compensation_residual(k, sel, mean).cwiseAbs().maxCoeff(),
            1e3 * 64.0 * test::eps<Scalar>() * scale);
}

// Singular regressions: duplicated and constant kept columns, a single key, no
// key, all keys equal. The ridge (or the minimum-norm solution) keeps them finite.
TYPED_TEST(CompensationTest, SingularRegressionIsFinite) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> k = test::correlated_rows<Scalar>(50, 6, 10);
  k.col(1) = k.col(0);              // duplicate kept column
  k.col(2).setConstant(Scalar(3));  // constant kept column
  const DimSelection sel(6, {0, 1, 2});
  const RowMatrix<Scalar> equal = RowMatrix<Scalar>::Constant(20, 6, Scalar(1.5));
  for (const double ridge : {0.0, 1e-6}) {
    const RowMatrix<Scalar>* key_sets[] = {&k, &equal};
    for (const RowMatrix<Scalar>* keys : key_sets) {
      const Compensation<Scalar> reg = fit_compensation(*keys, sel, PruneCompensation::regression, {ridge});
      EXPECT_TRUE(reg.coefficients.allFinite());
      EXPECT_TRUE(reg.offset.allFinite());
      const Compensation<Scalar> mean = fit_compensation(*keys, sel, PruneCompensation::mean);
      const RowMatrix<double> rr = compensation_residual(*keys, sel, reg);
      const RowMatrix<double> rm = compensation_residual(*keys, sel, mean);
      // Least squares is never worse than the mean on the fitted keys, up to
      // the rounding of the fit to Scalar (as in the test above): each
      // residual entry moves by eps_S (|offsets| + sum_a |M_ba| max|k_a|).
      const Eigen::VectorXd kmax = keys->template cast<double>().cwiseAbs().colwise().maxCoeff().transpose();
      double slack = 0;
      for (Index t = 0; t < sel.dropped_count(); ++t) {
        double spread =
            std::fabs(static_cast<double>(reg.offset(t))) + std::fabs(static_cast<double>(mean.offset(t)));
        for (Index a = 0; a < sel.kept_count(); ++a)
          spread += std::fabs(static_cast<double>(reg.coefficients(t, a))) *
                    kmax(sel.kept()[static_cast<std::size_t>(a)]);
        slack += std::pow(2.0 * test::eps<Scalar>() * spread, 2);
      }
      EXPECT_LE(rr.norm(), rm.norm() + std::sqrt(static_cast<double>(keys->rows()) * slack));
    }
    for (const Index rows : {0, 1}) {
      const Compensation<Scalar> reg =
          fit_compensation(k.topRows(rows), sel, PruneCompensation::regression, {ridge});
      EXPECT_TRUE(reg.coefficients.allFinite());
      EXPECT_EQ(reg.coefficients.cwiseAbs().maxCoeff(), Scalar(0));  // nothing varies: M = 0
      EXPECT_TRUE(reg.offset.allFinite());
    }
  }
  // All keys equal: the regression falls back to the mean, exactly.
  const Compensation<Scalar> reg = fit_compensation(equal, sel, PruneCompensation::regression);
  EXPECT_EQ(reg.offset, Vector<Scalar>::Constant(3, Scalar(1.5)));
}

TYPED_TEST(CompensationTest, BadInputThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = RowMatrix<Scalar>::Ones(5, 4);
  const DimSelection sel(5, {0, 1});
  EXPECT_TRUE(throws_invalid_argument([&] { fit_compensation(k, sel, PruneCompensation::mean); },
                                      {"fit_compensation", "(5 x 4)", "D = 5"}));
  const DimSelection sel4(4, {0, 1});
  EXPECT_TRUE(
      throws_invalid_argument([&] { fit_compensation(k, sel4, PruneCompensation::regression, {-1.0}); },
                              {"fit_compensation", "ridge = -1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { fit_compensation(k, sel4, PruneCompensation::regression, {std::nan("")}); }, {"ridge = nan"}));
  const Compensation<Scalar> other = fit_compensation(k, DimSelection(4, {0}), PruneCompensation::mean);
  EXPECT_TRUE(throws_invalid_argument([&] { compensation_residual(k, sel4, other); },
                                      {"compensation_residual", "2 kept and 2 dropped"}));
}

}  // namespace
}  // namespace attnkit
