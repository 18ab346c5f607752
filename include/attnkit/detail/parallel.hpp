#pragma once

/// \file attnkit/detail/parallel.hpp
/// Thread-count helpers over optional OpenMP. Without OpenMP (the including
/// translation unit not compiled with -fopenmp) everything runs on the
/// calling thread and a requested thread count is ignored.

#if defined(_OPENMP)
#include <omp.h>
#endif

/// `ATTNKIT_PRAGMA(omp parallel ...)`: an OpenMP pragma when OpenMP is on,
/// nothing otherwise (no -Wunknown-pragmas in builds without it).
#if defined(_OPENMP)
#define ATTNKIT_PRAGMA(x) _Pragma(#x)
#else
#define ATTNKIT_PRAGMA(x)
#endif

namespace attnkit::detail {

/// True when attnkit's kernels can use more than one thread in this build.
constexpr bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

/// Threads to use for `requested` (0 = as many as OpenMP would use).
inline int resolve_threads(int requested) {
#if defined(_OPENMP)
  if (requested > 0) return requested;
  return omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

}  // namespace attnkit::detail
