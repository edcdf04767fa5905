"""The layers hold: no import from a lower layer to a higher one, no import cycle, no torch under tasks/.

An AST scan of every import statement under src/seqlab, those inside functions included. Imports inside
functions and under `if TYPE_CHECKING:` do not run when a module loads, so they are left out of the
module-cycle check (a function-level import is how a module defers a load-order cycle) but not out
of the layer checks: an upward import is upward wherever it sits.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. From "Layers and the direction of imports" in ../shared/DESIGN.md (there, data flows
# down the list); analysis/ sits below train/ and runs/ here because its hooks act on models and
# `seqlab.load` exposes them. Each name is a folder of src/seqlab/ except cli (cli.py). The layers in
# one group are peers and may import each other. `seqlab/__init__.py` and `__main__.py` are above all
# of them, so a layer that imports the bare package (`import seqlab`, `from seqlab import X`) imports upward.
LAYERS = [["core"], ["tasks"], ["formats"], ["data"], ["models"], ["analysis"], ["train"], ["eval"], ["runs"],
          ["self_improve", "kv_compression", "serve"], ["recipes"], ["sweeps", "export", "reports"], ["cli"]]
TOP = ("", "__main__")  # the package's __init__.py and __main__.py
NO_TORCH = "tasks"  # pure Python/NumPy generators, usable without torch installed


@dataclass(frozen=True)
class Import:
    file: str       # relative to the source root
    line: int
    importer: str   # dotted module name
    target: str     # dotted module name, resolved to the longest known module
    deferred: bool  # inside a function or under `if TYPE_CHECKING:`: does not run at load time

    def __str__(self):
        return f"{self.file}:{self.line} imports {self.target}"


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every .py in the package."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str:
    """`name` if it is a module of the package, else its longest prefix that is one (`seqlab.x.f` -> `seqlab.x`)."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


@dataclass
class Scan:
    package: str
    modules: dict[str, Path]
    imports: list[Import]

    def own(self) -> list[Import]:
        """Imports of the package's modules by its modules, a module's import of itself left out."""
        return [i for i in self.imports if i.target.split(".")[0] == self.package and i.target != i.importer]


def scan(src: Path, package: str) -> Scan:
    known = modules(src, package)
    found: dict[tuple, Import] = {}  # `from m import a, b` is one import of m
    for name, path in known.items():
        file = str(path.relative_to(src))
        # the package a relative import starts from: the module's own for an __init__.py
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

        def add(node, target, deferred):
            if target.split(".")[0] == package:
                target = _resolve(target, known)
            i = Import(file, node.lineno, name, target, deferred)
            found.setdefault((file, i.line, target), i)

        def visit(node, deferred):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(node, alias.name, deferred)
            elif isinstance(node, ast.ImportFrom):
                start = base[:len(base) - node.level + 1] if node.level else []
                module = ".".join(start + ([node.module] if node.module else []))
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{module}.{alias.name}"
                    add(node, sub if sub in known else module, deferred)
            deferred = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.body:
                    visit(child, True)
                for child in node.orelse:
                    visit(child, deferred)
                return
            for child in ast.iter_child_nodes(node):
                visit(child, deferred)

        visit(ast.parse(path.read_text(), file), False)
    return Scan(package, known, list(found.values()))


