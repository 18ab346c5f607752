#pragma once

/// \file attnkit/io/npy.hpp
/// Reading and writing NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0):
/// float32 and float64, little and big endian, C and Fortran order, 1- to 3-D.
/// This is how tensors dumped from PyTorch with `numpy.save` reach attnkit.
/// The format, the header parser and its checks are in
/// attnkit/io/npy_header.hpp (included here): every array is read only after
/// its header and its data size have been validated there.
///
/// Arrays come back as `NpyArray<Scalar>`: the shape and the elements in C
/// order, converted to Scalar (a float64 file read as float is rounded once
/// to nearest; read it as double to keep every bit). Writing produces exactly
/// the bytes `numpy.save` produces for the same array (version 1.0, native
/// little-endian `descr`, C order, 64-byte aligned header) unless
/// NpyWriteOptions asks for another version, byte order or Fortran order.
///
/// Complexity: O(size) time; reading holds the raw file data and the decoded
/// array at once (Fortran order is decoded straight into C order, no third
/// copy). Writing also writes std::int64_t arrays ('<i8', e.g. index lists);
/// the reader reads float32 and float64 only. Thread safety: pure functions;
/// concurrent calls on distinct files are safe.
///
/// \code
///   auto q = attnkit::read_npy<float>("q.npy");         // shape {8, 4096, 128}
///   attnkit::write_npy("out.npy", q);                     // same bytes as numpy.save
///   attnkit::RowMatrix<double> m = ...;
///   attnkit::write_npy("m.npy", m);                       // 2-D (rows, cols), float64
/// \endcode

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/io/npy_header.hpp"

namespace attnkit {

/// A 1- to 3-D array with its elements in C order (last index fastest): a
/// (heads, n, d) array is heads row-major (n x d) matrices one after another.
template <typename Scalar>
struct NpyArray {
  std::vector<Index> shape;
  std::vector<Scalar> data;

