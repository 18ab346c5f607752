#pragma once

// attnkit-eval: the method registry. Every attention method the tool can run
// is ONE registration block in builtin_methods() (methods.cpp): its name, a
// one-line summary, whether it is exact, its own options (flags of
// `attnkit-eval attention`), the parameter settings `compare` sweeps, and one
// generic callable that the registry instantiates for float and double. The
// callable gets ALL heads at once, stacked (attnkit/attention/heads.hpp's
// layout), so a method that batches heads (flash) runs them in one call; a
// method that is inherently per head wraps its per-head body in per_head().

#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit-eval/inputs.hpp"
#include "attnkit-eval/scoring.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/core/types.hpp"

namespace attnkit_eval {

/// A method's own parameters, by option name (the flag without "--"), as text:
/// what the user typed on the command line or a compare setting, on top of the
/// option defaults. Numbers are parsed by numbers.hpp.
class MethodParams {
 public:
  MethodParams() = default;
  MethodParams(std::initializer_list<std::pair<std::string, std::string>> values) : values_(values) {}

  void set(const std::string& name, const std::string& value);
  bool has(const std::string& name) const { return find(name) != nullptr; }

  /// The value of `name`. \throws UsageError if the method has no such parameter.
  const std::string& text(const std::string& name) const;
  /// The value of `name` as a finite number. \throws UsageError naming the flag.
  double number(const std::string& name) const;
  /// The value of `name` as a number > 0. \throws UsageError naming the flag.
  double positive(const std::string& name) const;
  /// The value of `name` as an integer >= 1. \throws UsageError naming the flag.
  Index count(const std::string& name) const;

  /// "name=value name=value", or "-" when there are none: the `params` column.
  std::string to_string() const;
  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }

 private:
  const std::string* find(const std::string& name) const;
  std::vector<std::pair<std::string, std::string>> values_;
};

/// Matrix arguments of a kernel: zero-copy row-major views.
template <typename Scalar>
using ConstRef = Eigen::Ref<const attnkit::RowMatrix<Scalar>>;

/// What a method returns for all heads.
template <typename Scalar>
struct MethodResult {
  /// Implicit, so a kernel may return an AttentionResult.
  MethodResult(attnkit::AttentionResult<Scalar> r, std::optional<std::size_t> bytes = std::nullopt)
      : attention(std::move(r)), cache_bytes(bytes) {}

  /// Output (q_heads n_q x d_v) and lse (q_heads n_q), stacked like Q.
  attnkit::AttentionResult<Scalar> attention;
  /// The bytes the method keeps for K and V over all heads (a compressed
  /// cache); std::nullopt: K and V as given, kv_heads n_k (d + d_v) scalars.
  std::optional<std::size_t> cache_bytes;
  /// A method that proves an error bound per output entry (approx): the
  /// bound, stacked like the output (|O_rc - O_exact,rc| <= bound_rc).
  std::optional<attnkit::RowMatrix<double>> bound;
};

/// What every method of one command is run with besides Q, K, V and its own
/// parameters.
struct RunContext {
  attnkit::HeadLayout heads;
  attnkit::AttentionOptions options;
  /// --similarity / --tau / --curvature / --softcap / --alibi: only methods
  /// with Method::similarities run another score than the dot product.
  Scoring scoring;
  /// --kv-dtype bf16|f16: K and V (already rounded to 16 bits in the K and V
  /// a kernel gets) also stored in 16 bits, for the methods that read 16-bit
  /// storage (flash); nullptr otherwise.
  const HalfKv* kv16 = nullptr;
};

/// All heads: (Q, K, V stacked, context, parameters) -> result.
template <typename Scalar>
using Kernel = std::function<MethodResult<Scalar>(ConstRef<Scalar>, ConstRef<Scalar>, ConstRef<Scalar>,
                                                  const RunContext&, const MethodParams&)>;

/// A method-specific command-line option: `--<name> VALUE` on `attention`.
struct MethodOption {
  std::string name;           ///< flag without "--"
  std::string default_value;  ///< used when the flag is not given
  std::string help;
};

/// Everything attnkit-eval knows about one method.
struct Method {
  Method(std::string method_name, std::string method_summary, bool is_exact)
      : name(std::move(method_name)), summary(std::move(method_summary)), exact(is_exact) {}

