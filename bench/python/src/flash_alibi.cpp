// The bindings' exact attention with the AlibiScore policy (flash_call.hpp).

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const attnkit::AlibiScore&);

}  // namespace attnkit_python
