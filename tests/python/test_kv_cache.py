"""attnkit.KVCache: decoding against the long-double oracle, every storage
type, the views of keys / values and their protection."""

import numpy as np
import pytest

import attnkit
import oracle

STORAGE = {
    "float32": (np.float32, lambda x: np.asarray(x, dtype=np.float32)),
    "float64": (np.float64, lambda x: np.asarray(x, dtype=np.float64)),
    "f16": (np.float32, oracle.round_f16),
    "bf16": (np.float32, oracle.round_bf16),
}


@pytest.mark.parametrize("storage", STORAGE)
def test_decode_matches_the_oracle(rng, storage):
    compute, rounded = STORAGE[storage]
    d, d_v, n = 32, 16, 300
    k = rng.standard_normal((n, d)).astype(np.float32)
    v = rng.standard_normal((n, d_v)).astype(np.float32)
    q = rng.standard_normal((n, d)).astype(np.float32)
    cache = attnkit.KVCache(d, d_v, dtype=storage, capacity=4)
    assert cache.dtype == storage and len(cache) == 0
    cache.append(k[:200], v[:200])  # a prefill
    for t in range(200, n):  # then token by token
        cache.append(k[t], v[t])
    assert len(cache) == n and cache.reallocations >= 1 and cache.capacity >= n
    kr, vr = rounded(k), rounded(v)
    # The newest query (causal: it sees every cached key) and a block of them.
    for rows, kw in [(slice(n - 1, n), dict(mask="causal")), (slice(n - 20, n), dict(mask="causal", window=9, sinks=2)),
                     (slice(0, 1), dict(mask="strict", offset=n))]:  # the next token, not appended yet
        qq = q[rows].astype(compute)
        out, lse = cache.attend(qq, return_lse=True, **kw)
        assert out.dtype == compute and out.shape == (qq.shape[0], d_v)
        ref_out, ref_lse = oracle.reference(qq, kr.astype(compute), vr.astype(compute), **kw)
        b_out, b_lse = oracle.attention_bound(qq, kr, vr, dtype=compute, **kw)
        oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"{storage} {kw}")
    # One query (d,) gives out (d_v,) and lse ().
    one, lse1 = cache.attend(q[-1].astype(compute), mask="causal", return_lse=True)
    assert one.shape == (d_v,) and lse1.shape == ()
    np.testing.assert_array_equal(one, cache.attend(q[-1:].astype(compute), mask="causal")[0])


@pytest.mark.parametrize("storage", STORAGE)
def test_keys_and_values_hold_the_rounded_rows(rng, storage):
    compute, rounded = STORAGE[storage]
    k = rng.standard_normal((10, 8)).astype(np.float32)
    v = rng.standard_normal((10, 4)).astype(np.float32)
    cache = attnkit.KVCache(8, 4, dtype=storage)
    cache.append(k, v)
    keys, values = cache.keys, cache.values
    assert keys.shape == (10, 8) and values.shape == (10, 4)
    np.testing.assert_array_equal(np.asarray(keys, dtype=np.float64), rounded(k).astype(np.float64))
    np.testing.assert_array_equal(np.asarray(values, dtype=np.float64), rounded(v).astype(np.float64))
    if storage == "bf16":  # numpy has no bfloat16: a float32 copy
        assert keys.dtype == np.float32 and keys.flags.writeable and cache._exports == 0
    else:  # views of the storage, read-only, counted
        assert keys.dtype == {"float32": np.float32, "float64": np.float64, "f16": np.float16}[storage]
        assert not keys.flags.writeable and cache._exports == 2
        with pytest.raises(ValueError):
            keys[0, 0] = 1.0
        assert cache.keys.ctypes.data == keys.ctypes.data


