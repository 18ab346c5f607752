// attnkit-eval's number parser (declared in numbers.hpp).

#include "attnkit-eval/numbers.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <system_error>

#include "attnkit-eval/errors.hpp"

namespace attnkit_eval {

namespace {

/// The whole of `text` parsed by from_chars into `value`: false for
/// anything else (empty, trailing characters, out of range).
/// How from_chars read the whole of `text` into `value`.
enum class Parsed { ok, not_a_number, out_of_range };

template <typename T>
Parsed parse_whole(const std::string& text, T& value) {
  if (text.empty()) return Parsed::not_a_number;
  const char* first = text.data();
  const char* last = first + text.size();
  const auto [end, ec] = std::from_chars(first, last, value);
  if (end != last || ec == std::errc::invalid_argument) return Parsed::not_a_number;
  return ec == std::errc() ? Parsed::ok : Parsed::out_of_range;
}

/// "an integer >= 1", or with both ends "an integer in [1, 4096]" (always
/// both ends for a value beyond the type, so the message does not read as if
/// it were too small).
std::string integer_range(std::int64_t min, std::int64_t max, bool both_ends) {
  if (!both_ends && max == std::numeric_limits<std::int64_t>::max() &&
      min != std::numeric_limits<std::int64_t>::min())
    return "an integer >= " + std::to_string(min);
  return "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
}

}  // namespace

double parse_real(const std::string& flag, const std::string& text) {
  // strtod, not from_chars: it also reads "+1.5" and hexadecimal floats;
  // leading white space (which strtod skips) is refused.
  char* end = nullptr;
  const double x = text.empty() || std::isspace(static_cast<unsigned char>(text[0]))
                       ? std::nan("")
                       : std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(x))
    throw UsageError(flag + " " + text + ": not a finite number");
  return x;
}

std::int64_t parse_integer(const std::string& flag, const std::string& text, std::int64_t min,
                           std::int64_t max) {
  std::int64_t x = 0;
  const Parsed p = parse_whole(text, x);
  if (p != Parsed::ok || x < min || x > max)
    throw UsageError(flag + " " + text + ": must be " +
                     integer_range(min, max, p == Parsed::out_of_range || (p == Parsed::ok && x > max)));
  return x;
}

std::uint64_t parse_unsigned(const std::string& flag, const std::string& text) {
  std::uint64_t x = 0;
  if (parse_whole(text, x) != Parsed::ok)
    throw UsageError(flag + " " + text + ": must be an integer in [0, " +
                     std::to_string(std::numeric_limits<std::uint64_t>::max()) + "]");
  return x;
}

}  // namespace attnkit_eval
