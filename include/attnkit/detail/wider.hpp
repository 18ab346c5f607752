#pragma once

/// \file attnkit/detail/wider.hpp
/// The accumulation type one step wider than a scalar type, used by reference
/// (oracle) computations: float -> double, double -> long double.

namespace attnkit::detail {

template <typename Scalar>
struct wider;
template <>
struct wider<float> {
  using type = double;
};
template <>
struct wider<double> {
  using type = long double;
};
template <>
struct wider<long double> {
  using type = long double;
};

template <typename Scalar>
using wider_t = typename wider<Scalar>::type;

}  // namespace attnkit::detail
