"""scaled_dot_product_attention: PyTorch's function on attnkit's kernels."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._core import attention, attention_partial


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> np.ndarray:
    """torch.nn.functional.scaled_dot_product_attention's semantics on attnkit.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev):
    softmax(query @ key^T * scale) @ value, scale defaulting to 1/sqrt(E).
    Inputs may be numpy arrays or CPU torch tensors (viewed through numpy:
    pass tensor.detach() for tensors that require grad); the result is a
    numpy array, float64 if any input is float64 and float32 otherwise (wrap
    it with torch.from_numpy).

    is_causal=True follows PyTorch's TOP-LEFT alignment: query i sees keys
    j <= i, the mask tril(ones(L, S)), whatever L and S are. attnkit's own
    causal mask (attnkit.attention(mask="causal")) is BOTTOM-RIGHT: the
    queries are the last L tokens, query i sees keys j <= i + S - L. The two
    agree when L == S; for decoding (L < S, the queries being the newest
    tokens) PyTorch's top-left mask lets query 0 see key 0 only, which is
    rarely what a decoder wants: use attnkit.attention(mask="causal") there.

    enable_gqa=True allows fewer key/value heads than query heads (axis -3;
    query head h uses key/value head h // (Hq // Hkv), PyTorch's
    repeat_interleave layout); without it the head counts must match.

    Not supported, refused with ValueError: dropout_p != 0 (attnkit is
    inference-only) and attn_mask (attnkit's masks are positional: is_causal
    here, or mask / offset / window / sinks of attnkit.attention).
    """
    if dropout_p != 0.0:
        raise ValueError(
            f"scaled_dot_product_attention: dropout_p={dropout_p!r} is not supported "
            "(attnkit computes attention for inference: dropout_p must be 0.0)"
        )
    if attn_mask is not None:
        raise ValueError(
            "scaled_dot_product_attention: attn_mask is not supported: attnkit's masks are "
            "positional (is_causal=True here, or mask=/offset=/window=/sinks= of attnkit.attention)"
        )
    q_shape, k_shape = np.shape(query), np.shape(key)
    if len(q_shape) >= 3 and len(k_shape) == len(q_shape) and q_shape[-3] != k_shape[-3] and not enable_gqa:
        raise ValueError(
            f"scaled_dot_product_attention: query has {q_shape[-3]} heads and key {k_shape[-3]} "
            "(axis -3); pass enable_gqa=True for grouped-query attention"
        )
    if not is_causal:
        return attention(query, key, value, scale=scale)
    n_q = q_shape[-2] if len(q_shape) >= 2 else 0
    n_k = k_shape[-2] if len(k_shape) >= 2 else 0
    # Top-left: query i is at position i of a sequence of max(L, S) positions,
    # whose first S hold the keys. attnkit's causal mask with offset 0 on that
    # sequence shows query i the keys j <= i that exist.
    out, _ = attention_partial(
        query, key, value, mask="causal", offset=0, sequence_length=max(n_q, n_k), scale=scale
    )
    return out
