// Tests of attnkit/io/npy.hpp (the header parser alone: npy_header_test.cpp):
// round trips over every layout, files written by numpy (committed under
// tests/io/npy_corpus/ and, when numpy is installed, written live), and a
// corpus of broken files that must each be refused with a message naming the
// file.

#include "attnkit/io/npy.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <future>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "file_util.hpp"
#include "npy_test_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::npy_file;
using test::read_file;
using test::run_python;
using test::ScratchDir;
using test::throws_invalid_argument;
using test::write_file;

const std::string corpus = ATTNKIT_NPY_CORPUS_DIR;

// Every test of this suite runs over the three element types the reader
// returns; float16 has its own tests in npy_float16_test.cpp.
template <typename Scalar>
class NpyTest : public ::testing::Test {};
using NpyScalars = ::testing::Types<Eigen::half, float, double>;
TYPED_TEST_SUITE(NpyTest, NpyScalars);

// value(e) = 0.25 e - 3 at C-order index e: exact in float and double, and in
// float16 for e < 2048 (4 value(e) = e - 12 has at most 11 bits); the convention of
// tests/io/npy_numpy_check.py and of the committed corpus.
template <typename Scalar>
Scalar value(std::size_t e) {
  return static_cast<Scalar>(0.25 * static_cast<double>(e) - 3.0);
}

template <typename Scalar>
NpyArray<Scalar> counting_array(std::vector<Index> shape) {
  NpyArray<Scalar> a{std::move(shape), {}};
  a.data.resize(static_cast<std::size_t>(a.size()));
  for (std::size_t e = 0; e < a.data.size(); ++e)
    a.data[e] = value<Scalar>(e);
  return a;
}

template <typename Scalar>
bool same_bits(const std::vector<Scalar>& a, const std::vector<Scalar>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(Scalar)) == 0);
}

template <typename Scalar>
std::string to_bytes(const NpyArray<Scalar>& a, const NpyWriteOptions& options = {}) {
  std::ostringstream os;
  write_npy(os, a.shape, a.data.data(), a.data.size(), options);
  return os.str();
}

TYPED_TEST(NpyTest, RoundTripsEveryLayoutBitForBit) {
  using Scalar = TypeParam;
  using Limits = std::numeric_limits<Scalar>;
  ScratchDir dir;
  const std::vector<std::vector<Index>> shapes = {{5},    {1},    {0},       {3, 4},   {1, 1},
                                                  {4, 1}, {0, 3}, {2, 3, 4}, {3, 1, 2}};
  int files = 0;
  for (const auto& shape : shapes) {
    NpyArray<Scalar> a = counting_array<Scalar>(shape);
    // Special values survive bit for bit: NaN, infinities, -0, a denormal, extremes.
    const Scalar specials[] = {Limits::quiet_NaN(),  Limits::infinity(), -Limits::infinity(), Scalar(-0.0),
                               Limits::denorm_min(), Limits::max(),      Limits::lowest()};
    for (std::size_t e = 0; e < a.data.size() && e < 7; e += 2)
      a.data[e] = specials[e];
    for (const int version : {0, 1, 2, 3})
      for (const auto order : {NpyByteOrder::little, NpyByteOrder::big})
        for (const bool fortran : {false, true}) {
          const NpyWriteOptions opt{version, order, fortran};
          const std::string path = dir / ("a" + std::to_string(files++) + ".npy");
          write_npy(path, a, opt);
          const std::string bytes = read_file(path);
          const NpyHeader h = read_npy_header(path);
          EXPECT_EQ(h.major_version, version == 0 ? 1 : version);
          EXPECT_EQ(h.minor_version, 0);
          EXPECT_EQ(h.dtype, npy_dtype_of<Scalar>());
          EXPECT_EQ(h.byte_order, order);
          EXPECT_EQ(h.fortran_order, fortran);
          EXPECT_EQ(h.shape, shape);
          EXPECT_EQ(h.data_offset % 64, 0u) << "data must start on a 64-byte boundary";
          EXPECT_EQ(h.data_offset + h.data_bytes(), bytes.size());
          const NpyArray<Scalar> b = read_npy<Scalar>(path);
          EXPECT_EQ(b.shape, shape);
          EXPECT_TRUE(same_bits(a.data, b.data)) << path;
          // The in-memory parser agrees with the file reader.
          const NpyArray<Scalar> c = parse_npy<Scalar>(bytes.data(), bytes.size(), "mem");
          EXPECT_TRUE(same_bits(a.data, c.data));
        }
  }
  EXPECT_EQ(files, 9 * 16);
}

