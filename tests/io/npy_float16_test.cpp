// Tests of float16 ('<f2', '>f2') in attnkit/io/npy.hpp: exact reading into
// float and double, bit-exact reading into and writing from Eigen::half, and
// rounding to float16 (float32/float64 files read as Eigen::half, float and
// double data written with NpyWriteOptions::dtype = float16). Expected values
// are hand-computed bit patterns, an independent reference (the nearest half
// found by search, ties decided at the exact midpoint), and, when numpy is
// installed, numpy's own conversions.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "attnkit/io/npy.hpp"
#include "file_util.hpp"
#include "npy_test_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::npy_dict;
using test::npy_file;
using test::run_python;
using test::ScratchDir;
using test::throws_invalid_argument;

bool host_little_endian() {
  const std::uint32_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// Raw element bytes of `values` in the requested byte order, built without
// the library.
template <typename T>
std::string raw_bytes(const std::vector<T>& values, bool big_endian) {
  std::string out(values.size() * sizeof(T), '\0');
  for (std::size_t e = 0; e < values.size(); ++e) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &values[e], sizeof(T));
    if (big_endian == host_little_endian())
      for (std::size_t i = 0; i < sizeof(T) / 2; ++i)
        std::swap(b[i], b[sizeof(T) - 1 - i]);
    std::memcpy(&out[e * sizeof(T)], b, sizeof(T));
  }
  return out;
}

// A 1-D .npy file of `values` with descr `code` ('f2', 'f4', 'f8').
template <typename T>
std::string npy_1d(const std::vector<T>& values, const char* code, bool big_endian = false) {
  const std::string descr = std::string("'") + (big_endian ? '>' : '<') + code + "'";
  return npy_file(npy_dict(descr, "False", "(" + std::to_string(values.size()) + ",)"),
                  raw_bytes(values, big_endian));
}

template <typename T>
auto bits_of(T x) {
  using Bits = std::conditional_t<sizeof(T) == 2, std::uint16_t,
                                  std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>;
  Bits b;
  std::memcpy(&b, &x, sizeof(T));
  return b;
}

std::uint16_t half_bits(Eigen::half h) {
  return bits_of(h);
}

// The value of half bit pattern h from the definition (-1)^s 2^(e-15)
// (1 + m/1024), subnormal (-1)^s m 2^-24, in long double (exact).
long double half_value(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const long double magnitude = e == 0 ? std::ldexp(static_cast<long double>(m), -24)
                                       : (e == 31 ? (m == 0 ? std::numeric_limits<long double>::infinity()
                                                            : std::numeric_limits<long double>::quiet_NaN())
                                                  : std::ldexp(static_cast<long double>(1024 + m), e - 25));
  return (h & 0x8000) ? -magnitude : magnitude;
}

// --- reading float16 ---------------------------------------------------------

struct HalfCase {
  std::uint16_t bits;
  double value;  // exact: hand-computed from the bit pattern
};

const std::vector<HalfCase>& half_cases() {
  static const std::vector<HalfCase> cases = {
      {0x0000, 0.0},
      {0x8000, -0.0},
      {0x0001, 5.9604644775390625e-08},     // 2^-24, the smallest subnormal
      {0x8001, -5.9604644775390625e-08},    //
      {0x0002, 1.1920928955078125e-07},     // 2^-23
      {0x03ff, 6.0975551605224609375e-05},  // 1023 * 2^-24, the largest subnormal
      {0x0400, 6.103515625e-05},            // 2^-14, the smallest normal
      {0x0401, 6.1094760894775390625e-05},  // 1025 * 2^-24
      {0x3555, 0.333251953125},             // 2^-2 (1 + 341/1024), the half nearest 1/3
      {0x3bff, 0.99951171875},              // 1 - 2^-11
      {0x3c00, 1.0},
      {0x3c01, 1.0009765625},  // 1 + 2^-10
      {0xc000, -2.0},
      {0x7bfe, 65472.0},
      {0x7bff, 65504.0},  // the largest half
      {0xfbff, -65504.0},
      {0x7c00, std::numeric_limits<double>::infinity()},
      {0xfc00, -std::numeric_limits<double>::infinity()},
  };
  return cases;
}

