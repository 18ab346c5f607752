#pragma once

/// \file attnkit/io/npy.hpp
/// Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0):
/// float32 and float64, little and big endian, C and Fortran order, 1- to 3-D.
/// This is how tensors dumped from PyTorch with `numpy.save` reach attnkit.
///
/// The format: the magic string "\x93NUMPY", two version bytes, the header
/// length (2 bytes little endian in 1.0, 4 bytes in 2.0 and 3.0), then a
/// Python dict literal such as
///   {'descr': '<f4', 'fortran_order': False, 'shape': (8, 4096, 128), }
/// padded with spaces to a multiple of 64 bytes and ended by '\n', then the
/// raw data, shape[0] * shape[1] * ... elements of the dtype, in C order (last
/// index fastest) or Fortran order (first index fastest).
///
/// Reading is strict: the magic string, the version, the header length (at
/// most `npy_max_header_bytes`), every token of the dict (exactly the three
/// keys, each once), the dtype, the shape (1 to 3 non-negative dimensions
/// whose byte count fits in memory) and the data size (exactly the bytes the
/// shape promises: a truncated file and trailing bytes are both errors) are
/// checked before any element is decoded. Every problem throws
/// std::invalid_argument whose message starts with the file name (or the name
/// given for an in-memory buffer), e.g.
///   npy: 'k.npy': truncated: shape (8, 4096, 128) float32 needs 16777216 bytes of data, the file has 1024
/// No input makes the reader read out of bounds, allocate more than the file's
/// size (plus one decoded copy), or hang.
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
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Element types attnkit reads and writes.
enum class NpyDtype { float32, float64 };

/// Byte order of the elements in a file.
enum class NpyByteOrder { little, big };

/// "float32" or "float64".
inline const char* to_string(NpyDtype dtype) {
  return dtype == NpyDtype::float32 ? "float32" : "float64";
}

/// Bytes per element: 4 or 8.
inline std::size_t npy_item_size(NpyDtype dtype) {
  return dtype == NpyDtype::float32 ? 4 : 8;
}

/// The dtype that stores Scalar (float -> float32, double -> float64).
template <typename Scalar>
constexpr NpyDtype npy_dtype_of() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "attnkit .npy support handles float and double");
  return std::is_same_v<Scalar, float> ? NpyDtype::float32 : NpyDtype::float64;
}

namespace detail {
/// The type code write_npy puts in 'descr' for Scalar: the reader's two float
/// types, plus 64-bit integers for index arrays (e.g. kept dimensions), which
/// attnkit writes but does not read.
template <typename Scalar>
constexpr const char* npy_type_code() {
  static_assert(
      std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> || std::is_same_v<Scalar, std::int64_t>,
      "attnkit writes float, double and std::int64_t arrays");
  if constexpr (std::is_same_v<Scalar, float>) return "f4";
  if constexpr (std::is_same_v<Scalar, double>) return "f8";
  return "i8";
}
}  // namespace detail

/// Longest header (the dict with its padding) the reader accepts. The header
/// of a 1- to 3-D float array is under 128 bytes; numpy itself refuses headers
/// over 10000 bytes by default.
inline constexpr std::size_t npy_max_header_bytes = 65536;

/// What the header of a .npy file says.
struct NpyHeader {
  int major_version = 1;  ///< 1, 2 or 3
  int minor_version = 0;  ///< always 0
  NpyDtype dtype = NpyDtype::float64;
  NpyByteOrder byte_order = NpyByteOrder::little;
  bool fortran_order = false;
  std::vector<Index> shape;     ///< 1 to 3 dimensions, each >= 0
  std::size_t data_offset = 0;  ///< bytes before the first element

  /// Number of elements (the product of the shape).
  Index size() const {
    if (std::find(shape.begin(), shape.end(), Index(0)) != shape.end()) return 0;
    Index n = 1;
    for (const Index s : shape)
      n *= s;
    return n;
  }
  /// Bytes of data the shape promises.
  std::size_t data_bytes() const { return static_cast<std::size_t>(size()) * npy_item_size(dtype); }
};

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

/// "(2, 3)" or "(5,)", as Python writes a shape tuple.
inline std::string npy_shape_string(const std::vector<Index>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ',';
  return s + ')';
}

