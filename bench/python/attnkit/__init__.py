"""attnkit: exact softmax attention and its cheaper variants, for numpy.

The kernels are attnkit's header-only C++ library (fused flash attention with
every mask, score policies, 16-bit K/V storage, top-k, LSH and linear
attention, key-dimension pruning, the softmax toolkit) compiled into the
extension attnkit._core; this package re-exports it and adds
scaled_dot_product_attention, a drop-in for PyTorch's function.

Arrays: C-contiguous float32 / float64 numpy arrays are read in place (no
copy); anything else is converted once. Results are new numpy arrays.
Layouts: (n, d), (heads, n, d), (batch, heads, n, d); fewer key/value heads
than query heads is grouped-query attention. Masks use attnkit's alignment:
the queries are the LAST n_q tokens of the key sequence (bottom-right); the
PyTorch wrapper translates PyTorch's top-left causal mask.

Full reference: docs/python.md and the type stubs (_core.pyi).
"""

from ._core import (
    KVCache,
    PrunedKeyCache,
    __version__,
    attention,
    attention_partial,
    effective_support,
    entropy,
    favor_projection,
    jacobian_frobenius_norm,
    linear_attention,
    log_softmax,
    logsumexp,
    lsh_attention,
    lsh_buckets,
    max_probability,
    max_threads,
    merge,
    openmp,
    prune,
    prune_protocol,
    prune_shared,
    simd,
    softmax,
    softmax_jacobian,
    softmax_jacobian_product,
    topk_attention,
    approx_attention,
)
from ._sdpa import scaled_dot_product_attention

__all__ = [
    "KVCache",
    "PrunedKeyCache",
    "__version__",
    "attention",
    "attention_partial",
    "effective_support",
    "entropy",
    "favor_projection",
    "jacobian_frobenius_norm",
    "linear_attention",
    "log_softmax",
    "logsumexp",
    "lsh_attention",
    "lsh_buckets",
    "max_probability",
    "max_threads",
    "merge",
    "openmp",
    "prune",
    "prune_protocol",
    "prune_shared",
    "scaled_dot_product_attention",
    "simd",
    "softmax",
    "softmax_jacobian",
    "softmax_jacobian_product",
    "topk_attention",
    "approx_attention",
]
