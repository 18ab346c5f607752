// A downstream program: includes the umbrella header from the installed
// package, checks the version macros, and runs an attention call.
#include <attnkit/attnkit.hpp>

#include <cstdio>

static_assert(ATTNKIT_VERSION_MAJOR == 0 && ATTNKIT_VERSION_MINOR >= 1, "unexpected attnkit version");

int main() {
  const auto w = attnkit::make_iid_workload<float>({4, 8, 16, 16}, 1);
  const auto r = attnkit::reference_attention(w.q, w.k, w.v, {attnkit::Mask::causal()});
  const bool ok = r.output.rows() == 4 && r.output.cols() == 16 && r.output.allFinite();
  std::printf("attnkit %s consumer: %s\n", attnkit::version_string, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
