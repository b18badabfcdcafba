"""Parameter sets ("profiles") and the runner that executes the notebooks with papermill.

A profile is a YAML file in ``<root>/profiles/`` (``demo`` for a 2-core CPU, ``smoke`` for tests)::

    common:            # injected into every notebook that declares the parameter
      run_name: demo
      data_dir: data/demo
    notebooks:
      - notebook: notebooks/00_demo_data.ipynb
        parameters: {n_subjects: 12}
      - notebook: notebooks/02_train.ipynb       # the same notebook twice: ``output`` names the second copy
        output: 02_train_gan.ipynb
        parameters: {model_name: gan-unet, preset: demo-cpu-gan}
      - notebook: notebooks/02_train.ipynb       # ``lane``: consecutive entries with a lane (and the same
        output: 02_train_vnet.ipynb               # ``group``, when given) form a group whose lanes run side by
        lane: b                                    # side, the notebooks of one lane in order, each kernel on
        group: training                            # cores / lanes threads
    deviations: true   # optional: add the settings of synth7t.studies.deviations.DEVIATIONS (the ``paper`` profile)

A run is planned, then executed: :func:`plan_profile` reads the profile and checks every notebook, parameter and
override before anything runs (``synth7t run-profile --plan`` prints that plan), :func:`execute_plan` runs it and
:func:`run_profile` does both.

The project root (``root``, ``synth7t run-profile --root``) is the folder that holds ``profiles/`` and the
``notebooks/`` the profiles name; it defaults to the current working directory, which is the repository root when
``make demo`` runs. Executed notebooks are written to ``<root>/book/notebooks/`` (the book's chapters) with a
timing table; papermill's injected-parameters cell of each is tagged ``remove-cell``, so the book does not show it.

On the console each notebook takes one line when it starts and one when it ends (``[3/11] 02_train.ipynb done
in 243.0 s``), with a single progress line in between on a terminal; the kernel runs over CurveZMQ-encrypted
channels when the kernel and pyzmq support it, which removes the kernel's "running over TCP without encryption"
warning at its cause, and deprecation warnings of the Jupyter machinery are not shown.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
import yaml

PathLike = Union[str, Path]

#: Folder of the profiles, relative to the project root.
PROFILE_DIR = "profiles"
#: Folder of the executed notebooks (the book's chapters), relative to the project root.
BOOK_NOTEBOOKS = Path("book") / "notebooks"
#: Tag of the cell papermill injects after a notebook's ``parameters`` cell.
INJECTED_TAG = "injected-parameters"
#: MyST-NB tag that leaves a cell out of the rendered book.
REMOVE_TAG = "remove-cell"
#: Packages whose deprecation warnings are the Jupyter machinery's business, not the user's.
JUPYTER_PACKAGES = ("jupyter_client", "jupyter_core", "zmq", "nbclient", "nbformat", "papermill", "traitlets",
                    "ipykernel", "tornado", "tqdm")


class ProjectRootError(FileNotFoundError):
    """The project root lacks what a command needs (``profiles/``, ``_config.yml``, ``_toc.yml``)."""


class NotebookFailed(RuntimeError):
    """A notebook of a profile raised an error; the executed notebook, with the traceback, was still written.

    Attributes:
        notebook: path of the executed (failed) notebook.
    """

    def __init__(self, message: str, notebook: Path):
        super().__init__(message)
        self.notebook = notebook


def project_root(root: Optional[PathLike] = None, *, need: Sequence[str] = (PROFILE_DIR,)) -> Path:
    """The project root, checked: ``root`` (default: the current working directory), which must hold ``need``.

    Args:
        root: the folder with ``profiles/``, ``notebooks/`` and the book (a checkout of the repository).
        need: files or folders that must exist in it.

    Returns:
        The absolute root.

    Raises:
        ProjectRootError: something of ``need`` is missing (the message says to run from the repository root or
            pass ``--root``).
    """
    path = Path(root if root is not None else Path.cwd()).resolve()
    missing = [n for n in need if not (path / n).exists()]
    if missing:
        names = " or ".join(f"{n}/" if n == PROFILE_DIR else n for n in missing)
        raise ProjectRootError(f"no {names} in {path}: run from the repository root or pass --root")
    return path


def load_profile(name_or_path: PathLike, root: Optional[PathLike] = None) -> dict:
    """Read a profile by name (``<root>/profiles/<name>.yml``) or by path, and validate its shape.

    Args:
        name_or_path: a profile name (no suffix) or the path of a YAML file (a relative path is tried as given,
            then under ``root``).
        root: the project root (default: the current working directory); needed for a profile name.

    Returns:
        The profile: ``common`` (always present), ``notebooks`` (with the deviation table's settings added when the
        profile says ``deviations: true``), optional ``description`` and ``deviations``, and ``path``.

    Raises:
        ProjectRootError: a name was given and ``root`` has no ``profiles/``.
        ValueError: the profile does not exist or has unknown keys or an entry without ``notebook``.
    """
    p = Path(name_or_path)
    if not p.suffix:
        folder = project_root(root) / PROFILE_DIR
        p = folder / f"{name_or_path}.yml"
        if not p.is_file():
            known = sorted(x.stem for x in folder.glob("*.yml"))
            raise ValueError(f"profile {name_or_path!r} not found in {folder} (known: {', '.join(known)})")
    elif not p.is_file() and not p.is_absolute() and root is not None and (Path(root) / p).is_file():
        p = Path(root) / p
    if not p.is_file():
        raise ValueError(f"profile {str(name_or_path)!r} not found")
    prof = yaml.safe_load(p.read_text()) or {}
    if not isinstance(prof, dict):
        raise ValueError(f"{p}: a profile is a mapping with 'common' and 'notebooks'")
    unknown = set(prof) - {"common", "notebooks", "description", "deviations"}
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    nbs = prof.get("notebooks") or []
    for i, nb in enumerate(nbs):
        if not isinstance(nb, dict) or "notebook" not in nb:
            raise ValueError(f"{p}: notebooks[{i}] needs a 'notebook' path")
        bad = set(nb) - {"notebook", "parameters", "output", "lane", "group"}
        if bad:
            raise ValueError(f"{p}: notebooks[{i}] has unknown key(s) {', '.join(sorted(bad))}")
        for key in ("lane", "group"):
            if key in nb and (not isinstance(nb[key], (str, int)) or isinstance(nb[key], bool)):
                raise ValueError(f"{p}: notebooks[{i}] {key} must be a name, got {nb[key]!r}")
        if "group" in nb and "lane" not in nb:
            raise ValueError(f"{p}: notebooks[{i}] has a group but no lane")
    if prof.get("deviations"):
        nbs = _with_deviation_settings(nbs, p)
    prof["notebooks"] = nbs
    prof["common"] = prof.get("common") or {}
    prof["path"] = str(p)
    return prof


def _with_deviation_settings(notebooks: list, path: Path) -> list:
    """The profile's notebook entries with the parameters of :func:`synth7t.studies.deviations.profile_parameters` added,
    by notebook stem: the deviation table of the book is where such a setting is decided, so a profile that sets it
    otherwise is an error (change the table, or drop ``deviations`` from the profile)."""
    from ..studies.deviations import profile_parameters

    table = profile_parameters()
    out = []
    for nb in notebooks:
        stem = Path(nb["notebook"]).stem
        params = dict(nb.get("parameters") or {})
        for k, v in table.get(stem, {}).items():
            if k in params and params[k] != v:
                raise ValueError(f"{path}: {stem} sets {k}={params[k]!r}, but the deviation table "
                                 f"(synth7t.studies.deviations.DEVIATIONS) sets {v!r}; change the table, not the profile")
            params[k] = v
        out.append({**nb, "parameters": params})
    return out


def declared_parameters(notebook: PathLike) -> dict:
    """Names and defaults of the parameters a notebook declares in its ``parameters`` cell."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def parse_overrides(items: Optional[Sequence[str]]) -> dict:
    """``["run_name=bf2", "subjects=[sub-001]"]`` -> ``{"run_name": "bf2", "subjects": ["sub-001"]}`` (YAML values)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def hide_injected_parameters(notebook: PathLike) -> bool:
    """Tag papermill's injected-parameters cell of an executed notebook ``remove-cell`` (MyST-NB leaves it out).

    Returns:
        Whether the notebook has such a cell (it is tagged once, however often this runs).
    """
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    found = changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if INJECTED_TAG in tags:
            found = True
            if REMOVE_TAG not in tags:
                cell.metadata["tags"] = [*tags, REMOVE_TAG]
                changed = True
    if changed:
        nbformat.write(nb, str(notebook))
    return found


#: Lines that the kernel process prints on its own stderr and that say nothing about the notebook: the warning of
#: an unencrypted local connection, and the interrupt that jupyter_client sends before every kernel shutdown,
#: which the kernel sometimes logs as an error although the notebook finished.
KERNEL_NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")


def forward_filtered(fd: int, stream=None, noise: Sequence[str] = KERNEL_NOISE) -> threading.Thread:
    """Copy the lines read from file descriptor ``fd`` to ``stream`` (default: ``sys.stderr`` at each line), less
    the lines that contain one of ``noise``; in a daemon thread that ends when every writer has closed ``fd``."""

    def pump():
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace")
                if not any(n in line for n in noise):
                    out = stream or sys.stderr
                    out.write(line)
                    out.flush()

    thread = threading.Thread(target=pump, name="synth7t-kernel-stderr", daemon=True)
    thread.start()
    return thread


@functools.lru_cache(maxsize=None)
def quiet_kernel_manager() -> type:
    """A jupyter_client ``AsyncKernelManager`` whose kernel's own stderr goes through :func:`forward_filtered`.

    What the notebook's cells print or warn is not on that stream (the kernel sends it into the notebook); the
    kernel's stderr holds the kernel application's log and whatever its subprocesses print, which is forwarded
    unless it is known noise (:data:`KERNEL_NOISE`).
    """
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            # start_kernel's keyword arguments reach the kernel's Popen
            if kw.get("stderr") is not None:
                return await super().start_kernel(**kw)
            read_end, write_end = os.pipe()
            forward_filtered(read_end)
            try:
                return await super().start_kernel(stderr=write_end, **kw)
            finally:
                os.close(write_end)  # the kernel holds its own copy; the pipe ends when the kernel does

    return QuietKernelManager


def kernel_options() -> dict:
    """Keyword arguments for ``papermill.execute_notebook`` that keep the kernel quiet on the console.

    The kernel's own stderr is filtered (:func:`quiet_kernel_manager`). Its channels are also encrypted with
    CurveZMQ when jupyter_client offers manager-provisioned keys, pyzmq has CURVE support and the kernelspec
    declares it (ipykernel >= 7), which removes the cause of the "running over TCP without encryption" warning.
    """
    options: dict = {"kernel_manager_class": quiet_kernel_manager()}
    try:
        import zmq
        from jupyter_client.manager import KernelManager
        from traitlets.config import Config

        if zmq.has("curve") and KernelManager.class_traits().get("transport_encryption") is not None:
            cfg = Config()
            cfg.KernelManager.transport_encryption = "auto"
            options["config"] = cfg
    except ImportError:  # an older jupyter_client or pyzmq: the filter alone drops the warning
        pass
    return options


def _short(params: dict, width: int = 100) -> str:
    text = " ".join(f"{k}={v}" for k, v in params.items())
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class PlannedNotebook:
    """One notebook of a plan: what runs, where it is written, with which parameters, in which lane.

    Attributes:
        index: its place in the plan, from 1 (the ``[i/n]`` of the console lines).
        notebook: the source notebook.
        output: the executed notebook's path.
        parameters: what papermill injects (the profile's ``common`` values the notebook declares, its own
            ``parameters``, then the overrides it declares).
        declared: the parameters the notebook declares.
        lane: ``(group, lane)`` for a notebook that runs beside others, ``None`` for one that runs alone.
    """

    index: int
    notebook: Path
    output: Path
    parameters: dict
    declared: frozenset
    lane: Optional[tuple] = None


@dataclass(frozen=True)
class ProfilePlan:
    """What :func:`run_profile` will run, checked in full before anything runs (:func:`plan_profile`).

    Attributes:
        profile: the profile's YAML path.
        notebooks: the notebooks in the order of the profile.
        output_dir: where the executed notebooks and ``timings.tsv`` go.
        cwd: the kernels' working folder.
    """

    profile: Path
    notebooks: tuple
    output_dir: Path
    cwd: Path

    def groups(self) -> list:
        """The plan cut into groups that run one after the other: a list of ``[(lane or None, [PlannedNotebook,
        ...]), ...]``, one per group. A notebook without a lane is a group of its own; consecutive notebooks with
        lanes and the same ``group`` name form one group, its lanes in the order they first appear."""
        groups: list = []
        previous = None
        for item in self.notebooks:
            key = item.lane
            if key is None or previous is None or key[0] != previous[0]:
                groups.append([(key, [item])])
                previous = key
                continue
            previous = key
            for name, items in groups[-1]:
                if name == key:
                    items.append(item)
                    break
            else:
                groups[-1].append((key, [item]))
        return groups

    def table(self) -> pd.DataFrame:
        """One row per notebook: its place, output name, the step it runs in and its lane, and its parameters."""
        rows = []
        for step, group in enumerate(self.groups(), 1):
            for key, items in group:
                for item in items:
                    rows.append({"index": item.index, "output": item.output.name, "step": step,
                                 "lane": "" if key is None else key[1], "parameters": _short(item.parameters)})
        return pd.DataFrame(rows).sort_values("index").reset_index(drop=True)


def plan_profile(
    name_or_path: PathLike, *, stages: Optional[Sequence[str]] = None, output_dir: Optional[PathLike] = None,
    overrides: Optional[dict] = None, cwd: Optional[PathLike] = None, root: Optional[PathLike] = None,
) -> ProfilePlan:
    """Read a profile and check everything a run needs, without running anything (arguments as
    :func:`run_profile`).

    Raises:
        ProjectRootError: ``root`` has no ``profiles/`` (for a profile name) or lacks a notebook the profile names.
        ValueError: an unknown profile, a profile parameter a notebook does not declare, an override that no
            notebook to run declares, or stages that match no notebook.
    """
    prof = load_profile(name_or_path, root)
    root_path = Path(root if root is not None else Path.cwd()).resolve()
    out_dir = Path(output_dir) if output_dir is not None else root_path / BOOK_NOTEBOOKS
    chosen = []
    for entry in prof["notebooks"]:
        nb = Path(entry["notebook"])
        nb = nb if nb.is_absolute() else root_path / nb
        if stages and not any(nb.name.startswith(s) for s in stages):
            continue
        if not nb.is_file():
            raise ProjectRootError(f"{prof['path']}: notebook {entry['notebook']} not found in {root_path}: "
                                   "run from the repository root or pass --root")
        declared = declared_parameters(nb)
        unknown = set(entry.get("parameters") or {}) - set(declared)
        if unknown:
            raise ValueError(f"{nb.name}: profile sets parameter(s) the notebook does not declare: "
                             f"{', '.join(sorted(unknown))}")
        params = {k: v for k, v in prof["common"].items() if k in declared}
        params.update(entry.get("parameters") or {})
        params.update({k: v for k, v in (overrides or {}).items() if k in declared})
        lane = entry.get("lane")
        # a notebook run twice (two models) needs two names: ``output``
        chosen.append(PlannedNotebook(len(chosen) + 1, nb, out_dir / (entry.get("output") or nb.name), params,
                                      frozenset(declared),
                                      None if lane is None else (str(entry.get("group", "")), str(lane))))
    if stages and not chosen:
        raise ValueError(f"no notebook of profile {prof['path']} matches stages {list(stages)}")
    unused = set(overrides or {}) - set().union(*(item.declared for item in chosen))
    if unused:
        raise ValueError(f"override(s) {', '.join(sorted(unused))} are not parameters of any notebook to run")
    return ProfilePlan(Path(prof["path"]), tuple(chosen), out_dir, Path(cwd) if cwd is not None else root_path)


def execute_plan(plan: ProfilePlan, *, progress: Optional[bool] = None) -> pd.DataFrame:
    """Run a plan's notebooks with papermill, group after group (the lanes of a group side by side).

    Returns:
        A table of notebook, output path, wall seconds and status, also written as ``timings.tsv`` after each
        notebook (a failed notebook is recorded before the error propagates).

    Raises:
        NotebookFailed: a notebook raised an error (the message names the cell and the error; the executed
            notebook holds the traceback).
    """
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    rows: list = []
    timings = plan.output_dir / "timings.tsv"
    n = len(plan.notebooks)
    for group in plan.groups():
        if len(group) == 1 and group[0][0] is None:  # a notebook without a lane: alone, on every core
            item = group[0][1][0]
            tag = f"[{item.index}/{n}] {item.output.name}"
            print(f"{tag} ... {_short(item.parameters)}", flush=True)
            row = _execute(item.notebook, item.output, item.parameters, plan.cwd, tag, progress)
            rows.append(row)
            pd.DataFrame(rows).to_csv(timings, sep="\t", index=False)
            _raise_if_failed(row, tag)
            print(f"{tag} done in {row['seconds']:.1f} s -> {item.output}", flush=True)
            continue
        rows += _run_lanes(group, n, plan.cwd, rows, timings)
    return pd.DataFrame(rows)


def run_profile(
    name_or_path: PathLike, *, stages: Optional[Sequence[str]] = None, output_dir: Optional[PathLike] = None,
    overrides: Optional[dict] = None, cwd: Optional[PathLike] = None, progress: Optional[bool] = None,
    root: Optional[PathLike] = None,
) -> pd.DataFrame:
    """Plan a profile (:func:`plan_profile`: every check before anything runs), then execute it
    (:func:`execute_plan`).

    Args:
        name_or_path: profile name (``<root>/profiles/<name>.yml``) or YAML path.
        stages: notebook name prefixes to run (e.g. ``["00"]``); default all.
        output_dir: where executed notebooks are written (default ``<root>/book/notebooks``).
        overrides: parameters that override the profile's, for every notebook that declares them.
        cwd: working folder of the kernels (default: ``root``), so relative paths resolve.
        progress: one progress line per notebook (cells executed); ``None``: only when stderr is a terminal.
        root: the project root, where ``profiles/`` is and relative notebook paths resolve (default: the current
            working directory).

    Returns:
        The timing table of :func:`execute_plan`.

    Raises:
        ProjectRootError, ValueError: from :func:`plan_profile`; NotebookFailed: from :func:`execute_plan`.
    """
    plan = plan_profile(name_or_path, stages=stages, output_dir=output_dir, overrides=overrides, cwd=cwd, root=root)
    return execute_plan(plan, progress=progress)


def _execute(nb: Path, out: Path, params: dict, cwd: Path, tag: str, progress: bool) -> dict:
    """Run one notebook with papermill; the timing row (``status`` done or failed, ``error`` when failed)."""
    import papermill as pm

    # one line that redraws itself, gone when the notebook ends (the "done" line replaces it)
    bar = {"desc": f"{tag}", "leave": False, "dynamic_ncols": True, "mininterval": 1.0} if progress else False
    t0 = time.perf_counter()
    # a non-interactive MPLBACKEND inherited by the kernel would drop every inline figure
    saved = os.environ.pop("MPLBACKEND", None)
    row = {"notebook": out.name, "output": str(out), "seconds": 0.0, "status": "done"}
    try:
        with warnings.catch_warnings():
            for package in JUPYTER_PACKAGES:
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=rf"{package}(\.|$)")
                warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=rf"{package}(\.|$)")
            pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(cwd), progress_bar=bar,
                                kernel_name="python3", **kernel_options())
    except pm.PapermillExecutionError as exc:
        row.update(status="failed", error=f"{out.name} failed in cell [{exc.exec_count}]: {exc.ename}: "
                                          f"{exc.evalue} (the traceback is in {out})")
    except Exception as exc:  # noqa: BLE001 -- recorded, then raised by the caller with the timing saved
        row.update(status="failed", error=f"{out.name}: {type(exc).__name__}: {exc}")
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    if out.is_file():
        hide_injected_parameters(out)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _raise_if_failed(row: dict, tag: str) -> None:
    if row["status"] == "failed":
        print(f"{tag} failed after {row['seconds']:.1f} s -> {row['output']}", flush=True)
        raise NotebookFailed(row.get("error") or f"{row['notebook']} failed", Path(row["output"]))


def _lane_worker(items: list, cwd: str, threads: int, n: int) -> list:
    """One lane in its own process: its notebooks in order on ``threads`` threads each, until one fails."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(threads)  # the kernels inherit them
    rows = []
    for i, (nb, out, params) in items:
        tag = f"[{i}/{n}] {Path(out).name}"
        print(f"{tag} ... {_short(params)} (lane of {threads} thread{'s' if threads > 1 else ''})", flush=True)
        row = _execute(Path(nb), Path(out), params, Path(cwd), tag, False)
        rows.append(row)
        if row["status"] == "failed":
            print(f"{tag} failed after {row['seconds']:.1f} s -> {out}", flush=True)
            break
        print(f"{tag} done in {row['seconds']:.1f} s -> {out}", flush=True)
    return rows


def _run_lanes(group: list, n: int, cwd: Path, rows: list, timings: Path) -> list:
    """Run a group's lanes side by side, each in a process of its own (a kernel per notebook, as always) with the
    cores shared out; every lane runs to its end or its first failure, then the first failure is raised."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // len(group))
    done: list = []
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with ProcessPoolExecutor(len(group), mp_context=context) as pool:
        jobs = [pool.submit(_lane_worker, [(item.index, (str(item.notebook), str(item.output), item.parameters))
                                           for item in items], str(cwd), threads, n) for _, items in group]
        for job in jobs:
            done += job.result()
            pd.DataFrame(rows + done).to_csv(timings, sep="\t", index=False)
    for row in done:
        if row["status"] == "failed":
            raise NotebookFailed(row.get("error") or f"{row['notebook']} failed", Path(row["output"]))
    return done

