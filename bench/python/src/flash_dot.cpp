// The bindings' exact attention with the default DotProductScore policy
// (flash_call.hpp), and the C++ side of the overhead measurement.

#include <chrono>

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const attnkit::DotProductScore&);

namespace {

template <typename C>
std::vector<double> time_typed(const FlashCall& c, int repeats) {
  CallMaps<C, C> m(c);
  std::vector<double> seconds;
  seconds.reserve(static_cast<std::size_t>(repeats));
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    attnkit::flash_attention_heads_into<C>(m.q, m.k, m.v, c.shape.layout(), m.out, m.lse, c.options,
                                           c.config);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}

}  // namespace

std::vector<double> time_attention(const FlashCall& c, int repeats) {
  py::gil_scoped_release nogil;
  return c.compute == DType::f64 ? time_typed<double>(c, repeats) : time_typed<float>(c, repeats);
}

}  // namespace attnkit_python