def test_views_block_changes_to_the_storage(rng):
    cache = attnkit.KVCache(4, 4, capacity=2)
    cache.append(np.ones((2, 4)), np.ones((2, 4)))
    keys = cache.keys
    row = keys[1]  # derived arrays count as well
    del keys
    for op in [lambda: cache.append(np.ones(4), np.ones(4)), lambda: cache.reserve(100), cache.clear]:
        with pytest.raises(BufferError, match="1 numpy view of keys/values .* is alive"):
            op()
    assert len(cache) == 2 and np.all(row == 1)
    del row
    cache.append(np.ones(4), np.ones(4))  # grows (capacity 2): fine without views
    assert len(cache) == 3 and cache.reallocations == 1
    snapshot = cache.keys.copy()  # a copy does not hold the storage
    cache.clear()
    assert len(cache) == 0 and snapshot.shape == (3, 4)


def test_inputs_of_any_float_type(rng):
    k = rng.standard_normal((6, 8))
    v = rng.standard_normal((6, 3))
    a, b = attnkit.KVCache(8, 3), attnkit.KVCache(8, 3)
    a.append(k, v)  # float64 into float32 storage: rounded once by the library
    b.append(k.astype(np.float32), v.astype(np.float32))
    np.testing.assert_array_equal(a.keys, b.keys)
    c = attnkit.KVCache(8, 3, dtype=np.float16)  # numpy dtypes work too
    c.append(k.astype(np.float16), v.astype(np.float16))
    assert c.dtype == "f16" and c.keys.dtype == np.float16
    np.testing.assert_array_equal(c.keys, k.astype(np.float16))
    with pytest.raises(ValueError, match="KVCache::append: keys \\(6 x 8\\) and values \\(5 x 3\\)"):
        a.append(k, v[:5])
    with pytest.raises(ValueError, match="dtype='int8' is not one of float32\\|float64\\|f16\\|bf16"):
        attnkit.KVCache(8, 3, dtype="int8")
    with pytest.raises(ValueError, match="KVCache: d = 0"):
        attnkit.KVCache(0, 3)
    with pytest.raises(ValueError, match="the cache is empty"):
        attnkit.KVCache(8, 3).attend(np.ones(8))


def test_threads_give_results_within_bound(rng):
    d = 64
    k = rng.standard_normal((4000, d)).astype(np.float32)
    v = rng.standard_normal((4000, d)).astype(np.float32)
    q = rng.standard_normal((1, d)).astype(np.float32)
    cache = attnkit.KVCache(d, d)
    cache.append(k, v)
    ref_out, ref_lse = oracle.reference(q, k, v, mask="causal")
    b_out, b_lse = oracle.attention_bound(q, k, v, dtype=np.float32, mask="causal")
    for threads in [1, 2, 0]:
        out, lse = cache.attend(q, mask="causal", threads=threads, return_lse=True)
        oracle.assert_within(out, lse, ref_out, ref_lse, b_out, b_lse, f"threads={threads}")


def test_empty_cache_views():
    cache = attnkit.KVCache(4, 3, capacity=0)
    assert cache.keys.shape == (0, 4) and cache.values.shape == (0, 3)
    cache.append(np.ones(4), np.ones(3))  # the views above are gone
    assert len(cache) == 1


def test_concurrent_appends_and_attends_from_threads(rng):
    # attend shares the cache's lock with the GIL released, append takes it
    # exclusively (and reallocates as it grows): no crash, no lost token, and
    # every answer a convex combination of cached values.
    import threading

    d = 16
    k = rng.standard_normal((800, d)).astype(np.float32)
    cache = attnkit.KVCache(d, d, capacity=1)
    cache.append(k[:1], k[:1])
    q = rng.standard_normal((1, d)).astype(np.float32)
    answers, errors = [], []

    def writer(rows):
        try:
            for t in rows:
                cache.append(k[t], k[t])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(200):
                answers.append(cache.attend(q, threads=1))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(range(1 + i, 800, 2),)) for i in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 800 and len(answers) == 400
    assert all(np.isfinite(a).all() and np.abs(a).max() <= np.abs(k).max() for a in answers)
