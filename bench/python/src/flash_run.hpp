#pragma once

// The definition of run_attention (flash_call.hpp), included only by the
// flash_<policy>.cpp translation units that instantiate it, so each policy's
// kernels are compiled once and in parallel.

#include <type_traits>

#include "attnkit/attention/heads.hpp"
#include "flash_call.hpp"

namespace attnkit_python {

/// Row-major views of a call's buffers: Q (q_heads n_q x d) and the outputs
/// in the compute type C, K and V (kv_heads n_k x d, x d_v) in their stored
/// type S.
template <typename C, typename S>
struct CallMaps {
  ConstMap<C> q;
  ConstMap<S> k, v;
  MutableMap<C> out;
  Eigen::Map<Vector<C>> lse;

  explicit CallMaps(const FlashCall& c)
      : q(static_cast<const C*>(c.q), c.shape.q_heads * c.shape.n_q, c.shape.d),
        k(static_cast<const S*>(c.k), c.shape.kv_heads * c.shape.n_k, c.shape.d),
        v(static_cast<const S*>(c.v), c.shape.kv_heads * c.shape.n_k, c.shape.d_v),
        out(static_cast<C*>(c.out), c.shape.q_heads * c.shape.n_q, c.shape.d_v),
        lse(static_cast<C*>(c.lse), c.shape.q_heads * c.shape.n_q) {}
};

template <typename C, typename S, typename Policy>
void run_typed(const FlashCall& c, const Policy& policy) {
  CallMaps<C, S> m(c);
  record_kernel_pointers(m.q.data(), m.k.data(), m.v.data(), m.out.data(), m.lse.data());
  if (c.reference) {
    // The oracle takes one Scalar: 16-bit K and V are widened (exactly) first.
    using Ref = Eigen::Ref<const RowMatrix<C>>;
    const auto reference = [&](const Ref& k, const Ref& v) {
      const attnkit::AttentionResult<C> r = attnkit::reference_attention_heads(
          Ref(m.q), k, v, c.shape.layout(), c.options, policy, c.config.threads);
      m.out = r.output;
      m.lse = r.lse;
    };
    if constexpr (std::is_same_v<C, S>)
      reference(m.k, m.v);
    else
      reference(RowMatrix<C>(m.k.template cast<C>()), RowMatrix<C>(m.v.template cast<C>()));
    return;
  }
  if (c.keys)
    attnkit::flash_attention_heads_partial_into<C>(m.q, m.k, m.v, c.shape.layout(), *c.keys, m.out, m.lse,
                                                   c.options, c.config, policy);
  else
    attnkit::flash_attention_heads_into<C>(m.q, m.k, m.v, c.shape.layout(), m.out, m.lse, c.options, c.config,
                                           policy);
}

template <typename Policy>
void run_attention(const FlashCall& c, const Policy& policy) {
  py::gil_scoped_release nogil;
  if (c.compute == DType::f64) return run_typed<double, double>(c, policy);
  switch (c.kv) {
    case DType::f16:
      return run_typed<float, Eigen::half>(c, policy);
    case DType::bf16:
      return run_typed<float, Eigen::bfloat16>(c, policy);
    default:
      return run_typed<float, float>(c, policy);
  }
}

}  // namespace attnkit_python
