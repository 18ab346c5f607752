// The bindings' exact attention with the RbfScore policy (flash_call.hpp).

#include "flash_run.hpp"

namespace attnkit_python {

template void run_attention(const FlashCall&, const attnkit::RbfScore&);

}  // namespace attnkit_python
