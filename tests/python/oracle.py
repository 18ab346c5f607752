"""Test oracles for attnkit's Python bindings, written with numpy alone.

References: every attention variant evaluated from its DEFINITION in
np.longdouble (x87 extended precision on x86-64: 64-bit significand, unit
roundoff 2^-64), wider than both float32 and float64 -- the role the C++
tests give to the library's long-double reference. Their own rounding is
negligible against the bounds below, so a test compares the binding's result
with the reference within the bound of the binding's arithmetic alone.

Bounds: tests/attention/flash_bounds.hpp ported (worst case). For query row
i, with u the unit roundoff of the computation, a_i = scale max_j sum_c
|q_ic k_jc|, and L = (B_k + 16) + n_k / B_k + 16 the longest chain of blocked
sums (tile of B_k = 128 keys rounded up to a packet, the tiles, the exact
merges of key chunks):
    every weight is off by a relative  w_i = u (2 (d + 3) a_i + 2 a_i + 2),
    |O_ic - O_ref,ic| <= max|v| (2 w_i + 2 L u + u),
    |lse_i - lse_ref,i| <= (d + 3) u a_i + w_i + 2 L u  (+ 2 eps |lse_i|).
A score policy gives per-row bounds on its logit error e_i and on
|z_ij - max_j z_ij| (the exp argument, x_i); then w_i = 2 e_i + u (2 x_i + 2)
and |lse - lse_ref| <= e_i + w_i + 2 L u (flash_bounds'
error_bound_from_logit_errors). The policies' logit errors are the ones their
C++ tests derive (tests/similarity/*_test.cpp), ported below.
"""

from __future__ import annotations

import math

import numpy as np

LD = np.longdouble
U32 = 2.0**-24
U64 = 2.0**-53
BLOCK_K = 128


def unit_roundoff(dtype) -> float:
    return U64 if np.dtype(dtype) == np.float64 else U32


# --------------------------------------------------------------------- masks


def visible(n_q: int, n_k: int, mask: str = "none", offset=None, window=None, sinks: int = 0) -> np.ndarray:
    """(n_q, n_k) bool: docs/design.md's rule. Query i is token offset + i
    (offset default n_k - n_q); its band ends at e(i) = n_k (none),
    i + offset + 1 (causal) or i + offset (strict), starts at e(i) - window,
    and the first `sinks` keys stay visible."""
    if offset is None:
        offset = n_k - n_q
    i = np.arange(n_q)[:, None]
    j = np.arange(n_k)[None, :]
    if mask == "none":
        end = np.full_like(i, n_k)
    elif mask == "causal":
        end = np.clip(i + offset + 1, 0, n_k)
    elif mask == "strict":
        end = np.clip(i + offset, 0, n_k)
    else:
        raise ValueError(mask)
    begin = np.maximum(0, end - window) if window is not None else np.zeros_like(end)
    return (j < end) & ((j >= begin) | (j < sinks))


def query_positions(n_q: int, n_k: int, mask: str, offset=None) -> np.ndarray:
    if offset is None or mask == "none":
        offset = n_k - n_q
    return np.arange(n_q) + offset


# ------------------------------------------------------------------- logits


def dot_logits(q, k, scale):
    return LD(scale) * (q.astype(LD) @ k.astype(LD).T)


def rbf_logits(q, k, tau):
    q, k = q.astype(LD), k.astype(LD)
    d2 = ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1)  # the difference itself: no cancellation
    return -d2 / (2 * LD(tau))


def cosine_logits(q, k, tau):
    q, k = q.astype(LD), k.astype(LD)
    nq = np.sqrt((q * q).sum(1))
    nk = np.sqrt((k * k).sum(1))
    iq = np.where(nq == 0, LD(0), 1 / np.where(nq == 0, LD(1), nq))
    ik = np.where(nk == 0, LD(0), 1 / np.where(nk == 0, LD(1), nk))
    return (q @ k.T) * iq[:, None] * ik[None, :] / LD(tau)


def hyperbolic_project(x, curvature, margin):
    x = x.astype(LD)
    r = (1 - LD(margin)) / np.sqrt(LD(curvature))
    n = np.sqrt((x * x).sum(1))
    f = np.where(n > r, r / np.where(n == 0, LD(1), n), LD(1))
    return x * f[:, None]


