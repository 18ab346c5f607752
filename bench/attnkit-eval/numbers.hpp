#pragma once

// attnkit-eval: THE number parser. Every number the tool reads (command-line
// flags and method options) arrives as text and is parsed here, so a bad
// value is refused as typed, naming its flag, never clamped or wrapped.

#include <cstdint>
#include <limits>
#include <string>

namespace attnkit_eval {

/// `text` as a finite real number; the whole text must be the number.
/// \throws UsageError "FLAG TEXT: not a finite number".
double parse_real(const std::string& flag, const std::string& text);

/// `text` as an integer in [min, max]: decimal digits with an optional
/// leading '-', the whole text.
/// \throws UsageError "FLAG TEXT: must be an integer >= MIN" (or "in [MIN, MAX]").
std::int64_t parse_integer(const std::string& flag, const std::string& text,
                           std::int64_t min = std::numeric_limits<std::int64_t>::min(),
                           std::int64_t max = std::numeric_limits<std::int64_t>::max());

/// `text` as an unsigned 64-bit integer: decimal digits only.
/// \throws UsageError "FLAG TEXT: must be an integer in [0, 2^64 - 1]".
std::uint64_t parse_unsigned(const std::string& flag, const std::string& text);

}  // namespace attnkit_eval
