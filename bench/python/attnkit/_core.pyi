# Type stubs of attnkit._core, the compiled part of the attnkit package (the
# package re-exports every public name). The API reference: docs/python.md.
#
# Shapes use "..." for leading axes. Arrays ("ArrayLike") may be numpy
# arrays, anything numpy can view (CPU torch tensors, buffers) or lists:
# C-contiguous float32 / float64 arrays are read in place, everything else is
# converted once. Results are numpy arrays (float64 when an input is float64,
# float32 otherwise). Bad arguments raise ValueError naming the argument.

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
Array = npt.NDArray[Any]
MaskKind = Literal["none", "causal", "strict"]
Similarity = Literal["dot", "rbf", "cosine", "hyperbolic", "softcap", "alibi"]
KVDType = Literal["bf16", "f16"]

__version__: str
simd: str  # the instruction sets the kernels were compiled for
openmp: bool  # whether the kernels run on several threads

def max_threads() -> int:
    """The team size threads=0 uses (1 without OpenMP)."""

# ------------------------------------------------------------- attention

@overload
def attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    window: Optional[int] = None,
    sinks: int = 0,
    scale: Optional[float] = None,
    method: Literal["flash", "reference"] = "flash",
    threads: int = 0,
    return_lse: Literal[False] = False,
    similarity: Similarity = "dot",
    tau: Optional[float] = None,
    curvature: Optional[float] = None,
    cap: Optional[float] = None,
    alibi_slope: Optional[float] = None,
    kv_dtype: Optional[KVDType] = None,
) -> Array: ...
@overload
def attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    window: Optional[int] = None,
    sinks: int = 0,
    scale: Optional[float] = None,
    method: Literal["flash", "reference"] = "flash",
    threads: int = 0,
    return_lse: Literal[True],
    similarity: Similarity = "dot",
    tau: Optional[float] = None,
    curvature: Optional[float] = None,
    cap: Optional[float] = None,
    alibi_slope: Optional[float] = None,
    kv_dtype: Optional[KVDType] = None,
) -> Tuple[Array, Array]:
    """Exact softmax attention O = softmax(Z + mask) V over stacked heads.

    q (..., n_q, d), k (..., n_k, d), v (..., n_k, d_v), the same number of
    axes: (n, d), (heads, n, d), (batch, heads, n, d). Fewer k/v heads than q
    heads on axis -3 is grouped-query attention (query head h uses key/value
    head h // (q_heads // kv_heads)). Returns out (..., n_q, d_v) [and lse
    (..., n_q): log-sum-exp of each row's visible logits, -inf for a row that
    sees no key, whose output row is zero].

    Masks: query row i is token offset + i of the keys (default offset
    n_k - n_q: BOTTOM-RIGHT, the queries are the last tokens). "none" sees all
    keys, "causal" keys j <= i + offset, "strict" keys j < i + offset;
    window=w keeps the w most recent visible keys, sinks=s the first s too.

    Logits: "dot" scale q.k (scale default 1/sqrt(d)); "rbf"
    -|q - k|^2/(2 tau); "cosine" cos(q, k)/tau; "hyperbolic" minus the
    Poincare-ball distance (curvature -c) over tau; "softcap"
    cap tanh(scale q.k/cap); "alibi" scale q.k - m|i - j| (m = alibi_slope,
    or each head's standard slope). rbf, cosine, hyperbolic refuse scale.

    kv_dtype "bf16" / "f16": K and V stored in 16 bits (rounded once),
    computed in float32. method="reference": the library's oracle (wide
    accumulation). threads: 0 = every core. The GIL is released.
    """

def attention_partial(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    ranges: Optional[Sequence[Tuple[int, int]]] = None,
    first_position: int = 0,
    sequence_length: Optional[int] = None,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    window: Optional[int] = None,
    sinks: int = 0,
    scale: Optional[float] = None,
    threads: int = 0,
    similarity: Similarity = "dot",
    tau: Optional[float] = None,
    curvature: Optional[float] = None,
    cap: Optional[float] = None,
    alibi_slope: Optional[float] = None,
    kv_dtype: Optional[KVDType] = None,
) -> Tuple[Array, Array]:
    """(out (..., n_q, d_v), lse (..., n_q)) over a subset of the keys.

    k, v hold positions [first_position, first_position + n_k) of a sequence
    of sequence_length keys (default first_position + n_k) on which the mask
    is resolved; ranges (sorted, disjoint [a, b) position ranges inside them)
    restricts the call further. Rows that see none of these keys: zero row,
    lse -inf. Combine partials over disjoint key sets with merge().
    """

