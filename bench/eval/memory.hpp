#pragma once

// attnkit-eval: the peak-memory probe interface. The executable supplies the
// implementation (bench/eval/malloc_probe.hpp, included by exactly one
// translation unit); without one, peak bytes are reported as n/a.

#include <cstdint>

namespace attnkit::eval {

/// Measures how far the live heap grows during an interval.
class PeakMemoryProbe {
 public:
  virtual ~PeakMemoryProbe() = default;
  /// Begins an interval: the current live heap bytes become the baseline.
  virtual void start() = 0;
  /// Largest (live heap bytes - baseline) seen since start(), >= 0.
  virtual std::int64_t peak_extra_bytes() const = 0;
  /// How the bytes are counted, one line (shown in the JSON workload block).
  virtual const char* method() const = 0;
};

}  // namespace attnkit::eval
