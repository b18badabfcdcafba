"""The book's measurements page, generated from the files that hold them: no number typed by hand.

``synth7t book`` writes ``book/notebooks/measurements.md`` before it builds (:func:`write_measurements_page`) from

* ``book/notebooks/timings.tsv``: each notebook's wall time in the run that made the book (``make demo``);
* ``runs/<run>/04_evaluate/table1.tsv``: Table 1 of that run (what the demo shows);
* ``benchmarks/results/*.tsv``: the benchmarks' own tables (what a scan costs, what limits each demo model, the
  multi-view design study), each with the command that measures it again.

A missing file is said, with the command that makes it. The README quotes no measurement; it points here.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import pandas as pd

from .costs import SPEED_TABLES

PathLike = Union[str, Path]
PAGE = Path("book") / "notebooks" / "measurements.md"


@dataclass(frozen=True)
class Source:
    """One measurement file of the page: where it is, what it says, the command that measures it again."""

    path: str
    title: str
    command: str
    about: str
    shape: Optional[Callable[[pd.DataFrame], pd.DataFrame]] = None


def _timings(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    cols = [c for c in ("notebook", "seconds", "status", "lane") if c in t]
    t = t[cols]
    if "seconds" in t:
        t.loc[len(t)] = {c: ("sum of the notebooks" if c == "notebook" else t["seconds"].sum() if c == "seconds"
                             else "") for c in cols}
        t["seconds"] = t["seconds"].astype(float).round(1)
    return t


def _limits(t: pd.DataFrame) -> pd.DataFrame:
    keep = ("model", "variant", "steps", "seconds", "gain_db", "ssim_gain", "ceiling_db", "commit")
    return t[[c for c in keep if c in t]].round(3)


def _design(t: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in ("psnr", "ssim", "artefact_index", "rho", "psnr_vs_axial_model") if c in t]
    g = t.groupby("image_type", sort=False)[metrics]
    out = g.mean().round(4).astype(str) + " ± " + g.std().round(4).astype(str)
    out.insert(0, "seeds", g.size())
    out["commit"] = t.groupby("image_type", sort=False)["commit"].first() if "commit" in t else ""
    return out.reset_index()


SOURCES = (
    Source("book/notebooks/timings.tsv", "Notebook wall times of this build", "make demo",
           "Each notebook of the profile that made this book, in seconds of wall time; lanes ran side by side, so "
           "the sum exceeds the run's wall time.", _timings),
    Source("runs/demo/04_evaluate/table1.tsv", "Table 1 of the demo run (simulated data)", "make demo",
           "PSNR and SSIM against the real 7T and mean Dice of every image type on the held-out subjects of the "
           "simulated cohort (chapter 04)."),
    Source("runs/demo/04_evaluate/premise_margins.tsv", "The premise on the demo's ground truth (simulated data)",
           "make demo",
           "Per held-out subject, the real 7T's lead over the 3T in Dice against the simulated ground truth, both "
           "segmented with Table 1's settings, and whether it leads on all three scores (chapter 04)."),
    *(Source(f"benchmarks/results/speed_{k}.tsv", f"What a scan costs: {v}", f"python benchmarks/bench_speed.py {k}",
             "Seconds per step, the code of a baseline revision against this one, in fresh processes of the same "
             "run (chapter 10, *Run it on your data*).") for k, v in SPEED_TABLES.items()),
    Source("benchmarks/results/lone_settings.tsv", "The lone preset against a scan of known bias field and pose",
           "python benchmarks/lone_settings.py",
           "N4's seconds and the bias field it leaves (SD of log(corrected / clean) in white matter), the template "
           "alignment's seconds and its distance from the true pose (and the worst over three further turns of "
           "the scan), for the quick preset, the first lone preset and today's on one ITK thread (chapter 10, "
           "*Run it on your data*)."),
    Source("benchmarks/results/demo_training_limits.tsv", "What limits each demo model",
           "python benchmarks/demo_training_limits.py",
           "Each demo model retrained with one setting changed, its gain over its 3T input in dB (chapter 02).",
           _limits),
    Source("benchmarks/results/multiview_design.tsv", "The multi-view design study (mean ± SD over seeds)",
           "python benchmarks/multiview_design.py --seeds 0 1 2",
           "Every multi-view design trained with the same budget on the demo cohort (chapter 04).", _design),
)


def _commit(project: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _markdown(t: pd.DataFrame) -> str:
    cols = [str(c) for c in t.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in t.itertuples(index=False):
        rows.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |")
    return "\n".join(rows)


def measurements_page(project: PathLike, run_name: str = "demo") -> str:
    """The page's Markdown: one section per :data:`SOURCES` entry (its table, the file's date, the command that
    measures it again), or, for a file that is not there, that command.

    Args:
        project: the repository root.
        run_name: the run whose Table 1 is shown (``runs/<run_name>/04_evaluate/table1.tsv``).
    """
    project = Path(project)
    out = ["# Measurements", "",
           "Every number on this page is read from the file named under its heading when the book was built "
           f"(commit {_commit(project)}); each section gives the command that measures it again. Machines differ: "
           "the same command on another machine gives other seconds, and trained weights (hence the demo's scores) "
           "repeat on one machine only. **The demo cohort is simulated**: its scores say what the pipeline does on "
           "simulated anatomy, not on real 7T data.", ""]
    for s in SOURCES:
        rel = s.path.replace("runs/demo/", f"runs/{run_name}/")
        path = project / rel
        out += [f"## {s.title}", "", s.about, ""]
        if not path.is_file():
            out += [f"Not measured yet: `{rel}` is missing (`{s.command}` writes it).", ""]
            continue
        table = pd.read_csv(path, sep="\t")
        if s.shape:
            table = s.shape(table)
        when = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        out += [_markdown(table), "", f"Source: `{rel}` (written {when}); again: `{s.command}`.", ""]
    return "\n".join(out).rstrip() + "\n"


def write_measurements_page(project: PathLike, run_name: str = "demo") -> Path:
    """Write :func:`measurements_page` to ``<project>/book/notebooks/measurements.md``; returns its path."""
    path = Path(project) / PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(measurements_page(project, run_name))
    return path
