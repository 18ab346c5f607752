#pragma once

/// \file attnkit/io/npy_header.hpp
/// The NumPy `.npy` format as attnkit reads it: the dtypes (float16, float32,
/// float64, either byte order), the header and its validation, and the size
/// checks. The arrays themselves (decoding, writing)
/// are in attnkit/io/npy.hpp, which includes this header.
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
/// size (plus one decoded copy), or hang: only regular files are read; a FIFO,
/// a directory, a device or a socket is refused by name without blocking and
/// before a byte is read (POSIX: opened with O_NONBLOCK, then fstat on the
/// opened descriptor).
///
/// Thread safety: pure functions; concurrent calls on distinct files are safe.

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#else
#include <filesystem>
#endif

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Element types attnkit reads and writes: IEEE binary32, binary64 and
/// binary16 ('f4', 'f8', 'f2'). float16 is listed last so that the values of
/// the older two are unchanged.
enum class NpyDtype { float32, float64, float16 };

/// Byte order of the elements in a file.
enum class NpyByteOrder { little, big };

/// "float16", "float32" or "float64" (numpy's names).
inline const char* to_string(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::float16:
      return "float16";
    case NpyDtype::float32:
      return "float32";
    case NpyDtype::float64:
      return "float64";
  }
  return "?";
}

/// The inverse of to_string: "float16", "float32" or "float64"; std::nullopt
/// for anything else.
inline std::optional<NpyDtype> parse_npy_dtype(std::string_view name) {
  for (const NpyDtype dtype : {NpyDtype::float16, NpyDtype::float32, NpyDtype::float64})
    if (name == to_string(dtype)) return dtype;
  return std::nullopt;
}

/// Bytes per element: 2, 4 or 8.
inline std::size_t npy_item_size(NpyDtype dtype) {
  return dtype == NpyDtype::float16 ? 2 : (dtype == NpyDtype::float32 ? 4 : 8);
}

/// The dtype that stores Scalar (Eigen::half -> float16, float -> float32,
/// double -> float64).
template <typename Scalar>
constexpr NpyDtype npy_dtype_of() {
  static_assert(
      std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> || std::is_same_v<Scalar, Eigen::half>,
      "attnkit .npy support handles Eigen::half, float and double");
  if constexpr (std::is_same_v<Scalar, Eigen::half>) return NpyDtype::float16;
  return std::is_same_v<Scalar, float> ? NpyDtype::float32 : NpyDtype::float64;
}

namespace detail {
/// The type code of a dtype in 'descr': "f2", "f4" or "f8".
inline const char* npy_type_code(NpyDtype dtype) {
  return dtype == NpyDtype::float16 ? "f2" : (dtype == NpyDtype::float32 ? "f4" : "f8");
}

/// The type code write_npy puts in 'descr' for Scalar by default: the
/// reader's three float types, plus 64-bit integers for index arrays (e.g.
/// kept dimensions), which attnkit writes but does not read.
template <typename Scalar>
constexpr const char* npy_type_code() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> ||
                    std::is_same_v<Scalar, Eigen::half> || std::is_same_v<Scalar, std::int64_t>,
                "attnkit writes Eigen::half, float, double and std::int64_t arrays");
  if constexpr (std::is_same_v<Scalar, Eigen::half>) return "f2";
  if constexpr (std::is_same_v<Scalar, float>) return "f4";
  if constexpr (std::is_same_v<Scalar, double>) return "f8";
  return "i8";
}
}  // namespace detail

/// Longest header (the dict with its padding) the reader accepts. The header
/// of a 1- to 3-D float array is under 128 bytes; numpy itself refuses headers
/// over 10000 bytes by default.
inline constexpr std::size_t npy_max_header_bytes = 65536;

