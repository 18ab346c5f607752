// A downstream program: includes the umbrella header from the installed
// package, checks the version macros, and runs attention with the reference
// and the fused kernel (on two threads when built against attnkit::openmp).
#include <attnkit/attnkit.hpp>

#include <cstdio>

static_assert(ATTNKIT_VERSION_MAJOR == 0 && ATTNKIT_VERSION_MINOR >= 1, "unexpected attnkit version");

int main() {
  const auto w = attnkit::make_iid_workload<float>({64, 128, 16, 16}, 1);
  const attnkit::AttentionOptions causal{attnkit::Mask::causal()};
  const auto r = attnkit::reference_attention(w.q, w.k, w.v, causal);
  const auto f = attnkit::flash_attention(w.q, w.k, w.v, causal, attnkit::FlashConfig{2});
  bool ok = r.output.rows() == 64 && r.output.cols() == 16 && r.output.allFinite() &&
            attnkit::max_abs_error(r.output, f.output) < 1e-5;
#if defined(CONSUMER_EXPECTS_OPENMP)
  ok = ok && attnkit::detail::openmp_enabled();
#else
  ok = ok && !attnkit::detail::openmp_enabled();
#endif
  std::printf("attnkit %s consumer (openmp %d): %s\n", attnkit::version_string,
              static_cast<int>(attnkit::detail::openmp_enabled()), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