TYPED_TEST(NpyTest, FortranOrderAndBigEndianChangeTheBytesNotTheValues) {
  using Scalar = TypeParam;
  const NpyArray<Scalar> a = counting_array<Scalar>({2, 3});
  const std::string c = to_bytes(a), f = to_bytes(a, {0, NpyByteOrder::little, true});
  const std::string big = to_bytes(a, {0, NpyByteOrder::big, false});
  const std::size_t off = parse_npy_header(c.data(), c.size(), "c").data_offset;
  // C order stores (0,0) (0,1) (0,2) (1,0)...; Fortran order (0,0) (1,0) (0,1)...
  Scalar second_c, second_f;
  std::memcpy(&second_c, c.data() + off + sizeof(Scalar), sizeof(Scalar));
  std::memcpy(&second_f, f.data() + off + sizeof(Scalar), sizeof(Scalar));
  EXPECT_EQ(second_c, value<Scalar>(1));  // element (0, 1)
  EXPECT_EQ(second_f, value<Scalar>(3));  // element (1, 0)
  // Big endian: each element's bytes reversed.
  for (std::size_t i = 0; i < sizeof(Scalar); ++i)
    EXPECT_EQ(big[off + i], c[off + sizeof(Scalar) - 1 - i]);
  EXPECT_NE(c.find("'descr': '<f"), std::string::npos);
  EXPECT_NE(big.find("'descr': '>f"), std::string::npos);
  EXPECT_NE(f.find("'fortran_order': True"), std::string::npos);
}

TYPED_TEST(NpyTest, ReadsEveryCommittedNumpyFile) {
  using Scalar = TypeParam;
  struct Case {
    const char* file;
    std::vector<Index> shape;
    int version;
    NpyDtype dtype;
    NpyByteOrder order;
    bool fortran;
  };
  const NpyByteOrder le = NpyByteOrder::little, be = NpyByteOrder::big;
  const std::vector<Case> cases = {
      {"f8_1d.npy", {5}, 1, NpyDtype::float64, le, false},
      {"f4_2d.npy", {3, 4}, 1, NpyDtype::float32, le, false},
      {"f4_3d.npy", {2, 3, 4}, 1, NpyDtype::float32, le, false},
      {"f8_2d_big.npy", {3, 2}, 1, NpyDtype::float64, be, false},
      {"f4_3d_big_fortran.npy", {2, 3, 4}, 1, NpyDtype::float32, be, true},
      {"f8_2d_fortran.npy", {4, 3}, 1, NpyDtype::float64, le, true},
      {"f4_2d_v2.npy", {3, 4}, 2, NpyDtype::float32, le, false},
      {"f8_3d_v3.npy", {2, 2, 3}, 3, NpyDtype::float64, le, false},
      {"f4_empty.npy", {0, 4}, 1, NpyDtype::float32, le, false},
      {"f2_2d.npy", {3, 4}, 1, NpyDtype::float16, le, false},
      {"f2_3d_big_fortran.npy", {2, 3, 4}, 1, NpyDtype::float16, be, true},
  };
  for (const Case& c : cases) {
    const std::string path = corpus + "/" + c.file;
    const NpyHeader h = read_npy_header(path);
    EXPECT_EQ(h.shape, c.shape) << c.file;
    EXPECT_EQ(h.major_version, c.version) << c.file;
    EXPECT_EQ(h.dtype, c.dtype) << c.file;
    EXPECT_EQ(h.byte_order, c.order) << c.file;
    EXPECT_EQ(h.fortran_order, c.fortran) << c.file;
    const NpyArray<Scalar> a = read_npy<Scalar>(path);
    ASSERT_EQ(a.shape, c.shape) << c.file;
    ASSERT_EQ(a.data.size(), static_cast<std::size_t>(a.size()));
    for (std::size_t e = 0; e < a.data.size(); ++e)
      ASSERT_EQ(a.data[e], value<Scalar>(e)) << c.file << " e=" << e;
  }
}