  /// Number of elements (the product of the shape).
  Index size() const {
    Index n = 1;
    for (const Index s : shape)
      n *= s;
    return n;
  }
};

/// How write_npy lays out a file. The defaults give numpy.save's bytes.
struct NpyWriteOptions {
  /// 1, 2 or 3 for format 1.0, 2.0 or 3.0; 0 picks 1.0 (every 1- to 3-D
  /// header fits in it).
  int version = 0;
  NpyByteOrder byte_order = NpyByteOrder::little;
  bool fortran_order = false;
};

namespace detail {

/// Decodes raw file data (file order, file byte order) into C-order Scalars.
template <typename Scalar>
void npy_decode(const unsigned char* raw, const NpyHeader& h, Scalar* out) {
  const std::size_t item = npy_item_size(h.dtype);
  const bool swap = (h.byte_order == NpyByteOrder::little) != host_is_little_endian();
  const auto element = [&](std::size_t e) -> Scalar {
    unsigned char b[8];
    std::memcpy(b, raw + e * item, item);
    if (swap) std::reverse(b, b + item);
    if (h.dtype == NpyDtype::float32) {
      float f;
      std::memcpy(&f, b, 4);
      return static_cast<Scalar>(f);
    }
    double x;
    std::memcpy(&x, b, 8);
    return static_cast<Scalar>(x);
  };
  const std::size_t n = static_cast<std::size_t>(h.size());
  if (!h.fortran_order || h.shape.size() == 1) {
    for (std::size_t e = 0; e < n; ++e)
      out[e] = element(e);
    return;
  }
  // Fortran order: the first index varies fastest in the file.
  const std::size_t a = static_cast<std::size_t>(h.shape[0]), b = static_cast<std::size_t>(h.shape[1]);
  const std::size_t c = h.shape.size() == 3 ? static_cast<std::size_t>(h.shape[2]) : 1;
  std::size_t e = 0;
  for (std::size_t k = 0; k < c; ++k)
    for (std::size_t j = 0; j < b; ++j)
      for (std::size_t i = 0; i < a; ++i)
        out[(i * b + j) * c + k] = element(e++);
}

}  // namespace detail

/// Parses a whole .npy file held in memory.
/// \returns the array in C order, converted to Scalar.
/// \throws std::invalid_argument naming `name` for a malformed header or a data
///         size other than exactly what the shape promises.
template <typename Scalar>
NpyArray<Scalar> parse_npy(const void* bytes, std::size_t size, const std::string& name) {
  npy_dtype_of<Scalar>();
  const NpyHeader h = parse_npy_header(bytes, size, name);
  detail::npy_check_data_size(h, size - h.data_offset, name);
  NpyArray<Scalar> a{h.shape, std::vector<Scalar>(static_cast<std::size_t>(h.size()))};
  detail::npy_decode(static_cast<const unsigned char*>(bytes) + h.data_offset, h, a.data.data());
  return a;
}

/// Reads the .npy file at `path`.
/// \returns the array in C order, converted to Scalar.
/// \throws std::invalid_argument naming the file when it cannot be opened or
///         read, is not a regular file (a FIFO, directory, device or socket:
///         refused without blocking, before anything is read), or is
///         malformed, truncated, oversized or unsupported.
template <typename Scalar>
NpyArray<Scalar> read_npy(const std::string& path) {
  npy_dtype_of<Scalar>();
  detail::NpyInputFile in(path);
  const NpyHeader h = detail::npy_read_header(in, path);
  std::vector<unsigned char> raw(h.data_bytes());
  in.read_at(h.data_offset, raw.data(), raw.size(), "the data");
  NpyArray<Scalar> a{h.shape, std::vector<Scalar>(static_cast<std::size_t>(h.size()))};
  detail::npy_decode(raw.data(), h, a.data.data());
  return a;
}

namespace detail {

/// Every check write_npy makes before it writes a byte: 1 to 3 dimensions,
/// each in [0, npy_max_dimension]; a byte count count * item that fits in
/// Index, computed without overflow (the reader's own limits, so that what is
/// written can be read back); `count` equal to the shape's element count; a
/// valid version.
inline void npy_check_write(const std::vector<Index>& shape, std::size_t count, std::size_t item,
                            const NpyWriteOptions& options, const std::string& name) {
  if (shape.empty() || shape.size() > 3)
    npy_fail(name, "cannot write a ", shape.size(), "-D array (attnkit writes 1- to 3-D)");
  for (const Index s : shape) {
    if (s < 0) npy_fail(name, "cannot write shape ", npy_shape_string(shape), ": negative dimension");
    if (s > npy_max_dimension)
      npy_fail(name, "cannot write shape ", npy_shape_string(shape), ": dimension ", s, " exceeds ",
               npy_max_dimension, " (2^53, the reader's limit)");
  }
  const std::size_t expected = npy_checked_bytes(shape, item, name) / item;
  if (expected != count)
    npy_fail(name, "shape ", npy_shape_string(shape), " has ", expected, " elements, got ", count);
  if (options.version < 0 || options.version > 3)
    npy_fail(name, "format version ", options.version, " is not 1, 2 or 3");
}

}  // namespace detail

/// Writes a 1- to 3-D array of Scalar (float32, float64, or int64 for index
/// arrays) given its shape and its elements in C order.
/// \param name used in error messages.
/// \throws std::invalid_argument, before anything is written, when the shape
///         has not 1 to 3 dimensions, a dimension is negative or above 2^53,
///         the byte count of the shape does not fit in Index (checked without
///         overflow), the element count differs from the shape's, or an option
///         is invalid; and when the stream fails.
template <typename Scalar>
void write_npy(std::ostream& out, const std::vector<Index>& shape, const Scalar* data, std::size_t count,
               const NpyWriteOptions& options = {}, const std::string& name = "<stream>") {
  detail::npy_check_write(shape, count, sizeof(Scalar), options, name);
  const int version = options.version == 0 ? 1 : options.version;

  const bool big = options.byte_order == NpyByteOrder::big;
  std::string dict = std::string("{'descr': '") + (big ? '>' : '<') + detail::npy_type_code<Scalar>() +
                     "', 'fortran_order': " + (options.fortran_order ? "True" : "False") +
                     ", 'shape': " + npy_shape_string(shape) + ", }";
  const std::size_t prefix = version == 1 ? 10 : 12;
  // Pad with spaces and end with '\n' so the data starts on a 64-byte boundary.
  const std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string head = "\x93NUMPY";
  head += static_cast<char>(version);
  head += '\0';
  const std::size_t len = dict.size();
  for (std::size_t i = 0; i < prefix - 8; ++i)
    head += static_cast<char>((len >> (8 * i)) & 0xff);
  head += dict;
  out.write(head.data(), static_cast<std::streamsize>(head.size()));

  // Elements in file order, in chunks.
  const std::size_t item = sizeof(Scalar);
  const bool swap = big == detail::host_is_little_endian();
  const std::size_t a = static_cast<std::size_t>(shape[0]);
  const std::size_t b = shape.size() > 1 ? static_cast<std::size_t>(shape[1]) : 1;
  const std::size_t c = shape.size() > 2 ? static_cast<std::size_t>(shape[2]) : 1;
  std::vector<char> buffer;
  buffer.reserve(std::min<std::size_t>(count, 1 << 16) * item);
  const auto put = [&](const Scalar& x) {
    char bytes[sizeof(Scalar)];
    std::memcpy(bytes, &x, item);
    if (swap) std::reverse(bytes, bytes + item);
    buffer.insert(buffer.end(), bytes, bytes + item);
    if (buffer.size() >= (1u << 16) * item) {
      out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      buffer.clear();
    }
  };
  if (!options.fortran_order || shape.size() == 1) {
    for (std::size_t e = 0; e < count; ++e)
      put(data[e]);
  } else {
    for (std::size_t k = 0; k < c; ++k)
      for (std::size_t j = 0; j < b; ++j)
        for (std::size_t i = 0; i < a; ++i)
          put(data[(i * b + j) * c + k]);
  }
  out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
  if (!out) detail::npy_fail(name, "write failed");
}

/// Writes `array` to the file at `path` (created or truncated).
/// \throws std::invalid_argument naming the file when it cannot be written or
///         the array is not a valid 1- to 3-D array (see the stream overload);
///         an invalid array is refused before the file is opened, so an
///         existing file is left as it was.
template <typename Scalar>
void write_npy(const std::string& path, const NpyArray<Scalar>& array, const NpyWriteOptions& options = {}) {
  detail::npy_check_write(array.shape, array.data.size(), sizeof(Scalar), options, path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) detail::npy_fail(path, "cannot open for writing: ", std::strerror(errno));
  write_npy(out, array.shape, array.data.data(), array.data.size(), options, path);
  out.close();
  if (!out) detail::npy_fail(path, "write failed: ", std::strerror(errno));
}

/// Writes a matrix as a 2-D (rows, cols) array of its Scalar type.
template <typename Derived>
void write_npy(const std::string& path, const Eigen::MatrixBase<Derived>& m,
               const NpyWriteOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  const RowMatrix<Scalar> rows = m;  // C order
  NpyArray<Scalar> a{{m.rows(), m.cols()}, std::vector<Scalar>(rows.data(), rows.data() + rows.size())};
  write_npy(path, a, options);
}

}  // namespace attnkit