// NaNs keep their sign and payload, moved to the top of the wider mantissa
// (numpy's astype does the same; checked against numpy below).
struct NanCase {
  std::uint16_t bits;
  std::uint32_t as_float;
  std::uint64_t as_double;
};
const NanCase nan_cases[] = {
    {0x7e00, 0x7fc00000u, 0x7ff8000000000000ull},  // the quiet NaN
    {0xfe00, 0xffc00000u, 0xfff8000000000000ull},  // negative
    {0x7c01, 0x7f802000u, 0x7ff0040000000000ull},  // signalling, payload 1
    {0x7d55, 0x7faaa000u, 0x7ff5540000000000ull},  // signalling, payload 0x155
};

TEST(NpyFloat16, ReadIntoFloatAndDoubleIsExact) {
  std::vector<std::uint16_t> bits;
  for (const HalfCase& c : half_cases())
    bits.push_back(c.bits);
  for (const NanCase& c : nan_cases)
    bits.push_back(c.bits);
  for (const bool big : {false, true}) {
    const std::string file = npy_1d(bits, "f2", big);
    const NpyHeader h = parse_npy_header(file.data(), file.size(), "h.npy");
    EXPECT_EQ(h.dtype, NpyDtype::float16);
    EXPECT_EQ(h.byte_order, big ? NpyByteOrder::big : NpyByteOrder::little);
    EXPECT_EQ(h.data_bytes(), 2 * bits.size());
    const NpyArray<float> f = parse_npy<float>(file.data(), file.size(), "h.npy");
    const NpyArray<double> d = parse_npy<double>(file.data(), file.size(), "h.npy");
    ASSERT_EQ(f.data.size(), bits.size());
    ASSERT_EQ(d.data.size(), bits.size());
    std::size_t e = 0;
    for (const HalfCase& c : half_cases()) {
      // Exact equality and the sign bit (so -0 is told from +0).
      EXPECT_EQ(static_cast<double>(f.data[e]), c.value) << std::hex << c.bits;
      EXPECT_EQ(std::signbit(f.data[e]), std::signbit(c.value)) << std::hex << c.bits;
      EXPECT_EQ(d.data[e], c.value) << std::hex << c.bits;
      EXPECT_EQ(std::signbit(d.data[e]), std::signbit(c.value)) << std::hex << c.bits;
      ++e;
    }
    for (const NanCase& c : nan_cases) {
      EXPECT_EQ(bits_of(f.data[e]), c.as_float) << std::hex << c.bits;
      EXPECT_EQ(bits_of(d.data[e]), c.as_double) << std::hex << c.bits;
      ++e;
    }
  }
}

// Every one of the 65536 bit patterns: into Eigen::half bit for bit (both
// byte orders), into float and double exactly equal to the definition.
TEST(NpyFloat16, EveryBitPatternIsReadExactly) {
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<std::uint16_t>(i);
  for (const bool big : {false, true}) {
    const std::string file = npy_1d(all, "f2", big);
    const NpyArray<Eigen::half> h = parse_npy<Eigen::half>(file.data(), file.size(), "all.npy");
    const NpyArray<float> f = parse_npy<float>(file.data(), file.size(), "all.npy");
    const NpyArray<double> d = parse_npy<double>(file.data(), file.size(), "all.npy");
    ASSERT_EQ(h.data.size(), all.size());
    for (std::size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(half_bits(h.data[i]), all[i]) << i;
      const long double v = half_value(all[i]);
      if (std::isnan(v)) {
        ASSERT_TRUE(std::isnan(f.data[i]) && std::isnan(d.data[i])) << i;
        ASSERT_EQ(std::signbit(f.data[i]), (all[i] & 0x8000) != 0) << i;
        continue;
      }
      ASSERT_EQ(static_cast<long double>(f.data[i]), v) << i;
      ASSERT_EQ(static_cast<long double>(d.data[i]), v) << i;
      ASSERT_EQ(std::signbit(f.data[i]), std::signbit(v)) << i;
    }
  }
}

// --- rounding to float16 -----------------------------------------------------

// Hand-computed roundings (to nearest, ties to even). `value` is a double;
// the cases exact in float are also tried from float data / f4 files.
struct RoundCase {
  double value;
  std::uint16_t bits;
  const char* why;
};

