#pragma once

// Builders of hand-made .npy files for the tests of attnkit/io/npy_header.hpp
// and attnkit/io/npy.hpp: the bytes are assembled here, independently of the
// writer under test.

#include <sys/wait.h>

#include <cstddef>
#include <cstdlib>
#include <string>

namespace attnkit::test {

/// A file of the given format version with the given dict text (padded with
/// spaces and ended by '\n' so the data starts on a 64-byte boundary, as
/// numpy pads) followed by `data`.
inline std::string npy_file(const std::string& dict, const std::string& data, int version = 1) {
  std::string header = dict;
  const std::size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0)
    header += ' ';
  header += '\n';
  std::string f = "\x93NUMPY";
  f += static_cast<char>(version);
  f += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i)
    f += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return f + header + data;
}

/// The dict text numpy writes, with the three values given as Python source.
inline std::string npy_dict(const std::string& descr, const std::string& fortran, const std::string& shape) {
  return "{'descr': " + descr + ", 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}

#if defined(ATTNKIT_TEST_PYTHON) && defined(ATTNKIT_NPY_NUMPY_SCRIPT)
/// Runs tests/io/npy_numpy_check.py with the given arguments under the
/// Python that has numpy; its exit status (-1 when it could not start).
inline int run_python(const std::string& args) {
  const std::string cmd =
      std::string("'") + ATTNKIT_TEST_PYTHON + "' '" + ATTNKIT_NPY_NUMPY_SCRIPT + "' " + args;
  const int status = std::system(cmd.c_str());
  return status == -1 ? -1 : WEXITSTATUS(status);
}
#endif

}  // namespace attnkit::test
