// attnkit-eval: reference, flash and topk with attnkit::AlibiScore (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"
#include "attnkit/similarity/alibi.hpp"

namespace attnkit_eval {
ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::AlibiScore);
}  // namespace attnkit_eval
