#pragma once

// attnkit-eval: progress lines on stderr for long runs.

#include <chrono>
#include <ostream>
#include <string>

#include "attnkit/core/types.hpp"

namespace attnkit_eval {

/// A progress line on stderr ("attnkit-eval: compare: flash threads=1 run
/// 2/4, 3.1 s") once the work has taken longer than a threshold, then at most
/// once a second (and always for the last step). The threshold is 1 s, or the
/// environment variable ATTNKIT_EVAL_PROGRESS_AFTER (seconds; 0 prints every
/// step, for the tests). `quiet` suppresses every line.
class Progress {
 public:
  Progress(std::ostream& err, bool quiet);

  /// Reports that `done` of `total` steps of `what` are finished.
  void step(const std::string& what, attnkit::Index done, attnkit::Index total);

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream& err_;
  bool quiet_;
  double after_ = 1.0;
  Clock::time_point start_ = Clock::now();
  bool printed_ = false;
  double last_ = 0;
};

}  // namespace attnkit_eval
