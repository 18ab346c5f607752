// The bindings' exact attention with the default DotProductScore policy
// (flash_call.hpp), and the C++ side of the overhead measurement.

#include <chrono>
#include <ctime>

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const attnkit::DotProductScore&);

namespace {

/// Seconds on the steady clock, or CPU seconds of the calling thread.
double now(bool thread_cpu) {
  if (!thread_cpu)
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

template <typename C>
std::vector<double> time_typed(const FlashCall& c, int repeats, bool thread_cpu) {
  CallMaps<C, C> m(c);
  std::vector<double> seconds;
  seconds.reserve(static_cast<std::size_t>(repeats));
  for (int r = 0; r < repeats; ++r) {
    const double start = now(thread_cpu);
    attnkit::flash_attention_heads_into<C>(m.q, m.k, m.v, c.shape.layout(), m.out, m.lse, c.options,
                                           c.config);
    seconds.push_back(now(thread_cpu) - start);
  }
  return seconds;
}

}  // namespace

std::vector<double> time_attention(const FlashCall& c, int repeats, bool thread_cpu) {
  py::gil_scoped_release nogil;
  return c.compute == DType::f64 ? time_typed<double>(c, repeats, thread_cpu)
                                 : time_typed<float>(c, repeats, thread_cpu);
}

}  // namespace attnkit_python
