#pragma once

// attnkit-eval: the error that means "bad arguments or bad input": reported
// as one line naming the flag or file, exit code 2, nothing written.

#include <stdexcept>

namespace attnkit_eval {

/// Bad arguments or bad input (exit code 2). The message names the flag or
/// file and the value as typed.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace attnkit_eval
