// attnkit-eval attention: one method's output (and log-sum-exp) over all
// heads, written as .npy in the compute dtype. Non-finite inputs are accepted
// and propagate as docs/design.md documents (unless the method cannot take
// them: Method::needs_finite_inputs).

#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit-eval/commands.hpp"
#include "attnkit-eval/outputs.hpp"
#include "attnkit-eval/progress.hpp"

namespace attnkit_eval {

namespace {

template <typename Scalar>
void attention_typed(const AttentionArgs& a, std::ostream& err) {
  const ProblemShape& s = a.common.inputs.shape;
  Progress progress(err, a.common.quiet);
  Inputs<Scalar> in = load_inputs<Scalar>(a.common.inputs);
  if (a.method->needs_finite_inputs)
    check_finite(in, a.common.inputs, "attention --method " + a.method->name);
  HalfKv kv16;
  const bool has16 = round_kv(in, a.common.kv_dtype, kv16);
  const MethodResult<Scalar> r = a.method->kernel<Scalar>()(
      in.q.data, in.k.data, in.v.data, a.common.context(has16 ? &kv16 : nullptr), a.params);
  const attnkit::AttentionResult<Scalar>& ar = r.attention;
  if (ar.output.rows() != s.q_heads * s.n_q || ar.output.cols() != s.d_v ||
      ar.lse.size() != s.q_heads * s.n_q)
    throw std::logic_error("method '" + a.method->name + "' returned output (" +
                           std::to_string(ar.output.rows()) + " x " + std::to_string(ar.output.cols()) +
                           ") and lse of size " + std::to_string(ar.lse.size()) + " for " +
                           std::to_string(s.q_heads) + " heads of n_q = " + std::to_string(s.n_q) +
                           ", d_v = " + std::to_string(s.d_v));
  progress.step(a.method->name + ": call", 1, 1);

  StagedOutputs files;
  const std::vector<Index> out_shape =
      s.three_d ? std::vector<Index>{s.q_heads, s.n_q, s.d_v} : std::vector<Index>{s.n_q, s.d_v};
  files.write_npy("--out", a.out_path, out_shape, ar.output.data(),
                  static_cast<std::size_t>(ar.output.size()));
  if (!a.lse_path.empty()) {
    const std::vector<Index> lse_shape =
        s.three_d ? std::vector<Index>{s.q_heads, s.n_q} : std::vector<Index>{s.n_q};
    files.write_npy("--lse", a.lse_path, lse_shape, ar.lse.data(), static_cast<std::size_t>(ar.lse.size()));
  }
  if (!a.bound_path.empty()) {
    if (!r.bound || r.bound->rows() != ar.output.rows() || r.bound->cols() != ar.output.cols())
      throw std::logic_error("method '" + a.method->name + "' returned no bound of the output's shape");
    files.write_npy("--bound", a.bound_path, out_shape, r.bound->data(),
                    static_cast<std::size_t>(r.bound->size()));
  }
  files.commit();
}

}  // namespace

void run_attention(const AttentionArgs& a, std::ostream& /*out*/, std::ostream& err) {
  if (a.common.inputs.shape.dtype == attnkit::NpyDtype::float32)
    attention_typed<float>(a, err);
  else
    attention_typed<double>(a, err);
}

}  // namespace attnkit_eval