namespace detail {

inline bool host_is_little_endian() {
  const std::uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

/// Throws std::invalid_argument "npy: '<name>': <parts>".
template <typename... Parts>
[[noreturn]] void npy_fail(const std::string& name, Parts&&... parts) {
  fail("npy: '", name, "': ", std::forward<Parts>(parts)...);
}

/// A strict tokenizer for the header dict (a Python literal).
class NpyDictParser {
 public:
  NpyDictParser(const char* begin, const char* end, const std::string& name)
      : pos_(begin), end_(end), name_(name) {}

  NpyHeader parse() {
    NpyHeader h;
    bool has_descr = false, has_fortran = false, has_shape = false;
    skip_space();
    expect('{', "the header must be a Python dict starting with '{'");
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = parse_string("a dict key");
      skip_space();
      expect(':', "expected ':' after the key");
      skip_space();
      if (key == "descr") {
        if (has_descr) npy_fail(name_, "header: duplicate key 'descr'");
        has_descr = true;
        parse_descr(h);
      } else if (key == "fortran_order") {
        if (has_fortran) npy_fail(name_, "header: duplicate key 'fortran_order'");
        has_fortran = true;
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        if (has_shape) npy_fail(name_, "header: duplicate key 'shape'");
        has_shape = true;
        h.shape = parse_shape();
      } else {
        npy_fail(name_, "header: unexpected key '", key, "' (a .npy header has exactly 'descr', ",
                 "'fortran_order' and 'shape')");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') break;
      npy_fail(name_, "header: expected ',' or '}' after the value of '", key, "'");
    }
    ++pos_;  // '}'
    skip_space();
    if (pos_ != end_) npy_fail(name_, "header: unexpected text after the dict");
    if (!has_descr || !has_fortran || !has_shape)
      npy_fail(name_, "header: missing key '",
               !has_descr ? "descr" : (!has_fortran ? "fortran_order" : "shape"), "'");
    return h;
  }

 private:
  int peek() const { return pos_ == end_ ? -1 : static_cast<unsigned char>(*pos_); }

  void skip_space() {
    while (pos_ != end_ && (*pos_ == ' ' || *pos_ == '\n' || *pos_ == '\t' || *pos_ == '\r'))
      ++pos_;
  }

  void expect(char c, const char* what) {
    if (peek() != static_cast<unsigned char>(c)) npy_fail(name_, "header: ", what);
    ++pos_;
  }

  std::string parse_string(const char* what) {
    const int quote = peek();
    if (quote != '\'' && quote != '"') npy_fail(name_, "header: expected a quoted string as ", what);
    ++pos_;
    const char* start = pos_;
    while (pos_ != end_ && static_cast<unsigned char>(*pos_) != quote) {
      if (*pos_ == '\\') npy_fail(name_, "header: escape sequences are not supported in strings");
      ++pos_;
    }
    if (pos_ == end_) npy_fail(name_, "header: unterminated string");
    std::string s(start, pos_);
    ++pos_;
    return s;
  }

  void parse_descr(NpyHeader& h) {
    if (peek() == '[')
      npy_fail(name_, "unsupported dtype: structured arrays are not supported (attnkit reads float32 ",
               "and float64)");
    const std::string d = parse_string("the value of 'descr'");
    if (d == "<f4" || d == ">f4" || d == "<f8" || d == ">f8") {
      h.byte_order = d[0] == '<' ? NpyByteOrder::little : NpyByteOrder::big;
      h.dtype = d[2] == '4' ? NpyDtype::float32 : NpyDtype::float64;
      return;
    }
    npy_fail(name_, "unsupported dtype '", d,
             "' (attnkit reads float32 and float64: '<f4', '>f4', '<f8', '>f8'; convert with ",
             "array.astype(numpy.float32))");
  }

  bool parse_bool() {
    const char* start = pos_;
    while (pos_ != end_ && std::isalpha(static_cast<unsigned char>(*pos_)))
      ++pos_;
    const std::string word(start, pos_);
    if (word == "True") return true;
    if (word == "False") return false;
    npy_fail(name_, "header: 'fortran_order' must be True or False");
  }

  Index parse_dimension() {
    if (peek() == '-') npy_fail(name_, "header: negative dimension in 'shape'");
    if (peek() < '0' || peek() > '9') npy_fail(name_, "header: expected an integer in 'shape'");
    // Bounded so that the product of three dimensions is checked without overflow below.
    constexpr Index limit = Index(1) << 53;
    Index value = 0;
    while (peek() >= '0' && peek() <= '9') {
      value = value * 10 + (*pos_ - '0');
      if (value > limit) npy_fail(name_, "header: dimension in 'shape' is too large");
      ++pos_;
    }
    return value;
  }

  std::vector<Index> parse_shape() {
    expect('(', "'shape' must be a tuple such as (4096, 128)");
    std::vector<Index> shape;
    bool trailing_comma = false;
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      if (shape.size() == 3)
        npy_fail(name_, "unsupported shape: more than 3 dimensions (attnkit reads 1- to 3-D)");
      shape.push_back(parse_dimension());
      skip_space();
      trailing_comma = false;
      if (peek() == ',') {
        ++pos_;
        trailing_comma = true;
        continue;
      }
      if (peek() != ')') npy_fail(name_, "header: expected ',' or ')' in 'shape'");
    }
    ++pos_;  // ')'
    if (shape.empty())
      npy_fail(name_, "unsupported shape (): 0-D arrays are not supported (attnkit reads 1- to 3-D)");
    if (shape.size() == 1 && !trailing_comma)
      npy_fail(name_, "header: 'shape' (", shape[0], ") is not a tuple; a 1-D shape is written (", shape[0],
               ",)");
    return shape;
  }

  const char* pos_;
  const char* end_;
  const std::string& name_;
};

/// Reads a little-endian unsigned integer of `bytes` bytes.
inline std::size_t read_le(const unsigned char* p, int bytes) {
  std::size_t v = 0;
  for (int i = bytes - 1; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

/// Checks that data_bytes() cannot overflow: the element count times the item
/// size must fit in std::size_t and Index.
inline void npy_check_size(const NpyHeader& h, const std::string& name) {
  const auto max_bytes = static_cast<unsigned long long>(std::numeric_limits<Index>::max());
  if (std::find(h.shape.begin(), h.shape.end(), Index(0)) != h.shape.end()) return;  // empty
  unsigned long long bytes = npy_item_size(h.dtype);
  for (const Index s : h.shape) {
    if (bytes > max_bytes / static_cast<unsigned long long>(s))
      npy_fail(name, "shape ", npy_shape_string(h.shape), " is too large to address");
    bytes *= static_cast<unsigned long long>(s);
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

/// Data-size check shared by the buffer and the file reader.
inline void npy_check_data_size(const NpyHeader& h, std::size_t available, const std::string& name) {
  const std::size_t need = h.data_bytes();
  if (available < need)
    npy_fail(name, "truncated: shape ", npy_shape_string(h.shape), ' ', to_string(h.dtype), " needs ", need,
             " bytes of data, the file has ", available);
  if (available > need)
    npy_fail(name, available - need, " unexpected bytes after the ", need, " bytes of data that shape ",
             npy_shape_string(h.shape), ' ', to_string(h.dtype), " promises");
}

}  // namespace detail

/// Parses and validates the header at the start of `bytes` (`size` bytes
/// available: the whole file, or at least its header).
/// \param name used in error messages (the file name).
/// \returns the header, with data_offset set; the data is not examined.
/// \throws std::invalid_argument naming `name` for any malformed, truncated,
///         oversized or unsupported header (see the file comment).
inline NpyHeader parse_npy_header(const void* bytes, std::size_t size, const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size == 0) detail::npy_fail(name, "empty file (0 bytes), not a .npy file");
  if (size < 8 || std::memcmp(p, magic, 6) != 0) {
    if (size >= 6 && std::memcmp(p, magic, 6) == 0)
      detail::npy_fail(name, "truncated: ", size, " bytes, too short for a .npy header");
    detail::npy_fail(name, "not a .npy file (it does not start with the magic string \\x93NUMPY)");
  }
  const int major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0)
    detail::npy_fail(name, "unsupported .npy format version ", major, '.', minor,
                     " (attnkit reads 1.0, 2.0 and 3.0)");
  const int length_bytes = major == 1 ? 2 : 4;
  const std::size_t prefix = 8 + static_cast<std::size_t>(length_bytes);
  if (size < prefix) detail::npy_fail(name, "truncated: ", size, " bytes, too short for a .npy header");
  const std::size_t header_len = detail::read_le(p + 8, length_bytes);
  if (header_len > npy_max_header_bytes)
    detail::npy_fail(name, "header length ", header_len, " exceeds the limit of ", npy_max_header_bytes,
                     " bytes");
  if (header_len > size - prefix)
    detail::npy_fail(name, "truncated: the header claims ", header_len, " bytes, the file has ",
                     size - prefix, " after the header length");
  const char* text = reinterpret_cast<const char*>(p + prefix);
  for (std::size_t i = 0; i < header_len; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 || c > 0x7e) && c != '\n' && c != '\t' && c != '\r')
      detail::npy_fail(name, "header: unexpected byte 0x", "0123456789abcdef"[c >> 4],
                       "0123456789abcdef"[c & 15], " at offset ", prefix + i, " (the header must be ASCII)");
  }
  NpyHeader h = detail::NpyDictParser(text, text + header_len, name).parse();
  h.major_version = major;
  h.minor_version = minor;
  h.data_offset = prefix + header_len;
  detail::npy_check_size(h, name);
  return h;
}

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

