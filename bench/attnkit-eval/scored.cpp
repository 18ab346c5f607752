// attnkit-eval: run_scored, the dispatch on the score (scored.hpp). The
// kernels themselves are instantiated in scored_<policy>.cpp; this file sees
// their declarations only.

#include "attnkit-eval/scored.hpp"

#include <stdexcept>
#include <string>
#include <type_traits>

#include "attnkit-eval/errors.hpp"
#include "attnkit/similarity/alibi.hpp"
#include "attnkit/similarity/cosine.hpp"
#include "attnkit/similarity/hyperbolic.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/similarity/score.hpp"
#include "attnkit/similarity/softcap.hpp"

namespace attnkit_eval {

template <typename Scalar>
attnkit::AttentionResult<Scalar> run_scored(const ScoredCall& call, const ConstRef<Scalar>& q,
                                            const ConstRef<Scalar>& k, const ConstRef<Scalar>& v,
                                            const RunContext& ctx) {
  const Scoring& s = ctx.scoring;
  if (call.method == ScoredMethod::flash && ctx.kv16) {
    if (!s.is_dot())
      throw UsageError(s.flag() + " with --kv-dtype " + std::string(ctx.kv16->bf16 ? "bf16" : "f16") +
                       ": flash reads 16-bit K and V with the dot-product score only");
    if constexpr (std::is_same_v<Scalar, float>)
      return detail::run_flash16(call, q, *ctx.kv16, ctx);
    else
      throw UsageError("--kv-dtype bf16|f16 computes in float32 (drop --dtype float64)");
  }
  switch (s.kind) {
    case Similarity::dot:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx, attnkit::DotProductScore{});
    case Similarity::rbf:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx, attnkit::RbfScore{s.tau});
    case Similarity::cosine:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx, attnkit::CosineScore{s.tau});
    case Similarity::hyperbolic:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx,
                                             attnkit::hyperbolic_score<Scalar>(s.curvature, s.tau));
    case Similarity::softcap:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx, attnkit::SoftcapScore{s.cap});
    case Similarity::alibi:
      return detail::run_with_policy<Scalar>(call, q, k, v, ctx, attnkit::AlibiScore::standard());
  }
  throw std::logic_error("run_scored: unknown similarity");
}

template attnkit::AttentionResult<float> run_scored<float>(const ScoredCall&, const ConstRef<float>&,
                                                           const ConstRef<float>&, const ConstRef<float>&,
                                                           const RunContext&);
template attnkit::AttentionResult<double> run_scored<double>(const ScoredCall&, const ConstRef<double>&,
                                                             const ConstRef<double>&, const ConstRef<double>&,
                                                             const RunContext&);

}  // namespace attnkit_eval
