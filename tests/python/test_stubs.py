"""The type stubs (attnkit/_core.pyi, installed with the module) describe
exactly the extension: the same public names, and for every function and
method the same parameter names in the same order."""

import ast
import os
import re

import attnkit
from attnkit import _core


def stub_tree():
    path = os.path.join(os.path.dirname(attnkit.__file__), "_core.pyi")
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def stub_parameters(fn):
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]


def runtime_parameters(obj):
    # pybind11 puts the signature on the first docstring line:
    # "name(self: T, q: object, *, mask: str = 'none', ...) -> object".
    line = obj.__doc__.strip().splitlines()[0]
    inner = line[line.index("(") + 1: line.rindex(")")]
    names = re.findall(r"(?:^|, )(\w+):", inner)
    return [n for n in names if n != "self"]


def test_stub_names_match_the_extension():
    tree = stub_tree()
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public = {n for n in dir(_core) if not n.startswith("__") and callable(getattr(_core, n))}
    assert stubbed == public
    assert set(attnkit.__all__) - {"scaled_dot_product_attention", "__version__", "simd", "openmp"} == \
        {n for n in public if not n.startswith("_")}


def test_stub_signatures_match_the_extension():
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            assert stub_parameters(node) == runtime_parameters(getattr(_core, node.name)), node.name
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_core, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.decorator_list and item.name != "__init__" \
                        and not item.name.startswith("__"):
                    assert stub_parameters(item) == runtime_parameters(getattr(cls, item.name)), \
                        f"{node.name}.{item.name}"
