"""No copies of C-contiguous float32 / float64 inputs, exactly one of
anything else, and outputs that never alias an input.

Two independent checks: the data pointers the library's entry point received
(attnkit._core._kernel_pointers(), recorded by the binding right at the
library call) and tracemalloc, which sees every numpy allocation: a call that
reads its inputs in place allocates its outputs and nothing array-sized else.
"""

import tracemalloc

import numpy as np
import pytest

import attnkit

pointers = attnkit._core._kernel_pointers


def inputs(rng, shape_q, shape_k, dtype):
    return (np.ascontiguousarray(rng.standard_normal(shape_q), dtype=dtype),
            np.ascontiguousarray(rng.standard_normal(shape_k), dtype=dtype),
            np.ascontiguousarray(rng.standard_normal(shape_k), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((30, 8), (40, 8)), ((2, 4, 30, 8), (2, 2, 40, 8))])
@pytest.mark.parametrize("method", ["flash", "reference"])
def test_contiguous_inputs_reach_the_kernel_in_place(rng, dtype, shapes, method):
    q, k, v = inputs(rng, *shapes, dtype)
    out, lse = attnkit.attention(q, k, v, mask="causal", method=method, return_lse=True)
    p = pointers()
    assert (p["q"], p["k"], p["v"]) == (q.ctypes.data, k.ctypes.data, v.ctypes.data)
    assert (p["out"], p["lse"]) == (out.ctypes.data, lse.ctypes.data)  # written in place
    for x in (q, k, v):
        assert not np.shares_memory(out, x) and not np.shares_memory(lse, x)
    assert not np.shares_memory(out, lse)


def test_other_inputs_are_converted_once_with_the_same_result(rng):
    q, k, v = inputs(rng, (2, 30, 16), (2, 40, 16), np.float32)
    expected = attnkit.attention(q, k, v, mask="causal")
    converted = {
        "strided": np.repeat(q, 2, axis=-1)[..., ::2],
        "fortran": np.asfortranarray(q),
        "float16": q.astype(np.float16),
        "big-endian": q.astype(">f4"),
        "list": q.tolist(),
    }
    for name, qq in converted.items():
        out = attnkit.attention(qq, k, v, mask="causal")
        if name in ("strided", "fortran", "big-endian"):
            np.testing.assert_array_equal(out, expected, err_msg=name)
        assert out.dtype == (np.float64 if name == "list" else np.float32), name
        assert pointers()["q"] != getattr(qq, "ctypes", q.ctypes).data, name
        if name != "list":  # (a list of floats is float64: then k is converted as well)
            assert pointers()["k"] == k.ctypes.data  # the others still in place
    # Integers convert to float32, float64 anywhere makes everything float64.
    assert attnkit.attention(np.ones((3, 16), dtype=np.int32), k[0], v[0]).dtype == np.float32
    out = attnkit.attention(q, k.astype(np.float64), v)
    assert out.dtype == np.float64 and pointers()["q"] != q.ctypes.data


def test_float16_kv_storage_reads_float16_arrays_in_place(rng):
    q, k, v = inputs(rng, (3, 20, 16), (3, 50, 16), np.float32)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    out = attnkit.attention(q, k16, v16, kv_dtype="f16")
    p = pointers()
    assert (p["q"], p["k"], p["v"]) == (q.ctypes.data, k16.ctypes.data, v16.ctypes.data)
    np.testing.assert_array_equal(out, attnkit.attention(q, k, v, kv_dtype="f16"))
    assert pointers()["k"] != k.ctypes.data  # float32 K rounded once into 16 bits


def test_kv_cache_attends_in_place(rng):
    cache = attnkit.KVCache(16, 8)
    k = rng.standard_normal((100, 16)).astype(np.float32)
    cache.append(k, k[:, :8])
    q = rng.standard_normal((2, 16)).astype(np.float32)
    out = cache.attend(q, mask="causal")
    keys, values = cache.keys, cache.values
    assert np.shares_memory(keys, cache.keys)  # views, not copies
    p = pointers()
    assert (p["q"], p["k"], p["v"], p["out"]) == (q.ctypes.data, keys.ctypes.data, values.ctypes.data,
                                                  out.ctypes.data)
    assert not np.shares_memory(out, keys)


def peak_bytes(f):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = f()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


def test_tracemalloc_sees_no_input_sized_allocation(rng):
    q, k, v = inputs(rng, (2048, 64), (2048, 64), np.float32)  # 512 KiB each
    attnkit.attention(q, k, v)  # warm-up
    peak, out = peak_bytes(lambda: attnkit.attention(q, k, v, mask="causal", return_lse=True))
    outputs = out[0].nbytes + out[1].nbytes
    assert peak < outputs + 64 * 1024, (peak, outputs)
    # The measurement does see a conversion: a strided q is copied once.
    strided = np.repeat(q, 2, axis=0)[::2]
    peak, _ = peak_bytes(lambda: attnkit.attention(strided, k, v))
    assert peak >= outputs + q.nbytes
    # The toolkit and the caches too.
    peak, _ = peak_bytes(lambda: attnkit.softmax(q))  # the result is adopted from C++, not numpy
    assert peak < 64 * 1024
    cache = attnkit.KVCache(64, 64, capacity=2048)
    peak, _ = peak_bytes(lambda: cache.append(k, v))
    assert peak < 64 * 1024