def hyperbolic_logits(q, k, curvature, tau, margin):
    c = LD(curvature)
    qp, kp = hyperbolic_project(q, curvature, margin), hyperbolic_project(k, curvature, margin)
    nq, nk = (qp * qp).sum(1), (kp * kp).sum(1)
    diff = ((qp[:, None, :] - kp[None, :, :]) ** 2).sum(-1)
    t = 2 * c * diff / ((1 - c * nq)[:, None] * (1 - c * nk)[None, :])
    dist = np.log1p(t + np.sqrt(t * (t + 2))) / np.sqrt(c)
    return -dist / LD(tau)


def softcap_logits(q, k, scale, cap):
    return LD(cap) * np.tanh(dot_logits(q, k, scale) / LD(cap))


def alibi_slope(h: int, heads: int) -> float:
    """The standard ALiBi slope (the library's rule, from the paper's code)."""
    n = 1
    while 2 * n <= heads:
        n *= 2
    if h < n:
        return 2.0 ** (-8.0 * (h + 1) / n)
    return 2.0 ** (-8.0 * (2 * (h - n) + 1) / (2 * n))


def alibi_logits(q, k, scale, slope, qpos):
    kpos = np.arange(k.shape[0])
    dist = np.abs(qpos[:, None] - kpos[None, :]).astype(LD)
    return dot_logits(q, k, scale) - LD(slope) * dist


# ---------------------------------------------------------------- attention


def attend(z, v, vis):
    """softmax(z + mask) v and the lse over the visible entries, in long
    double; rows that see nothing: zero row, lse -inf."""
    z = np.where(vis, z.astype(LD), LD(-np.inf))
    m = z.max(1)
    seen = np.isfinite(m)
    e = np.where(vis, np.exp(z - np.where(seen, m, 0)[:, None]), LD(0))
    s = e.sum(1)
    out = (e @ v.astype(LD)) / np.where(seen, s, 1)[:, None]
    out[~seen] = 0
    lse = np.where(seen, m + np.log(np.where(seen, s, 1)), LD(-np.inf))
    return out, lse


def heads_of(x):
    """(..., n, d) as a list of (n, d) heads, flattened in C order."""
    return list(x.reshape(-1, x.shape[-2], x.shape[-1]))


def kv_index(q_shape, k_shape, h: int) -> int:
    """The key/value head of flattened query head h (repeat_interleave)."""
    q_heads = int(np.prod(q_shape[:-2], dtype=np.int64))
    kv_heads = int(np.prod(k_shape[:-2], dtype=np.int64))
    return h // (q_heads // kv_heads)


def multi_head(q, k, v, per_head):
    """Applies per_head(h, q_h, k_g, v_g) -> (out, lse) to every stacked head
    with its grouped-query key/value head; stacks the results."""
    qs, ks, vs = heads_of(q), heads_of(k), heads_of(v)
    outs, lses = [], []
    for h, qh in enumerate(qs):
        g = kv_index(q.shape, k.shape, h)
        o, lse = per_head(h, qh, ks[g], vs[g])
        outs.append(o)
        lses.append(lse)
    lead = q.shape[:-1]
    return np.stack(outs).reshape(lead + (v.shape[-1],)), np.stack(lses).reshape(lead)


def reference(q, k, v, *, mask="none", offset=None, window=None, sinks=0, scale=None, similarity="dot",
              tau=1.0, curvature=1.0, cap=50.0, alibi_slope_=None, margin=None):
    """attnkit.attention's definition, head by head, in long double."""
    d = q.shape[-1]
    n_q, n_k = q.shape[-2], k.shape[-2]
    sc = scale if scale is not None else 1.0 / math.sqrt(d)
    vis = visible(n_q, n_k, mask, offset, window, sinks)
    item_heads = q.shape[-3] if q.ndim >= 3 else 1
    if margin is None:
        margin = 1e-5 if q.dtype == np.float64 else 4e-3

    def per_head(h, qh, kh, vh):
        if similarity == "dot":
            z = dot_logits(qh, kh, sc)
        elif similarity == "rbf":
            z = rbf_logits(qh, kh, tau)
        elif similarity == "cosine":
            z = cosine_logits(qh, kh, tau)
        elif similarity == "hyperbolic":
            z = hyperbolic_logits(qh, kh, curvature, tau, margin)
        elif similarity == "softcap":
            z = softcap_logits(qh, kh, sc, cap)
        elif similarity == "alibi":
            slope = alibi_slope_ if alibi_slope_ is not None else alibi_slope(h % item_heads, item_heads)
            z = alibi_logits(qh, kh, sc, slope, query_positions(n_q, n_k, mask, offset))
        else:
            raise ValueError(similarity)
        return attend(z, vh, vis)

    return multi_head(q, k, v, per_head)