namespace detail {

/// Opens `path` and returns its size; throws naming the file.
inline std::size_t npy_open(std::ifstream& in, const std::string& path) {
  in.open(path, std::ios::binary);
  if (!in) npy_fail(path, "cannot open: ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  in.seekg(0, std::ios::beg);
  if (!in || end < 0) npy_fail(path, "cannot read (is it a regular file?)");
  return static_cast<std::size_t>(end);
}

/// Reads and parses the header of an open file of `file_size` bytes.
inline NpyHeader npy_read_header(std::ifstream& in, std::size_t file_size, const std::string& path) {
  const std::size_t want = std::min(file_size, 12 + npy_max_header_bytes);
  std::vector<unsigned char> head(want);
  if (want > 0 && !in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(want)))
    npy_fail(path, "cannot read (is it a regular file?)");
  NpyHeader h = parse_npy_header(head.data(), want, path);
  npy_check_data_size(h, file_size - h.data_offset, path);
  return h;
}

}  // namespace detail

/// Reads and validates only the header of the file at `path` (the data size is
/// checked against the file size, the data is not read).
/// \throws std::invalid_argument naming the file (see parse_npy_header).
inline NpyHeader read_npy_header(const std::string& path) {
  std::ifstream in;
  const std::size_t size = detail::npy_open(in, path);
  return detail::npy_read_header(in, size, path);
}

