"""Bad arguments raise ValueError naming the argument (and the accepted
values); the library's own checks come through with its message."""

import numpy as np
import pytest

import attnkit


@pytest.fixture
def qkv(rng):
    return rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 9, 8)), rng.standard_normal((2, 9, 4))


@pytest.mark.parametrize("kwargs,message", [
    (dict(mask="causl"), r"attention: mask='causl' is not one of none\|causal\|strict"),
    (dict(method="fast"), r"method='fast' is not one of flash\|reference"),
    (dict(similarity="dotp"), r"similarity='dotp' is not one of dot\|rbf\|cosine\|hyperbolic\|softcap\|alibi"),
    (dict(kv_dtype="fp8"), r"kv_dtype='fp8' is not one of None\|bf16\|f16"),
    (dict(tau=2.0), r"tau=2 is a parameter of similarity='rbf', 'cosine' or 'hyperbolic', not of similarity='dot'"),
    (dict(similarity="rbf", cap=3.0), r"cap=3 is a parameter of similarity='softcap'"),
    (dict(similarity="softcap", alibi_slope=0.1), r"alibi_slope=0.1 is a parameter of similarity='alibi'"),
    (dict(similarity="cosine", curvature=1.0), r"curvature=1 is a parameter of similarity='hyperbolic'"),
    # The library's messages:
    (dict(scale=-1.0), r"scale = -1 must be finite and > 0"),
    (dict(similarity="rbf", scale=0.5), r"RbfScore sets its own temperature .* leave the scale"),
    (dict(similarity="softcap", cap=0.0), r"SoftcapScore cap = 0"),
    (dict(threads=-1), r"attention: threads=-1 must be >= 0"),
    (dict(threads=-1, method="reference"), r"attention: threads=-1 must be >= 0"),
    (dict(mask="causal", offset=100), r"mask: offset 100 leaves no valid causal layout"),
    (dict(offset=1), r"an offset \(1\) was given with mask kind 'none'"),
    (dict(mask="causal", window=0), r"window = 0 must be >= 1"),
    (dict(sinks=10), r"sinks = 10 must be in \[0, n_k\]"),
])
def test_attention_arguments(qkv, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attnkit.attention(*qkv, **kwargs)


@pytest.mark.parametrize("shapes,message", [
    (((6, 8), (9, 7), (9, 4)), r"q \(6, 8\), k \(9, 7\) and v \(9, 4\): q and k must have the same last axis d"),
    (((2, 6, 8), (9, 8), (9, 4)), r"must have the same number of axes"),
    (((3, 6, 8), (2, 9, 8), (2, 9, 4)), r"the query heads \(3\) must be a multiple of the key/value heads \(2\)"),
    (((2, 6, 8), (2, 9, 8), (2, 8, 4)), r"k and v must agree on every axis but the last"),
    (((2, 2, 6, 8), (3, 2, 9, 8), (3, 2, 9, 4)), r"q and k must agree on the batch axes"),
    (((0, 8), (9, 8), (9, 4)), r"q has shape \(0, 8\); every axis must be >= 1"),
    (((8,), (9, 8), (9, 4)), r"q has shape \(8,\); expected at least 2 axes"),
])
def test_shapes_are_named(shapes, message):
    q, k, v = (np.ones(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        attnkit.attention(q, k, v)


def test_inputs_numpy_cannot_use(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="attention: q is complex"):
        attnkit.attention(q.astype(complex), k, v)
    with pytest.raises(ValueError, match="attention: k has dtype str32, which is not a real number type"):
        attnkit.attention(q, np.full((2, 9, 8), "a"), v)

    class RequiresGrad:  # a torch tensor that requires grad refuses __array__
        def __array__(self, dtype=None):
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")

    with pytest.raises(ValueError,
                       match=r"attention: v \(RequiresGrad\) cannot be viewed as a numpy array: RuntimeError: Can.t"):
        attnkit.attention(q, k, RequiresGrad())


def test_partial_and_merge(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match=r"key range 1 \[3, 5\) overlaps or precedes the range before it"):
        attnkit.attention_partial(q, k, v, ranges=[(0, 4), (3, 5)])
    with pytest.raises(ValueError, match=r"key range 0 \[0, 12\) is not inside the keys' positions \[0, 9\)"):
        attnkit.attention_partial(q, k, v, ranges=[(0, 12)])
    with pytest.raises(ValueError, match=r"sequence_length = 5 is shorter"):
        attnkit.attention_partial(q, k, v, sequence_length=5)
    o, lse = attnkit.attention_partial(q, k, v)
    with pytest.raises(ValueError, match=r"merge: o1 \(2, 6, 4\) and o2 \(2, 6, 3\) must have the same shape"):
        attnkit.merge(o, lse, o[..., :3], lse)
    with pytest.raises(ValueError, match=r"merge: lse1 \(2, 5\) and lse2 \(2, 6\) must have the shape \(2, 6\)"):
        attnkit.merge(o, lse[:, :5], o, lse)


def test_sparse_and_linear(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="topk_attention: top_k=0 must be >= 1"):
        attnkit.topk_attention(q, k, v, 0)
    with pytest.raises(ValueError, match=r"lsh_attention: hash='md5' is not one of angular\|simhash"):
        attnkit.lsh_attention(q, k, v, hash="md5")
    with pytest.raises(ValueError, match=r"fallback='x' is not one of last_visible_key\|zero_row"):
        attnkit.lsh_attention(q, k, v, fallback="x")
    with pytest.raises(ValueError, match=r"buckets = 3 must be even"):
        attnkit.lsh_attention(q, k, v, buckets=3)
    with pytest.raises(ValueError, match=r"feature_map='tanh' is not one of elu\|relu\|favor"):
        attnkit.linear_attention(q, k, v, feature_map="tanh")
    with pytest.raises(ValueError, match=r"features is a parameter of feature_map='favor', not of feature_map='elu'"):
        attnkit.linear_attention(q, k, v, features=64)
    with pytest.raises(ValueError, match=r"chunk = 0 must be >= 1"):
        attnkit.linear_attention(q, k, v, chunk=0)
    with pytest.raises(TypeError):  # prefix masks only: no window argument at all
        attnkit.linear_attention(q, k, v, window=4)
