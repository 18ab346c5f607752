// attnkit-eval: reference, flash and topk with attnkit::HyperbolicScore (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"
#include "attnkit/similarity/hyperbolic.hpp"

namespace attnkit_eval {
ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::HyperbolicScore);
}  // namespace attnkit_eval
