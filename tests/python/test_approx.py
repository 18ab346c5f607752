"""attnkit.approx_attention: the bound it returns holds against a long-double
reference written in the test (oracle.reference), meets the certified
contract, and bad input raises ValueError naming the argument."""

import numpy as np
import pytest

import attnkit
import oracle


def clustered(rng, heads, kv_heads, n, d, dtype):
    # Tight key clusters whose values follow the cluster: structure the
    # method can summarise, so its approximate tiers run, not only the kernel.
    centres = rng.standard_normal((kv_heads, 4, d)) * 2.0
    labels = rng.integers(0, 4, size=(kv_heads, n))
    k = np.take_along_axis(centres, labels[..., None], axis=1) + 0.02 * rng.standard_normal((kv_heads, n, d))
    values = rng.standard_normal((kv_heads, 4, d))
    v = np.take_along_axis(values, labels[..., None], axis=1) + 0.02 * rng.standard_normal((kv_heads, n, d))
    q = rng.standard_normal((heads, n, d))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", [dict(), dict(mask="causal"), dict(mask="strict", offset=0)])
@pytest.mark.parametrize("budget", [None, 16])
def test_bound_holds_and_meets_the_contract(rng, dtype, mask, budget):
    q, k, v = clustered(rng, 4, 2, 300, 8, dtype)
    eps = 0.05
    out, lse, bound, stats = attnkit.approx_attention(q, k, v, eps=eps, budget=budget, return_lse=True,
                                                      return_stats=True, **mask)
    assert out.dtype == dtype and bound.dtype == np.float64 and bound.shape == out.shape
    ref_out, ref_lse = oracle.reference(q, k, v, **mask)
    # The long-double reference is exact to far below the bound's own rounding
    # term (the fused kernel's derived bound, at least ~1e-7 max|v| in float,
    # ~1e-16 in double): a margin of 64 double ulps of max|v| covers it.
    margin = 64 * np.finfo(np.float64).eps * np.abs(v).max()
    err = np.abs(out.astype(np.float64) - ref_out.astype(np.float64))
    assert np.all(err <= bound + margin)
    if budget is None:
        # Certified: bound <= eps * max over the row's visible keys of |v_c|,
        # checked here against the larger max over all keys of the head.
        assert np.all(bound <= eps * np.abs(v).max(axis=-2, keepdims=True).repeat(2, axis=0))
        assert stats["within_eps"]
    assert stats["exact_keys"] + stats["summarised_keys"] + stats["skipped_keys"] > 0


def test_rows_that_see_no_key(rng):
    q, k, v = clustered(rng, 1, 1, 40, 4, np.float64)
    out, lse, bound = attnkit.approx_attention(q, k, v, mask="strict", offset=0, return_lse=True)
    assert np.all(out[:, 0] == 0) and np.isneginf(lse[:, 0]).all() and np.all(bound[:, 0] == 0)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(eps=0.0), "eps"), (dict(eps=1.0), "eps"), (dict(budget=0), "budget"),
    (dict(mask="causal", threads=-1), "threads"), (dict(mask="diagonal"), "mask"),
])
def test_bad_input_names_the_argument(rng, kwargs, needle):
    q, k, v = clustered(rng, 1, 1, 16, 4, np.float32)
    with pytest.raises(ValueError, match=needle):
        attnkit.approx_attention(q, k, v, **kwargs)


def test_non_finite_keys_are_refused(rng):
    q, k, v = clustered(rng, 1, 1, 16, 4, np.float32)
    k[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="K"):
        attnkit.approx_attention(q, k, v)
