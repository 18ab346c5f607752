#pragma once

/// \file attnkit/detail/check.hpp
/// Always-on argument checks: build a message naming the argument and the
/// shapes, throw std::invalid_argument. Internal invariants use assert().

#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <Eigen/Core>

namespace attnkit::detail {

/// "(rows x cols)" for any Eigen expression.
template <typename Derived>
std::string shape(const Eigen::EigenBase<Derived>& m) {
  std::ostringstream os;
  os << '(' << m.rows() << " x " << m.cols() << ')';
  return os.str();
}

template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Throws std::invalid_argument with the concatenated message.
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw std::invalid_argument(concat(std::forward<Parts>(parts)...));
}

/// Throws unless `m` has at least one row and one column.
template <typename Derived>
void require_non_empty(const char* where, const char* name, const Eigen::EigenBase<Derived>& m) {
  if (m.rows() == 0 || m.cols() == 0) fail(where, ": ", name, " is empty ", shape(m));
}

/// Throws unless `a` and `b` have the same shape.
template <typename DA, typename DB>
void require_same_shape(const char* where, const char* name_a, const Eigen::EigenBase<DA>& a,
                        const char* name_b, const Eigen::EigenBase<DB>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    fail(where, ": ", name_a, ' ', shape(a), " and ", name_b, ' ', shape(b), " must have the same shape");
}

/// a * b for non-negative a, b, or std::invalid_argument naming `where`, `what`
/// (e.g. "n_k x m") and both factors when the product does not fit in an index.
inline Eigen::Index checked_product(const char* where, const char* what, Eigen::Index a, Eigen::Index b) {
  if (a < 0 || b < 0) fail(where, ": ", what, " = ", a, " x ", b, " has a negative factor");
  if (a != 0 && b > std::numeric_limits<Eigen::Index>::max() / a)
    fail(where, ": ", what, " = ", a, " x ", b, " overflows a 64-bit index");
  return a * b;
}

}  // namespace attnkit::detail
