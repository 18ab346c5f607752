#pragma once

// attnkit-eval compare: the rows of its table (and of the JSON and CSV), and
// THE rule for the speedup column's baseline.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace attnkit_eval {

/// One line of the table.
struct CompareRow {
  std::string method;
  std::string params;
  bool exact = false;
  /// "oracle": the reference, computed once, untimed, the errors' baseline;
  /// "ok": timed; "failed": the method threw (or cannot run on these shapes).
  std::string status = "ok";
  /// Why the row failed ("" otherwise).
  std::string message;
  /// Median over the timed runs of one call over all heads (none: oracle, failed).
  std::optional<double> seconds;
  /// Baseline seconds / seconds (see speedup_baseline).
  std::optional<double> speedup;
  std::optional<double> max_abs_error;
  std::optional<double> rel_fro_error;
  /// With --kv-dtype: the errors against the reference on the ROUNDED K and
  /// V (the method's own error; the two above add the rounding of K and V).
  std::optional<double> max_abs_error_rounded;
  std::optional<double> rel_fro_error_rounded;
  /// Heap growth during the untimed run; none when not measured or failed.
  std::optional<std::int64_t> peak_bytes;
  /// What the method stores for K and V over all heads; none when failed.
  std::optional<std::int64_t> cache_bytes;
};

/// The row the speedup column is relative to — THE one place to change it:
/// the fastest timed exact method (smallest seconds among "ok" rows with
/// `exact` set); none if no exact method was timed.
std::optional<std::size_t> speedup_baseline(const std::vector<CompareRow>& rows);

/// "the fastest exact method (flash threads=all)", or "no exact method was
/// timed", for the table and the JSON.
std::string speedup_baseline_description(const std::vector<CompareRow>& rows);

}  // namespace attnkit_eval
