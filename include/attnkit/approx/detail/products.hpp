#pragma once

/// \file attnkit/approx/detail/products.hpp
/// Matrix products on the calling thread. Internal.
///
/// Eigen runs a large enough product on all OpenMP threads when it is called
/// outside a parallel region (unless EIGEN_DONT_PARALLELIZE or
/// Eigen::setNbThreads say otherwise). approx_attention parallelises over its
/// own work items and calls many small products, for which Eigen's team
/// start-up costs more than the product (and is ruinous on a loaded
/// machine), so its products run on one thread: the calling thread's
/// OpenMP thread count is set to 1 around the product and restored (an ICV
/// of the calling thread only). A count set with Eigen::setNbThreads takes
/// precedence over this.

#include "attnkit/detail/parallel.hpp"

namespace attnkit::detail {

/// Runs f() with the calling thread's OpenMP thread count at 1 (see above).
template <typename F>
void on_one_thread(F&& f) {
#if defined(_OPENMP)
  if (omp_get_num_threads() == 1 && omp_get_max_threads() > 1) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    f();
    omp_set_num_threads(saved);
    return;
  }
#endif
  f();
}

/// dst = lhs * rhs on the calling thread.
template <typename Dst, typename Lhs, typename Rhs>
void serial_product(Dst&& dst, const Lhs& lhs, const Rhs& rhs) {
  on_one_thread([&] { dst.noalias() = lhs * rhs; });
}

/// dst += lhs * rhs on the calling thread.
template <typename Dst, typename Lhs, typename Rhs>
void serial_product_add(Dst&& dst, const Lhs& lhs, const Rhs& rhs) {
  on_one_thread([&] { dst.noalias() += lhs * rhs; });
}

}  // namespace attnkit::detail
