// attnkit-eval's score and K/V storage flags (declared in scoring.hpp).

#include "attnkit-eval/scoring.hpp"

#include <sstream>

#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/numbers.hpp"

namespace attnkit_eval {

std::string Scoring::describe() const {
  std::ostringstream os;
  switch (kind) {
    case Similarity::dot:
      return "dot";
    case Similarity::rbf:
      os << "rbf tau=" << tau;
      break;
    case Similarity::cosine:
      os << "cosine tau=" << tau;
      break;
    case Similarity::hyperbolic:
      os << "hyperbolic c=" << curvature << " tau=" << tau;
      break;
    case Similarity::softcap:
      os << "softcap cap=" << cap;
      break;
    case Similarity::alibi:
      return "alibi";
  }
  return os.str();
}

std::string Scoring::flag() const {
  switch (kind) {
    case Similarity::softcap:
      return "--softcap";
    case Similarity::alibi:
      return "--alibi";
    default:
      return "--similarity " + describe().substr(0, describe().find(' '));
  }
}

namespace {

double positive_flag(const std::string& flag, const std::string& text) {
  const double x = parse_real(flag, text);
  if (!(x > 0)) throw UsageError(flag + " " + text + ": must be finite and > 0");
  return x;
}

}  // namespace

Scoring scoring_flags(const SimilarityFlags& f) {
  Scoring s;
  const std::string name = f.similarity.empty() ? "dot" : f.similarity;
  if (name == "dot")
    s.kind = Similarity::dot;
  else if (name == "rbf")
    s.kind = Similarity::rbf;
  else if (name == "cosine")
    s.kind = Similarity::cosine;
  else if (name == "hyperbolic")
    s.kind = Similarity::hyperbolic;
  else
    throw UsageError("--similarity " + f.similarity + ": expected dot|rbf|cosine|hyperbolic");
  if (!f.tau.empty()) {
    if (s.kind == Similarity::dot)
      throw UsageError("--tau " + f.tau +
                       ": the dot product has no temperature (use --scale); --tau is for --similarity "
                       "rbf|cosine|hyperbolic");
    s.tau = positive_flag("--tau", f.tau);
  }
  if (!f.curvature.empty()) {
    if (s.kind != Similarity::hyperbolic)
      throw UsageError("--curvature " + f.curvature + ": only --similarity hyperbolic has a curvature");
    s.curvature = positive_flag("--curvature", f.curvature);
  }
  if (!f.softcap.empty() && f.alibi) throw UsageError("--softcap " + f.softcap + " and --alibi: choose one");
  if (!f.softcap.empty() || f.alibi) {
    const std::string which = f.alibi ? "--alibi" : "--softcap " + f.softcap;
    if (s.kind != Similarity::dot)
      throw UsageError(which +
                       ": transforms the dot-product score; it cannot be combined with --similarity " + name);
    if (f.alibi) {
      s.kind = Similarity::alibi;
    } else {
      s.kind = Similarity::softcap;
      s.cap = positive_flag("--softcap", f.softcap);
    }
  }
  return s;
}

KvDtype kv_dtype_flag(const std::string& text) {
  if (text.empty()) return KvDtype::as_computed;
  for (const KvDtype t : {KvDtype::f32, KvDtype::f64, KvDtype::bf16, KvDtype::f16})
    if (text == to_string(t)) return t;
  throw UsageError("--kv-dtype " + text + ": expected f32|f64|bf16|f16");
}

std::string to_string(KvDtype t) {
  switch (t) {
    case KvDtype::f32:
      return "f32";
    case KvDtype::f64:
      return "f64";
    case KvDtype::bf16:
      return "bf16";
    case KvDtype::f16:
      return "f16";
    case KvDtype::as_computed:
      break;
  }
  return "";
}

}  // namespace attnkit_eval
