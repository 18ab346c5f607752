// Tests of attnkit/prune/selection.hpp: DimSelection, D' = floor((1 - lambda) D)
// and the quadratic objective, against a brute-force long double sum.

#include "attnkit/prune/selection.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/prune/weights.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class SelectionTest : public ::testing::Test {};
TYPED_TEST_SUITE(SelectionTest, test::Scalars);

TEST(KeptDimensionCount, FloorOfOneMinusRatio) {
  EXPECT_EQ(kept_dimension_count(64, 0.5), 32);
  EXPECT_EQ(kept_dimension_count(128, 0.25), 96);
  EXPECT_EQ(kept_dimension_count(128, 0.75), 32);
  EXPECT_EQ(kept_dimension_count(7, 0.5), 3);
  EXPECT_EQ(kept_dimension_count(10, 0.0), 10);
  EXPECT_EQ(kept_dimension_count(100, 0.71), 29);  // (1 - 0.71) * 100 = 28.999999999999996 in binary
  EXPECT_EQ(kept_dimension_count(1, 0.0), 1);
}

TEST(KeptDimensionCount, BadInputThrows) {
  EXPECT_TRUE(
      throws_invalid_argument([] { kept_dimension_count(64, -0.1); }, {"ratio lambda = -0.1", "[0, 1)"}));
  EXPECT_TRUE(throws_invalid_argument([] { kept_dimension_count(64, 1.0); }, {"ratio lambda = 1", "[0, 1)"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] { kept_dimension_count(64, std::numeric_limits<double>::quiet_NaN()); }, {"ratio lambda"}));
  EXPECT_TRUE(throws_invalid_argument([] { kept_dimension_count(4, 0.9); }, {"D' = floor", "= 0"}));
  EXPECT_TRUE(throws_invalid_argument([] { kept_dimension_count(0, 0.5); }, {"d = 0"}));
}

TEST(DimSelectionTest, SortsAndComplements) {
  const DimSelection s(6, {4, 0, 2});
  EXPECT_EQ(s.kept(), (std::vector<Index>{0, 2, 4}));
  EXPECT_EQ(s.dropped(), (std::vector<Index>{1, 3, 5}));
  EXPECT_EQ(s.kept_count(), 3);
  EXPECT_EQ(s.dropped_count(), 3);
  EXPECT_TRUE(s.keeps(2));
  EXPECT_FALSE(s.keeps(3));
  EXPECT_EQ(DimSelection::all(3).kept(), (std::vector<Index>{0, 1, 2}));
  EXPECT_TRUE(DimSelection::all(3).dropped().empty());
  EXPECT_EQ(s, DimSelection(6, {0, 2, 4}));
  EXPECT_NE(s, DimSelection(6, {0, 2, 5}));
}

TEST(DimSelectionTest, BadIndicesThrow) {
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        DimSelection(4, {0, 4});
      },
      {"kept index 4", "out of range [0, 4)"}));
  EXPECT_TRUE(throws_invalid_argument([] { DimSelection(4, {-1}); }, {"kept index -1", "out of range"}));
  EXPECT_TRUE(throws_invalid_argument([] { DimSelection(4, {1, 3, 1}); }, {"kept index 1", "repeated"}));
  EXPECT_TRUE(throws_invalid_argument([] { DimSelection(4, {}); }, {"no dimension kept", "D' = 0"}));
  EXPECT_TRUE(throws_invalid_argument([] { DimSelection(0, {0}); }, {"dim = 0"}));
}

// The note's identity: sum_{i,j in B} W_ij = ||Q K^T - Q S K^T||_F^2 for the Gram weights.
TYPED_TEST(SelectionTest, ObjectiveIsTheFrobeniusLossOfDroppedDimensions) {
  using Scalar = TypeParam;
  for (const Index d : {1, 5, 16}) {
    const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(9, d, 11 + static_cast<std::uint64_t>(d));
    const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(40, d, 12 + static_cast<std::uint64_t>(d));
    const RowMatrix<double> w = gram_weights(q, k);
    const DimSelection s = test::random_selection(d, (d + 1) / 2, 3);
    LD loss = 0, scale = 0;
    for (Index n = 0; n < q.rows(); ++n)
      for (Index m = 0; m < k.rows(); ++m) {
        LD dot = 0, abs_dot = 0;
        for (const Index i : s.dropped()) {
          dot += static_cast<LD>(q(n, i)) * static_cast<LD>(k(m, i));
          abs_dot += std::fabs(static_cast<LD>(q(n, i)) * static_cast<LD>(k(m, i)));
        }
        loss += dot * dot;
        scale += abs_dot * abs_dot;
      }
    // W is formed in double from exact products of Scalar inputs: relative error ~ (n + D) eps_double.
    const double tol =
        4.0 * static_cast<double>(q.rows() + k.rows() + d) * test::eps<double>() * static_cast<double>(scale);
    EXPECT_NEAR(selection_objective(w, s), static_cast<double>(loss), tol) << "d = " << d;
    const LD total = test::objective_of_mask(w, std::vector<bool>(static_cast<std::size_t>(d), true));
    EXPECT_NEAR(total_objective(w), static_cast<double>(total),
                4.0 * static_cast<double>(d * d) * test::eps<double>() * w.cwiseAbs().sum());
  }
}

TYPED_TEST(SelectionTest, ObjectiveOfAMismatchedSelectionThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> ok = RowMatrix<Scalar>::Identity(3, 3);
  EXPECT_TRUE(throws_invalid_argument([&] { selection_objective(ok, DimSelection(4, {0})); },
                                      {"selection_objective", "D = 4"}));
}

}  // namespace
}  // namespace attnkit