/// Reads the .npy file at `path`.
/// \returns the array in C order, converted to Scalar.
/// \throws std::invalid_argument naming the file when it cannot be opened or
///         read, or is malformed, truncated, oversized or unsupported.
template <typename Scalar>
NpyArray<Scalar> read_npy(const std::string& path) {
  npy_dtype_of<Scalar>();
  std::ifstream in;
  const std::size_t size = detail::npy_open(in, path);
  const NpyHeader h = detail::npy_read_header(in, size, path);
  std::vector<unsigned char> raw(h.data_bytes());
  in.seekg(static_cast<std::streamoff>(h.data_offset), std::ios::beg);
  if (!raw.empty() && !in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size())))
    detail::npy_fail(path, "cannot read the ", raw.size(), " bytes of data (did the file change?)");
  NpyArray<Scalar> a{h.shape, std::vector<Scalar>(static_cast<std::size_t>(h.size()))};
  detail::npy_decode(raw.data(), h, a.data.data());
  return a;
}

/// Writes a 1- to 3-D array of Scalar (float32, float64, or int64 for index
/// arrays) given its shape and its elements in C order.
/// \param name used in error messages.
/// \throws std::invalid_argument when the shape has not 1 to 3 dimensions, a
///         dimension is negative, the element count differs from the shape's,
///         an option is invalid, or the stream fails.
template <typename Scalar>
void write_npy(std::ostream& out, const std::vector<Index>& shape, const Scalar* data, std::size_t count,
               const NpyWriteOptions& options = {}, const std::string& name = "<stream>") {
  if (shape.empty() || shape.size() > 3)
    detail::npy_fail(name, "cannot write a ", shape.size(), "-D array (attnkit writes 1- to 3-D)");
  std::size_t expected = 1;
  for (const Index s : shape) {
    if (s < 0) detail::npy_fail(name, "cannot write shape ", npy_shape_string(shape), ": negative dimension");
    expected *= static_cast<std::size_t>(s);
  }
  if (expected != count)
    detail::npy_fail(name, "shape ", npy_shape_string(shape), " has ", expected, " elements, got ", count);
  if (options.version < 0 || options.version > 3)
    detail::npy_fail(name, "format version ", options.version, " is not 1, 2 or 3");
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
///         the array is not a valid 1- to 3-D array.
template <typename Scalar>
void write_npy(const std::string& path, const NpyArray<Scalar>& array, const NpyWriteOptions& options = {}) {
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
