#pragma once

/// \file attnkit/io.hpp
/// NumPy .npy files: the header format and the array reader and writer.

#include "attnkit/io/npy.hpp"
#include "attnkit/io/npy_header.hpp"