const std::vector<RoundCase>& round_cases() {
  static const std::vector<RoundCase> cases = {
      {1.0, 0x3c00, "exact"},
      {1.0 + 0x1p-11, 0x3c00, "tie between 0x3c00 and 0x3c01: to the even 0x3c00"},
      {1.0 + 0x1p-11 + 0x1p-23, 0x3c01, "just above the tie (exact in float)"},
      {1.0 + 0x1p-11 + 0x1p-40, 0x3c01, "just above the tie; via float (to 1 + 2^-11) it would tie down"},
      {1.0 + 0x1p-11 - 0x1p-40, 0x3c00, "just below the tie"},
      {1.0 + 3 * 0x1p-11, 0x3c02, "tie between 0x3c01 and 0x3c02: to the even 0x3c02"},
      {3.0, 0x4200, "exact"},
      {2049.0, 0x6800, "tie between 2048 (0x6800) and 2050: to the even 2048"},
      {2049.0 + 0x1p-20, 0x6801, "above the tie: 2050"},
      {32768.0, 0x7800, "2^15"},
      {1.0 / 3.0, 0x3555, "0.33325.. is nearer than 0.33349.."},
      {0.1, 0x2e66, "numpy gives 0x2e66"},
      {-0.1, 0xae66, "sign"},
      {65504.0, 0x7bff, "the largest half"},
      {65520.0 - 0x1p-20, 0x7bff, "just below the overflow threshold"},
      {65520.0, 0x7c00, "tie between 65504 (odd) and 2^16: to 2^16, which overflows"},
      {-65520.0, 0xfc00, "negative overflow"},
      {1e6, 0x7c00, "overflow"},
      {static_cast<double>(std::numeric_limits<float>::max()), 0x7c00, "overflow"},
      {std::numeric_limits<double>::infinity(), 0x7c00, "inf"},
      {-std::numeric_limits<double>::infinity(), 0xfc00, "-inf"},
      {0x1p-24, 0x0001, "the smallest subnormal"},
      {0x1p-25, 0x0000, "tie between 0 and 2^-24: to 0"},
      {0x1p-25 + 0x1p-60, 0x0001, "just above the tie"},
      {-0x1p-25, 0x8000, "negative tie to -0"},
      {3 * 0x1p-25, 0x0002, "tie between 1 and 2 (x 2^-24): to 2"},
      {5 * 0x1p-25, 0x0002, "tie between 2 and 3 (x 2^-24): to 2"},
      {0x1p-14 - 0x1p-25, 0x0400, "tie between the largest subnormal and 2^-14: to 2^-14 (0x0400, even)"},
      {0x1p-14 - 0x1p-25 - 0x1p-50, 0x03ff, "just below: the largest subnormal"},
      {1e-300, 0x0000, "underflow"},
      {-1e-300, 0x8000, "underflow keeps the sign"},
      {std::numeric_limits<double>::denorm_min(), 0x0000, "underflow"},
      {0.0, 0x0000, "zero"},
      {-0.0, 0x8000, "negative zero"},
  };
  return cases;
}

// NaN: sign and the top 10 payload bits kept; a payload that would vanish
// becomes 1 (numpy's rule, so NaN stays NaN and signalling stays signalling).
const std::uint32_t float_nans[][2] = {
    {0x7fc00000u, 0x7e00}, {0xffc00000u, 0xfe00}, {0x7f800001u, 0x7c01}, {0xff812345u, 0xfc09}};
const std::uint64_t double_nans[][2] = {
    {0x7ff8000000000000ull, 0x7e00}, {0x7ff0000000000001ull, 0x7c01}, {0xfff5540000000000ull, 0xfd55}};

template <typename T>
T from_bits(std::uint64_t b) {
  T x;
  if constexpr (sizeof(T) == 4) {
    const auto b32 = static_cast<std::uint32_t>(b);
    std::memcpy(&x, &b32, 4);
  } else {
    std::memcpy(&x, &b, 8);
  }
  return x;
}

// The data bytes of a written file as half bit patterns (little endian).
std::vector<std::uint16_t> written_halves(const std::string& file) {
  const NpyHeader h = parse_npy_header(file.data(), file.size(), "written");
  EXPECT_EQ(h.dtype, NpyDtype::float16);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(h.size()));
  for (std::size_t e = 0; e < out.size(); ++e) {
    const auto lo = static_cast<unsigned char>(file[h.data_offset + 2 * e]);
    const auto hi = static_cast<unsigned char>(file[h.data_offset + 2 * e + 1]);
    out[e] = static_cast<std::uint16_t>(h.byte_order == NpyByteOrder::little ? lo | hi << 8 : hi | lo << 8);
  }
  return out;
}

