"""attnkit.attention, attention_partial and merge against the long-double
oracle (oracle.py), within the fused kernel's worst-case bound."""

import numpy as np
import pytest

import attnkit
import oracle

# (q shape, k shape, d_v): one head, stacked heads, batch x heads, grouped
# query heads, several key tiles, decode.
LAYOUTS = {
    "n,d": ((50, 16), (70, 16), 12),
    "h,n,d": ((3, 50, 16), (3, 70, 16), 12),
    "b,h,n,d": ((2, 3, 40, 16), (2, 3, 60, 16), 8),
    "gqa": ((2, 4, 40, 16), (2, 2, 60, 16), 8),
    "tiles": ((2, 150, 32), (2, 300, 32), 24),
    "decode": ((4, 1, 32), (2, 300, 32), 16),
}

# mask keyword arguments (each valid for every layout above)
MASKS = {
    "none": {},
    "causal": dict(mask="causal"),
    "strict": dict(mask="strict"),
    "causal_offset0": dict(mask="causal", offset=0),
    "strict_offset0": dict(mask="strict", offset=0),  # query 0 sees no key
    "strict_after": dict(mask="strict", offset="after"),  # n_k - n_q + 1: the next tokens
    "window": dict(mask="causal", window=7),
    "window_sinks": dict(mask="causal", window=7, sinks=2),
    "none_window_sinks": dict(mask="none", window=10, sinks=1),
}


def make(rng, layout, dtype):
    qs, ks, dv = LAYOUTS[layout]
    q = rng.standard_normal(qs).astype(dtype)
    k = rng.standard_normal(ks).astype(dtype)
    v = rng.standard_normal(ks[:-1] + (dv,)).astype(dtype)
    return q, k, v


def resolve(mask_kwargs, q, k):
    kw = dict(mask_kwargs)
    if kw.get("offset") == "after":
        kw["offset"] = k.shape[-2] - q.shape[-2] + 1
    return kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_flash_matches_the_definition(rng, layout, mask, dtype):
    q, k, v = make(rng, layout, dtype)
    kw = resolve(MASKS[mask], q, k)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kw)
    assert out.dtype == dtype and lse.dtype == dtype
    assert out.shape == q.shape[:-1] + (v.shape[-1],) and lse.shape == q.shape[:-1]
    ref_out, ref_lse = oracle.reference(q, k, v, **kw)
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype, **kw)
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"{layout} {mask}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", ["none", "causal", "strict_offset0", "window_sinks"])
@pytest.mark.parametrize("layout", ["n,d", "gqa", "decode"])
def test_reference_method_is_the_oracle(rng, layout, mask, dtype):
    # The library's reference accumulates one type wider (double for float32,
    # long double for float64) and rounds once: the kernel bound with the
    # wide unit roundoff, plus half an ulp of the result.
    q, k, v = make(rng, layout, dtype)
    kw = resolve(MASKS[mask], q, k)
    out, lse = attnkit.attention(q, k, v, method="reference", return_lse=True, **kw)
    ref_out, ref_lse = oracle.reference(q, k, v, **kw)
    wide = 2.0**-53 if dtype == np.float32 else 2.0**-64
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype, u=wide, **kw)
    u = oracle.unit_roundoff(dtype)
    max_v = float(np.abs(v).max())
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out + 2 * u * max_v, b_lse, f"{layout} {mask}")


SIMILARITIES = {
    "rbf": dict(similarity="rbf", tau=6.0),
    "cosine": dict(similarity="cosine", tau=0.3),
    "hyperbolic": dict(similarity="hyperbolic", curvature=2.0, tau=0.3),
    "softcap": dict(similarity="softcap", cap=3.0),
    "alibi": dict(similarity="alibi", alibi_slope=0.05),
    "alibi_standard": dict(similarity="alibi"),  # each head's standard slope
}


