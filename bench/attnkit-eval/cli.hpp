#pragma once

// attnkit-eval's command line: subcommands attention, prune, compare; exit
// codes 0 (success), 2 (bad arguments or input: one line naming the flag or
// file, nothing written), 1 (internal error). docs/eval.md documents every flag.

#include <ostream>

namespace attnkit_eval {

class Registry;
class PeakMemoryProbe;

/// attnkit-eval's main: parses argv, runs the subcommand with `registry`'s
/// methods, writes the table or messages to `out` and `err`, and returns the
/// exit code. `probe` may be null (peak bytes n/a).
int run_cli(int argc, const char* const* argv, const Registry& registry, PeakMemoryProbe* probe,
            std::ostream& out, std::ostream& err);

}  // namespace attnkit_eval
