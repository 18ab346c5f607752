#pragma once

// One exact-attention call of the bindings, type-erased: the arrays' buffers
// and element types, the stacked-head shape and the library's options. The
// fused kernel runs through attnkit::flash_attention_heads_into (or its
// partial form over a KeySet), the oracle through
// attnkit::reference_attention_heads. run_attention<Policy> is compiled in
// one translation unit per score policy (flash_<policy>.cpp).

#include <optional>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/similarity/alibi.hpp"
#include "attnkit/similarity/cosine.hpp"
#include "attnkit/similarity/hyperbolic.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/similarity/score.hpp"
#include "attnkit/similarity/softcap.hpp"
#include "bindings.hpp"

namespace attnkit_python {

struct FlashCall {
  /// float32 or float64: the type the kernel computes in and returns.
  DType compute = DType::f32;
  /// The stored type of K and V: compute, or f16 / bf16 (with compute f32).
  DType kv = DType::f32;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  void* lse = nullptr;
  HeadShape shape;
  attnkit::AttentionOptions options;
  attnkit::FlashConfig config;
  /// Set: a partial call over these keys (flash only).
  std::optional<attnkit::KeySet> keys;
  /// The reference (wide accumulation) instead of the fused kernel.
  bool reference = false;
};

/// Runs the call with the GIL released. \throws std::invalid_argument
/// (ValueError in Python) from the library's checks; nothing is written then.
template <typename Policy>
void run_attention(const FlashCall& call, const Policy& policy);

/// Times `repeats` calls of the fused kernel (default policy) on the call's
/// buffers from C++, with the GIL released: seconds per call, on the steady
/// clock or (thread_cpu) as CPU time of the calling thread.
std::vector<double> time_attention(const FlashCall& call, int repeats, bool thread_cpu);

// Compiled in flash_<policy>.cpp.
extern template void run_attention(const FlashCall&, const attnkit::DotProductScore&);
extern template void run_attention(const FlashCall&, const attnkit::RbfScore&);
extern template void run_attention(const FlashCall&, const attnkit::CosineScore&);
extern template void run_attention(const FlashCall&, const attnkit::HyperbolicScore&);
extern template void run_attention(const FlashCall&, const attnkit::SoftcapScore&);
extern template void run_attention(const FlashCall&, const attnkit::AlibiScore&);

}  // namespace attnkit_python