def oracle_kwargs(kw):
    kw = dict(kw)
    if "alibi_slope" in kw:
        kw["alibi_slope_"] = kw.pop("alibi_slope")
    return kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", ["none", "causal", "window_sinks"])
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_similarities_match_their_definitions(rng, similarity, mask, dtype):
    # Batch x grouped heads: ALiBi's standard slopes follow the head within a
    # batch item (q.shape[-3]), not the flattened head index.
    q, k, v = make(rng, "gqa", dtype)
    if similarity == "hyperbolic":  # inside the ball, some keys near and beyond its boundary
        q *= dtype(0.08)
        k *= dtype(0.08)
        k[..., :3, :] *= dtype(6.0)
    sim = SIMILARITIES[similarity]
    kw = resolve(MASKS[mask], q, k)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kw, **sim)
    ref_out, ref_lse = oracle.reference(q, k, v, **kw, **oracle_kwargs(sim))
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype, **kw, **oracle_kwargs(sim))
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, similarity)
    # The reference method evaluates the same definition.
    r_out = attnkit.attention(q, k, v, method="reference", **kw, **sim)
    np.testing.assert_allclose(r_out, out, rtol=0, atol=float(b_out.max()))


def test_alibi_standard_slopes_are_per_head_of_a_batch_item(rng):
    # Head h of every batch item has slope alibi_slope(h, heads): batch item 1
    # computed alone equals its rows of the batched call, bit for bit.
    q, k, v = make(rng, "b,h,n,d", np.float32)
    both = attnkit.attention(q, k, v, similarity="alibi", mask="causal", threads=1)
    one = attnkit.attention(q[1], k[1], v[1], similarity="alibi", mask="causal", threads=1)
    np.testing.assert_array_equal(both[1], one)


@pytest.mark.parametrize("kv_dtype", ["bf16", "f16"])
@pytest.mark.parametrize("mask", ["none", "causal", "window_sinks"])
@pytest.mark.parametrize("layout", ["n,d", "gqa", "decode"])
def test_16bit_kv_storage(rng, layout, mask, kv_dtype):
    # K and V rounded once to 16 bits, then exact attention in float32: the
    # oracle over the rounded values, within the float32 kernel bound.
    q, k, v = make(rng, layout, np.float32)
    kw = resolve(MASKS[mask], q, k)
    out, lse = attnkit.attention(q, k, v, kv_dtype=kv_dtype, return_lse=True, **kw)
    assert out.dtype == np.float32
    rnd = oracle.round_bf16 if kv_dtype == "bf16" else oracle.round_f16
    kr, vr = rnd(k), rnd(v)
    ref_out, ref_lse = oracle.reference(q, kr, vr, **kw)
    b_out, b_lse = oracle.attention_bound(q, kr, vr, dtype=np.float32, **kw)
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, kv_dtype)
    # float64 queries compute in float32 too (the library's 16-bit rule).
    out64 = attnkit.attention(q.astype(np.float64), k, v, kv_dtype=kv_dtype, **kw)
    assert out64.dtype == np.float32
    np.testing.assert_array_equal(out64, out)
    ref = attnkit.attention(q, k, v, kv_dtype=kv_dtype, method="reference", **kw)
    np.testing.assert_allclose(ref, out, rtol=0, atol=float(b_out.max()))


def test_mixed_dtypes_compute_in_float64(rng):
    q, k, v = make(rng, "n,d", np.float32)
    out = attnkit.attention(q, k.astype(np.float64), v)
    assert out.dtype == np.float64
    ref_out, _ = oracle.reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
    b_out, _ = oracle.attention_bound(q, k, v, dtype=np.float64)
    oracle.assert_within(out, None, ref_out, np.zeros(out.shape[:-1]), b_out, None, "mixed")


