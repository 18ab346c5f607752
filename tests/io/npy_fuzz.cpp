// libFuzzer target for the .npy reader (attnkit/io/npy_header.hpp and
// attnkit/io/npy.hpp). Built with clang (-fsanitize=fuzzer,address,undefined)
// by tests/io/fuzz/CMakeLists.txt and run for a bounded time by ctest (test
// npy.fuzz).
//
// Every input must either be refused with std::invalid_argument or parse into
// an array that survives a write/read round trip bit for bit; anything else (a
// crash, an out-of-bounds read, another exception, a mismatch) is a finding.
// Each input is also written to a scratch file and read back through the file
// reader (read_npy_header, read_npy), which must agree with the in-memory
// parser: the same header, the same bits, or a refusal of the same input.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include "attnkit/io/npy.hpp"

namespace {

/// A scratch file private to this process, removed at exit.
class ScratchFile {
 public:
  ScratchFile() {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir && *dir ? dir : "/tmp") + "/attnkit_npy_fuzz_" +
            std::to_string(static_cast<long>(::getpid())) + ".npy";
  }
  ~ScratchFile() { std::remove(path_.c_str()); }
  const std::string& write(const std::uint8_t* data, std::size_t size) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) std::abort();  // the harness itself failed
    return path_;
  }

 private:
  std::string path_;
};

bool same_header(const attnkit::NpyHeader& a, const attnkit::NpyHeader& b) {
  return a.major_version == b.major_version && a.minor_version == b.minor_version && a.dtype == b.dtype &&
         a.byte_order == b.byte_order && a.fortran_order == b.fortran_order && a.shape == b.shape &&
         a.data_offset == b.data_offset;
}

template <typename Scalar>
bool same_array(const attnkit::NpyArray<Scalar>& a, const attnkit::NpyArray<Scalar>& b) {
  return a.shape == b.shape && a.data.size() == b.data.size() &&
         (a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(Scalar)) == 0);
}

/// f() or std::nullopt when it throws std::invalid_argument (any other
/// exception escapes: a finding).
template <typename F>
auto refused_or(F f) -> std::optional<decltype(f())> {
  try {
    return f();
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

template <typename Scalar>
void round_trip(const std::uint8_t* data, std::size_t size, const attnkit::NpyHeader& h) {
  const attnkit::NpyArray<Scalar> a = attnkit::parse_npy<Scalar>(data, size, "fuzz");
  if (a.shape != h.shape || a.data.size() != static_cast<std::size_t>(h.size())) std::abort();
  std::ostringstream os;
  attnkit::write_npy(os, a.shape, a.data.data(), a.data.size(),
                     {h.major_version, h.byte_order, h.fortran_order});
  const std::string bytes = os.str();
  const attnkit::NpyArray<Scalar> b = attnkit::parse_npy<Scalar>(bytes.data(), bytes.size(), "rewritten");
  if (!same_array(a, b)) std::abort();
}

/// A float16 file read as float (exact) and written back as float16 gives the
/// same bits: rounding an exact half is the identity, NaN payloads included.
void widen_and_round_back(const std::uint8_t* data, std::size_t size, const attnkit::NpyHeader& h) {
  const attnkit::NpyArray<Eigen::half> halves = attnkit::parse_npy<Eigen::half>(data, size, "fuzz");
  const attnkit::NpyArray<float> wide = attnkit::parse_npy<float>(data, size, "fuzz");
  attnkit::NpyWriteOptions options{h.major_version, h.byte_order, h.fortran_order};
  options.dtype = attnkit::NpyDtype::float16;
  std::ostringstream os;
  attnkit::write_npy(os, wide.shape, wide.data.data(), wide.data.size(), options);
  const std::string bytes = os.str();
  if (!same_array(halves, attnkit::parse_npy<Eigen::half>(bytes.data(), bytes.size(), "narrowed")))
    std::abort();
}

/// The file reader agrees with the in-memory parser on the same bytes.
template <typename Scalar>
void file_agrees(const std::uint8_t* data, std::size_t size, const std::string& path) {
  const auto mem = refused_or([&] { return attnkit::parse_npy<Scalar>(data, size, "fuzz"); });
  const auto file = refused_or([&] { return attnkit::read_npy<Scalar>(path); });
  if (mem.has_value() != file.has_value()) std::abort();
  if (mem && !same_array(*mem, *file)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ScratchFile scratch;
  const std::string& path = scratch.write(data, size);

  // The header: from memory and from the file, the same answer. The file
  // reader also checks the data size against the file size, so it accepts
  // exactly the headers whose data size matches.
  const auto mem_header = refused_or([&] { return attnkit::parse_npy_header(data, size, "fuzz"); });
  const auto file_header = refused_or([&] { return attnkit::read_npy_header(path); });
  const bool sized = mem_header && size - mem_header->data_offset == mem_header->data_bytes();
  if (file_header.has_value() != sized) std::abort();
  if (file_header && !same_header(*mem_header, *file_header)) std::abort();
  file_agrees<Eigen::half>(data, size, path);
  file_agrees<float>(data, size, path);
  file_agrees<double>(data, size, path);
  if (!mem_header) return 0;

  const attnkit::NpyHeader& h = *mem_header;
  try {
    if (h.dtype == attnkit::NpyDtype::float16) {
      round_trip<Eigen::half>(data, size, h);
      widen_and_round_back(data, size, h);
    } else if (h.dtype == attnkit::NpyDtype::float32) {
      round_trip<float>(data, size, h);
    } else {
      round_trip<double>(data, size, h);
    }
  } catch (const std::invalid_argument&) {
    // A valid header with a wrong data size: refused, as it must be.
  }
  return 0;
}