// Our writer produces numpy's bytes exactly, for the default layout and for
// every option numpy itself can be asked for.
TEST(NpyWriter, WritesTheBytesNumpyWrites) {
  const auto check = [](const char* file, auto array, NpyWriteOptions opt) {
    EXPECT_EQ(to_bytes(array, opt), read_file(corpus + "/" + file)) << file;
  };
  check("f8_1d.npy", counting_array<double>({5}), {});
  check("f4_2d.npy", counting_array<float>({3, 4}), {});
  check("f4_3d.npy", counting_array<float>({2, 3, 4}), {});
  check("f8_2d_big.npy", counting_array<double>({3, 2}), {0, NpyByteOrder::big, false});
  check("f4_3d_big_fortran.npy", counting_array<float>({2, 3, 4}), {0, NpyByteOrder::big, true});
  check("f8_2d_fortran.npy", counting_array<double>({4, 3}), {0, NpyByteOrder::little, true});
  check("f4_2d_v2.npy", counting_array<float>({3, 4}), {2, NpyByteOrder::little, false});
  check("f8_3d_v3.npy", counting_array<double>({2, 2, 3}), {3, NpyByteOrder::little, false});
  check("f4_empty.npy", counting_array<float>({0, 4}), {});
  check("f2_2d.npy", counting_array<Eigen::half>({3, 4}), {});
  check("f2_3d_big_fortran.npy", counting_array<Eigen::half>({2, 3, 4}), {0, NpyByteOrder::big, true});
}

// Index arrays (attnkit-eval prune's kept dimensions) are written as int64:
// the same header as numpy's with descr '<i8', little-endian values. The
// reader reads floats only and refuses them by name.
TEST(NpyWriter, WritesInt64IndexArraysThatTheFloatReaderRefuses) {
  const std::vector<std::int64_t> dims = {0, 5, 7, 63, -2, 1LL << 40};
  std::ostringstream out;
  write_npy(out, {2, 3}, dims.data(), dims.size(), {}, "dims");
  const std::string bytes = out.str();
  std::ostringstream as_float;
  const std::vector<double> same(6, 0.0);
  write_npy(as_float, {2, 3}, same.data(), same.size());
  std::string expected_header = as_float.str().substr(0, 128);
  const std::size_t code = expected_header.find("<f8");
  ASSERT_NE(code, std::string::npos);
  expected_header.replace(code, 3, "<i8");
  ASSERT_EQ(bytes.size(), 128u + 6 * 8);
  EXPECT_EQ(bytes.substr(0, 128), expected_header);
  for (std::size_t e = 0; e < dims.size(); ++e) {
    std::uint64_t v = 0;
    for (int b = 7; b >= 0; --b)
      v = (v << 8) | static_cast<unsigned char>(bytes[128 + 8 * e + static_cast<std::size_t>(b)]);
    EXPECT_EQ(static_cast<std::int64_t>(v), dims[e]) << e;
  }
  try {
    parse_npy<double>(bytes.data(), bytes.size(), "dims.npy");
    ADD_FAILURE() << "the reader accepted an int64 file";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("dims.npy"), std::string::npos) << e.what();
  }
}

TEST(NpyReader, Float64ReadAsFloatIsRoundedOnce) {
  ScratchDir dir;
  NpyArray<double> a{{4}, {0.1, 1.0 / 3.0, 1e-50, 1e300}};
  write_npy(dir / "d.npy", a);
  const NpyArray<float> f = read_npy<float>(dir / "d.npy");
  for (std::size_t e = 0; e < 4; ++e)
    EXPECT_EQ(f.data[e], static_cast<float>(a.data[e]));
  EXPECT_EQ(f.data[3], std::numeric_limits<float>::infinity());  // out of float range
}

