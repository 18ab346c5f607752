// The extension module attnkit._core: attnkit's Python bindings. The
// package attnkit (bench/python/attnkit/) re-exports it and adds the
// PyTorch-compatible scaled_dot_product_attention.

#include <Eigen/Core>

#include "attnkit/detail/parallel.hpp"
#include "attnkit/version.hpp"
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  namespace ak = attnkit_python;
  m.doc() = "attnkit's C++ kernels (the attnkit package re-exports them; docs/python.md)";
  m.attr("__version__") = attnkit::version_string;
  m.attr("simd") = Eigen::SimdInstructionSetsInUse();
  m.attr("openmp") = attnkit::detail::openmp_enabled();
  m.def(
      "max_threads", [] { return attnkit::detail::resolve_threads(0); },
      "The threads threads=0 uses (OpenMP's default team size; 1 without OpenMP).");
  ak::register_attention(m);
  ak::register_caches(m);
  ak::register_sparse(m);
  ak::register_softmax(m);
  ak::register_prune(m);
}
