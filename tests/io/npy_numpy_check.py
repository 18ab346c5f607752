"""numpy's side of attnkit's .npy interoperability test (tests/io/npy_test.cpp).

  python3 npy_numpy_check.py write DIR   numpy writes every layout attnkit reads
  python3 npy_numpy_check.py check DIR   numpy loads every file attnkit wrote

Every array holds value(e) = 0.25 * e - 3 at C-order index e (exact in float32
and float64). File names: {f4|f8}_{le|be}_{C|F}_v{1|2|3}_{1|2|3}d.npy.
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
    for kind in ("f4", "f8"):
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


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        return 2
    return write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