NpyWriteOptions as_float16(NpyByteOrder order = NpyByteOrder::little) {
  NpyWriteOptions o;
  o.byte_order = order;
  o.dtype = NpyDtype::float16;
  return o;
}

// Checks both public paths to float16 for `values` against `expected`:
// reading a file of T as Eigen::half, and writing T data as float16.
template <typename T>
void expect_rounds_to(const std::vector<T>& values, const std::vector<std::uint16_t>& expected,
                      const std::vector<std::string>& labels) {
  const std::string file = npy_1d(values, sizeof(T) == 4 ? "f4" : "f8");
  const NpyArray<Eigen::half> read = parse_npy<Eigen::half>(file.data(), file.size(), "src.npy");
  for (const NpyByteOrder order : {NpyByteOrder::little, NpyByteOrder::big}) {
    std::ostringstream os;
    write_npy(os, {static_cast<Index>(values.size())}, values.data(), values.size(), as_float16(order));
    const std::vector<std::uint16_t> written = written_halves(os.str());
    ASSERT_EQ(written.size(), expected.size());
    for (std::size_t e = 0; e < values.size(); ++e) {
      EXPECT_EQ(written[e], expected[e])
          << "written from " << (sizeof(T) == 4 ? "float " : "double ") << values[e] << ": " << labels[e];
      if (order == NpyByteOrder::little) {
        EXPECT_EQ(half_bits(read.data[e]), expected[e])
            << "read from f" << sizeof(T) << " " << values[e] << ": " << labels[e];
      }
    }
  }
}

TEST(NpyFloat16, RoundsToNearestEvenOnceWithOverflowToInfinity) {
  std::vector<double> d;
  std::vector<float> f;
  std::vector<std::uint16_t> d_bits, f_bits;
  std::vector<std::string> d_why, f_why;
  for (const RoundCase& c : round_cases()) {
    d.push_back(c.value);
    d_bits.push_back(c.bits);
    d_why.push_back(c.why);
    if (static_cast<double>(static_cast<float>(c.value)) == c.value || std::isinf(c.value)) {
      f.push_back(static_cast<float>(c.value));
      f_bits.push_back(c.bits);
      f_why.push_back(c.why);
    }
  }
  for (const auto& n : double_nans) {
    d.push_back(from_bits<double>(n[0]));
    d_bits.push_back(static_cast<std::uint16_t>(n[1]));
    d_why.push_back("NaN");
  }
  for (const auto& n : float_nans) {
    f.push_back(from_bits<float>(n[0]));
    f_bits.push_back(static_cast<std::uint16_t>(n[1]));
    f_why.push_back("NaN");
  }
  ASSERT_GE(f.size(), 25u);  // most cases are exact in float
  expect_rounds_to(d, d_bits, d_why);
  expect_rounds_to(f, f_bits, f_why);
}

// The independent reference: the nearest half found by binary search over the
// finite non-negative halves (bit patterns 0x0000 .. 0x7bff increase with the
// value), the tie decided by comparing with the exact midpoint of the two
// neighbours (at most 12 significant bits: exact in double), towards the even
// bit pattern; 2^16 stands for the overflow side (any x >= 65520 -> inf).
std::uint16_t reference_half(double x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | 0x7c00;
  const auto value = [](unsigned k) {
    return k == 0x7c00 ? 65536.0 : static_cast<double>(half_value(static_cast<std::uint16_t>(k)));
  };
  unsigned lo = 0, hi = 0x7c00;  // value(lo) <= a < value(hi) once a < 65536
  if (a >= 65536.0) return sign | 0x7c00;
  while (hi - lo > 1) {
    const unsigned mid = (lo + hi) / 2;
    (value(mid) <= a ? lo : hi) = mid;
  }
  const double midpoint = (value(lo) + value(hi)) / 2;
  const unsigned k = a < midpoint ? lo : (a > midpoint ? hi : ((lo & 1u) == 0 ? lo : hi));
  return static_cast<std::uint16_t>(sign | k);
}

