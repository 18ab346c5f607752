// attnkit-eval: reference, flash and topk with attnkit::CosineScore (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"
#include "attnkit/similarity/cosine.hpp"

namespace attnkit_eval {
ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::CosineScore);
}  // namespace attnkit_eval
