#pragma once

// attnkit-eval: the body of detail::run_with_policy (scored.hpp), included by
// the scored_<policy>.cpp files only.

#include <vector>

#include "attnkit-eval/scored.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/similarity/score.hpp"
#include "attnkit/sparse/topk.hpp"

namespace attnkit_eval::detail {

template <typename Scalar, typename Policy>
attnkit::AttentionResult<Scalar> run_with_policy(const ScoredCall& call, const ConstRef<Scalar>& q,
                                                 const ConstRef<Scalar>& k, const ConstRef<Scalar>& v,
                                                 const RunContext& ctx, const Policy& policy) {
  const attnkit::HeadLayout& heads = ctx.heads;
  switch (call.method) {
    case ScoredMethod::reference:
      return attnkit::reference_attention_heads(q, k, v, heads, ctx.options, policy);
    case ScoredMethod::flash:
      return attnkit::flash_attention_heads(q, k, v, heads, ctx.options, attnkit::FlashConfig{call.threads},
                                            policy);
    case ScoredMethod::topk:
      break;
  }
  // topk: head by head (each head's policy as the fused kernel would give it).
  const Index n_q = q.rows() / heads.q_heads, n_k = k.rows() / heads.kv_heads;
  const Index per_batch = heads.q_heads / heads.batch;
  attnkit::AttentionResult<Scalar> r{attnkit::RowMatrix<Scalar>(q.rows(), v.cols()),
                                     attnkit::Vector<Scalar>(q.rows())};
  for (Index h = 0; h < heads.q_heads; ++h) {
    const Index g = heads.kv_head(h);
    attnkit::topk_attention_into(q.middleRows(h * n_q, n_q), k.middleRows(g * n_k, n_k),
                                 v.middleRows(g * n_k, n_k), attnkit::TopkOptions{call.topk},
                                 r.output.middleRows(h * n_q, n_q), r.lse.segment(h * n_q, n_q), ctx.options,
                                 attnkit::FlashConfig{call.threads},
                                 attnkit::detail::policy_for_head(policy, h % per_batch, per_batch));
  }
  return r;
}

}  // namespace attnkit_eval::detail

#define ATTNKIT_EVAL_INSTANTIATE_POLICY(Policy)                                                     \
  template attnkit::AttentionResult<float> attnkit_eval::detail::run_with_policy<float, Policy>(    \
      const ScoredCall&, const ConstRef<float>&, const ConstRef<float>&, const ConstRef<float>&,    \
      const RunContext&, const Policy&);                                                            \
  template attnkit::AttentionResult<double> attnkit_eval::detail::run_with_policy<double, Policy>(  \
      const ScoredCall&, const ConstRef<double>&, const ConstRef<double>&, const ConstRef<double>&, \
      const RunContext&, const Policy&)
