#pragma once

// attnkit-eval: the method registry. Every attention method the tool can run
// is ONE registration block in builtin_methods() (bench/eval/methods.cpp):
// its name, a one-line summary, whether it is exact, its own command-line
// options (flags of `attnkit-eval attention`), the parameter settings
// `attnkit-eval compare` sweeps, and one generic callable that the registry
// instantiates for float and for double inputs.

#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/types.hpp"
#include "eval/prune_options.hpp"

namespace attnkit::eval {

/// A method's own parameters, by option name (the flag without "--"), as text:
/// what the user typed on the command line or a compare setting, on top of the
/// option defaults.
class MethodParams {
 public:
  MethodParams() = default;
  MethodParams(std::initializer_list<std::pair<std::string, std::string>> values) : values_(values) {}

  void set(const std::string& name, const std::string& value) {
    for (auto& [k, v] : values_)
      if (k == name) {
        v = value;
        return;
      }
    values_.emplace_back(name, value);
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  /// The value of `name`. \throws std::invalid_argument if the method has no such parameter.
  const std::string& text(const std::string& name) const {
    if (const std::string* v = find(name)) return *v;
    throw std::invalid_argument("--" + name + ": no such parameter");
  }
  /// The value of `name` as a finite number.
  /// \throws std::invalid_argument naming the flag if it is not one.
  double number(const std::string& name) const {
    const std::string& t = text(name);
    std::size_t used = 0;
    double x = std::numeric_limits<double>::quiet_NaN();
    try {
      x = std::stod(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != t.size() || t.empty() || !std::isfinite(x))
      throw std::invalid_argument("--" + name + " " + t + ": not a finite number");
    return x;
  }
  /// The value of `name` as a number > 0.
  double positive(const std::string& name) const {
    const double x = number(name);
    if (!(x > 0)) throw std::invalid_argument("--" + name + " " + text(name) + ": must be > 0");
    return x;
  }
  /// The value of `name` as an integer >= 1.
  Index count(const std::string& name) const {
    const double x = number(name);
    if (!(x >= 1 && x == std::floor(x) && x < 9e15))
      throw std::invalid_argument("--" + name + " " + text(name) + ": must be an integer >= 1");
    return static_cast<Index>(x);
  }

  /// "name=value name=value", or "-" when there are none: the `params` column.
  std::string to_string() const {
    std::string s;
    for (const auto& [k, v] : values_)
      s += (s.empty() ? "" : " ") + k + "=" + v;
    return s.empty() ? "-" : s;
  }
  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }

 private:
  const std::string* find(const std::string& name) const {
    for (const auto& [k, v] : values_)
      if (k == name) return &v;
    return nullptr;
  }
  std::vector<std::pair<std::string, std::string>> values_;
};

/// Matrix arguments of a kernel: a zero-copy view of one head, row-major.
template <typename Scalar>
using ConstRef = Eigen::Ref<const RowMatrix<Scalar>>;

/// One head: (Q, K, V, options, parameters) -> output and log-sum-exp.
template <typename Scalar>
using Kernel = std::function<AttentionResult<Scalar>(ConstRef<Scalar>, ConstRef<Scalar>, ConstRef<Scalar>,
                                                     const AttentionOptions&, const MethodParams&)>;

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
  std::vector<MethodOption> options;
  /// Parameter settings `compare` runs, each on top of the option defaults;
  /// empty means one run with the defaults.
  std::vector<MethodParams> sweep;
  /// Optional: validates parameters before any work starts; throws
  /// std::invalid_argument naming the flag.
  std::function<void(const MethodParams&)> check;
  Kernel<float> run_float;
  Kernel<double> run_double;
  /// Optional: the `params` column for resolved parameters; default
  /// MethodParams::to_string() ("name=value ...").
  std::function<std::string(const MethodParams&)> label;

  /// The `params` column for resolved parameters.
  std::string describe(const MethodParams& p) const { return label ? label(p) : p.to_string(); }