TEST(NpyWriter, WritesEigenMatricesAsTwoDimensionalCOrderArrays) {
  ScratchDir dir;
  Eigen::MatrixXd col_major(2, 3);  // column-major storage: converted to C order
  col_major << 1, 2, 3, 4, 5, 6;
  write_npy(dir / "m.npy", col_major);
  const NpyArray<double> a = read_npy<double>(dir / "m.npy");
  EXPECT_EQ(a.shape, (std::vector<Index>{2, 3}));
  EXPECT_EQ(a.data, (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(read_npy_header(dir / "m.npy").fortran_order, false);
}

TEST(NpyWriter, RefusesBadArgumentsNamingTheFile) {
  ScratchDir dir;
  const std::string p = dir / "w.npy";
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(p, NpyArray<float>{{}, {1.0f}});
      },
      {p.c_str(), "0-D"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(p, NpyArray<float>{{1, 1, 1, 1}, {1.0f}});
      },
      {p.c_str(), "4-D"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(p, NpyArray<float>{{2, 2}, {1.0f}});
      },
      {p.c_str(), "(2, 2) has 4 elements, got 1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(p, NpyArray<float>{{-1}, {}});
      },
      {p.c_str(), "negative"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(p, NpyArray<float>{{1}, {1.0f}}, {4});
      },
      {p.c_str(), "version 4"}));
  const std::string nowhere = dir / "no/such/dir/w.npy";
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        write_npy(nowhere, NpyArray<float>{{1}, {1.0f}});
      },
      {nowhere.c_str(), "cannot open for writing"}));
}

// A shape whose element count (or byte count) does not fit is refused before
// anything is written: the product used to wrap around (2^32 * 2^32 = 0 in
// 64 bits), so an empty data vector "matched" and the writer produced a file
// its own reader refuses. The writer enforces the reader's limits: every
// dimension <= 2^53, the byte count <= the largest Index.
TEST(NpyWriter, RefusesShapesWhoseSizeOverflowsAndWritesNothing) {
  ScratchDir dir;
  const std::string p = dir / "o.npy";
  write_file(p, "keep me");
  const Index two32 = Index(1) << 32, two53 = Index(1) << 53;
  struct Case {
    std::vector<Index> shape;
    std::size_t count;  // what the caller claims to pass
    const char* message;
  };
  const std::vector<Case> cases = {
      {{two32, two32}, 0, "(4294967296, 4294967296) is too large"},  // 2^64 elements: wraps to 0
      {{two32, two32, two32}, 0, "too large"},                       // 2^96 elements: wraps to 0
      {{two53, 2048}, 0, "too large"},                               // 2^64 elements: wraps to 0
      {{two53, 256}, std::size_t(1) << 61, "too large"},             // 2^61 doubles: 2^64 bytes wraps to 0
      {{two53 + 1, 0}, 0, "dimension 9007199254740993 exceeds"},     // beyond the reader's limit
  };
  const double one[1] = {1.0};
  for (const Case& c : cases) {
    for (const bool fortran : {false, true}) {
      const NpyWriteOptions opt{0, NpyByteOrder::little, fortran};
      std::ostringstream os;
      EXPECT_TRUE(throws_invalid_argument([&] { write_npy(os, c.shape, one, c.count, opt, "mem.npy"); },
                                          {"npy: 'mem.npy'", c.message}))
          << npy_shape_string(c.shape);
      EXPECT_TRUE(os.str().empty()) << "nothing may be written for " << npy_shape_string(c.shape);
    }
    if (c.count == 0) {
      EXPECT_TRUE(throws_invalid_argument(
          [&] {
            write_npy(p, NpyArray<float>{c.shape, {}});
          },
          {p.c_str(), c.message}))
          << npy_shape_string(c.shape);
      EXPECT_EQ(read_file(p), "keep me") << "the file must be left alone for " << npy_shape_string(c.shape);
    }
  }
  // At the limits the writer and the reader agree: an empty array with a
  // 2^53 dimension is written and read back.
  const NpyArray<double> edge{{0, two53}, {}};
  write_npy(p, edge);
  EXPECT_EQ(read_npy<double>(p).shape, edge.shape);
  // Any other refused argument also leaves the file alone.
  write_file(p, "keep me");
  EXPECT_TRUE(throws_invalid_argument([&] { write_npy(p, NpyArray<float>{{2, 2}, {1.0f}}); }, {p.c_str()}));
  EXPECT_EQ(read_file(p), "keep me");
}