def merge(o1: ArrayLike, lse1: ArrayLike, o2: ArrayLike, lse2: ArrayLike) -> Tuple[Array, Array]:
    """Exact merge of results over disjoint key sets: o (..., d_v), lse (...).

    lse = log(e^lse1 + e^lse2), o = e^(lse1 - lse) o1 + e^(lse2 - lse) o2."""

def approx_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    eps: float = 0.01,
    budget: Optional[int] = None,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    scale: Optional[float] = None,
    threads: int = 0,
    return_lse: bool = False,
    return_stats: bool = False,
) -> Tuple[Any, ...]:
    """Approximate attention with a proven per-entry bound: (out, bound), or
    (out, lse, bound), plus a stats dict with return_stats. Certified
    (budget=None): bound <= eps * max visible |v_c|; budgeted: at most
    budget keys opened exactly per query, bound proven but may exceed eps."""

def topk_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    top_k: int = 64,
    *,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    window: Optional[int] = None,
    sinks: int = 0,
    scale: Optional[float] = None,
    threads: int = 0,
    return_lse: bool = False,
    return_indices: bool = False,
) -> Union[Array, Tuple[Array, Array], Tuple[Array, Array, Array]]:
    """Softmax attention over each query's top_k visible keys (largest scale
    q.k; ties keep the earlier key). Shapes as attention(). Returns out, or
    (out, lse) / (out, indices) / (out, lse, indices) with indices
    (..., n_q, min(top_k, n_k)) int64 ascending, -1 where a row sees fewer."""

def lsh_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    buckets: int = 16,
    rounds: int = 4,
    hash: Literal["angular", "simhash"] = "angular",
    seed: int = 0,
    fallback: Literal["last_visible_key", "zero_row"] = "last_visible_key",
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    scale: Optional[float] = None,
    return_lse: bool = False,
) -> Union[Array, Tuple[Array, Array]]:
    """Attention over the visible keys that share a bucket with the query in
    some round (exact within that union). Prefix masks only. Shapes as
    attention()."""

def lsh_buckets(
    x: ArrayLike,
    *,
    buckets: int = 16,
    rounds: int = 4,
    hash: Literal["angular", "simhash"] = "angular",
    seed: int = 0,
) -> Array:
    """(..., rounds) int64 bucket codes of the rows of x (..., d), as
    lsh_attention hashes with the same arguments."""

def linear_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    feature_map: Literal["elu", "relu", "favor"] = "elu",
    features: Optional[int] = None,
    seed: Optional[int] = None,
    orthogonal: Optional[bool] = None,
    scale: Optional[float] = None,
    mask: MaskKind = "none",
    offset: Optional[int] = None,
    chunk: int = 64,
    denominator_floor: Optional[float] = None,
    threads: int = 0,
    return_lse: bool = False,
) -> Union[Array, Tuple[Array, Array]]:
    """Kernelized linear attention phi(q).phi(k) (elu + 1, relu, or FAVOR+
    with features (default 256), seed (0), orthogonal (True) and the
    estimated kernel's scale). Prefix masks only. Shapes as attention()."""

def favor_projection(d: int, *, features: int = 256, seed: int = 0, orthogonal: bool = True) -> Array:
    """(features, d) float64: FAVOR+'s W for these arguments."""

# ------------------------------------------------------------ softmax toolkit

def softmax(x: ArrayLike, beta: float = 1.0) -> Array:
    """(..., m): softmax of beta x over the last axis (-inf: probability 0)."""

def log_softmax(x: ArrayLike, beta: float = 1.0) -> Array:
    """(..., m): beta x - logsumexp(x, beta); -inf rows stay -inf."""

