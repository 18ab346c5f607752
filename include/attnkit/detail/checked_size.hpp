#pragma once

/// \file attnkit/detail/checked_size.hpp
/// Products of sizes that come from user input, checked against Index
/// overflow before anything is allocated.

#include <limits>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit::detail {

/// a * b for non-negative a, b, or std::invalid_argument naming `what` (e.g.
/// "n_k x m") and both factors when the product does not fit in Index.
inline Index checked_product(const char* where, const char* what, Index a, Index b) {
  if (a < 0 || b < 0) fail(where, ": ", what, " = ", a, " x ", b, " has a negative factor");
  if (a != 0 && b > std::numeric_limits<Index>::max() / a)
    fail(where, ": ", what, " = ", a, " x ", b, " overflows the index type");
  return a * b;
}

}  // namespace attnkit::detail
