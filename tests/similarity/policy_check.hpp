#pragma once

// Shared check of the score-policy tests: the fused kernel with a policy
// against the reference with the same policy (which evaluates the policy's
// DEFINITION in the wider type), for every mask kind, a band with sinks,
// prefill and decode, one and two threads, within the kernel's bound built
// from per-row logit error bounds (attention/flash_bounds.hpp).

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit::test {

/// logit_error(i), exp_arg(i): see flash_bounds::error_bound_from_logit_errors.
template <typename Scalar, typename Policy>
::testing::AssertionResult flash_matches_reference(const Workload<Scalar>& w, const Policy& policy,
                                                   const Eigen::VectorXd& logit_error,
                                                   const Eigen::VectorXd& exp_arg) {
  const Index n_q = w.q.rows(), n_k = w.k.rows();
  const double max_v = w.v.template cast<double>().cwiseAbs().maxCoeff();
  for (const Mask mask :
       {Mask::none(), Mask::causal(), Mask::strict_causal(), Mask::causal().with_window(40).with_sinks(2)})
    for (const FlashConfig cfg : {FlashConfig{1, 16, 16}, FlashConfig{2}})
      for (const Index rows : {n_q, Index(3)}) {
        const RowMatrix<Scalar> q = w.q.bottomRows(rows);
        const AttentionOptions opt{mask, {}};
        const auto ref = reference_attention(q, w.k, w.v, opt, policy);
        const auto got = flash_attention(q, w.k, w.v, opt, cfg, policy);
        const Index bk = cfg.block_k > 0 ? cfg.block_k : 128;
        const flash_bounds::Bound bound = flash_bounds::error_bound_from_logit_errors<Scalar>(
            logit_error.tail(rows), exp_arg.tail(rows), max_v, n_k, bk);
        const auto r = flash_bounds::within_bound(got, ref, bound);
        if (!r)
          return ::testing::AssertionFailure()
                 << r.message() << " (mask " << to_string(mask.kind) << (mask.window ? " windowed" : "")
                 << ", rows " << rows << ", threads " << cfg.threads << ")";
      }
  return ::testing::AssertionSuccess();
}

}  // namespace attnkit::test