// Every tie between adjacent halves (and the overflow threshold 65520), one
// double ulp and one float ulp on either side, both signs, plus a strided
// sweep over all float bit patterns: reading and writing agree with the
// reference everywhere.
TEST(NpyFloat16, RoundingMatchesAnIndependentReferenceAtEveryTie) {
  std::vector<double> d;
  std::vector<float> f;
  for (unsigned k = 0; k < 0x7c00; ++k) {
    const double lo = static_cast<double>(half_value(static_cast<std::uint16_t>(k)));
    const double hi =
        k + 1 == 0x7c00 ? 65536.0 : static_cast<double>(half_value(static_cast<std::uint16_t>(k + 1)));
    const double tie = (lo + hi) / 2;
    for (const double x : {tie, std::nextafter(tie, 0.0), std::nextafter(tie, 1e300)}) {
      d.push_back(x);
      d.push_back(-x);
    }
    const auto t = static_cast<float>(tie);  // exact: 12 significant bits
    for (const float x : {t, std::nextafter(t, 0.0f), std::nextafter(t, 1e30f)}) {
      f.push_back(x);
      f.push_back(-x);
    }
  }
  for (std::uint64_t b = 0; b < (std::uint64_t(1) << 32); b += 65521) {
    const float x = from_bits<float>(b);
    if (!std::isnan(x)) f.push_back(x);  // NaNs: the hand-written cases above
  }
  const auto reference = [](const auto& values) {
    std::vector<std::uint16_t> r;
    for (const auto x : values)
      r.push_back(reference_half(static_cast<double>(x)));
    return r;
  };
  expect_rounds_to(d, reference(d), std::vector<std::string>(d.size(), "tie sweep"));
  expect_rounds_to(f, reference(f), std::vector<std::string>(f.size(), "float sweep"));
}

// --- writing from Eigen::half and between float types --------------------------

TEST(NpyFloat16, WritesEigenHalfBitForBitAndWidensExactly) {
  std::vector<Eigen::half> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i));
  for (const NpyByteOrder order : {NpyByteOrder::little, NpyByteOrder::big})
    for (const bool fortran : {false, true}) {
      std::ostringstream os;
      const std::vector<Index> shape = {16, 64, 64};
      write_npy(os, shape, all.data(), all.size(), {0, order, fortran});
      const std::string file = os.str();
      EXPECT_NE(file.find(order == NpyByteOrder::little ? "'descr': '<f2'" : "'descr': '>f2'"),
                std::string::npos);
      if (!fortran) {
        const std::vector<std::uint16_t> bits = written_halves(file);
        for (std::size_t i = 0; i < bits.size(); ++i)
          ASSERT_EQ(bits[i], i) << "element " << i;
      }
      const NpyArray<Eigen::half> back = parse_npy<Eigen::half>(file.data(), file.size(), "back");
      EXPECT_EQ(back.shape, shape);
      for (std::size_t i = 0; i < all.size(); ++i)
        ASSERT_EQ(half_bits(back.data[i]), i) << "element " << i;
    }
  // Half data written as float32 / float64 is exact: the values of the definition.
  for (const NpyDtype wide : {NpyDtype::float32, NpyDtype::float64}) {
    NpyWriteOptions o;
    o.dtype = wide;
    std::ostringstream os;
    write_npy(os, {65536}, all.data(), all.size(), o);
    const std::string file = os.str();
    EXPECT_EQ(parse_npy_header(file.data(), file.size(), "w").dtype, wide);
    const NpyArray<double> d = parse_npy<double>(file.data(), file.size(), "w");
    for (std::size_t i = 0; i < all.size(); ++i) {
      const long double v = half_value(static_cast<std::uint16_t>(i));
      if (std::isnan(v))
        ASSERT_TRUE(std::isnan(d.data[i])) << i;
      else
        ASSERT_EQ(static_cast<long double>(d.data[i]), v) << i;
    }
  }
  // Half matrices through the Eigen overload.
  ScratchDir dir;
  RowMatrix<Eigen::half> m(2, 2);
  m << Eigen::half(1.5f), Eigen::half(-2.0f), Eigen::half(65504.0f), Eigen::half(0.0f);
  write_npy(dir / "m.npy", m);
  const NpyArray<float> read = read_npy<float>(dir / "m.npy");
  EXPECT_EQ(read_npy_header(dir / "m.npy").dtype, NpyDtype::float16);
  EXPECT_EQ(read.data, (std::vector<float>{1.5f, -2.0f, 65504.0f, 0.0f}));
}

