#pragma once

/// \file attnkit/io/npy.hpp
/// Reading and writing NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0):
/// float16, float32 and float64, little and big endian, C and Fortran order,
/// 1- to 3-D. This is how tensors dumped from PyTorch with `numpy.save` reach
/// attnkit. The format, the header parser and its checks are in
/// attnkit/io/npy_header.hpp (included here): every array is read only after
/// its header and its data size have been validated there.
///
/// Arrays come back as `NpyArray<Scalar>` with Scalar = float, double or
/// Eigen::half: the shape and the elements in C order, converted to Scalar.
/// Conversions (the same in both directions, reading and writing):
///  - to a wider type, exact: every float16 is a float (subnormals included),
///    every float a double; NaN keeps its sign and its payload, shifted to
///    the top of the wider mantissa (as numpy's astype does);
///  - to a narrower type, rounded ONCE to nearest, ties to even (never through
///    an intermediate type): a float64 file read as float, or a float32 or
///    float64 file read as Eigen::half. To float16: magnitudes from 65520
///    (65504, the largest half, plus half its ulp: a tie, rounded to the even
///    side 2^16) up overflow to +-inf; magnitudes up to 2^-25 (half the
///    smallest subnormal 2^-24; 2^-25 itself ties to the even 0) underflow to
///    +-0; the subnormals in between are rounded like any other value; NaN
///    stays NaN with its sign and the top 10 payload bits (numpy's rule: a
///    payload that would vanish becomes 1). The float16 rounding is
///    computed exactly (floor, power-of-two scaling), so it does not depend
///    on the floating-point rounding mode; float64 to float is the C++ conversion (nearest even in the
///    default mode).
/// Read a file as its own dtype to keep every bit.
///
/// Writing produces exactly the bytes `numpy.save` produces for the same
/// array (version 1.0, native little-endian `descr`, C order, 64-byte aligned
/// header) unless NpyWriteOptions asks for another version, byte order,
/// Fortran order or element type (`NpyWriteOptions::dtype`: float or double
/// data written as float16 is rounded as above). Writing also writes
/// std::int64_t arrays ('<i8', e.g. index lists), which the reader does not
/// read.
///
/// Complexity: O(size) time; reading holds the raw file data and the decoded
/// array at once (Fortran order is decoded straight into C order, no third
/// copy). Thread safety: pure functions; concurrent calls on distinct files
/// are safe.
///
/// \code
///   auto q = attnkit::read_npy<float>("q.npy");         // shape {8, 4096, 128}
///   attnkit::write_npy("out.npy", q);                     // same bytes as numpy.save
///   attnkit::RowMatrix<double> m = ...;
///   attnkit::write_npy("m.npy", m);                       // 2-D (rows, cols), float64
///   attnkit::NpyWriteOptions f2;
///   f2.dtype = attnkit::NpyDtype::float16;
///   attnkit::write_npy("q16.npy", q, f2);                 // '<f2', rounded to nearest even
///   auto h = attnkit::read_npy<Eigen::half>("q16.npy");   // the same halves, bit for bit
/// \endcode

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
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
  /// Element type of the file; std::nullopt = the data's own (npy_dtype_of).
  /// Another float type converts every element as the file comment says
  /// (widening exact, narrowing rounded once to nearest even). Only for
  /// floating-point data: std::int64_t arrays are always written as '<i8'.
  std::optional<NpyDtype> dtype{};
};

namespace detail {

/// Same-size bit copy (std::bit_cast before C++20).
template <typename To, typename From>
To npy_bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "npy_bit_cast needs types of the same size");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

/// Unsigned integer with the bits of Real (float or double).
template <typename Real>
using NpyBitsOf = std::conditional_t<std::is_same_v<Real, float>, std::uint32_t, std::uint64_t>;

