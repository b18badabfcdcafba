"""Parameter sets ("profiles") and the runner that executes the notebooks with papermill.

A profile is a YAML file in ``profiles/`` (``demo`` for a 2-core CPU, ``smoke`` for tests)::

    common:            # injected into every notebook that declares the parameter
      run_name: demo
      data_dir: data/demo
    notebooks:
      - notebook: notebooks/00_demo_data.ipynb
        parameters: {n_subjects: 12}
      - notebook: notebooks/02_train.ipynb       # the same notebook twice: ``output`` names the second copy
        output: 02_train_gan.ipynb
        parameters: {model_name: gan-unet, preset: demo-cpu-gan}

Executed notebooks are written to ``book/notebooks/`` (the book's chapters) with a timing table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO_ROOT / "profiles"
BOOK_NOTEBOOKS = REPO_ROOT / "book" / "notebooks"


def load_profile(name_or_path: Union[str, Path]) -> dict:
    """Read a profile by name (``profiles/<name>.yml``) or path and validate its shape."""
    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILE_DIR / f"{name_or_path}.yml"
    if not p.is_file():
        known = sorted(x.stem for x in PROFILE_DIR.glob("*.yml"))
        raise ValueError(f"profile {name_or_path!r} not found (known: {', '.join(known)})")
    prof = yaml.safe_load(p.read_text()) or {}
    unknown = set(prof) - {"common", "notebooks", "description"}
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    nbs = prof.get("notebooks") or []
    for i, nb in enumerate(nbs):
        if not isinstance(nb, dict) or "notebook" not in nb:
            raise ValueError(f"{p}: notebooks[{i}] needs a 'notebook' path")
        bad = set(nb) - {"notebook", "parameters", "output"}
        if bad:
            raise ValueError(f"{p}: notebooks[{i}] has unknown key(s) {', '.join(sorted(bad))}")
    prof.setdefault("common", {})
    prof["path"] = str(p)
    return prof


def declared_parameters(notebook: Union[str, Path]) -> dict:
    """Names and defaults of the parameters a notebook declares in its ``parameters`` cell."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def run_profile(
    name_or_path: Union[str, Path], *, stages: Optional[Sequence[str]] = None,
    output_dir: Union[str, Path] = BOOK_NOTEBOOKS, overrides: Optional[dict] = None, cwd: Optional[Path] = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Execute a profile's notebooks in order with papermill.

    Args:
        name_or_path: profile name or YAML path.
        stages: notebook name prefixes to run (e.g. ``["00"]``); default all.
        output_dir: where executed notebooks are written.
        overrides: parameters that override the profile's, for every notebook that declares them.
        cwd: working folder of the kernels (default: the repository root), so relative paths resolve.
        progress: show papermill's cell progress bar.

    Returns:
        A table of notebook, output path, wall seconds and status, also written as ``timings.tsv`` after each
        notebook (a failed notebook is recorded before the error propagates).

    Raises:
        ValueError: an unknown profile, a profile parameter a notebook does not declare, an override that no
            notebook to run declares, or stages that match no notebook. All are checked before anything runs.
    """
    import papermill as pm

    prof = load_profile(name_or_path)
    cwd = Path(cwd or REPO_ROOT)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = []  # (notebook, output, parameters): checked in full before the first notebook runs
    for entry in prof["notebooks"]:
        nb = Path(entry["notebook"])
        nb = nb if nb.is_absolute() else REPO_ROOT / nb
        if stages and not any(nb.name.startswith(s) for s in stages):
            continue
        declared = declared_parameters(nb)
        params = {k: v for k, v in prof["common"].items() if k in declared}
        params.update(entry.get("parameters") or {})
        params.update({k: v for k, v in (overrides or {}).items() if k in declared})
        unknown = set(entry.get("parameters") or {}) - set(declared)
        if unknown:
            raise ValueError(f"{nb.name}: profile sets parameter(s) the notebook does not declare: "
                             f"{', '.join(sorted(unknown))}")
        # a notebook run twice (two models) needs two names
        plan.append((nb, out_dir / (entry.get("output") or nb.name), params, set(declared)))
    if stages and not plan:
        raise ValueError(f"no notebook of profile {prof['path']} matches stages {list(stages)}")
    unused = set(overrides or {}) - set().union(*(d for *_, d in plan))
    if unused:
        raise ValueError(f"override(s) {', '.join(sorted(unused))} are not parameters of any notebook to run")
    rows = []
    timings = out_dir / "timings.tsv"
    for nb, out, params, _ in plan:
        print(f"[{prof['path']}] {out.name} {params}", flush=True)
        t0 = time.perf_counter()
        # a non-interactive MPLBACKEND inherited by the kernel would drop every inline figure
        saved = os.environ.pop("MPLBACKEND", None)
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(cwd), progress_bar=progress,
                                kernel_name="python3")
        except BaseException:
            # the times of the notebooks that finished, and which one failed, survive the crash
            rows.append({"notebook": out.name, "output": str(out), "seconds": round(time.perf_counter() - t0, 1),
                         "status": "failed"})
            pd.DataFrame(rows).to_csv(timings, sep="\t", index=False)
            raise
        finally:
            if saved is not None:
                os.environ["MPLBACKEND"] = saved
        dt = time.perf_counter() - t0
        rows.append({"notebook": out.name, "output": str(out), "seconds": round(dt, 1), "status": "done"})
        pd.DataFrame(rows).to_csv(timings, sep="\t", index=False)
        print(f"  done in {dt:.1f} s -> {out}", flush=True)
    return pd.DataFrame(rows)


def parse_overrides(items: Optional[Sequence[str]]) -> dict:
    """``["run_name=bf2", "subjects=[sub-001]"]`` -> ``{"run_name": "bf2", "subjects": ["sub-001"]}`` (YAML values)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    df = run_profile(args.profile, stages=args.stages or None, overrides=parse_overrides(args.set),
                     output_dir=args.output_dir)
    print(df.to_string(index=False))
    print(f"profile {args.profile}: {time.perf_counter() - t0:.1f} s in all")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("run-profile", help="execute the notebooks of a profile (demo, smoke, ...) with papermill")
    p.add_argument("profile", help="profile name in profiles/ or a YAML path")
    p.add_argument("--stages", nargs="*", help="notebook prefixes to run, e.g. 00 01")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="parameter for every notebook that declares it (YAML value), e.g. --set data_dir=/data/bf2")
    p.add_argument("--output-dir", default=str(BOOK_NOTEBOOKS),
                   help="where the executed notebooks and timings.tsv go (default: book/notebooks)")
    p.set_defaults(func=_cmd_run)
