#pragma once

// The median the benchmarks and attnkit-eval report (times over repeated
// runs, errors over heads).

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace attnkit::bench {

/// The median of `values`: the middle one, or the mean of the two middle ones
/// for an even count. O(n log n).
/// \throws std::invalid_argument for an empty list.
inline double median(std::vector<double> values) {
  if (values.empty()) throw std::invalid_argument("median: no values");
  std::sort(values.begin(), values.end());
  const std::size_t m = values.size() / 2;
  return values.size() % 2 ? values[m] : 0.5 * (values[m - 1] + values[m]);
}

}  // namespace attnkit::bench
