"""engine/backend.py is the only module that touches NumPy or CuPy: the rest of the package asks it
(the file formats of io/ read and write raw bytes on the host).

The check reads the source: imports are found with `ast` (import numpy, import numpy as np,
from numpy import ..., from cupy..., importlib.import_module("numpy"), __import__("cupy")) and
attribute use with a regular expression on the code with comments and strings removed
(np., numpy., cupy., cupyx., cp.).
"""
import ast
import io
import pathlib
import re
import tokenize

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tinygrad_seq"
FORBIDDEN_MODULES = {"numpy", "cupy", "cupyx"}
ATTRIBUTE_USE = re.compile(r"(?<![\w.])(np|numpy|cupy|cupyx|cp)\s*\.\s*[A-Za-z_]")


# io/'s file formats (.npy, .safetensors, PyTorch's storages) turn raw host bytes into arrays and
# back: these NumPy names and nothing else
SERIALIZATION_NUMPY = re.compile(r"numpy\.(lib\.format(\.\w+)?|lib\.stride_tricks\.as_strided|frombuffer|asarray|"
                                 r"empty|dtype|generic|uint8|uint32|float32)\b")
FILE_FORMATS = ("io/checkpoint.py", "io/safetensors.py", "io/pytorch.py")


def modules():
    files = sorted(p for p in PACKAGE.rglob("*.py")
                   if p.relative_to(PACKAGE).as_posix() not in ("engine/backend.py",) + FILE_FORMATS)
    assert files, f"no sources found under {PACKAGE}"
    return files


def forbidden_imports(source):
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        found += [f"line {node.lineno}: {name}" for name in names if name.split(".")[0] in FORBIDDEN_MODULES]
    return found


def forbidden_attributes(source):
    """Lines whose code (comments and string literals removed) uses np./numpy./cupy./cupyx./cp."""
    prose = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    lines = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in prose:
            lines.setdefault(tok.start[0], []).append(tok.string)
    return [f"line {n}: {' '.join(toks)}" for n, toks in sorted(lines.items())
            if ATTRIBUTE_USE.search("".join(toks))]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_backend_imports_or_calls_numpy_and_cupy(path):
    source = path.read_text()
    assert not forbidden_imports(source), f"{path.name} imports {forbidden_imports(source)}"
    assert not forbidden_attributes(source), f"{path.name} uses {forbidden_attributes(source)}"


@pytest.mark.parametrize("name", FILE_FORMATS)
def test_serialization_uses_numpy_only_for_the_file_formats(name):
    source = (PACKAGE / name).read_text()
    assert [line for line in forbidden_imports(source) if not line.endswith(": numpy")] == []
    uses = forbidden_attributes(source)
    assert uses, f"{name} was expected to use numpy for its file format"
    for line in uses:
        code = line.split(": ", 1)[1].replace(" ", "")
        assert not ATTRIBUTE_USE.search(SERIALIZATION_NUMPY.sub("", code)), f"{name} computes with NumPy: {line}"


@pytest.mark.parametrize("snippet", ["import numpy", "import numpy as np", "from numpy import ndarray",
                                     "from numpy.linalg import norm", "import cupy", "import cupyx.scipy",
                                     "x = importlib.import_module('numpy')", "x = __import__('cupy')"])
def test_the_import_check_catches_every_spelling(snippet):
    assert forbidden_imports(snippet)


@pytest.mark.parametrize("snippet", ["y = np.zeros(3)", "y = numpy.exp(x)", "y = cupy.asarray(x)",
                                     "y = cp.float32", "y = f(np .ones)", "y = cupyx.scatter_add"])
def test_the_attribute_check_catches_numpy_calls(snippet):
    assert forbidden_attributes(snippet)


@pytest.mark.parametrize("snippet", ['"""Works like np.sum."""', "# numpy.exp would overflow here",
                                     "y = x.numpy()", "y = backend.numpy_thing", "y = snp.x",
                                     "from .backend import numpy_free"])
def test_the_checks_ignore_docs_comments_and_lookalikes(snippet):
    assert not forbidden_imports(snippet) and not forbidden_attributes(snippet)
