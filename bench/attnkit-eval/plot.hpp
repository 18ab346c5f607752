#pragma once

// attnkit-eval: `compare --plot`, drawn by attnkit_eval_plot.py (matplotlib)
// from the JSON results. Everything that can be checked is checked before any
// work; the script's failure is reported in one line, and success only once
// a PNG exists.

#include <string>

namespace attnkit_eval {

/// The Python interpreter and the plot script `--plot` runs.
struct PlotTools {
  std::string python;
  std::string script;
};

/// Python: $ATTNKIT_PYTHON, else the interpreter found when attnkit was
/// configured, else python3 on PATH. Script: $ATTNKIT_EVAL_PLOT_SCRIPT, else
/// the installed copy next to the executable
/// (<bindir>/../share/attnkit/attnkit_eval_plot.py), else the source tree's
/// bench/attnkit-eval/attnkit_eval_plot.py ("" if none exists).
PlotTools find_plot_tools();

/// Before any work: the script is a readable regular file, Python runs and
/// imports matplotlib. \throws UsageError with the fix.
void check_plot_tools(const PlotTools& tools);

/// Runs the script on the JSON at `json_path`, writing `png_path`; `shown` is
/// the --plot value for messages.
/// \throws UsageError in one line: the script's exit status and its last
///         stderr line, or that it wrote no PNG.
void draw_plot(const PlotTools& tools, const std::string& json_path, const std::string& png_path,
               const std::string& shown);

}  // namespace attnkit_eval
