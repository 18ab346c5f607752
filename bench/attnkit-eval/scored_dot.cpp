// attnkit-eval: reference, flash and topk with the dot product, and flash
// over 16-bit K and V (scored.hpp).

#include "attnkit-eval/scored_impl.hpp"

namespace attnkit_eval {

ATTNKIT_EVAL_INSTANTIATE_POLICY(attnkit::DotProductScore);

namespace detail {

attnkit::AttentionResult<float> run_flash16(const ScoredCall& call, const ConstRef<float>& q,
                                            const HalfKv& kv, const RunContext& ctx) {
  const attnkit::FlashConfig config{call.threads};
  if (kv.bf16)
    return attnkit::flash_attention_heads<float>(q, kv.k_bf16, kv.v_bf16, ctx.heads, ctx.options, config);
  return attnkit::flash_attention_heads<float>(q, kv.k_f16, kv.v_f16, ctx.heads, ctx.options, config);
}

}  // namespace detail
}  // namespace attnkit_eval
