// attnkit-eval: reference, flash and topk with attnkit::SoftcapScore (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"
#include "attnkit/similarity/softcap.hpp"

namespace attnkit_eval {
ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::SoftcapScore);
}  // namespace attnkit_eval
