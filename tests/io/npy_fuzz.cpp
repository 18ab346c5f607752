// libFuzzer target for the .npy reader (attnkit/io/npy.hpp). Built with clang
// (-fsanitize=fuzzer,address,undefined) by tests/io/fuzz/CMakeLists.txt and
// run for a bounded time by ctest (test npy.fuzz).
//
// Every input must either be refused with std::invalid_argument or parse into
// an array that survives a write/read round trip bit for bit; anything else (a
// crash, an out-of-bounds read, another exception, a mismatch) is a finding.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#include "attnkit/io/npy.hpp"

namespace {

template <typename Scalar>
void round_trip(const std::uint8_t* data, std::size_t size, const attnkit::NpyHeader& h) {
  const attnkit::NpyArray<Scalar> a = attnkit::parse_npy<Scalar>(data, size, "fuzz");
  if (a.shape != h.shape || a.data.size() != static_cast<std::size_t>(h.size())) std::abort();
  std::ostringstream os;
  attnkit::write_npy(os, a.shape, a.data.data(), a.data.size(),
                     {h.major_version, h.byte_order, h.fortran_order});
  const std::string bytes = os.str();
  const attnkit::NpyArray<Scalar> b = attnkit::parse_npy<Scalar>(bytes.data(), bytes.size(), "rewritten");
  if (b.shape != a.shape) std::abort();
  if (!a.data.empty() && std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(Scalar)) != 0)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  attnkit::NpyHeader h;
  try {
    h = attnkit::parse_npy_header(data, size, "fuzz");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  try {
    if (h.dtype == attnkit::NpyDtype::float32)
      round_trip<float>(data, size, h);
    else
      round_trip<double>(data, size, h);
    // Reading at the other precision must not fail differently.
    if (h.dtype == attnkit::NpyDtype::float32)
      attnkit::parse_npy<double>(data, size, "fuzz");
    else
      attnkit::parse_npy<float>(data, size, "fuzz");
  } catch (const std::invalid_argument&) {
    // A valid header with a wrong data size: refused, as it must be.
  }
  return 0;
}
