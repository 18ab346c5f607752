#pragma once

// attnkit-eval: the methods that run with every score policy (reference,
// flash, topk), dispatched on the --similarity flags. Each policy's kernels
// are compiled in their own translation unit (scored_<policy>.cpp), so the
// tool builds in parallel and no file instantiates all of them.

#include "attnkit-eval/methods.hpp"
#include "attnkit/attention/problem.hpp"

namespace attnkit_eval {

/// Which policy-taking method to run.
enum class ScoredMethod { reference, flash, topk };

struct ScoredCall {
  ScoredMethod method = ScoredMethod::flash;
  /// flash and topk: FlashConfig::threads (0 = all).
  int threads = 0;
  /// topk: keys kept per query.
  Index topk = 64;
};

/// Runs `call` on all heads with the score ctx.scoring selects. flash with
/// ctx.kv16 reads the 16-bit K and V (float compute, dot product only: other
/// scores with 16-bit storage throw UsageError).
template <typename Scalar>
attnkit::AttentionResult<Scalar> run_scored(const ScoredCall& call, const ConstRef<Scalar>& q,
                                            const ConstRef<Scalar>& k, const ConstRef<Scalar>& v,
                                            const RunContext& ctx);

namespace detail {

/// One policy's instantiation (scored_<policy>.cpp).
template <typename Scalar, typename Policy>
attnkit::AttentionResult<Scalar> run_with_policy(const ScoredCall& call, const ConstRef<Scalar>& q,
                                                 const ConstRef<Scalar>& k, const ConstRef<Scalar>& v,
                                                 const RunContext& ctx, const Policy& policy);

/// flash over 16-bit K and V (scored_dot.cpp).
attnkit::AttentionResult<float> run_flash16(const ScoredCall& call, const ConstRef<float>& q,
                                            const HalfKv& kv, const RunContext& ctx);

}  // namespace detail
}  // namespace attnkit_eval