/// Largest dimension the reader accepts (and the writer writes): 2^53, so that
/// the byte count of any 1- to 3-D shape is checked without overflow.
inline constexpr Index npy_max_dimension = Index(1) << 53;

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
      npy_fail(name_, "unsupported dtype: structured arrays are not supported (attnkit reads float16, ",
               "float32 and float64)");
    const std::string d = parse_string("the value of 'descr'");
    if (d.size() == 3 && (d[0] == '<' || d[0] == '>') && d[1] == 'f' &&
        (d[2] == '2' || d[2] == '4' || d[2] == '8')) {
      h.byte_order = d[0] == '<' ? NpyByteOrder::little : NpyByteOrder::big;
      h.dtype = d[2] == '2' ? NpyDtype::float16 : (d[2] == '4' ? NpyDtype::float32 : NpyDtype::float64);
      return;
    }
    npy_fail(name_, "unsupported dtype '", d,
             "' (attnkit reads float16, float32 and float64: '<f2', '>f2', '<f4', '>f4', '<f8', '>f8'; ",
             "convert with ", "array.astype(numpy.float32))");
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
    Index value = 0;
    while (peek() >= '0' && peek() <= '9') {
      value = value * 10 + (*pos_ - '0');
      if (value > npy_max_dimension) npy_fail(name_, "header: dimension in 'shape' is too large");
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

/// Checks that `shape` (dimensions in [0, npy_max_dimension]) times `item`
/// bytes per element fits in Index (and so in std::size_t), without
/// overflowing on the way, and returns that byte count. Shared by the reader
/// and the writer, so that the writer never produces a file the reader
/// refuses. Throws "shape (...) is too large to address".
inline std::size_t npy_checked_bytes(const std::vector<Index>& shape, std::size_t item,
                                     const std::string& name) {
  if (std::find(shape.begin(), shape.end(), Index(0)) != shape.end()) return 0;  // empty
  const auto max_bytes = static_cast<unsigned long long>(std::numeric_limits<Index>::max());
  unsigned long long bytes = item;
  for (const Index s : shape) {
    if (bytes > max_bytes / static_cast<unsigned long long>(s))
      npy_fail(name, "shape ", npy_shape_string(shape), " is too large to address");
    bytes *= static_cast<unsigned long long>(s);
  }
  return static_cast<std::size_t>(bytes);
}

/// Checks that data_bytes() cannot overflow: the element count times the item
/// size must fit in std::size_t and Index.
inline void npy_check_size(const NpyHeader& h, const std::string& name) {
  npy_checked_bytes(h.shape, npy_item_size(h.dtype), name);
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

namespace detail {

#if defined(__unix__) || defined(__APPLE__)
/// What a non-regular file is, for messages.
inline const char* npy_file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}
#endif

/// A regular file opened for reading, with its size; closed on destruction.
///
/// POSIX: open(2) with O_NONBLOCK (so a FIFO without a writer, or a device,
/// cannot block the open), then fstat(2) on the opened descriptor, so the
/// check is made on the very file that will be read (no race between a check
/// and the open); anything but a regular file is refused before a byte is
/// read. Elsewhere: std::filesystem::is_regular_file before std::ifstream
/// (checked by name, so not race-free; such platforms have no FIFOs in the
/// file system namespace).
class NpyInputFile {
 public:
  explicit NpyInputFile(const std::string& path) : path_(path) {
#if defined(__unix__) || defined(__APPLE__)
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0) {
      const int error = errno;
      struct stat st {};
      // open(2) refuses some special files (a socket: ENXIO); say what they are.
      if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        npy_fail(path, "not a regular file (", npy_file_kind(st.st_mode),
                 "); .npy files are read from regular ", "files only");
      npy_fail(path, "cannot open: ", std::strerror(error));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int error = errno;
      ::close(fd_);
      npy_fail(path, "cannot read: ", std::strerror(error));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      npy_fail(path, "not a regular file (", npy_file_kind(st.st_mode),
               "); .npy files are read from regular ", "files only");
    }
    // Reads from a regular file never block; clear the flag anyway.
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    size_ = static_cast<std::size_t>(st.st_size);
#else
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
      npy_fail(path, "not a regular file; .npy files are read from regular files only");
    in_.open(path, std::ios::binary);
    if (!in_) npy_fail(path, "cannot open: ", std::strerror(errno));
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    if (!in_ || end < 0) npy_fail(path, "cannot read (is it a regular file?)");
    size_ = static_cast<std::size_t>(end);
#endif
  }
  ~NpyInputFile() {
#if defined(__unix__) || defined(__APPLE__)
    ::close(fd_);
#endif
  }
  NpyInputFile(const NpyInputFile&) = delete;
  NpyInputFile& operator=(const NpyInputFile&) = delete;

  /// The size of the file when it was opened.
  std::size_t size() const {
    return size_;
  }

  /// Reads exactly `n` bytes at `offset` into `out`; throws naming the file
  /// when it ends first (it changed since it was opened) or a read fails.
  void read_at(std::size_t offset, unsigned char* out, std::size_t n, const char* what) {
#if defined(__unix__) || defined(__APPLE__)
    std::size_t done = 0;
    while (done < n) {
      const std::size_t chunk = std::min<std::size_t>(n - done, std::size_t(1) << 30);
      const ssize_t got = ::pread(fd_, out + done, chunk, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) npy_fail(path_, "cannot read ", what, ": ", std::strerror(errno));
      if (got == 0) npy_fail(path_, "cannot read ", what, " (the file ended early: did it change?)");
      done += static_cast<std::size_t>(got);
    }
#else
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset), std::ios::beg);
    if (n > 0 && !in_.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n)))
      npy_fail(path_, "cannot read ", what, " (did the file change?)");
#endif
  }

 private:
  const std::string& path_;
  std::size_t size_ = 0;
#if defined(__unix__) || defined(__APPLE__)
  int fd_ = -1;
#else
  std::ifstream in_;
#endif
};

/// Reads and parses the header of an open file, and checks the data size
/// against the file size.
inline NpyHeader npy_read_header(NpyInputFile& in, const std::string& path) {
  const std::size_t want = std::min(in.size(), 12 + npy_max_header_bytes);
  std::vector<unsigned char> head(want);
  in.read_at(0, head.data(), want, "the header");
  NpyHeader h = parse_npy_header(head.data(), want, path);
  npy_check_data_size(h, in.size() - h.data_offset, path);
  return h;
}

}  // namespace detail

/// Reads and validates only the header of the file at `path` (the data size is
/// checked against the file size, the data is not read).
/// \throws std::invalid_argument naming the file when it is missing, is not a
///         regular file (a FIFO, directory, device or socket: refused without
///         blocking, see detail::NpyInputFile), or its header is invalid (see
///         parse_npy_header).
inline NpyHeader read_npy_header(const std::string& path) {
  detail::NpyInputFile in(path);
  return detail::npy_read_header(in, path);
}

}  // namespace attnkit
