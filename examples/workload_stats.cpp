// Prints what the attention of each synthetic workload looks like: how many
// keys a query effectively attends to, how sharp its largest weight is, and
// how much mass lands on token 0. docs/workloads.md quotes its output.
//
//   workload_stats [n] [d]      (defaults: 2048 64)

#include <attnkit/attnkit.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  const attnkit::Index n = argc > 1 ? std::atol(argv[1]) : 2048;
  const attnkit::Index d = argc > 2 ? std::atol(argv[2]) : 64;
  if (n < 2 || d < 2 || d % 2 != 0) {
    std::fprintf(stderr, "usage: workload_stats [n >= 2] [even d >= 2]\n");
    return 2;
  }
  std::printf("n = %ld, d = %ld, causal mask, averages over the last half of the queries\n",
              static_cast<long>(n), static_cast<long>(d));
  std::printf("%-10s %16s %14s %12s %12s\n", "workload", "eff. support", "max weight", "sink mass",
              "logit std");
  for (const auto kind :
       {attnkit::WorkloadKind::iid, attnkit::WorkloadKind::clustered, attnkit::WorkloadKind::llm_like}) {
    const auto w = attnkit::make_workload<double>(kind, {n, n, d, d}, 1);
    const auto p = attnkit::reference_attention_probabilities(w.q, w.k, {attnkit::Mask::causal()});
    const auto half = p.bottomRows(n / 2);
    // Standard deviation of each late query's logits (no mask), averaged.
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const attnkit::RowMatrix<double> logits = scale * w.q.bottomRows(n / 2) * w.k.transpose();
    double logit_std = 0;
    for (attnkit::Index i = 0; i < logits.rows(); ++i) {
      const Eigen::ArrayXd row = logits.row(i).transpose().array();
      logit_std += std::sqrt((row - row.mean()).square().mean()) / static_cast<double>(logits.rows());
    }
    std::printf("%-10s %16.1f %14.3f %12.3f %12.2f\n", attnkit::to_string(kind),
                attnkit::effective_support(half).mean(), attnkit::max_probability(half).mean(),
                half.col(0).mean(), logit_std);
  }
  return 0;
}
