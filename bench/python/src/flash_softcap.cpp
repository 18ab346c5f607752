// The bindings' exact attention with the SoftcapScore policy (flash_call.hpp).

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const attnkit::SoftcapScore&);

}  // namespace attnkit_python
