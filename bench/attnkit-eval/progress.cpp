// attnkit-eval's progress lines (declared in progress.hpp).

#include "attnkit-eval/progress.hpp"

#include <cmath>
#include <cstdlib>
#include <ios>

namespace attnkit_eval {

Progress::Progress(std::ostream& err, bool quiet) : err_(err), quiet_(quiet) {
  if (const char* env = std::getenv("ATTNKIT_EVAL_PROGRESS_AFTER")) {
    char* end = nullptr;
    const double x = std::strtod(env, &end);
    if (end != env && std::isfinite(x) && x >= 0) after_ = x;
  }
}

void Progress::step(const std::string& what, attnkit::Index done, attnkit::Index total) {
  if (quiet_) return;
  const double now = std::chrono::duration<double>(Clock::now() - start_).count();
  if (now < after_) return;
  if (printed_ && after_ > 0 && now - last_ < 1.0 && done != total) return;
  const std::ios::fmtflags flags = err_.flags();
  const std::streamsize precision = err_.precision();
  err_ << "attnkit-eval: " << what << ' ' << done << '/' << total << ", " << std::fixed;
  err_.precision(1);
  err_ << now << " s\n";
  err_.flags(flags);
  err_.precision(precision);
  err_.flush();
  printed_ = true;
  last_ = now;
}

}  // namespace attnkit_eval
