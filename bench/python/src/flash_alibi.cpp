// The bindings' exact attention with the BatchedAlibiScore policy (flash_call.hpp).

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const BatchedAlibiScore&);

}  // namespace attnkit_python