/// The IEEE binary16 number with bits `h`, exactly, as a float or a double
/// (both hold every half). Inf stays inf; NaN keeps its sign and its payload,
/// moved to the top of Real's mantissa (quiet stays quiet, signalling stays
/// signalling), as numpy's astype does.
template <typename Real>
Real npy_half_to(std::uint16_t h) {
  static_assert(std::is_same_v<Real, float> || std::is_same_v<Real, double>, "npy_half_to: float or double");
  using Bits = NpyBitsOf<Real>;
  constexpr int mantissa = std::numeric_limits<Real>::digits - 1;    // 23 or 52
  constexpr int bias = std::numeric_limits<Real>::max_exponent - 1;  // 127 or 1023
  constexpr int top = 8 * static_cast<int>(sizeof(Real)) - 1;
  const Bits sign = static_cast<Bits>(h >> 15) << top;
  const unsigned exponent = (h >> 10) & 0x1fu, fraction = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: fraction * 2^-24, exact in Real
    const Real magnitude = static_cast<Real>(fraction) * static_cast<Real>(0x1p-24);
    return sign ? -magnitude : magnitude;
  }
  const Bits field = exponent == 0x1f ? static_cast<Bits>(2 * bias + 1)  // inf, NaN
                                      : static_cast<Bits>(static_cast<int>(exponent) - 15 + bias);
  return npy_bit_cast<Real>(sign | (field << mantissa) | (static_cast<Bits>(fraction) << (mantissa - 10)));
}

/// Rounds y (0 <= y < 2^12, held exactly) to the nearest integer, ties to even.
inline unsigned npy_round_half_even(double y) {
  const double floor = std::floor(y);
  const double rest = y - floor;  // exact
  auto n = static_cast<unsigned>(floor);
  if (rest > 0.5 || (rest == 0.5 && (n & 1u) != 0)) ++n;
  return n;
}

