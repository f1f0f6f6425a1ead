"""The package's layout: layers that import only downward, no import cycle (lazy imports included),
no import-time side effects, and nothing at the repository root but the layout, docs and config."""
import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tinygrad_seq"
ROOT = PACKAGE.parent

# Each layer may import its own modules and those of the layers before it.
LAYERS = [["engine", "threads"], ["tensors"], ["capture"], ["autograd"], ["nn"], ["optim", "data", "io"],
          ["distributed", "diagnostics", "utils", "cuda", "accelerator"], ["__init__"]]
RANK = {name: k for k, names in enumerate(LAYERS) for name in names}


def _module(path):
    """'tinygrad_seq.engine.ops' for tinygrad_seq/engine/ops.py (a package is its __init__)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Every tinygrad_seq module `path` imports, at the top or inside a function (absolute names)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import ops` names a module; `from .ops import Add` a name in one
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("tinygrad_seq") and name != module}


def _exists(module):
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _layer(module):
    parts = module.split(".")
    return RANK["__init__"] if len(parts) == 1 else RANK[parts[1]]


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    assert {m.split(".")[1] for m in GRAPH if "." in m} <= set(RANK)


def test_each_layer_imports_only_itself_and_the_layers_below():
    upward = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets if _layer(t) > _layer(m)]
    assert upward == []


def test_no_import_cycle_lazy_imports_included():
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target] if target in path else path + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_engine_imports_nothing_above_it_and_nothing_pauses_the_garbage_collector():
    engine = {m: t for m, t in GRAPH.items() if m.startswith("tinygrad_seq.engine")}
    assert all(target.startswith("tinygrad_seq.engine") for targets in engine.values() for target in targets)
    for path in PACKAGE.rglob("*.py"):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        imported = {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
        assert "gc" not in names | imported, f"{path.relative_to(ROOT)} uses the gc module"


def test_importing_the_package_changes_nothing_in_the_process():
    code = ("import gc, warnings, threadpoolctl, numpy\n"
            "def state(): return (gc.isenabled(), list(warnings.filters), numpy.geterr(),\n"
            "                     [p['num_threads'] for p in threadpoolctl.threadpool_info()])\n"
            "before = state()\nimport tinygrad_seq\nprint(before == state())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_the_repository_root_holds_only_the_layout_docs_and_config():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an sdist): nothing to check
        return
    top = {path.split("/")[0] for path in tracked}
    assert top <= {".ci", ".gitignore", "LICENSE", "MANIFEST.in", "README.md", "pyproject.toml", "tinygrad_seq",
                   "examples", "tests", "benchmarks", "tools", "data"}, top


def test_the_source_distribution_holds_every_tracked_file(tmp_path):
    """The sdist is the whole source tree (MANIFEST.in): examples with their data set, tests with their helpers."""
    import shutil
    import tarfile
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an sdist): nothing to check
        return
    source = tmp_path / "source"
    for name in tracked:  # build from a copy: the build writes an .egg-info beside the sources
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                            "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path)],
                           cwd=source, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    with tarfile.open(tmp_path / build.stdout.split()[-1]) as sdist:
        shipped = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert set(tracked) - shipped == {".gitignore"}
