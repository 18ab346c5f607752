"""numpy's side of attnkit's .npy interoperability tests (tests/io/npy_test.cpp,
tests/io/npy_float16_test.cpp).

  python3 npy_numpy_check.py write DIR     numpy writes every layout attnkit reads
  python3 npy_numpy_check.py check DIR     numpy loads every file attnkit wrote
  python3 npy_numpy_check.py write16 DIR   numpy writes every float16 bit pattern, its own
                                           conversions of them, and its own roundings to float16
  python3 npy_numpy_check.py check16 DIR   numpy checks the float16 files attnkit wrote

write/check: every array holds value(e) = 0.25 * e - 3 at C-order index e
(exact in float16 for the 24 elements used, and in float32 and float64). File
names: {f2|f4|f8}_{le|be}_{C|F}_v{1|2|3}_{1|2|3}d.npy.
write16/check16: see write16() and check16().
Exits 0 when everything matches; prints the first mismatch and exits 1.
"""

import io
import os
import sys

import numpy as np

SHAPES = {1: (7,), 2: (3, 5), 3: (2, 3, 4)}


def expected(shape, dtype):
    n = int(np.prod(shape))
    return (np.arange(n, dtype=np.float64) * 0.25 - 3.0).reshape(shape).astype(dtype)


def variants():
    for kind in ("f2", "f4", "f8"):
        for order in ("le", "be"):
            for layout in ("C", "F"):
                for version in (1, 2, 3):
                    for ndim in (1, 2, 3):
                        yield kind, order, layout, version, ndim


def name(kind, order, layout, version, ndim):
    return f"{kind}_{order}_{layout}_v{version}_{ndim}d.npy"


def write(directory):
    for kind, order, layout, version, ndim in variants():
        dtype = ("<" if order == "le" else ">") + kind
        a = expected(SHAPES[ndim], dtype)
        if layout == "F":
            a = np.asfortranarray(a)
        with open(os.path.join(directory, name(kind, order, layout, version, ndim)), "wb") as f:
            np.lib.format.write_array(f, a, version=(version, 0), allow_pickle=False)
    return 0


def check(directory):
    count = 0
    for kind, order, layout, version, ndim in variants():
        path = os.path.join(directory, name(kind, order, layout, version, ndim))
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            raw = f.read()
        major = raw[6]
        if major != version:
            print(f"{path}: format version {major}, expected {version}")
            return 1
        a = np.load(path, allow_pickle=False)
        dtype = ("<" if order == "le" else ">") + kind
        if a.dtype.str != dtype or a.shape != SHAPES[ndim]:
            print(f"{path}: dtype {a.dtype.str} shape {a.shape}, expected {dtype} {SHAPES[ndim]}")
            return 1
        if ndim > 1 and a.flags.f_contiguous != (layout == "F"):
            print(f"{path}: fortran_order {a.flags.f_contiguous}, expected {layout == 'F'}")
            return 1
        if not np.array_equal(a, expected(SHAPES[ndim], dtype)):
            print(f"{path}: values differ from 0.25 * e - 3")
            return 1
        if order == "le" and layout == "C" and version == 1:
            # The default layout must be byte for byte what numpy.save writes.
            buf = io.BytesIO()
            np.save(buf, a)
            if buf.getvalue() != raw:
                print(f"{path}: bytes differ from numpy.save of the same array")
                return 1
        count += 1
    if count == 0:
        print(f"no files to check in {directory}")
        return 1
    print(f"numpy checked {count} files")
    return 0


def all_halves(order):
    """Every float16 bit pattern 0 .. 65535, in that order, in byte order `order`."""
    bits = np.arange(65536, dtype=np.uint16)
    return bits.astype(order + "u2").view(order + "f2")