def softmax(z, axis=-1):
    z = np.asarray(z, dtype=LD)
    m = z.max(axis=axis, keepdims=True)
    e = np.exp(z - m)
    return e / e.sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------- bounds


def chain(n_k: int, block_k: int = BLOCK_K) -> float:
    return block_k + 16 + n_k / block_k + 16


def bound_from_abs_logits(abs_logits, max_v, dot_terms, n_k, u):
    """(output, lse) per-row bounds, flash_bounds' error_bound_from_abs_logits."""
    a = abs_logits.max(axis=1).astype(np.float64)
    L = chain(n_k)
    weights = u * (2 * dot_terms * a + 2 * a + 2)
    return max_v * (2 * weights + 2 * L * u + u), dot_terms * u * a + weights + 2 * L * u


def bound_from_logit_errors(err, arg, max_v, n_k, u):
    """(output, lse) per-row bounds, flash_bounds' error_bound_from_logit_errors."""
    L = chain(n_k)
    weights = 2 * err + u * (2 * arg + 2)
    return max_v * (2 * weights + 2 * L * u + u), err + weights + 2 * L * u


def abs_dot(qh, kh):
    return np.abs(qh.astype(np.float64)) @ np.abs(kh.astype(np.float64)).T


def policy_logit_bounds(h, qh, kh, *, u, similarity, scale, tau, curvature, cap, alibi_slope_, item_heads,
                        qpos, margin):
    """Per-row (logit error, exp argument) bounds of a score policy computed
    with unit roundoff u."""
    d = qh.shape[1]
    ad = abs_dot(qh, kh)
    if similarity == "dot":
        a = scale * ad
        return (d + 3) * u * a.max(1), 2 * a.max(1)
    if similarity == "rbf":
        kk = (kh.astype(np.float64) ** 2).sum(1) / 2
        qq = (qh.astype(np.float64) ** 2).sum(1) / 2
        err = (u * ((d + 3) * ad + (d + 2) * kk[None, :]) / tau).max(1) + u * (d + 2) * qq / tau
        return err, 2 * ((ad + kk[None, :]) / tau).max(1)
    if similarity == "cosine":
        n = qh.shape[0]
        return np.full(n, (2 * d + 5) * u / tau), np.full(n, 2 / tau)
    if similarity == "softcap":
        # tanh's own error: below 21 u of cap in float (softcap_test.cpp, ScaledTanhIsWithinItsErrorBound)
        return u * ((d + 3) * scale * ad.max(1) + 22 * cap), np.full(qh.shape[0], 2 * cap)
    if similarity == "alibi":
        slope = alibi_slope_ if alibi_slope_ is not None else alibi_slope(h % item_heads, item_heads)
        bias = slope * np.abs(qpos[:, None] - np.arange(kh.shape[0])[None, :])
        return (u * ((d + 3) * scale * ad + 2 * bias)).max(1), 2 * (scale * ad + bias).max(1)
    if similarity == "hyperbolic":
        # tests/similarity/hyperbolic_test.cpp: dt from the norms, their
        # reciprocals and the tile product; arcosh(1 + t) moves by at most
        # min(arcosh(1 + dt), dt / sqrt(t' (t' + 2))) plus 6 u of itself.
        c = curvature
        qp = hyperbolic_project(qh, c, margin).astype(np.float64)
        kp = hyperbolic_project(kh, c, margin).astype(np.float64)
        nq, nk = (qp**2).sum(1), (kp**2).sum(1)
        iq, ik = 1 / (1 - c * nq), 1 / (1 - c * nk)
        t = 2 * c * ((qp[:, None, :] - kp[None, :, :]) ** 2).sum(-1) * iq[:, None] * ik[None, :]
        adp = np.abs(qp) @ np.abs(kp).T
        dt = u * ((d + 6) * 2 * c * (nq[:, None] + nk[None, :] + 2 * adp) * iq[:, None] * ik[None, :]
                  + t * ((d + 3) * (c * nq * iq)[:, None] + (d + 3) * (c * nk * ik)[None, :] + 6))
        tp = np.maximum(t - dt, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope_bound = np.where(tp > 0, dt / np.sqrt(tp * (tp + 2)), np.inf)
        dd = np.minimum(np.arccosh(1 + dt), slope_bound)
        dist = np.arccosh(1 + t)
        err = ((dd + 6 * u * dist) / (tau * math.sqrt(c))).max(1)
        return err, 2 * (dist / (tau * math.sqrt(c))).max(1)
    raise ValueError(similarity)


def attention_bound(q, k, v, *, dtype, mask="none", offset=None, window=None, sinks=0, scale=None,
                    similarity="dot", tau=1.0, curvature=1.0, cap=50.0, alibi_slope_=None, margin=None, u=None):
    """Per-row (output, lse) bounds of the fused kernel for every stacked head,
    shaped like the output's rows (q.shape[:-1]). The logit terms are bounded
    over every key, visible or not (window and sinks only shrink them)."""
    d = q.shape[-1]
    n_q, n_k = q.shape[-2], k.shape[-2]
    sc = scale if scale is not None else 1.0 / math.sqrt(d)
    uu = unit_roundoff(dtype) if u is None else u
    max_v = float(np.abs(v.astype(np.float64)).max())
    item_heads = q.shape[-3] if q.ndim >= 3 else 1
    if margin is None:
        margin = 1e-5 if np.dtype(dtype) == np.float64 else 4e-3
    qpos = query_positions(n_q, n_k, mask, offset)
    qs, ks = heads_of(q), heads_of(k)
    outs, lses = [], []
    for h, qh in enumerate(qs):
        kh = ks[kv_index(q.shape, k.shape, h)]
        if similarity == "dot":
            o, l = bound_from_abs_logits(sc * abs_dot(qh, kh), max_v, d + 3, n_k, uu)
        else:
            err, arg = policy_logit_bounds(h, qh, kh, u=uu, similarity=similarity, scale=sc, tau=tau,
                                           curvature=curvature, cap=cap, alibi_slope_=alibi_slope_,
                                           item_heads=item_heads, qpos=qpos, margin=margin)
            o, l = bound_from_logit_errors(err, arg, max_v, n_k, uu)
        outs.append(o)
        lses.append(l)
    lead = q.shape[:-1]
    return np.stack(outs).reshape(lead), np.stack(lses).reshape(lead)


def assert_within(out, lse, ref_out, ref_lse, bound_out, bound_lse, what=""):
    """|out - ref| <= bound row by row (rows that see no key: exactly a zero
    row and lse = -inf); |lse - ref| <= bound + 2 eps |lse|."""
    ref_out = ref_out.astype(np.float64)
    ref_lse = ref_lse.astype(np.float64)
    out = np.asarray(out, dtype=np.float64)
    empty = np.isneginf(ref_lse)
    if lse is not None:
        assert np.array_equal(np.isneginf(lse), empty), f"{what}: rows with lse = -inf differ"
    assert np.all(out[empty] == 0), f"{what}: a row that sees no key is not zero"
    err = np.abs(out - ref_out).max(axis=-1)
    ok = (err <= bound_out) | empty
    assert ok.all(), (f"{what}: output error {err[~ok].max():.3e} > bound {bound_out[~ok].min():.3e} "
                      f"(worst ratio {(err / bound_out)[~empty].max():.3f})")
    if lse is None:
        return float((err / bound_out)[~empty].max()) if (~empty).any() else 0.0
    eps = 2 * float(np.finfo(np.asarray(lse).dtype).eps)
    lerr = np.abs(np.asarray(lse, dtype=np.float64) - np.where(empty, 0.0, ref_lse))
    lerr[empty] = 0
    lb = bound_lse + eps * np.abs(ref_lse)
    lok = (lerr <= lb) | empty
    assert lok.all(), f"{what}: lse error {lerr[~lok].max():.3e} > bound {lb[~lok].min():.3e}"
    return float((err / bound_out)[~empty].max()) if (~empty).any() else 0.0


# ------------------------------------------------------------ 16-bit storage


def round_bf16(x) -> np.ndarray:
    """float32 (or float64 via float32) rounded to bfloat16 to nearest, ties
    to even, returned as float32 (finite inputs)."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    b = f.view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32).reshape(f.shape)


def round_f16(x) -> np.ndarray:
    return np.asarray(np.asarray(x, dtype=np.float32).astype(np.float16), dtype=np.float32)
