"""The module map lists every module of the library, in its package, and the README and the API page show it as the
code stands (``python -m synth7t.workflow.modulemap --write`` rewrites both)."""

from pathlib import Path

import pytest

from synth7t.workflow import modulemap

ROOT = Path(__file__).resolve().parent.parent


def _names_in_map(text: str) -> set:
    """Dotted module names read back from the map: an entry is indented two spaces per level, a wrapped summary
    line as far as the summaries' column (the deepest indentation of the map)."""
    lines = text.splitlines()[1:]
    indent = [len(ln) - len(ln.lstrip()) for ln in lines]
    column = max(indent)
    names, stack = set(), []
    for ln, n in zip(lines, indent):
        if n < column:
            stack = stack[: n // 2 - 1] + [ln.split()[0].rstrip("/")]
            names.add("synth7t." + ".".join(stack))
    return names


def test_the_map_lists_every_module_in_its_package():
    files = [p for p in (ROOT / "synth7t").rglob("*.py") if p.name not in ("__main__.py",)
             and "__pycache__" not in p.parts and p != ROOT / "synth7t" / "__init__.py"]
    parts = [p.relative_to(ROOT / "synth7t").with_suffix("").parts for p in files]
    expected = {"synth7t." + ".".join(q[:-1] if q[-1] == "__init__" else q) for q in parts}
    listed = _names_in_map(modulemap.module_map(depth=9))
    assert listed == expected, f"missing {sorted(expected - listed)}, extra {sorted(listed - expected)}"
    # every top-level room has its place in the study's order
    tops = {n.split(".")[1] for n in expected}
    assert tops <= set(modulemap.ORDER), f"add {sorted(tops - set(modulemap.ORDER))} to modulemap.ORDER"
    assert all(e.summary for e in modulemap.entries())


def test_the_readme_and_the_api_page_show_the_map_as_the_code_stands():
    readme = (ROOT / "README.md").read_text()
    assert modulemap.readme_block(readme) == readme, "README's module map is stale: " \
        "python -m synth7t.workflow.modulemap --write"
    assert (ROOT / modulemap.API_PAGE).read_text() == modulemap.api_page(), \
        "book/api.md is stale: python -m synth7t.workflow.modulemap --write"
    api = modulemap.api_page()
    # a package that exports its names is documented through them; any other module has its own section
    entries = modulemap.entries()
    for e in entries:
        exporting = [p for p in entries if p.package and p.exports and e.name.startswith(p.name + ".")
                     and p.name not in modulemap.MODULES_DOCUMENTED]
        assert (f".. automodule:: {e.name}\n" in api) != bool(exporting), e.name


def test_a_module_without_a_docstring_is_named(tmp_path):
    pkg = tmp_path / "synth7t"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Top."""\n')
    (pkg / "data" / "__init__.py").write_text('"""Data files. More."""\n')
    (pkg / "data" / "io.py").write_text('"""NIfTI input and output (Smith et al. 2020). Details."""\n')
    assert modulemap.module_map(root=pkg) == ("synth7t/\n  data/  Data files.\n"
                                              "    io   NIfTI input and output (Smith et al. 2020).")
    (pkg / "data" / "layout.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="synth7t/data/layout.py"):
        modulemap.entries(pkg)
