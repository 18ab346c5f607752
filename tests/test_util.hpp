#pragma once

// Shared helpers for attnkit's tests: seeded random matrices, matrix
// comparisons that print both sides, scalar-type tolerances.

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/random.hpp"

namespace attnkit::test {

using Scalars = ::testing::Types<float, double>;

template <typename Scalar>
constexpr double eps() {
  return static_cast<double>(std::numeric_limits<Scalar>::epsilon());
}

/// An index as a double, for tolerance arithmetic (explicit under -Wconversion).
constexpr double as_double(Index n) {
  return static_cast<double>(n);
}

/// (rows x cols) N(0, stddev^2) matrix from a fixed seed (std::mt19937_64).
template <typename Scalar>
RowMatrix<Scalar> random_matrix(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  detail::Random rng(seed);
  return rng.normal_matrix(rows, cols, stddev).cast<Scalar>();
}

/// Passes when |a_ij - b_ij| <= tol for all entries and NaNs sit in the same
/// places; otherwise prints the worst entry and, for small matrices, both.
template <typename DA, typename DB>
::testing::AssertionResult matrices_near(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b,
                                         double tol) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    return ::testing::AssertionFailure()
           << "shape (" << a.rows() << " x " << a.cols() << ") vs (" << b.rows() << " x " << b.cols() << ")";
  double worst = -1;
  Index wi = 0, wj = 0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(b(i, j));
      if (std::isnan(x) != std::isnan(y))
        return ::testing::AssertionFailure()
               << "NaN mismatch at (" << i << ", " << j << "): " << x << " vs " << y;
      if (std::isnan(x)) continue;
      if (std::isinf(x) || std::isinf(y)) {
        if (x != y)
          return ::testing::AssertionFailure()
                 << "inf mismatch at (" << i << ", " << j << "): " << x << " vs " << y;
        continue;
      }
      const double diff = std::fabs(x - y);
      if (diff > worst) {
        worst = diff;
        wi = i;
        wj = j;
      }
    }
  if (worst <= tol) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(10);
  os << "max |a - b| = " << worst << " > tol " << tol << " at (" << wi << ", " << wj
     << "): " << static_cast<double>(a(wi, wj)) << " vs " << static_cast<double>(b(wi, wj));
  if (a.size() <= 64) os << "\na =\n" << a.template cast<double>() << "\nb =\n" << b.template cast<double>();
  return ::testing::AssertionFailure() << os.str();
}

/// Runs `f` and passes when it throws `Exception` whose message contains
/// every one of `needles`.
template <typename Exception, typename F>
::testing::AssertionResult throws_with_message(F&& f, std::initializer_list<const char*> needles) {
  try {
    f();
  } catch (const Exception& e) {
    const std::string msg = e.what();
    for (const char* n : needles)
      if (msg.find(n) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << n << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

/// Runs `f` and passes when it throws std::invalid_argument whose message
/// contains every one of `needles`.
template <typename F>
::testing::AssertionResult throws_invalid_argument(F&& f, std::initializer_list<const char*> needles) {
  return throws_with_message<std::invalid_argument>(std::forward<F>(f), needles);
}

}  // namespace attnkit::test