def test_scale(rng):
    q, k, v = make(rng, "h,n,d", np.float64)
    out, lse = attnkit.attention(q, k, v, scale=0.7, mask="causal", return_lse=True)
    ref_out, ref_lse = oracle.reference(q, k, v, scale=0.7, mask="causal")
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=np.float64, scale=0.7, mask="causal")
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, "scale")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_prefill_is_bit_identical(rng, dtype):
    # Prefill with at least two query blocks per thread: the keys are not
    # split, so every thread count gives the same bits (docs/design.md).
    q = rng.standard_normal((2, 512, 32)).astype(dtype)
    k = rng.standard_normal((2, 512, 32)).astype(dtype)
    v = rng.standard_normal((2, 512, 32)).astype(dtype)
    for mask in ["none", "causal"]:
        one = attnkit.attention(q, k, v, mask=mask, threads=1, return_lse=True)
        for threads in [2, 0]:
            many = attnkit.attention(q, k, v, mask=mask, threads=threads, return_lse=True)
            np.testing.assert_array_equal(many[0], one[0])
            np.testing.assert_array_equal(many[1], one[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_decode_within_bound(rng, dtype):
    # Decode splits the keys across threads and merges the partials exactly:
    # not bit-identical, but each within the kernel bound of the oracle.
    q = rng.standard_normal((1, 1, 64)).astype(dtype)
    k = rng.standard_normal((1, 3000, 64)).astype(dtype)
    v = rng.standard_normal((1, 3000, 64)).astype(dtype)
    ref_out, ref_lse = oracle.reference(q, k, v, mask="causal")
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype, mask="causal")
    for threads in [1, 2, 3]:
        out, lse = attnkit.attention(q, k, v, mask="causal", threads=threads, return_lse=True)
        oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"threads={threads}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", ["none", "causal", "window_sinks"])
def test_partials_over_a_partition_merge_to_the_whole(rng, dtype, mask):
    q, k, v = make(rng, "gqa", dtype)
    kw = resolve(MASKS[mask], q, k)
    n_k = k.shape[-2]
    cuts = [0, 13, 14, 40, n_k]
    parts = [attnkit.attention_partial(q, k, v, ranges=[(a, b)], **kw) for a, b in zip(cuts, cuts[1:])]
    out, lse = parts[0]
    for o, l in parts[1:]:
        out, lse = attnkit.merge(out, lse, o, l)
    ref_out, ref_lse = oracle.reference(q, k, v, **kw)
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype, **kw)
    u = oracle.unit_roundoff(dtype)
    # Each merge adds a few roundings of max|v| (and of the lse).
    slack = 8 * len(parts) * u * float(np.abs(v).max())
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out + slack, b_lse + 8 * len(parts) * u, mask)
    # One partial is attention over its keys alone: the oracle with the other
    # keys masked out.
    o, l = parts[2]
    sub_vis = oracle.visible(q.shape[-2], n_k, **kw)
    sub_vis[:, : cuts[2]] = False
    sub_vis[:, cuts[3]:] = False
    exp_o, exp_l = oracle.multi_head(q, k, v, lambda h, qh, kh, vh: oracle.attend(
        oracle.dot_logits(qh, kh, 1 / np.sqrt(q.shape[-1])), vh, sub_vis))
    oracle.assert_within(o, l, exp_o, exp_l, b_out, b_lse, "one partial")


def test_partial_over_a_slice_of_a_longer_sequence(rng):
    # k, v hold positions [a, b) of a sequence of n_k keys: the mask is
    # resolved on the whole sequence (first_position, sequence_length).
    q, k, v = make(rng, "h,n,d", np.float64)
    n_k = k.shape[-2]
    a, b = 20, 45
    sl, sv = k[:, a:b], v[:, a:b]
    out1, lse1 = attnkit.attention_partial(q, sl, sv, first_position=a, sequence_length=n_k, mask="causal")
    out2, lse2 = attnkit.attention_partial(q, k, v, ranges=[(a, b)], mask="causal")
    np.testing.assert_allclose(out1, out2, rtol=0, atol=1e-14)
    np.testing.assert_allclose(lse1, lse2, rtol=1e-14, atol=0)


def test_merge_with_an_empty_part(rng):
    o1 = rng.standard_normal((3, 4))
    l1 = rng.standard_normal(3)
    o2 = np.zeros((3, 4))
    l2 = np.full(3, -np.inf)
    o, l = attnkit.merge(o1, l1, o2, l2)
    np.testing.assert_array_equal(o, o1)
    np.testing.assert_array_equal(l, l1)
    o, l = attnkit.merge(o2, l2, o2, l2)
    assert np.all(o == 0) and np.all(np.isneginf(l))
    # The inputs are not modified.
    assert np.all(o2 == 0) and np.all(np.isneginf(l2))
