"""topk_attention, lsh_attention and linear_attention against long-double
definitions (oracle.py), every layout including grouped-query heads.

Bounds: top-k is the fused kernel's arithmetic over the kept keys (the
oracle.py bound). LSH and linear attention use the bounds their C++ tests
derive (tests/sparse/lsh_attention_test.cpp, tests/linear/linear_oracle.hpp),
ported below.
"""

import math

import numpy as np
import pytest

import attnkit
import oracle

LD = oracle.LD

LAYOUTS = {
    "n,d": ((40, 16), (60, 16), 8),
    "b,h,n,d": ((2, 2, 30, 16), (2, 2, 50, 16), 8),
    "gqa": ((2, 4, 30, 16), (2, 2, 50, 16), 8),
}


def make(rng, layout, dtype):
    qs, ks, dv = LAYOUTS[layout]
    return (rng.standard_normal(qs).astype(dtype), rng.standard_normal(ks).astype(dtype),
            rng.standard_normal(ks[:-1] + (dv,)).astype(dtype))


# -------------------------------------------------------------------- top-k

TOPK_MASKS = {
    "none": {},
    "causal": dict(mask="causal"),
    "strict": dict(mask="strict", offset=0),
    "window_sinks": dict(mask="causal", window=9, sinks=2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", TOPK_MASKS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_topk_is_softmax_over_the_k_best_visible_keys(rng, layout, mask, dtype):
    top_k = 7
    q, k, v = make(rng, layout, dtype)
    kw = TOPK_MASKS[mask]
    out, lse, kept = attnkit.topk_attention(q, k, v, top_k, return_lse=True, return_indices=True, **kw)
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    assert kept.shape == q.shape[:-1] + (top_k,) and kept.dtype == np.int64
    vis = oracle.visible(n_q, n_k, **kw)
    scale = 1 / math.sqrt(d)
    u = oracle.unit_roundoff(dtype)
    qs, ks = oracle.heads_of(q), oracle.heads_of(k)
    kept_heads = kept.reshape(-1, n_q, top_k)
    near_ties = 0
    for h, qh in enumerate(qs):
        g = oracle.kv_index(q.shape, k.shape, h)
        z = oracle.dot_logits(qh, ks[g], scale).astype(np.float64)
        err = (d + 3) * u * (scale * oracle.abs_dot(qh, ks[g])).max(1)  # per-row logit error
        for i in range(n_q):
            seen = np.flatnonzero(vis[i])
            chosen = kept_heads[h, i]
            chosen = chosen[chosen >= 0]
            assert np.all(np.diff(chosen) > 0) and len(chosen) == min(top_k, len(seen))
            assert set(chosen) <= set(seen)
            # The kept keys are the best ones up to the logit rounding ...
            others = np.setdiff1d(seen, chosen)
            if len(others):
                assert z[i, chosen].min() >= z[i, others].max() - 2 * err[i]
            # ... and exactly the oracle's top k when no near-tie makes the
            # set ambiguous (ties: the earlier key, as documented).
            order = seen[np.lexsort((seen, -z[i, seen]))]
            if len(seen) > top_k and z[i, order[top_k - 1]] - z[i, order[top_k]] <= 2 * err[i]:
                near_ties += 1
            else:
                np.testing.assert_array_equal(chosen, np.sort(order[:top_k]))
    assert near_ties <= 2  # the data is not degenerate
    # The output: softmax attention over each row's kept keys.
    sel = np.zeros((len(qs), n_q, n_k), dtype=bool)
    for h in range(len(qs)):
        for i in range(n_q):
            c = kept_heads[h, i]
            sel[h, i, c[c >= 0]] = True
    ref_out, ref_lse = oracle.multi_head(q, k, v, lambda h, qh, kh, vh: oracle.attend(
        oracle.dot_logits(qh, kh, scale), vh, sel[h]))
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=dtype)
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, "topk")
    # Without the indices: the same result.
    np.testing.assert_array_equal(attnkit.topk_attention(q, k, v, top_k, **kw), out)


