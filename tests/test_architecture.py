"""The layout keeps its rooms: no private imports across modules, nothing on the real-data path imports the
simulator or the orchestration, thin notebooks, modules of a readable size."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "synth7t"
MODULES = sorted(PACKAGE.rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# orchestration and the simulator: the science modules never import these
OUTER = ("synth7t.demo", "synth7t.workflow", "synth7t.cli", "synth7t.__main__")


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
