// Tests of attnkit/io/npy_header.hpp: the dtype names, the header parser on
// the spellings Python writes, and the size checks. Whole files (header and
// data) are tested in npy_test.cpp.

#include "attnkit/io/npy_header.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "npy_test_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::npy_dict;
using test::npy_file;
using test::throws_invalid_argument;

TEST(NpyDtypeNames, ToStringAndParseAreInverse) {
  for (const NpyDtype dtype : {NpyDtype::float16, NpyDtype::float32, NpyDtype::float64}) {
    const std::optional<NpyDtype> back = parse_npy_dtype(to_string(dtype));
    ASSERT_TRUE(back.has_value()) << to_string(dtype);
    EXPECT_EQ(*back, dtype);
  }
  EXPECT_STREQ(to_string(NpyDtype::float16), "float16");
  EXPECT_STREQ(to_string(NpyDtype::float32), "float32");
  EXPECT_STREQ(to_string(NpyDtype::float64), "float64");
  EXPECT_EQ(npy_item_size(NpyDtype::float16), 2u);
  EXPECT_EQ(npy_item_size(NpyDtype::float32), 4u);
  EXPECT_EQ(npy_item_size(NpyDtype::float64), 8u);
  EXPECT_EQ(npy_dtype_of<Eigen::half>(), NpyDtype::float16);
  EXPECT_EQ(npy_dtype_of<float>(), NpyDtype::float32);
  EXPECT_EQ(npy_dtype_of<double>(), NpyDtype::float64);
  for (const char* other : {"", "f2", "f4", "<f4", "Float32", "float", "half", "int64", "float32 "})
    EXPECT_FALSE(parse_npy_dtype(other).has_value()) << "'" << other << "'";
}

TEST(NpyHeaderParser, AcceptsTheHeaderVariantsPythonWrites) {
  const std::string d6(24, '\0');
  for (const std::string& text : {
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
           std::string("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}"),  // double quotes
           std::string("{'shape': (2,3), 'fortran_order': False, 'descr': '<f4'}"),           // any key order
           std::string("  {  'descr'  :  '<f4' ,'fortran_order':False,'shape':( 2 , 3 , ) }  "),
       }) {
    const std::string f = npy_file(text, d6);
    const NpyHeader h = parse_npy_header(f.data(), f.size(), "variant");
    EXPECT_EQ(h.shape, (std::vector<Index>{2, 3})) << text;
    EXPECT_EQ(h.dtype, NpyDtype::float32) << text;
    EXPECT_EQ(h.byte_order, NpyByteOrder::little) << text;
    EXPECT_FALSE(h.fortran_order) << text;
    EXPECT_EQ(h.data_offset, f.size() - d6.size()) << text;
    EXPECT_EQ(h.data_offset % 64, 0u) << text;  // npy_file pads as numpy does
    EXPECT_EQ(h.data_bytes(), 24u) << text;
  }
}

TEST(NpyHeaderParser, ReadsEveryDescrAndLayoutItSupports) {
  struct Case {
    const char* descr;
    NpyDtype dtype;
    NpyByteOrder order;
  };
  for (const Case c : {Case{"'<f2'", NpyDtype::float16, NpyByteOrder::little},
                       Case{"'>f2'", NpyDtype::float16, NpyByteOrder::big},
                       Case{"'<f4'", NpyDtype::float32, NpyByteOrder::little},
                       Case{"'>f4'", NpyDtype::float32, NpyByteOrder::big},
                       Case{"'<f8'", NpyDtype::float64, NpyByteOrder::little},
                       Case{"'>f8'", NpyDtype::float64, NpyByteOrder::big}})
    for (const bool fortran : {false, true})
      for (const int version : {1, 2, 3}) {
        const std::string f =
            npy_file(npy_dict(c.descr, fortran ? "True" : "False", "(3, 1, 2)"), "", version);
        const NpyHeader h = parse_npy_header(f.data(), f.size(), "h");
        EXPECT_EQ(h.dtype, c.dtype) << c.descr;
        EXPECT_EQ(h.byte_order, c.order) << c.descr;
        EXPECT_EQ(h.fortran_order, fortran);
        EXPECT_EQ(h.major_version, version);
        EXPECT_EQ(h.minor_version, 0);
        EXPECT_EQ(h.shape, (std::vector<Index>{3, 1, 2}));
        EXPECT_EQ(h.size(), 6);
        EXPECT_EQ(h.data_bytes(), 6 * npy_item_size(c.dtype));
        EXPECT_EQ(h.data_offset, f.size()) << "the header alone: the data starts at its end";
      }
}

// The byte count of the shape must fit in Index: 2^53 elements of 8 bytes are
// 2^56 bytes (fits); 2^53 * 1024 * 8 = 2^66 does not, nor does 2^96.
TEST(NpyHeaderParser, SizeChecksRefuseShapesTooLargeToAddress) {
  const auto header = [](const char* descr, const char* shape) {
    return npy_file(npy_dict(descr, "False", shape), "");
  };
  const std::string fits = header("'<f8'", "(9007199254740992,)");
  EXPECT_EQ(parse_npy_header(fits.data(), fits.size(), "fits").data_bytes(), std::size_t(1) << 56);
  const std::string empty = header("'<f8'", "(0, 9007199254740992, 9007199254740992)");
  EXPECT_EQ(parse_npy_header(empty.data(), empty.size(), "empty").size(), 0);
  for (const char* shape :
       {"(9007199254740992, 1024)", "(4294967296, 4294967296, 4294967296)", "(1152921504606846976,)"}) {
    const std::string f = header("'<f8'", shape);
    EXPECT_TRUE(throws_invalid_argument([&] { parse_npy_header(f.data(), f.size(), "big.npy"); },
                                        {"npy: 'big.npy'", "too large"}))
        << shape;
  }
}

}  // namespace
}  // namespace attnkit
