"""The softmax toolkit (attnkit.softmax, ...) against long-double numpy
definitions, row-wise over the last axis.

Tolerances: softmax of one row of m logits is exp of (beta z - max) (1 ulp
of exp, plus u |beta z - max| from the argument's rounding) normalised by an
m-term sum (m u), so each probability is within u (2 |beta z - max| + m + 4)
relative; the log-sum-exp, beta max + log(sum), within u (|beta max| + |lse| +
m + 4) absolute, and log_softmax,
beta z - lse, within that plus u (|beta z| + |beta z - lse|). The
statistics of probability rows are sums of m terms: (m + 4) u relative of
their magnitude.
"""

import numpy as np
import pytest

import attnkit
import oracle

LD = oracle.LD


def u_of(dtype):
    return oracle.unit_roundoff(dtype)


def ref_logsumexp(z, beta=1.0):
    z = np.asarray(z, dtype=LD) * LD(beta)
    m = z.max(axis=-1)
    m_safe = np.where(np.isfinite(m), m, 0)
    return m_safe + np.log(np.exp(z - m_safe[..., None]).sum(axis=-1)) + np.where(np.isfinite(m), 0, m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 3, 5)])
@pytest.mark.parametrize("beta", [1.0, 0.25, 3.0])
def test_softmax_logsumexp_log_softmax(rng, dtype, shape, beta):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    m = shape[-1]
    u = u_of(dtype)
    p = attnkit.softmax(z, beta)
    assert p.shape == shape and p.dtype == dtype
    zz = np.asarray(z, dtype=LD) * LD(beta)
    arg = np.abs(zz - zz.max(axis=-1, keepdims=True)).astype(np.float64)
    ref = oracle.softmax(zz)
    assert np.all(np.abs(p - ref.astype(np.float64)) <= u * (2 * arg + m + 4) * ref.astype(np.float64) + 1e-300)
    lse = attnkit.logsumexp(z, beta)
    assert lse.shape == shape[:-1]
    ref_lse = ref_logsumexp(z, beta).astype(np.float64)
    tol = u * (np.abs(zz.max(axis=-1)).astype(np.float64) + np.abs(ref_lse) + m + 4)
    assert np.all(np.abs(lse - ref_lse) <= tol)
    ls = attnkit.log_softmax(z, beta)
    ref_ls = (zz - ref_logsumexp(z, beta)[..., None]).astype(np.float64)
    # beta z and the subtraction round once each, on top of the lse's error.
    assert np.all(np.abs(ls - ref_ls) <= u * (np.abs(zz).astype(np.float64) + np.abs(ref_ls)) + tol[..., None])


def test_non_finite_rows():
    z = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [1e4, -1e4, 0.0]])
    p = attnkit.softmax(z)
    assert p[0, 1] == 0 and np.isclose(p[0].sum(), 1)
    assert np.all(p[1] == 0)
    assert np.all(np.isnan(p[2]))
    np.testing.assert_allclose(p[3], [1, 0, 0], atol=1e-300)
    lse = attnkit.logsumexp(z)
    assert np.isneginf(lse[1]) and np.isnan(lse[2]) and lse[3] == 1e4
    ls = attnkit.log_softmax(z)
    assert np.all(np.isneginf(ls[1])) and ls[0, 1] == -np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jacobian_and_its_product(rng, dtype):
    p = attnkit.softmax(rng.standard_normal((2, 3, 6)).astype(dtype))
    g = rng.standard_normal((2, 3, 6)).astype(dtype)
    j = attnkit.softmax_jacobian(p)
    assert j.shape == (2, 3, 6, 6) and j.dtype == dtype
    pl = p.astype(LD)
    ref = np.einsum("...i,ij->...ij", pl, np.eye(6, dtype=LD)) - pl[..., :, None] * pl[..., None, :]
    u = u_of(dtype)
    np.testing.assert_allclose(j, ref.astype(np.float64), rtol=0, atol=4 * u)
    jg = attnkit.softmax_jacobian_product(p, g)
    ref_jg = pl * (g.astype(LD) - (pl * g.astype(LD)).sum(-1, keepdims=True))
    np.testing.assert_allclose(jg, ref_jg.astype(np.float64), rtol=0, atol=(6 + 4) * u * float(np.abs(g).max()))
    # The product is J g.
    np.testing.assert_allclose(jg, np.einsum("...ij,...j->...i", j, g), rtol=0, atol=16 * u * float(np.abs(g).max()))
    # The Frobenius norm in closed form.
    fro = attnkit.jacobian_frobenius_norm(p)
    np.testing.assert_allclose(fro, np.sqrt((ref.astype(np.float64) ** 2).sum((-1, -2))), rtol=32 * u)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_statistics(rng, dtype):
    p = attnkit.softmax((rng.standard_normal((4, 9)) * 2).astype(dtype))
    pl = p.astype(LD)
    h = -(np.where(pl > 0, pl * np.log(np.where(pl > 0, pl, 1)), 0)).sum(-1)
    u = u_of(dtype)
    np.testing.assert_allclose(attnkit.entropy(p), h.astype(np.float64), rtol=(9 + 4) * u * 4)
    np.testing.assert_allclose(attnkit.effective_support(p), np.exp(h).astype(np.float64), rtol=(9 + 4) * u * 8)
    np.testing.assert_array_equal(attnkit.max_probability(p), p.max(-1))
    one_hot = np.eye(5)
    np.testing.assert_array_equal(attnkit.entropy(one_hot), np.zeros(5))
    np.testing.assert_allclose(attnkit.effective_support(np.full((1, 5), 0.2)), [5.0], rtol=1e-14)
    assert attnkit.entropy(np.array([0.5, 0.5])).shape == ()


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="beta = 0"):
        attnkit.softmax(np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match=r"entropy: probs .* row 0 column 1 is 1.5"):
        attnkit.entropy(np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError, match=r"softmax: x has shape \(2, 0\)"):
        attnkit.softmax(np.ones((2, 0)))
    with pytest.raises(ValueError, match="softmax_jacobian_product: p .* and g .* must have the same shape"):
        attnkit.softmax_jacobian_product(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="complex"):
        attnkit.softmax(np.ones(3, dtype=complex))
