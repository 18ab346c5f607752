"""Key-dimension pruning (attnkit.prune, prune_shared, PrunedKeyCache,
prune_protocol) against numpy definitions: the ThinK selection, the
compensated logits of docs/pruning.md, attention over the pruned cache.

Tolerances: the compensation is fitted in double and stored in the cache's
dtype, so a compressed logit scale ((c q_A + M^T q_B) . k_A + q_B . offset)
carries about (D + 8) u of T = scale (|q_A| |k_A| + |q_B| |M| |k_A| +
|q_B| |offset|) (u of the cache's dtype; the fit's own double rounding is far
below for these well-conditioned keys); attention over the cache is the fused
kernel with that logit error (oracle.bound_from_logit_errors).
"""

import math

import numpy as np
import pytest

import attnkit
import oracle

LD = oracle.LD
D, N0, W, RECENT = 16, 60, 8, 8


def data(rng, dtype, heads=None):
    shape = (heads, W, D) if heads else (W, D)
    qw = rng.standard_normal(shape).astype(dtype)
    k = (rng.standard_normal((N0, D)) * np.linspace(0.2, 2.0, D)).astype(dtype)  # dimensions of different size
    return qw, k


def think_kept(qw, k, kept_count):
    q2 = (qw.astype(np.float64) ** 2).reshape(-1, qw.shape[-1]).sum(0)
    diag = q2 * (k.astype(np.float64) ** 2).sum(0)
    return np.sort(np.argsort(-diag, kind="stable")[:kept_count])


def compensation(k_compressed, kept, compensation_kind, ridge=1e-6):
    """(M, offset) of docs/pruning.md: none (0, 0), mean (0, mu_B), regression
    M = S_BA (S_AA + rho I)^-1, rho = ridge tr(S) / D, offset = mu_B - M mu_A."""
    kc = k_compressed.astype(np.float64)
    dropped = np.setdiff1d(np.arange(kc.shape[1]), kept)
    mu = kc.mean(0)
    if compensation_kind == "none":
        return np.zeros((len(dropped), len(kept))), np.zeros(len(dropped)), dropped
    if compensation_kind == "mean":
        return np.zeros((len(dropped), len(kept))), mu[dropped], dropped
    c = kc - mu
    s = c.T @ c
    rho = ridge * np.trace(s) / kc.shape[1]
    m = s[np.ix_(dropped, kept)] @ np.linalg.inv(s[np.ix_(kept, kept)] + rho * np.eye(len(kept)))
    return m, mu[dropped] - m @ mu[kept], dropped


