// attnkit-eval: reference, flash and topk with attnkit::RbfScore (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"
#include "attnkit/similarity/rbf.hpp"

namespace attnkit_eval {
ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::RbfScore);
}  // namespace attnkit_eval