TEST(NpyFloat16, DtypeOptionRoundsDoubleToFloatOnceAndRefusesIntegers) {
  const std::vector<double> d = {0.1, 1.0 / 3.0, 1e300, -1e-50, 1.0 + 0x1p-24};
  NpyWriteOptions o;
  o.dtype = NpyDtype::float32;
  std::ostringstream os;
  write_npy(os, {5}, d.data(), d.size(), o);
  const std::string file = os.str();
  EXPECT_NE(file.find("'descr': '<f4'"), std::string::npos);
  const NpyArray<float> f = parse_npy<float>(file.data(), file.size(), "f");
  for (std::size_t e = 0; e < d.size(); ++e)
    EXPECT_EQ(bits_of(f.data[e]), bits_of(static_cast<float>(d[e]))) << d[e];  // IEEE: to nearest even
  // Integer index arrays have one file type.
  const std::vector<std::int64_t> ints = {1, 2};
  std::ostringstream never;
  EXPECT_TRUE(
      throws_invalid_argument([&] { write_npy(never, {2}, ints.data(), ints.size(), as_float16(), "i.npy"); },
                              {"npy: 'i.npy'", "int64", "float16"}));
  EXPECT_TRUE(never.str().empty());
  // The element count is checked against the file's item size: 2^62 halves
  // are 2^63 bytes, past the largest Index.
  const std::vector<Index> huge = {Index(1) << 53, Index(1) << 9};
  const float one = 1.0f;
  EXPECT_TRUE(throws_invalid_argument(
      [&] { write_npy(never, huge, &one, std::size_t(1) << 62, as_float16(), "h.npy"); }, {"too large"}));
}

// --- numpy itself, when installed --------------------------------------------

template <typename T>
std::vector<decltype(bits_of(T()))> bits_vector(const std::vector<T>& v) {
  std::vector<decltype(bits_of(T()))> out;
  for (const T& x : v)
    out.push_back(bits_of(x));
  return out;
}

// numpy writes every half bit pattern, its own conversions of them to float32
// and float64, and its own roundings of float32/float64 values to float16;
// attnkit must agree bit for bit (NaN payloads included). Then numpy checks
// the halves and the roundings attnkit writes.
TEST(NpyFloat16, NumpyAgreesBitForBit) {
  if (std::string(ATTNKIT_TEST_PYTHON).empty())
    GTEST_SKIP()
        << "no Python with numpy was found at configure time (install python3-numpy and re-run cmake)";
  ScratchDir theirs, ours;
  ASSERT_EQ(run_python("write16 '" + theirs.str() + "'"), 0);
  const NpyArray<Eigen::half> le = read_npy<Eigen::half>(theirs / "halves_le.npy");
  const NpyArray<Eigen::half> be = read_npy<Eigen::half>(theirs / "halves_be.npy");
  ASSERT_EQ(le.data.size(), 65536u);
  for (std::size_t i = 0; i < le.data.size(); ++i) {
    ASSERT_EQ(half_bits(le.data[i]), i);
    ASSERT_EQ(half_bits(be.data[i]), i);
  }
  EXPECT_EQ(bits_vector(read_npy<float>(theirs / "halves_le.npy").data),
            bits_vector(read_npy<float>(theirs / "halves_as_f4.npy").data));
  EXPECT_EQ(bits_vector(read_npy<double>(theirs / "halves_le.npy").data),
            bits_vector(read_npy<double>(theirs / "halves_as_f8.npy").data));
  for (const char* kind : {"f4", "f8"}) {
    const std::vector<Eigen::half> got =
        read_npy<Eigen::half>(theirs / (std::string("round_src_") + kind + ".npy")).data;
    const std::vector<Eigen::half> want =
        read_npy<Eigen::half>(theirs / (std::string("round_ref_") + kind + ".npy")).data;
    ASSERT_EQ(got.size(), want.size());
    std::size_t differ = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      differ += half_bits(got[i]) != half_bits(want[i]);
    EXPECT_EQ(differ, 0u) << kind << ": roundings that differ from numpy's";
  }

  std::vector<Eigen::half> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i));
  write_npy(ours / "attnkit_halves_le.npy", NpyArray<Eigen::half>{{65536}, all});
  write_npy(ours / "attnkit_halves_be.npy", NpyArray<Eigen::half>{{65536}, all},
            {0, NpyByteOrder::big, false});
  write_npy(ours / "attnkit_round_f8.npy", read_npy<double>(theirs / "round_src_f8.npy"), as_float16());
  EXPECT_EQ(run_python("check16 '" + ours.str() + "'"), 0)
      << "numpy refused or misread attnkit's float16 files";
}

}  // namespace
}  // namespace attnkit