def pruned_logits(q, k, kept, n_c, m, offset, dropped, scale):
    """Scaled logits over the cache (n_q, n): compressed keys j < n_c with the
    folded query, window keys at full width."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    qa, qb = q[:, kept], q[:, dropped]
    z = np.empty((q.shape[0], k.shape[0]))
    z[:, :n_c] = scale * ((qa + qb @ m) @ k[:n_c, kept].T + (qb @ offset)[:, None])
    z[:, n_c:] = scale * (q @ k[n_c:].T)
    mag = np.empty_like(z)
    mag[:, :n_c] = scale * (np.abs(qa) @ np.abs(k[:n_c, kept]).T + (np.abs(qb) @ np.abs(m)) @ np.abs(k[:n_c, kept]).T
                            + (np.abs(qb) @ np.abs(offset))[:, None])
    mag[:, n_c:] = scale * (np.abs(q) @ np.abs(k[n_c:]).T)
    return z, mag


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compensation_kind", ["none", "mean", "regression"])
def test_think_selection_logits_and_attention(rng, dtype, compensation_kind):
    qw, k = data(rng, dtype)
    kept, cache = attnkit.prune(qw, k, ratio=0.5, compensation=compensation_kind, recent=RECENT)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(kept, think_kept(qw, k, D // 2))
    np.testing.assert_array_equal(cache.kept, kept)
    np.testing.assert_array_equal(cache.dropped, np.setdiff1d(np.arange(D), kept))
    n_c = N0 - RECENT
    assert (len(cache), cache.compressed_size, cache.window_size, cache.dim, cache.kept_dim) == (N0, n_c, RECENT, D, 8)
    assert cache.dtype == np.dtype(dtype).name
    np.testing.assert_array_equal(cache.compressed_keys(), k[:n_c][:, kept])
    np.testing.assert_array_equal(cache.window_keys(), k[n_c:])
    m, offset, dropped = compensation(k[:n_c], kept, compensation_kind)
    scale = 1 / math.sqrt(D)
    q = rng.standard_normal((5, D)).astype(dtype)
    z, mag = pruned_logits(q, k, kept, n_c, m, offset, dropped, scale)
    u = oracle.unit_roundoff(dtype)
    tol = (D + 8) * u * mag + 1e-10 * mag
    got = cache.logits(q)
    assert got.shape == (5, N0) and got.dtype == dtype
    assert np.all(np.abs(got - z) <= tol)
    # Attention over the cache: the fused kernel with that logit error.
    v = rng.standard_normal((N0, 6)).astype(dtype)
    for kw in [dict(mask="causal"), dict(), dict(mask="causal", window=20, sinks=3)]:
        out, lse = cache.attention(q, v, return_lse=True, **kw)
        vis = oracle.visible(5, N0, **kw)
        ref_out, ref_lse = oracle.attend(z, v, vis)
        err = tol.max(1)
        arg = 2 * np.abs(z).max(1)
        b_out, b_lse = oracle.bound_from_logit_errors(err, arg, float(np.abs(v).max()), N0, u)
        oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"pruned {kw}")


def test_append_compresses_the_oldest_window_tokens(rng):
    qw, k = data(rng, np.float64)
    kept, cache = attnkit.prune(qw, k, ratio=0.75, recent=RECENT)
    more = rng.standard_normal((5, D))
    cache.append(more[:4])
    cache.append(more[4])  # one token (D,)
    assert (len(cache), cache.compressed_size, cache.window_size) == (N0 + 5, N0 + 5 - RECENT, RECENT)
    all_k = np.vstack([k, more])
    n_c = N0 + 5 - RECENT
    z, _ = pruned_logits(all_k[-3:], all_k, kept, n_c, np.zeros((D - 4, 4)), np.zeros(D - 4),
                         np.setdiff1d(np.arange(D), kept), 1 / math.sqrt(D))
    np.testing.assert_allclose(cache.logits(all_k[-3:]), z, rtol=0, atol=1e-12)
    mem = cache.memory()
    assert mem["compressed_key_bytes"] == n_c * 4 * 8
    assert mem["window_key_bytes"] == RECENT * D * 8
    assert mem["unpruned_bytes"] == (N0 + 5) * D * 8
    assert mem["selection_bytes"] == D * 8
    assert mem["total_bytes"] == sum(mem[key] for key in ["compressed_key_bytes", "window_key_bytes",
                                                          "compensation_bytes", "selection_bytes",
                                                          "statistics_bytes"])


def test_shared_pruning_for_grouped_query_heads(rng):
    qw, k = data(rng, np.float32, heads=3)
    kept, cache = attnkit.prune_shared(qw, k, ratio=0.5, recent=RECENT)
    np.testing.assert_array_equal(kept, think_kept(qw, k, D // 2))
    q = rng.standard_normal((3, 4, D)).astype(np.float32)
    v = rng.standard_normal((N0, 5)).astype(np.float32)
    out = cache.attention(q, v, mask="causal")
    assert out.shape == (3, 4, 5)
    for h in range(3):
        np.testing.assert_array_equal(out[h], cache.attention(q[h], v, mask="causal"))


def test_protocol(rng):
    n, prompt = 70, 50
    q = rng.standard_normal((n, D))
    k = rng.standard_normal((n, D))
    v = rng.standard_normal((n, 6))
    r = attnkit.prune_protocol(q, k, v, prompt=prompt, window=W, ratio=0.5, recent=RECENT)
    assert r["prompt"] == prompt and r["first_judged"] == prompt
    kept, _ = attnkit.prune(q[prompt - W:prompt], k[:prompt], ratio=0.5, recent=RECENT)
    np.testing.assert_array_equal(r["kept"], kept)
    ref_out, _ = oracle.reference(q[prompt:], k, v, mask="causal")
    np.testing.assert_allclose(r["exact"], ref_out.astype(np.float64), rtol=0, atol=1e-14)
    err = np.linalg.norm(r["output"] - r["exact"]) / np.linalg.norm(r["exact"])
    assert abs(r["output_error"] - err) <= 1e-12 * err and 0 < err < 1
    assert r["memory"]["total_bytes"] > 0 and r["objective"] <= r["objective_total"]
    shared = attnkit.prune_protocol(np.stack([q, q]), k, v, prompt=prompt, window=W)
    assert len(shared) == 2 and np.array_equal(shared[0]["output"], shared[1]["output"])


def test_method_names_are_the_librarys(rng):
    qw, k = data(rng, np.float64)
    for select in ["topk", "greedy-remove", "greedy-remain", "swap", "residual", "optimal"]:
        kept, _ = attnkit.prune(qw, k, select=select, weights="centered")
        assert len(kept) == D // 2
    with pytest.raises(ValueError, match="select='best' is not one of topk\\|greedy-remove"):
        attnkit.prune(qw, k, select="best")
    with pytest.raises(ValueError, match="weights='x' is not one of gram\\|centered\\|attention"):
        attnkit.prune(qw, k, weights="x")
    with pytest.raises(ValueError, match="compensation='x' is not one of none\\|mean\\|regression"):
        attnkit.prune(qw, k, compensation="x")
    with pytest.raises(ValueError, match="rope_pairs='x' is not one of None\\|interleaved\\|half"):
        attnkit.prune(qw, k, rope_pairs="x")
    with pytest.raises(ValueError, match="ratio lambda = 1"):
        attnkit.prune(qw, k, ratio=1.0)
    with pytest.raises(ValueError, match="window queries .* and prompt keys .* must have the same width"):
        attnkit.prune(qw[:, :4], k)