/// The bits of x rounded once to IEEE binary16, to nearest with ties to even
/// (see the file comment for overflow, underflow and NaN). Real: float or
/// double; a float is widened exactly, so both round once.
template <typename Real>
std::uint16_t npy_half_bits(Real x) {
  static_assert(std::is_same_v<Real, float> || std::is_same_v<Real, double>,
                "npy_half_bits: float or double");
  using Bits = NpyBitsOf<Real>;
  constexpr int mantissa = std::numeric_limits<Real>::digits - 1;
  const Bits bits = npy_bit_cast<Bits>(x);
  const auto sign = static_cast<std::uint16_t>((bits >> (8 * sizeof(Real) - 16)) & 0x8000u);
  if (std::isnan(x)) {
    const auto payload = static_cast<std::uint16_t>((bits >> (mantissa - 10)) & 0x3ffu);
    return static_cast<std::uint16_t>(sign | 0x7c00u | (payload != 0 ? payload : 1u));
  }
  const double a = std::fabs(static_cast<double>(x));
  // 65520 = 65504 + 16 lies halfway to 2^16 and ties to the even side: 2^16, out of range.
  if (a >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (a < 0x1p-14) {  // zero or subnormal: a multiple of 2^-24; 1024 * 2^-24 is the smallest normal
    return static_cast<std::uint16_t>(sign | npy_round_half_even(a * 0x1p24));
  }
  int e = 0;
  std::frexp(a, &e);                                        // a in [2^(e-1), 2^e), e - 1 in [-14, 15]
  unsigned m = npy_round_half_even(std::ldexp(a, 11 - e));  // a / 2^(e-1) * 2^10, in [1024, 2048]
  int exponent = e - 1;
  if (m == 2048) {  // rounded up to the next power of two (still <= 2^15: a < 65520)
    m = 1024;
    ++exponent;
  }
  return static_cast<std::uint16_t>(sign | static_cast<unsigned>(exponent + 15) << 10 | (m - 1024));
}

/// One element of type `dtype` (its bytes in host order at `b`) as Scalar.
template <typename Scalar>
Scalar npy_from_bytes(const unsigned char* b, NpyDtype dtype) {
  constexpr bool to_half = std::is_same_v<Scalar, Eigen::half>;
  if (dtype == NpyDtype::float16) {
    std::uint16_t h;
    std::memcpy(&h, b, 2);
    if constexpr (to_half) {
      return Eigen::numext::bit_cast<Eigen::half>(h);
    } else {
      return npy_half_to<Scalar>(h);
    }
  }
  const auto convert = [](auto x) -> Scalar {
    if constexpr (to_half) {
      return Eigen::numext::bit_cast<Eigen::half>(npy_half_bits(x));
    } else {
      return static_cast<Scalar>(x);
    }
  };
  if (dtype == NpyDtype::float32) {
    float f;
    std::memcpy(&f, b, 4);
    return convert(f);
  }
  double x;
  std::memcpy(&x, b, 8);
  return convert(x);
}

/// Reverses the `item` (2, 4 or 8) bytes at b. A constant length per case:
/// GCC's -Wstringop-overflow cannot bound a run-time length by the buffer.
inline void npy_reverse(unsigned char* b, std::size_t item) {
  if (item == 2) {
    std::reverse(b, b + 2);
  } else if (item == 4) {
    std::reverse(b, b + 4);
  } else {
    std::reverse(b, b + 8);
  }
}

/// Writes x as one element of type `dtype` (bytes in host order) to `b`.
template <typename Scalar>
void npy_to_bytes(const Scalar& x, NpyDtype dtype, unsigned char* b) {
  if constexpr (std::is_same_v<Scalar, Eigen::half>) {
    const auto h = Eigen::numext::bit_cast<std::uint16_t>(x);
    if (dtype == NpyDtype::float16) {
      std::memcpy(b, &h, 2);
    } else if (dtype == NpyDtype::float32) {
      const float f = npy_half_to<float>(h);
      std::memcpy(b, &f, 4);
    } else {
      const double d = npy_half_to<double>(h);
      std::memcpy(b, &d, 8);
    }
  } else {
    if (dtype == NpyDtype::float16) {
      const std::uint16_t h = npy_half_bits(x);
      std::memcpy(b, &h, 2);
    } else if (dtype == NpyDtype::float32) {
      const auto f = static_cast<float>(x);  // rounds to nearest even (or is exact)
      std::memcpy(b, &f, 4);
    } else {
      const auto d = static_cast<double>(x);
      std::memcpy(b, &d, 8);
    }
  }
}

/// Decodes raw file data (file order, file byte order) into C-order Scalars.
template <typename Scalar>
void npy_decode(const unsigned char* raw, const NpyHeader& h, Scalar* out) {
  const std::size_t item = npy_item_size(h.dtype);
  const bool swap = (h.byte_order == NpyByteOrder::little) != host_is_little_endian();
  const auto element = [&](std::size_t e) -> Scalar {
    unsigned char b[8];
    std::memcpy(b, raw + e * item, item);
    if (swap) npy_reverse(b, item);
    return npy_from_bytes<Scalar>(b, h.dtype);
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
/// \tparam Scalar float, double or Eigen::half, whatever the file's dtype.
/// \returns the array in C order, converted to Scalar (see the file comment).
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
/// \tparam Scalar float, double or Eigen::half, whatever the file's dtype.
/// \returns the array in C order, converted to Scalar (see the file comment).
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

namespace detail {

/// The element type write_npy gives the file for Scalar data; throws when
/// options.dtype asks to convert integer data.
template <typename Scalar>
std::optional<NpyDtype> npy_write_dtype(const NpyWriteOptions& options, const std::string& name) {
  if constexpr (std::is_same_v<Scalar, std::int64_t>) {
    if (options.dtype)
      npy_fail(name, "cannot write int64 data as ", to_string(*options.dtype),
               " (integer arrays are written as '<i8' only)");
    return std::nullopt;
  } else {
    return options.dtype.value_or(npy_dtype_of<Scalar>());
  }
}

/// Bytes per element in the file: the dtype's, or 8 for int64.
inline std::size_t npy_write_item(const std::optional<NpyDtype>& dtype) {
  return dtype ? npy_item_size(*dtype) : sizeof(std::int64_t);
}

}  // namespace detail

/// Writes a 1- to 3-D array given its shape and its elements in C order.
/// \tparam Scalar Eigen::half, float, double (written as float16, float32,
///         float64, or as options.dtype, converted as the file comment says),
///         or std::int64_t for index arrays ('<i8').
/// \param name used in error messages.
/// \throws std::invalid_argument, before anything is written, when the shape
///         has not 1 to 3 dimensions, a dimension is negative or above 2^53,
///         the byte count of the shape does not fit in Index (checked without
///         overflow), the element count differs from the shape's, or an option
///         is invalid (a version other than 0-3, a dtype for int64 data); and
///         when the stream fails.
template <typename Scalar>
void write_npy(std::ostream& out, const std::vector<Index>& shape, const Scalar* data, std::size_t count,
               const NpyWriteOptions& options = {}, const std::string& name = "<stream>") {
  const std::optional<NpyDtype> dtype = detail::npy_write_dtype<Scalar>(options, name);
  const std::size_t item = detail::npy_write_item(dtype);
  detail::npy_check_write(shape, count, item, options, name);
  const int version = options.version == 0 ? 1 : options.version;

  const bool big = options.byte_order == NpyByteOrder::big;
  const char* code = dtype ? detail::npy_type_code(*dtype) : detail::npy_type_code<Scalar>();
  std::string dict = std::string("{'descr': '") + (big ? '>' : '<') + code +
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
  const bool swap = big == detail::host_is_little_endian();
  const std::size_t a = static_cast<std::size_t>(shape[0]);
  const std::size_t b = shape.size() > 1 ? static_cast<std::size_t>(shape[1]) : 1;
  const std::size_t c = shape.size() > 2 ? static_cast<std::size_t>(shape[2]) : 1;
  std::vector<unsigned char> buffer;
  buffer.reserve(std::min<std::size_t>(count, 1 << 16) * item);
  const auto put = [&](const Scalar& x) {
    unsigned char bytes[8];
    if constexpr (std::is_same_v<Scalar, std::int64_t>) {
      std::memcpy(bytes, &x, 8);
    } else {
      detail::npy_to_bytes(x, *dtype, bytes);
    }
    if (swap) detail::npy_reverse(bytes, item);
    buffer.insert(buffer.end(), bytes, bytes + item);
    if (buffer.size() >= (1u << 16) * item) {
      out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
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
  out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
  if (!out) detail::npy_fail(name, "write failed");
}

/// Writes `array` to the file at `path` (created or truncated).
/// \throws std::invalid_argument naming the file when it cannot be written or
///         the array is not a valid 1- to 3-D array (see the stream overload);
///         an invalid array is refused before the file is opened, so an
///         existing file is left as it was.
template <typename Scalar>
void write_npy(const std::string& path, const NpyArray<Scalar>& array, const NpyWriteOptions& options = {}) {
  detail::npy_check_write(array.shape, array.data.size(),
                          detail::npy_write_item(detail::npy_write_dtype<Scalar>(options, path)), options,
                          path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) detail::npy_fail(path, "cannot open for writing: ", std::strerror(errno));
  write_npy(out, array.shape, array.data.data(), array.data.size(), options, path);
  out.close();
  if (!out) detail::npy_fail(path, "write failed: ", std::strerror(errno));
}

/// Writes a matrix as a 2-D (rows, cols) array of its Scalar type (or of
/// options.dtype).
template <typename Derived>
void write_npy(const std::string& path, const Eigen::MatrixBase<Derived>& m,
               const NpyWriteOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  const RowMatrix<Scalar> rows = m;  // C order
  NpyArray<Scalar> a{{m.rows(), m.cols()}, std::vector<Scalar>(rows.data(), rows.data() + rows.size())};
  write_npy(path, a, options);
}

}  // namespace attnkit