TEST(NpyReader, MissingFileIsAClearError) {
  ScratchDir dir;
  const std::string missing = dir / "missing.npy";
  EXPECT_TRUE(throws_invalid_argument([&] { read_npy<float>(missing); },
                                      {"npy: '", missing.c_str(), "cannot open", "No such file"}));
  EXPECT_TRUE(throws_invalid_argument([&] { read_npy_header(missing); }, {missing.c_str(), "cannot open"}));
}

// Runs `read` on another thread and passes when it throws
// std::invalid_argument containing every needle within 5 s. A reader blocked
// in open(2) on a FIFO (waiting for a writer that never comes) is released by
// opening the FIFO for writing, so a regression fails instead of hanging.
template <typename F>
::testing::AssertionResult refused_in_time(F read, const std::string& fifo_to_release,
                                           std::initializer_list<const char*> needles) {
  auto done = std::async(std::launch::async, [&] { return throws_invalid_argument(read, needles); });
  if (done.wait_for(std::chrono::seconds(5)) == std::future_status::ready) return done.get();
  if (!fifo_to_release.empty()) {
    const int fd = ::open(fifo_to_release.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);  // the blocked reader now sees end of file
  }
  done.wait();
  return ::testing::AssertionFailure() << "still blocked after 5 s";
}

// A FIFO, a directory, a character device and a socket are refused by name,
// without blocking: the file is opened non-blocking and fstat on the opened
// descriptor must say "regular file" before a byte is read.
TEST(NpyReader, RefusesNonRegularFilesWithoutBlocking) {
  ScratchDir dir;
  const std::string fifo = dir / "pipe.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const std::string fifo_c = fifo;
  EXPECT_TRUE(refused_in_time([&] { read_npy<float>(fifo_c); }, fifo,
                              {"npy: '", fifo.c_str(), "not a regular file", "FIFO"}));
  EXPECT_TRUE(refused_in_time([&] { read_npy<double>(fifo_c); }, fifo, {fifo.c_str(), "not a regular file"}));
  EXPECT_TRUE(refused_in_time([&] { read_npy_header(fifo_c); }, fifo, {fifo.c_str(), "not a regular file"}));

  for (const std::string& path : {dir.str(), std::string("/dev/null")}) {
    const char* kind = path == "/dev/null" ? "character device" : "directory";
    EXPECT_TRUE(
        refused_in_time([&] { read_npy<float>(path); }, "", {path.c_str(), "not a regular file", kind}));
    EXPECT_TRUE(
        refused_in_time([&] { read_npy_header(path); }, "", {path.c_str(), "not a regular file", kind}));
  }

  // A Unix-domain socket (open(2) fails on it with ENXIO: the message still
  // says what it is). sun_path holds 108 bytes; skip if the scratch path is longer.
  const std::string sock = dir / "s.npy";
  sockaddr_un addr{};
  if (sock.size() < sizeof(addr.sun_path)) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    EXPECT_TRUE(
        refused_in_time([&] { read_npy<float>(sock); }, "", {sock.c_str(), "not a regular file", "socket"}));
    EXPECT_TRUE(refused_in_time([&] { read_npy_header(sock); }, "", {sock.c_str(), "not a regular file"}));
    ::close(fd);
  }

  // A symbolic link to a regular file is read (through the link); to a FIFO, refused.
  const std::string target = dir / "real.npy", link = dir / "link.npy", fifo_link = dir / "fifo_link.npy";
  write_npy(target, counting_array<float>({2, 3}));
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  ASSERT_EQ(::symlink(fifo.c_str(), fifo_link.c_str()), 0);
  EXPECT_EQ(read_npy<float>(link).data, counting_array<float>({2, 3}).data);
  EXPECT_TRUE(
      refused_in_time([&] { read_npy<float>(fifo_link); }, fifo, {fifo_link.c_str(), "not a regular file"}));
}