  std::string name;     ///< --method NAME, the `method` column
  std::string summary;  ///< one line for --help
  bool exact;           ///< computes exact attention (up to rounding), not an approximation
  /// The method cannot take NaN or infinite inputs (a selection that ranks
  /// them): `attention` checks them first, as `compare` and `prune` always do.
  bool needs_finite_inputs = false;
  /// The method takes every --similarity (and --softcap, --alibi); the
  /// others compute the dot-product score only and refuse the rest.
  bool similarities = false;
  /// The method returns MethodResult::bound (`attention --bound` writes it).
  bool reports_bound = false;
  std::vector<MethodOption> options;
  /// Parameter settings `compare` runs, each on top of the option defaults;
  /// empty means one run with the defaults.
  std::vector<MethodParams> sweep;
  /// Optional: validates parameter values before any work; throws
  /// UsageError naming the flag.
  std::function<void(const MethodParams&)> check;
  /// Optional: validates parameters against the problem's shapes before any
  /// work (`attention`: exit 2; `compare`: the setting's row fails without
  /// running); throws UsageError naming the flag.
  std::function<void(const MethodParams&, const ProblemShape&)> check_shape;
  Kernel<float> run_float;
  Kernel<double> run_double;
  /// Optional: the `params` column for resolved parameters; default
  /// MethodParams::to_string() ("name=value ...").
  std::function<std::string(const MethodParams&)> label;

  /// The `params` column for resolved parameters.
  std::string describe(const MethodParams& p) const { return label ? label(p) : p.to_string(); }

  /// Sets the kernel for both scalar types from one generic callable
  /// `(const auto& q, const auto& k, const auto& v, const RunContext&,
  /// const MethodParams&)`.
  template <typename F>
  void set_kernel(F f) {
    run_float = f;
    run_double = f;
  }
  template <typename Scalar>
  const Kernel<Scalar>& kernel() const {
    if constexpr (std::is_same_v<Scalar, float>)
      return run_float;
    else
      return run_double;
  }

  /// The option defaults overridden by `given`.
  MethodParams resolve(const MethodParams& given = {}) const;
  /// The settings compare runs, resolved.
  std::vector<MethodParams> compare_settings() const;
};

/// The methods, in registration order (the order of compare's table).
class Registry {
 public:
  /// \throws std::logic_error on a duplicate name, a missing kernel, or a
  ///         method option that another method declares with another meaning.
  void add(Method m);
  const Method* find(const std::string& name) const;
  const std::vector<Method>& methods() const { return methods_; }
  /// "reference, materialized, ..." for messages.
  std::string names() const;

 private:
  std::vector<Method> methods_;
};

/// Adapts a per-head body `f(q, k, v, options, params) -> AttentionResult`
/// (one head's zero-copy views) to a Kernel: runs it on every query head with
/// its key/value head (HeadLayout::kv_head) and stacks the results.
/// \throws std::logic_error if `f` returns the wrong shapes.
template <typename F>
auto per_head(F f) {
  return [f](const auto& q, const auto& k, const auto& v, const RunContext& ctx, const MethodParams& p) {
    const attnkit::HeadLayout& heads = ctx.heads;
    const attnkit::AttentionOptions& o = ctx.options;
    using Scalar = typename std::decay_t<decltype(q)>::Scalar;
    const Index n_q = q.rows() / heads.q_heads, n_k = k.rows() / heads.kv_heads;
    attnkit::AttentionResult<Scalar> r{attnkit::RowMatrix<Scalar>(q.rows(), v.cols()),
                                       attnkit::Vector<Scalar>(q.rows())};
    for (Index h = 0; h < heads.q_heads; ++h) {
      const Index g = heads.kv_head(h);
      const attnkit::AttentionResult<Scalar> one =
          f(ConstRef<Scalar>(q.middleRows(h * n_q, n_q)), ConstRef<Scalar>(k.middleRows(g * n_k, n_k)),
            ConstRef<Scalar>(v.middleRows(g * n_k, n_k)), o, p);
      if (one.output.rows() != n_q || one.output.cols() != v.cols() || one.lse.size() != n_q)
        throw std::logic_error("per_head: a head's result has the wrong shape");
      r.output.middleRows(h * n_q, n_q) = one.output;
      r.lse.segment(h * n_q, n_q) = one.lse;
    }
    return r;
  };
}

/// \throws UsageError when `m` cannot run with `scoring` (a method without
/// Method::similarities and a score other than the dot product), naming the flag.
void check_scoring(const Method& m, const Scoring& scoring);

/// attnkit-eval's methods: reference, materialized, flash, prune, topk,
/// linear, lsh (methods.cpp, where adding a method is one registration block).
Registry builtin_methods();

}  // namespace attnkit_eval