def rounding_sources():
    """float32 and float64 values whose float16 roundings numpy computes: a
    strided sweep over every float32 bit pattern (NaNs with payloads, infinities,
    subnormals included), and in float64 every tie between adjacent float16
    values with its neighbours one float64 ulp away, plus seeded random values
    over the whole float16 range."""
    f4 = (np.arange(0, 2**32, 65521, dtype=np.uint64).astype(np.uint32)).view(np.float32)
    finite = all_halves("<")[:0x7C00].astype(np.float64)  # 0 .. 65504, increasing
    upper = np.append(finite[1:], 65536.0)
    ties = (finite + upper) / 2  # exact: at most 12 significant bits
    rng = np.random.default_rng(2024)
    random = np.ldexp(rng.uniform(1, 2, 4096), rng.integers(-30, 18, 4096))
    f8 = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, np.inf), random])
    f8 = np.concatenate([f8, -f8, [np.inf, -np.inf, np.nan, 1e300, 1e-300, 5e-324]])
    return f4, f8


def save(directory, file, array):
    with open(os.path.join(directory, file), "wb") as f:
        np.lib.format.write_array(f, array, allow_pickle=False)


def write16(directory):
    # halves_{le,be}.npy: every bit pattern; halves_as_f4/f8.npy: numpy's own
    # (exact) conversions of them, NaN payloads included.
    save(directory, "halves_le.npy", all_halves("<"))
    save(directory, "halves_be.npy", all_halves(">"))
    save(directory, "halves_as_f4.npy", all_halves("<").astype(np.float32))
    save(directory, "halves_as_f8.npy", all_halves("<").astype(np.float64))
    # round_src_{f4,f8}.npy and numpy's roundings of them to float16.
    f4, f8 = rounding_sources()
    with np.errstate(over="ignore", invalid="ignore"):
        save(directory, "round_src_f4.npy", f4)
        save(directory, "round_ref_f4.npy", f4.astype(np.float16))
        save(directory, "round_src_f8.npy", f8)
        save(directory, "round_ref_f8.npy", f8.astype(np.float16))
    return 0


def check16(directory):
    # attnkit_halves_{le,be}.npy: attnkit wrote every bit pattern from Eigen::half;
    # attnkit_round_f8.npy: attnkit rounded round_src_f8.npy to float16 when writing.
    for order in ("<", ">"):
        path = os.path.join(directory, "attnkit_halves_" + ("le" if order == "<" else "be") + ".npy")
        a = np.load(path, allow_pickle=False)
        if a.dtype.str != order + "f2" or a.shape != (65536,):
            print(f"{path}: dtype {a.dtype.str} shape {a.shape}, expected {order}f2 (65536,)")
            return 1
        if not np.array_equal(a.view(order + "u2"), np.arange(65536, dtype=np.uint16)):
            print(f"{path}: bit patterns differ from 0 .. 65535")
            return 1
        if order == "<":
            buf = io.BytesIO()
            np.save(buf, a)
            with open(path, "rb") as f:
                if buf.getvalue() != f.read():
                    print(f"{path}: bytes differ from numpy.save of the same array")
                    return 1
    path = os.path.join(directory, "attnkit_round_f8.npy")
    got = np.load(path, allow_pickle=False)
    with np.errstate(over="ignore", invalid="ignore"):
        want = rounding_sources()[1].astype(np.float16)
    if got.dtype.str != "<f2" or got.shape != want.shape:
        print(f"{path}: dtype {got.dtype.str} shape {got.shape}, expected <f2 {want.shape}")
        return 1
    differ = np.nonzero(got.view(np.uint16) != want.view(np.uint16))[0]
    if differ.size:
        i = differ[0]
        print(f"{path}: {differ.size} roundings differ from numpy's, first at {i}: "
              f"{rounding_sources()[1][i]!r} -> {got.view(np.uint16)[i]:#06x}, numpy {want.view(np.uint16)[i]:#06x}")
        return 1
    print("numpy checked attnkit's float16 files")
    return 0


def main():
    commands = {"write": write, "check": check, "write16": write16, "check16": check16}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