// --- the corpus of broken files -------------------------------------------

struct Broken {
  const char* name;
  std::string bytes;
  const char* message;  // a substring the error must contain
};

std::vector<Broken> broken_corpus() {
  const std::string d6(24, '\0');  // six float32 elements
  const std::string good = test::npy_dict("'<f4'", "False", "(2, 3)");
  std::string huge_len = npy_file(good, d6);
  huge_len[8] = '\xff';
  huge_len[9] = '\xff';  // header length 65535, far beyond the file
  std::string v2_huge = npy_file(good, d6, 2);
  v2_huge[8] = v2_huge[9] = v2_huge[10] = v2_huge[11] = '\xff';  // 4 GiB header
  std::string non_ascii = npy_file(good, d6);
  non_ascii[20] = '\xe9';
  std::string nul = npy_file(good, d6);
  nul[30] = '\0';
  return {
      {"empty", "", "empty file"},
      {"short", "\x93NUM", "not a .npy file"},
      {"magic only", "\x93NUMPY\x01", "too short"},
      {"bad magic", std::string("\x93NUMPX\x01\x00", 8) + std::string(200, ' '), "not a .npy file"},
      {"text file", "descr,fortran_order,shape\n1,2,3\n", "not a .npy file"},
      {"version 4.0", std::string("\x93NUMPY\x04\x00", 8) + std::string(200, ' '), "version 4.0"},
      {"version 1.1", "\x93NUMPY\x01\x01" + std::string(200, ' '), "version 1.1"},
      {"version 0.0", std::string("\x93NUMPY\x00\x00", 8) + std::string(200, ' '), "version 0.0"},
      {"no header length", std::string("\x93NUMPY\x02\x00\x10", 9), "too short"},
      {"header beyond file", huge_len, "the header claims 65535 bytes"},
      {"oversized header", v2_huge, "exceeds the limit"},
      {"non-ASCII header", non_ascii, "byte 0xe9"},
      {"NUL in header", nul, "byte 0x00"},
      {"not a dict", npy_file("['descr', 'shape']", ""), "must be a Python dict"},
      {"unterminated dict", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", d6),
       "expected ',' or '}'"},
      {"text after dict", npy_file(good + " x", d6), "unexpected text after the dict"},
      {"missing shape", npy_file("{'descr': '<f4', 'fortran_order': False}", d6), "missing key 'shape'"},
      {"missing descr", npy_file("{'fortran_order': False, 'shape': (2, 3)}", d6), "missing key 'descr'"},
      {"extra key", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", d6),
       "unexpected key 'x'"},
      {"duplicate key",
       npy_file("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", d6),
       "duplicate key 'descr'"},
      {"unquoted key", npy_file("{descr: '<f4'}", d6), "quoted string"},
      {"unterminated string", npy_file("{'descr': '<f4}", d6), "unterminated string"},
      {"escape in string", npy_file("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (6,)}", d6),
       "escape"},
      {"int32", npy_file(test::npy_dict("'<i4'", "False", "(2, 3)"), d6), "unsupported dtype '<i4'"},
      {"int16", npy_file(test::npy_dict("'<i2'", "False", "(2, 3)"), std::string(12, '\0')),
       "unsupported dtype '<i2'"},
      {"float128", npy_file(test::npy_dict("'<f16'", "False", "(2, 3)"), std::string(96, '\0')),
       "unsupported dtype '<f16'"},
      {"unsized float", npy_file(test::npy_dict("'<f'", "False", "(2, 3)"), d6), "unsupported dtype '<f'"},
      {"complex64", npy_file(test::npy_dict("'<c8'", "False", "(2, 3)"), d6 + d6), "unsupported dtype '<c8'"},
      {"native-order descr", npy_file(test::npy_dict("'=f4'", "False", "(2, 3)"), d6),
       "unsupported dtype '=f4'"},
      {"object", npy_file(test::npy_dict("'|O'", "False", "(2, 3)"), d6), "unsupported dtype '|O'"},
      {"structured", npy_file(test::npy_dict("[('a', '<f4')]", "False", "(2, 3)"), d6), "structured"},
      {"fortran_order yes", npy_file(test::npy_dict("'<f4'", "'yes'", "(2, 3)"), d6), "True or False"},
      {"fortran_order 1", npy_file(test::npy_dict("'<f4'", "1", "(2, 3)"), d6), "True or False"},
      {"shape not a tuple", npy_file(test::npy_dict("'<f4'", "False", "[2, 3]"), d6), "must be a tuple"},
      {"shape (6) is an int", npy_file(test::npy_dict("'<f4'", "False", "(6)"), d6), "is not a tuple"},
      {"0-D", npy_file(test::npy_dict("'<f4'", "False", "()"), std::string(4, '\0')), "0-D"},
      {"4-D", npy_file(test::npy_dict("'<f4'", "False", "(1, 2, 3, 1)"), d6), "more than 3 dimensions"},
      {"negative dimension", npy_file(test::npy_dict("'<f4'", "False", "(-2, 3)"), d6), "negative dimension"},
      {"float dimension", npy_file(test::npy_dict("'<f4'", "False", "(2.5, 3)"), d6), "expected ',' or ')'"},
      {"huge dimension", npy_file(test::npy_dict("'<f4'", "False", "(99999999999999999999999,)"), d6),
       "too large"},
      {"product overflows",
       npy_file(test::npy_dict("'<f8'", "False", "(4294967296, 4294967296, 4294967296)"), d6),
       "too large to address"},
      {"product overflows 2", npy_file(test::npy_dict("'<f8'", "False", "(9007199254740992, 1024)"), d6),
       "too large to address"},
      {"truncated data", npy_file(good, d6.substr(0, 20)), "truncated: shape (2, 3) float32 needs 24 bytes"},
      {"no data", npy_file(good, ""), "the file has 0"},
      {"trailing data", npy_file(good, d6 + "xyz"), "3 unexpected bytes after the 24 bytes"},
      {"two arrays", npy_file(good, d6) + npy_file(good, d6), "unexpected bytes"},
      {"big shape, small file", npy_file(test::npy_dict("'<f4'", "False", "(4096, 4096, 128)"), d6),
       "needs 8589934592 bytes"},
  };
}