def layer_of(module: str) -> str:
    """core for seqlab.core.io, cli for seqlab.cli, "" for the bare package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rank(layer: str) -> int | None:
    if layer in TOP:
        return len(LAYERS)
    return next((i for i, group in enumerate(LAYERS) if layer in group), None)


def unknown_layers(found: Scan) -> list[str]:
    layers = {layer_of(m) for m in found.modules}
    return sorted(f"{found.package}/{layer} is in no layer of LAYERS" for layer in layers if rank(layer) is None)


def upward_imports(found: Scan) -> list[str]:
    bad = []
    for i in found.own():
        low, high = rank(layer_of(i.importer)), rank(layer_of(i.target))
        if low is not None and high is not None and low < high:
            bad.append(f"{i} ({layer_of(i.importer)} is below {layer_of(i.target) or 'the package itself'})")
    return bad


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle for each back edge of a depth-first search, as [a, b, ..., a]."""
    found, state, path = [], {}, []

    def dfs(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            dfs(node)
    return found


def _describe(cycle: list[str], edges: dict[str, dict[str, Import]]) -> str:
    steps = "; ".join(str(edges[a][b]) for a, b in zip(cycle, cycle[1:]))
    return f"{' -> '.join(c or '(package)' for c in cycle)}: {steps}"


def layer_cycles(found: Scan) -> list[str]:
    edges: dict[str, dict[str, Import]] = {}
    for i in found.own():
        a, b = layer_of(i.importer), layer_of(i.target)
        if a != b:
            edges.setdefault(a, {}).setdefault(b, i)
    return [_describe(c, edges) for c in cycles(edges)]


def module_cycles(found: Scan) -> list[str]:
    edges: dict[str, dict[str, Import]] = {}
    for i in found.own():
        if not i.deferred:
            edges.setdefault(i.importer, {}).setdefault(i.target, i)
    return [_describe(c, edges) for c in cycles(edges)]


def torch_in(found: Scan, layer: str = NO_TORCH) -> list[str]:
    """Imports of torch under `layer`, and torch reached from it through load-time imports of the package
    (which also run each package's __init__.py on the way)."""
    bad = [f"{i}" for i in found.imports if layer_of(i.importer) == layer and i.target.split(".")[0] == "torch"]
    loads: dict[str, list[Import]] = {}
    for i in found.imports:
        if not i.deferred:
            loads.setdefault(i.importer, []).append(i)
    for start in sorted(m for m in found.modules if layer_of(m) == layer):
        seen, todo = {start: [start]}, [start]
        while todo:
            module = todo.pop()
            for i in loads.get(module, []):
                if i.target.split(".")[0] == "torch" and layer_of(module) != layer:
                    bad.append(f"{start} loads torch through {' -> '.join(seen[module])}: {i}")
                parts = i.target.split(".")
                for n in range(1, len(parts) + 1) if parts[0] == found.package else ():
                    nxt = ".".join(parts[:n])
                    if nxt not in seen:
                        seen[nxt] = seen[module] + [nxt]
                        todo.append(nxt)
    return bad


def _report(rule: str, bad: list[str]) -> str:
    return f"{len(bad)} {rule}:\n  " + "\n  ".join(bad)


# --- the package -----------------------------------------------------------------------------------

FOUND = scan(SRC, "seqlab")


def test_every_folder_is_a_layer():
    bad = unknown_layers(FOUND)
    assert not bad, _report("folders missing from LAYERS (place them in the order)", bad)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = upward_imports(FOUND)
    assert not bad, _report("upward imports", bad)


def test_no_import_cycle_between_layers():
    bad = layer_cycles(FOUND)
    assert not bad, _report("cycles between layers", bad)


def test_no_import_cycle_between_modules_at_load_time():
    bad = module_cycles(FOUND)
    assert not bad, _report("cycles between modules", bad)


def test_tasks_do_not_import_torch():
    bad = torch_in(FOUND)
    assert not bad, _report("torch imports under tasks/", bad)


def test_the_scan_sees_the_package():
    assert len(FOUND.modules) > 50 and "seqlab.tasks.base" in FOUND.modules and "seqlab.cli" in FOUND.modules
    assert any(i.deferred for i in FOUND.imports) and any(i.target == "seqlab.core.configs" for i in FOUND.imports)


# --- the checker fails when it should --------------------------------------------------------------

FAKE = {
    "__init__.py": "",
    "core/__init__.py": "",
    "core/configs.py": "from fake.models.decoder import Decoder\n",  # upward
    "core/io.py": "from . import util\n",
    "core/util.py": "from fake.core.io import write\n",  # cycle io -> util -> io
    "models/__init__.py": "",
    "models/decoder.py": "import torch\nfrom ..core import io\n",
    "tasks/__init__.py": "from fake.tasks import base\n",
    "tasks/base.py": "def f():\n    import torch.nn\n",  # torch in a function: still torch
    "tasks/maze.py": "from fake.core import configs\n",  # loads torch through core -> models
    "formats/__init__.py": "def f():\n    from fake.data import text\n",  # deferred, still upward
    "formats/lazy.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake.formats import ok\n",
    "formats/ok.py": "def f():\n    from fake.formats import lazy\n",  # deferred: no load-time cycle
    "data/__init__.py": "",
    "data/text.py": "import fake\n",  # the bare package is above every layer
    "widgets/__init__.py": "",
}


def _write(tmp_path, files):
    for name, text in files.items():
        (tmp_path / "fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / name).write_text(text)
    return scan(tmp_path, "fake")


def test_the_checker_finds_an_upward_import_a_cycle_torch_and_an_unknown_folder(tmp_path):
    found = _write(tmp_path, FAKE)
    assert unknown_layers(found) == ["fake/widgets is in no layer of LAYERS"]

    up = upward_imports(found)
    assert [u.split(" imports ")[0] for u in up] == ["fake/core/configs.py:1", "fake/data/text.py:1",
                                                     "fake/formats/__init__.py:2"], up
    assert "fake.models.decoder (core is below models)" in up[0] and "below the package itself" in up[1]

    assert module_cycles(found) == [
        "fake.core.io -> fake.core.util -> fake.core.io: fake/core/io.py:1 imports fake.core.util; "
        "fake/core/util.py:1 imports fake.core.io"]
    assert any(c.startswith("core -> models -> core: ") for c in layer_cycles(found))

    torch = torch_in(found)
    assert "fake/tasks/base.py:2 imports torch.nn" in torch
    assert "fake.tasks.maze loads torch through fake.tasks.maze -> fake.core.configs -> fake.models.decoder: " \
           "fake/models/decoder.py:1 imports torch" in torch, torch


def test_the_checker_passes_the_fake_package_without_its_faults(tmp_path):
    faults = ("core/configs.py", "core/util.py", "data/text.py", "formats/__init__.py", "tasks/base.py",
              "tasks/maze.py", "widgets/__init__.py")
    clean = {name: text for name, text in FAKE.items() if name not in faults} | {"core/io.py": "import json\n"}
    found = _write(tmp_path, clean)
    checks = (unknown_layers, upward_imports, layer_cycles, module_cycles, torch_in)
    assert [check(found) for check in checks] == [[]] * len(checks)