def test_topk_with_k_at_least_the_keys_is_exact_attention(rng):
    q, k, v = make(rng, "gqa", np.float64)
    for kw in TOPK_MASKS.values():
        np.testing.assert_allclose(attnkit.topk_attention(q, k, v, 1000, **kw), attnkit.attention(q, k, v, **kw),
                                   rtol=0, atol=1e-13)


# ---------------------------------------------------------------------- LSH


def lsh_bound(qh, kh, scale, rounds, u):
    """tests/sparse/lsh_attention_test.cpp's lsh_bound, times max|v| outside."""
    d = qh.shape[1]
    qk = float(np.linalg.norm(qh.astype(np.float64), axis=1).max()
               * np.linalg.norm(kh.astype(np.float64), axis=1).max()) * scale
    e_w = (d + 2) * u * qk + 2 * u * qk + 4 * u + (kh.shape[0] + 2) * u
    return 2 * e_w / (1 - e_w) + 6 * rounds * u + u


LSH_MASKS = {"none": {}, "causal": dict(mask="causal"), "strict": dict(mask="strict", offset=0)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hash_kind,buckets", [("angular", 8), ("simhash", 4), ("angular", 1)])
@pytest.mark.parametrize("fallback", ["last_visible_key", "zero_row"])
@pytest.mark.parametrize("mask", LSH_MASKS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lsh_is_attention_over_the_colliding_keys(rng, layout, mask, fallback, hash_kind, buckets, dtype):
    rounds, seed = 2, 7
    q, k, v = make(rng, layout, dtype)
    kw = LSH_MASKS[mask]
    hash_args = dict(buckets=buckets, rounds=rounds, hash=hash_kind, seed=seed)
    out, lse = attnkit.lsh_attention(q, k, v, fallback=fallback, return_lse=True, **hash_args, **kw)
    # The buckets, from the same hash family: one projection for all heads.
    q_codes = attnkit.lsh_buckets(q, **hash_args).reshape(-1, q.shape[-2], rounds)
    k_codes = attnkit.lsh_buckets(k, **hash_args).reshape(-1, k.shape[-2], rounds)
    assert q_codes.dtype == np.int64 and q_codes.min() >= 0 and q_codes.max() < buckets
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    vis = oracle.visible(n_q, n_k, **kw)
    scale = 1 / math.sqrt(d)

    def per_head(h, qh, kh, vh):
        g = oracle.kv_index(q.shape, k.shape, h)
        collide = (q_codes[h][:, None, :] == k_codes[g][None, :, :]).any(-1) & vis
        o, l = oracle.attend(oracle.dot_logits(qh, kh, scale), vh, collide)
        for i in np.flatnonzero(~collide.any(1)):  # the fallback
            last = np.flatnonzero(vis[i])
            if fallback == "last_visible_key" and len(last):
                o[i] = vh[last[-1]]
                l[i] = oracle.dot_logits(qh[i:i + 1], kh[last[-1]:last[-1] + 1], scale)[0, 0]
        return o, l

    ref_out, ref_lse = oracle.multi_head(q, k, v, per_head)
    u = oracle.unit_roundoff(dtype)
    max_v = float(np.abs(v).max())
    qh_all, kh_all = q.reshape(-1, d), k.reshape(-1, d)
    bound = lsh_bound(qh_all, kh_all, scale, rounds, u)
    b_out = np.full(q.shape[:-1], bound * max_v)
    b_lse = bound / 2 + 2 * u * (rounds + 1) * (np.abs(np.where(np.isfinite(ref_lse), ref_lse, 0)).astype(float) + 1)
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, "lsh")
    if buckets == 1:  # every key collides: exact attention
        exact = attnkit.attention(q, k, v, **kw)
        np.testing.assert_allclose(out, exact, rtol=0, atol=2 * bound * max_v)


# -------------------------------------------------------------- linear


def features(kind, x, w=None, scale=None):
    x = x.astype(LD)
    if kind == "elu":
        return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))
    if kind == "relu":
        return np.maximum(x, 0)
    xs = np.sqrt(LD(scale)) * x
    e = xs @ w.astype(LD).T - (xs * xs).sum(1, keepdims=True) / 2
    return np.exp(e) / np.sqrt(LD(w.shape[0]))


