"""The layout keeps its rooms: no import cycle, no private imports across modules, nothing on the real-data path
imports the simulator or the orchestration, inference never imports the trainer, thin notebooks, modules of a
readable size."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "synth7t"
MODULES = sorted(PACKAGE.rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# orchestration and the simulator: the science modules never import these
OUTER = ("synth7t.simulate", "synth7t.workflow", "synth7t.cli", "synth7t.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """``(imported module, [names])`` of every import in a module, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def import_graph() -> dict:
    """``{module: {synth7t modules it imports}}``, every import counted: at the top and inside functions (a lazy
    import is still a dependency, and a cycle of lazy imports is still a tangle)."""
    names = {_module_name(p): p for p in MODULES}
    graph = {}
    for name, path in names.items():
        deps = set()
        for mod, imported in _imports(path):
            for n in imported or [None]:
                full = f"{mod}.{n}" if n else mod
                target = full if full in names else mod if mod in names else None
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_library_has_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other (directly or round a circle, lazy imports included): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_of_lazy_imports():
    graph = import_graph()
    assert "synth7t.inference.batch" in graph["synth7t.inference"]  # the package imports its batch module
    graph["synth7t.inference.volume"] = {*graph["synth7t.inference.volume"], "synth7t.inference.batch"}
    assert any({"synth7t.inference.volume", "synth7t.inference.batch"} <= set(c) for c in import_cycles(graph))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_of_the_library_names_a_module_that_exists(path):
    """A lazy import of a module that moved fails only when its function runs: name every one here."""
    names = {_module_name(p) for p in MODULES}
    bad = [mod for mod, _ in _imports(path) if mod.startswith("synth7t") and mod not in names]
    assert not bad, f"{path.relative_to(ROOT)} imports modules that do not exist: {sorted(set(bad))}"


def test_inference_does_not_import_the_trainer():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d in ("synth7t.training.trainer", "synth7t.training.validation", "synth7t.training.slices"))
           for m, deps in graph.items() if m.startswith("synth7t.inference")}
    assert not any(bad.values()), f"inference imports the trainer: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path):
    bad = [f"{mod}.{n}" for mod, names in _imports(path) if mod.startswith("synth7t")
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, f"{path.name} imports private names {bad}: make them public where they are defined"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_science_modules_do_not_import_the_demo_or_the_orchestration(path):
    name = _module_name(path)
    if name.startswith(OUTER):
        return
    bad = [mod for mod, names in _imports(path)
           for m in [mod, *(f"{mod}.{n}" for n in names)] if m.startswith(OUTER)]
    assert not bad, f"{name} imports {sorted(set(bad))}; the real-data path must not depend on them"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_readable(path):
    n = len(path.read_text().splitlines())
    assert n <= 700, f"{path.relative_to(ROOT)} has {n} lines: split it by concern"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_orchestrate_only(path):
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # IPython magics and shell escapes are not Python
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    tree = ast.parse(code)
    defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    loops = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))]
    assert not defs, f"{path.name} defines {defs}: move them into the library, with a test"
    assert len(loops) <= 1, f"{path.name} has {len(loops)} loops; a notebook calls library functions"