TEST(NpyReader, RefusesEveryBrokenFileWithAMessageNamingIt) {
  ScratchDir dir;
  int n = 0;
  for (const Broken& b : broken_corpus()) {
    const std::string path = dir / ("broken" + std::to_string(n++) + ".npy");
    write_file(path, b.bytes);
    EXPECT_TRUE(throws_invalid_argument([&] { read_npy<float>(path); }, {"npy: '", path.c_str(), b.message}))
        << b.name;
    EXPECT_TRUE(throws_invalid_argument([&] { read_npy<double>(path); }, {path.c_str(), b.message}))
        << b.name;
    EXPECT_TRUE(throws_invalid_argument([&] { read_npy_header(path); }, {path.c_str()})) << b.name;
    EXPECT_TRUE(throws_invalid_argument([&] { parse_npy<float>(b.bytes.data(), b.bytes.size(), b.name); },
                                        {b.name, b.message}))
        << b.name;
  }
  EXPECT_GE(n, 40);
}

TEST(NpyReader, EveryTruncationAndExtensionOfAValidFileIsRefused) {
  for (const char* file : {"f4_3d_big_fortran.npy", "f8_1d.npy", "f4_2d_v2.npy", "f2_3d_big_fortran.npy"}) {
    const std::string good = read_file(corpus + "/" + file);
    ASSERT_FALSE(good.empty()) << file;
    ASSERT_NO_THROW(parse_npy<double>(good.data(), good.size(), file));
    for (std::size_t len = 0; len < good.size(); ++len)
      EXPECT_TRUE(throws_invalid_argument([&] { parse_npy<double>(good.data(), len, file); }, {file}))
          << file << " cut to " << len << " bytes";
    const std::string longer = good + '\0';
    EXPECT_TRUE(throws_invalid_argument([&] { parse_npy<double>(longer.data(), longer.size(), file); },
                                        {"1 unexpected bytes"}));
  }
}

