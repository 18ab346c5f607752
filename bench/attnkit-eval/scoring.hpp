#pragma once

// attnkit-eval: the score every exact method forms from a query and a key
// (--similarity, --tau, --curvature, --softcap, --alibi: the library's score
// policies of attnkit/similarity/), and the storage type of K and V
// (--kv-dtype: K and V rounded once on load, optionally kept in 16 bits).

#include <string>

#include <Eigen/Core>

#include "attnkit/core/types.hpp"
#include "attnkit/io/npy.hpp"

namespace attnkit_eval {

/// Which score policy of attnkit/similarity/ the methods run.
enum class Similarity {
  dot,         ///< attnkit::DotProductScore: scale q.k (the default)
  rbf,         ///< attnkit::RbfScore: -|q - k|^2 / (2 tau)
  cosine,      ///< attnkit::CosineScore: q.k / (|q| |k| tau)
  hyperbolic,  ///< attnkit::HyperbolicScore: -d_c(q, k) / tau in the Poincare ball
  softcap,     ///< attnkit::SoftcapScore: cap tanh(scale q.k / cap)
  alibi,       ///< attnkit::AlibiScore::standard(): scale q.k - m_h (i - j), Press et al.'s slopes
};

/// The score the flags select.
struct Scoring {
  Similarity kind = Similarity::dot;
  double tau = 1.0;        ///< rbf, cosine, hyperbolic
  double curvature = 1.0;  ///< hyperbolic
  double cap = 50.0;       ///< softcap

  bool is_dot() const { return kind == Similarity::dot; }
  /// "dot", "rbf tau=2", "hyperbolic c=1 tau=1", "softcap cap=30", "alibi".
  std::string describe() const;
  /// The flag that selected it, for messages: "--similarity rbf", "--softcap 30", "--alibi".
  std::string flag() const;
};

/// The similarity flags as typed ("" = not given).
struct SimilarityFlags {
  std::string similarity;  ///< dot | rbf | cosine | hyperbolic
  std::string tau;
  std::string curvature;
  std::string softcap;
  bool alibi = false;
};

/// Validates the flags: τ finite and > 0 (rbf, cosine, hyperbolic only),
/// c finite and > 0 (hyperbolic only), the cap finite and > 0, --softcap and
/// --alibi only with the dot product and not together.
/// \throws UsageError naming the flag and its value.
Scoring scoring_flags(const SimilarityFlags& f);

/// --kv-dtype: the type K and V are rounded to once, on load.
enum class KvDtype { as_computed, f32, f64, bf16, f16 };

/// --kv-dtype f32|f64|bf16|f16 ("" = as_computed). \throws UsageError.
KvDtype kv_dtype_flag(const std::string& text);
/// "f32", ..., or "" for as_computed.
std::string to_string(KvDtype t);
/// bf16 or f16.
inline bool is_16bit(KvDtype t) {
  return t == KvDtype::bf16 || t == KvDtype::f16;
}

/// K and V stored in 16 bits (one of the two pairs is filled), stacked like
/// the inputs; what `flash` reads with --kv-dtype bf16|f16.
struct HalfKv {
  bool bf16 = true;
  attnkit::RowMatrix<Eigen::bfloat16> k_bf16, v_bf16;
  attnkit::RowMatrix<Eigen::half> k_f16, v_f16;
};

}  // namespace attnkit_eval
