"""The two README commands, CI and the conda mirror stay consistent."""

import re
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = {_name(r) for r in py["dependencies"]}
    for extra in ("dev", "book"):
        listed |= {_name(r) for r in py["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = {_name(r) for r in pip if not r.startswith("-e")}
    assert mirrored == listed
    # the lpips extra stays optional (it pulls torchvision and a CUDA torch)
    assert "lpips" not in listed and "lpips" in py["optional-dependencies"]


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[:1500]
    assert "make demo" in head and "make test" in head
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", make, re.M) and re.search(r"^test:", make, re.M)
    assert "torch==2.13.0" in make and '-e ".[dev]"' in make
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -e" in ci


def test_book_config_is_jupyter_book_1():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert toc["format"] == "jb-book" and (ROOT / f"{toc['root']}.md").is_file()