def linear_bound(e_phi, m, n_k, chunk, threads, u):
    """tests/linear/linear_oracle.hpp's linear_bound (times max|v| outside)."""
    rescales = n_k // chunk + 2 + 4 * threads
    e_w = 2 * e_phi + (m + n_k + chunk + rescales + 2) * u
    return 2 * e_w / (1 - e_w) + u


def favor_feature_error(x, w, scale, u):
    d = x.shape[1]
    max_e = (math.sqrt(scale) * float(np.linalg.norm(w, axis=1).max()) * float(np.linalg.norm(x, axis=1).max())
             + scale * float(np.linalg.norm(x, axis=1).max()) ** 2 / 2)
    return (d + 2) * u * max_e + 3 * u * max_e + 6 * u


LINEAR_MASKS = {"none": {}, "causal": dict(mask="causal"), "strict": dict(mask="strict"),
                "causal_offset": dict(mask="causal", offset=3)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", ["elu", "relu", "favor"])
@pytest.mark.parametrize("mask", LINEAR_MASKS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_attention_matches_its_definition(rng, layout, mask, feature_map, dtype, threads):
    q, k, v = make(rng, layout, dtype)
    q *= dtype(0.5)
    k *= dtype(0.5)
    kw = LINEAR_MASKS[mask]
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    chunk, m = 8, 48
    extra = dict(features=m, seed=3) if feature_map == "favor" else {}
    out, lse = attnkit.linear_attention(q, k, v, feature_map=feature_map, chunk=chunk, threads=threads,
                                        return_lse=True, **extra, **kw)
    w = attnkit.favor_projection(d, features=m, seed=3) if feature_map == "favor" else None
    assert w is None or (w.shape == (m, d) and w.dtype == np.float64)
    scale = 1 / math.sqrt(d)
    vis = oracle.visible(n_q, n_k, **kw)

    def per_head(h, qh, kh, vh):
        a = features(feature_map, qh, w, scale) @ features(feature_map, kh, w, scale).T
        a = np.where(vis, a, 0)
        den = a.sum(1)
        o = (a @ vh.astype(LD)) / np.where(den > 0, den, 1)[:, None]
        o[den == 0] = 0
        return o, np.where(den > 0, np.log(np.where(den > 0, den, 1)), LD(-np.inf))

    ref_out, ref_lse = oracle.multi_head(q, k, v, per_head)
    u = oracle.unit_roundoff(dtype)
    if feature_map == "elu":
        e_phi = 4 * u
    elif feature_map == "relu":
        e_phi = 0.0
    else:
        e_phi = max(favor_feature_error(q.reshape(-1, d), w, scale, u),
                    favor_feature_error(k.reshape(-1, d), w, scale, u))
    mm = m if feature_map == "favor" else d
    bound = linear_bound(e_phi, mm, n_k, chunk, threads, u)
    max_v = float(np.abs(v).max())
    b_out = np.full(q.shape[:-1], bound * max_v)
    e_w = bound / 2
    b_lse = e_w / (1 - e_w) + 2 * u * np.abs(np.where(np.isfinite(ref_lse), ref_lse, 0)).astype(float) + 4 * u
    oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"linear {feature_map}")


def test_linear_relu_without_overlap_is_a_zero_row():
    q = np.array([[-1.0, -2.0], [1.0, 0.5]])
    k = np.array([[1.0, 1.0], [2.0, 0.0]])
    v = np.array([[1.0], [2.0]])
    out, lse = attnkit.linear_attention(q, k, v, feature_map="relu", return_lse=True)
    assert out[0, 0] == 0 and np.isneginf(lse[0]) and np.isfinite(lse[1])