def logsumexp(x: ArrayLike, beta: float = 1.0) -> Array:
    """(...): log sum exp(beta x) over the last axis."""

def softmax_jacobian(p: ArrayLike) -> Array:
    """(..., m, m): diag(s) - s s^T for each probability row s of p (..., m)."""

def softmax_jacobian_product(p: ArrayLike, g: ArrayLike) -> Array:
    """(..., m): J g row by row, (J g)_i = s_i (g_i - <s, g>)."""

def entropy(p: ArrayLike) -> Array:
    """(...): -sum p log p (nats) of each row; entries in [0, 1] or NaN."""

def max_probability(p: ArrayLike) -> Array:
    """(...): the largest entry of each row."""

def effective_support(p: ArrayLike) -> Array:
    """(...): exp(entropy) of each row."""

def jacobian_frobenius_norm(p: ArrayLike) -> Array:
    """(...): ||diag(s) - s s^T||_F of each row."""

# --------------------------------------------------------------- caches

class KVCache:
    """A growable (size, d) / (size, d_v) key/value cache for decoding.

    dtype "float32", "float64", "f16" or "bf16" (numpy float32 / float64 /
    float16 dtypes work too); appended rows are rounded once to it. attend()
    computes in float64 for float64 storage, float32 otherwise. keys and
    values are read-only numpy VIEWS of the storage (bf16: float32 copies);
    while any view is alive, append / reserve / clear raise BufferError.
    """

    def __init__(self, d: int, d_v: int, dtype: Union[str, npt.DTypeLike] = "float32", capacity: int = 256) -> None: ...
    def append(self, k: ArrayLike, v: ArrayLike) -> None:
        """k (n, d), v (n, d_v), or one token k (d,), v (d_v,)."""
    @overload
    def attend(
        self,
        q: ArrayLike,
        *,
        mask: MaskKind = "none",
        offset: Optional[int] = None,
        window: Optional[int] = None,
        sinks: int = 0,
        scale: Optional[float] = None,
        threads: int = 0,
        return_lse: Literal[False] = False,
    ) -> Array: ...
    @overload
    def attend(
        self,
        q: ArrayLike,
        *,
        mask: MaskKind = "none",
        offset: Optional[int] = None,
        window: Optional[int] = None,
        sinks: int = 0,
        scale: Optional[float] = None,
        threads: int = 0,
        return_lse: Literal[True],
    ) -> Tuple[Array, Array]:
        """q (n_q, d) -> (n_q, d_v), or one query (d,) -> (d_v,), over every
        cached token (causal, default offset: the queries are the newest
        tokens; strict with offset=len(cache): the next token)."""
    def reserve(self, rows: int) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def d(self) -> int: ...
    @property
    def d_v(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def reallocations(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def keys(self) -> Array:
        """(size, d) read-only view (bf16: a float32 copy)."""
    @property
    def values(self) -> Array:
        """(size, d_v) read-only view (bf16: a float32 copy)."""

class PrunedKeyCache:
    """Prompt keys with the older tokens stored at the kept dimensions only
    (made by prune / prune_shared). Positions [0, compressed_size) are
    compressed, [compressed_size, len) the full-width window."""

    def append(self, keys: ArrayLike) -> None:
        """keys (n, D) or (D,), at full width; the oldest window tokens beyond
        `recent` are compressed."""
    def attention(
        self,
        q: ArrayLike,
        v: ArrayLike,
        *,
        mask: MaskKind = "none",
        offset: Optional[int] = None,
        window: Optional[int] = None,
        sinks: int = 0,
        scale: Optional[float] = None,
        threads: int = 0,
        return_lse: bool = False,
    ) -> Union[Array, Tuple[Array, Array]]:
        """q (n_q, D), (D,) or (heads, n_q, D); v (len, d_v): out
        q.shape[:-1] + (d_v,) [, lse q.shape[:-1]]."""
    def logits(self, q: ArrayLike, scale: Optional[float] = None) -> Array:
        """(n_q, len) scaled logits of q (n_q, D) against every token, no mask."""
    def refit(self) -> None: ...
    def memory(self) -> Dict[str, int]:
        """unpruned_bytes, compressed_key_bytes, window_key_bytes,
        compensation_bytes, selection_bytes, statistics_bytes,
        allocated_key_bytes, total_bytes."""
    def compressed_keys(self) -> Array:
        """(compressed_size, kept_dim) copy."""
    def window_keys(self) -> Array:
        """(window_size, D) copy."""
    def __len__(self) -> int: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def window_size(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def kept_dim(self) -> int: ...
    @property
    def kept(self) -> Array: ...
    @property
    def dropped(self) -> Array: ...
    @property
    def fitted_count(self) -> int: ...
    @property
    def dtype(self) -> str: ...

# -------------------------------------------------------------- pruning

PruneWeights = Literal["gram", "centered", "attention"]
PruneSelect = Literal[
    "topk", "greedy-remove", "greedy-remain", "greedy-remove-literal", "greedy-remain-literal", "swap", "residual",
    "optimal",
]
PruneCompensation = Literal["none", "mean", "regression"]

def prune(
    window_queries: ArrayLike,
    prompt_keys: ArrayLike,
    *,
    ratio: float = 0.5,
    weights: PruneWeights = "gram",
    select: PruneSelect = "topk",
    compensation: PruneCompensation = "none",
    recent: int = 32,
    weight_keys: Literal["prompt", "compressed"] = "prompt",
    ridge: float = 1e-6,
    scale: Optional[float] = None,
    rope_pairs: Optional[Literal["interleaved", "half"]] = None,
    scale_correction: bool = False,
    compress_overflow: bool = True,
    refit_growth: Optional[float] = 2.0,
) -> Tuple[Array, PrunedKeyCache]:
    """window_queries (w, D), prompt_keys (n0, D) -> (kept int64 (D',),
    cache): D' = floor((1 - ratio) D) dimensions. The defaults are ThinK."""

def prune_shared(
    window_queries: ArrayLike,
    prompt_keys: ArrayLike,
    *,
    ratio: float = 0.5,
    weights: PruneWeights = "gram",
    select: PruneSelect = "topk",
    compensation: PruneCompensation = "none",
    recent: int = 32,
    weight_keys: Literal["prompt", "compressed"] = "prompt",
    ridge: float = 1e-6,
    scale: Optional[float] = None,
    rope_pairs: Optional[Literal["interleaved", "half"]] = None,
    scale_correction: bool = False,
    compress_overflow: bool = True,
    refit_growth: Optional[float] = 2.0,
) -> Tuple[Array, PrunedKeyCache]:
    """prune() for the query heads sharing one key/value head:
    window_queries (heads, w, D)."""

def prune_protocol(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    prompt: Optional[int] = None,
    window: int = 32,
    compress_new_keys: bool = False,
    ratio: float = 0.5,
    weights: PruneWeights = "gram",
    select: PruneSelect = "topk",
    compensation: PruneCompensation = "none",
    recent: int = 32,
    weight_keys: Literal["prompt", "compressed"] = "prompt",
    ridge: float = 1e-6,
    scale: Optional[float] = None,
    rope_pairs: Optional[Literal["interleaved", "half"]] = None,
    scale_correction: bool = False,
    refit_growth: Optional[float] = 2.0,
) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    """The pruning evaluation protocol: q, k (n, D), v (n, d_v) -> dict with
    kept, prompt, first_judged, output, exact, output_error, logit_rmse,
    objective, objective_total, memory; q (heads, n, D) -> one dict per head."""

# ------------------------------------------------------------- test hooks

def _time_cpp(
    q: ArrayLike, k: ArrayLike, v: ArrayLike, *, mask: MaskKind = "none", offset: Optional[int] = None,
    threads: int = 0, repeats: int = 5, clock: Literal["wall", "thread_cpu"] = "wall",
) -> List[float]:
    """Seconds per fused-kernel call timed in C++ (bench/python/overhead.py):
    steady clock, or CPU time of the calling thread."""

def _kernel_pointers() -> Dict[str, int]:
    """Data pointers the last exact-attention kernel call of this thread got."""