// --- numpy itself, when installed --------------------------------------------

const std::vector<Index> interop_shapes[] = {{7}, {3, 5}, {2, 3, 4}};

std::string interop_name(NpyDtype dtype, NpyByteOrder order, bool fortran, int version, std::size_t ndim) {
  return std::string(dtype == NpyDtype::float16 ? "f2" : (dtype == NpyDtype::float32 ? "f4" : "f8")) +
         (order == NpyByteOrder::little ? "_le" : "_be") + (fortran ? "_F" : "_C") + "_v" +
         std::to_string(version) + "_" + std::to_string(ndim) + "d.npy";
}

TEST(NpyNumpyInterop, NumpyReadsWhatAttnkitWritesAndViceVersa) {
  if (std::string(ATTNKIT_TEST_PYTHON).empty())
    GTEST_SKIP()
        << "no Python with numpy was found at configure time (install python3-numpy and re-run cmake);"
           " the committed numpy files in tests/io/npy_corpus are still checked";
  ScratchDir ours, theirs;
  int written = 0;
  for (const NpyDtype dtype : {NpyDtype::float16, NpyDtype::float32, NpyDtype::float64})
    for (const NpyByteOrder order : {NpyByteOrder::little, NpyByteOrder::big})
      for (const bool fortran : {false, true})
        for (const int version : {1, 2, 3})
          for (const auto& shape : interop_shapes) {
            const NpyWriteOptions opt{version, order, fortran};
            const std::string path = ours / interop_name(dtype, order, fortran, version, shape.size());
            if (dtype == NpyDtype::float16)
              write_npy(path, counting_array<Eigen::half>(shape), opt);
            else if (dtype == NpyDtype::float32)
              write_npy(path, counting_array<float>(shape), opt);
            else
              write_npy(path, counting_array<double>(shape), opt);
            ++written;
          }
  ASSERT_EQ(written, 108);
  EXPECT_EQ(run_python("check '" + ours.str() + "'"), 0) << "numpy refused or misread a file attnkit wrote";

  ASSERT_EQ(run_python("write '" + theirs.str() + "'"), 0);
  int read = 0;
  for (const NpyDtype dtype : {NpyDtype::float16, NpyDtype::float32, NpyDtype::float64})
    for (const NpyByteOrder order : {NpyByteOrder::little, NpyByteOrder::big})
      for (const bool fortran : {false, true})
        for (const int version : {1, 2, 3})
          for (const auto& shape : interop_shapes) {
            const std::string path = theirs / interop_name(dtype, order, fortran, version, shape.size());
            const NpyHeader h = read_npy_header(path);
            EXPECT_EQ(h.dtype, dtype);
            EXPECT_EQ(h.byte_order, order);
            EXPECT_EQ(h.fortran_order, fortran && shape.size() > 1) << path;  // numpy writes 1-D as C order
            EXPECT_EQ(h.major_version, version);
            const NpyArray<double> a = read_npy<double>(path);
            ASSERT_EQ(a.shape, shape) << path;
            for (std::size_t e = 0; e < a.data.size(); ++e)
              ASSERT_EQ(a.data[e], value<double>(e)) << path;
            ++read;
          }
  EXPECT_EQ(read, 108);
}

}  // namespace
}  // namespace attnkit
