"""attnkit.scaled_dot_product_attention against a numpy implementation of
PyTorch's documented semantics (torch is not installed here):

    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = zeros(L, S); if is_causal: masked where tril(ones(L, S)) is 0
    if enable_gqa: key/value repeat_interleave(query.size(-3) // key.size(-3), -3)
    attn_weight = softmax(query @ key.transpose(-2, -1) * scale_factor + attn_bias, dim=-1)
    return attn_weight @ value
"""

import math

import numpy as np
import pytest

import attnkit
import oracle


def torch_sdpa(query, key, value, is_causal=False, scale=None, enable_gqa=False):
    """PyTorch's reference implementation, in numpy long double."""
    L, S = query.shape[-2], key.shape[-2]
    scale_factor = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa:
        key = np.repeat(key, query.shape[-3] // key.shape[-3], axis=-3)
        value = np.repeat(value, query.shape[-3] // value.shape[-3], axis=-3)
    attn = query.astype(oracle.LD) @ np.swapaxes(key.astype(oracle.LD), -1, -2) * oracle.LD(scale_factor)
    if is_causal:
        attn = np.where(np.tril(np.ones((L, S), dtype=bool)), attn, oracle.LD(-np.inf))
    return oracle.softmax(attn) @ value.astype(oracle.LD)


CASES = {
    "L<S": ((2, 3, 5, 16), (2, 3, 12, 16)),
    "L=S": ((2, 3, 12, 16), (2, 3, 12, 16)),
    "L>S": ((2, 3, 12, 16), (2, 3, 5, 16)),
    "3d": ((3, 7, 8), (3, 9, 8)),
    "2d": ((7, 8), (9, 8)),
    "decode": ((1, 4, 1, 16), (1, 4, 20, 16)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_matches_pytorch_semantics(rng, case, is_causal, scale, dtype):
    qs, ks = CASES[case]
    q = rng.standard_normal(qs).astype(dtype)
    k = rng.standard_normal(ks).astype(dtype)
    v = rng.standard_normal(ks[:-1] + (6,)).astype(dtype)
    out = attnkit.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    assert out.shape == qs[:-1] + (6,) and out.dtype == dtype
    expected = torch_sdpa(q, k, v, is_causal, scale)
    b_out, _ = oracle.attention_bound(q, k, v, dtype=dtype, scale=scale)
    err = np.abs(out - expected.astype(np.float64)).max(axis=-1)
    assert (err <= b_out).all(), err.max()


def test_top_left_differs_from_attnkits_bottom_right(rng):
    # With L < S PyTorch's causal query 0 sees key 0 only; attnkit's own
    # causal mask puts the queries at the end (query 0 sees S - L + 1 keys).
    q = rng.standard_normal((4, 8))
    k = rng.standard_normal((10, 8))
    v = rng.standard_normal((10, 3))
    top_left = attnkit.scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(top_left[0], v[0], rtol=0, atol=1e-15)
    bottom_right = attnkit.attention(q, k, v, mask="causal")
    assert not np.allclose(top_left, bottom_right)
    np.testing.assert_allclose(attnkit.attention(q, k, v, mask="causal", offset=0), top_left, rtol=0, atol=1e-15)


@pytest.mark.parametrize("is_causal", [False, True])
def test_grouped_query_attention_is_repeat_interleave(rng, is_causal):
    q = rng.standard_normal((2, 8, 6, 16))
    k = rng.standard_normal((2, 2, 9, 16))
    v = rng.standard_normal((2, 2, 9, 4))
    out = attnkit.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    expected = torch_sdpa(q, k, v, is_causal, enable_gqa=True)
    np.testing.assert_allclose(out, expected.astype(np.float64), rtol=0, atol=1e-13)


def test_refuses_what_it_does_not_support(rng):
    q = rng.standard_normal((2, 4, 6, 16))
    k = rng.standard_normal((2, 2, 6, 16))
    v = rng.standard_normal((2, 2, 6, 16))
    with pytest.raises(ValueError, match="dropout_p=0.1"):
        attnkit.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="attn_mask"):
        attnkit.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((6, 6), dtype=bool))
    with pytest.raises(ValueError, match="enable_gqa=True"):
        attnkit.scaled_dot_product_attention(q, k, v)


def test_tensor_like_inputs_are_viewed_through_numpy(rng):
    # A CPU torch tensor reaches numpy through __array__ (tensor.numpy()
    # shares memory); this stand-in does the same.
    class Tensor:
        def __init__(self, a):
            self.a = a
            self.shape = a.shape

        def __array__(self, dtype=None):
            return self.a

    q = rng.standard_normal((2, 5, 8)).astype(np.float32)
    out = attnkit.scaled_dot_product_attention(Tensor(q), Tensor(q), Tensor(q), is_causal=True)
    np.testing.assert_array_equal(out, attnkit.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert attnkit._core._kernel_pointers()["q"] == q.ctypes.data
