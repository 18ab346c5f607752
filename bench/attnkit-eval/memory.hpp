#pragma once

// attnkit-eval: the peak-memory probe interface. The executable supplies the
// implementation (malloc_probe.cpp, linked into the binary only: it defines
// malloc & co.); without one, peak bytes are reported as n/a.

#include <cstdint>

namespace attnkit_eval {

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

/// The binary's probe (malloc_probe.cpp), or nullptr where the platform has
/// none. Defined only in the attnkit-eval executable.
PeakMemoryProbe* malloc_probe();

}  // namespace attnkit_eval