  /// Sets the kernel for both scalar types from one generic callable
  /// `(const auto& q, const auto& k, const auto& v, const AttentionOptions&, const MethodParams&)`.
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
  MethodParams resolve(const MethodParams& given = {}) const {
    MethodParams p;
    for (const MethodOption& o : options)
      p.set(o.name, given.has(o.name) ? given.text(o.name) : o.default_value);
    return p;
  }
  /// The settings compare runs, resolved.
  std::vector<MethodParams> compare_settings() const {
    if (sweep.empty()) return {resolve()};
    std::vector<MethodParams> out;
    for (const MethodParams& s : sweep)
      out.push_back(resolve(s));
    return out;
  }
};

/// The methods, in registration order (the order of compare's table).
class Registry {
 public:
  /// \throws std::logic_error on a duplicate name, a missing kernel, or a
  ///         method option that another method declares with another meaning.
  void add(Method m) {
    if (find(m.name)) throw std::logic_error("attnkit-eval: method '" + m.name + "' registered twice");
    if (!m.run_float || !m.run_double)
      throw std::logic_error("attnkit-eval: method '" + m.name + "' has no kernel");
    for (const MethodOption& o : m.options)
      for (const Method& other : methods_)
        for (const MethodOption& oo : other.options)
          if (oo.name == o.name && oo.help != o.help)
            throw std::logic_error("attnkit-eval: option --" + o.name + " of method '" + m.name +
                                   "' is also an option of '" + other.name + "' with another meaning");
    methods_.push_back(std::move(m));
  }
  const Method* find(const std::string& name) const {
    for (const Method& m : methods_)
      if (m.name == name) return &m;
    return nullptr;
  }
  const std::vector<Method>& methods() const { return methods_; }
  /// "reference, materialized, ..." for messages.
  std::string names() const {
    std::string s;
    for (const Method& m : methods_)
      s += (s.empty() ? "" : ", ") + m.name;
    return s;
  }

 private:
  std::vector<Method> methods_;
};

/// The plain implementation a user writes first: S = scale Q K^T materialised
/// as an (n_q x n_k) Scalar matrix (Eigen GEMM), masked row softmax, O = P V
/// (Eigen GEMM). Exact attention in Scalar arithmetic; O(n_q n_k) extra
/// memory. It does not follow attnkit's NaN/inf conventions for non-finite
/// inputs (see docs/design.md): it is a baseline, not a library kernel.
template <typename Scalar>
AttentionResult<Scalar> materialized_attention(ConstRef<Scalar> q, ConstRef<Scalar> k, ConstRef<Scalar> v,
                                               const AttentionOptions& options) {
  const AttentionProblem pb = make_attention_problem("materialized_attention", q, k, v, options);
  RowMatrix<Scalar> s = static_cast<Scalar>(pb.scale) * (q * k.transpose());
  Vector<Scalar> lse(pb.n_q);
  for (Index i = 0; i < pb.n_q; ++i) {
    const Index end = pb.mask.key_end(i);
    auto row = s.row(i);
    row.tail(pb.n_k - end).setZero();
    if (end == 0) {
      lse(i) = -std::numeric_limits<Scalar>::infinity();
      continue;
    }
    auto visible = row.head(end);
    const Scalar m = visible.maxCoeff();
    visible = (visible.array() - m).exp();
    const Scalar sum = visible.sum();
    visible /= sum;
    lse(i) = m + std::log(sum);
  }
  return {s * v, lse};
}

/// flash's --threads: "all" (0 for FlashConfig) or a count >= 1.
inline int flash_threads(const MethodParams& p) {
  if (p.text("threads") == "all") return 0;
  const Index t = p.count("threads");
  if (t > 4096) throw std::invalid_argument("--threads " + p.text("threads") + ": at most 4096");
  return static_cast<int>(t);
}

/// The prune method's options as PruneFlags.
/// \throws std::invalid_argument naming the flag for a bad --scale-correction.
inline PruneFlags prune_flags(const MethodParams& p) {
  PruneFlags f;
  f.ratio = p.text("ratio");
  f.weights = p.text("weights");
  f.select = p.text("select");
  f.compensation = p.text("compensation");
  f.rope_pairs = p.text("rope-pairs");
  const std::string& sc = p.text("scale-correction");
  if (sc != "on" && sc != "off")
    throw std::invalid_argument("--scale-correction " + sc + ": expected on or off");
  f.scale_correction = sc == "on";
  f.window = p.text("window");
  f.recent = p.text("recent");
  return f;
}

/// attnkit-eval's methods: reference, materialized, flash, prune. Defined in
/// bench/eval/methods.cpp, where adding a method is one registration block.
Registry builtin_methods();

}  // namespace attnkit::eval
