"""One batch runner for every stage that processes many items: preprocessing, prediction, segmentation, the demo.

A batch is a list of items (subjects, images, files), one picklable function that does the work of one item,
and an optional test of whether an item finished earlier. :func:`run_batch` owns the rest:

* **status rows**: one per item, ``status`` ``done`` / ``skipped`` / ``failed`` with its ``reason`` and
  ``seconds``, plus whatever fields the work function returns; the status table is rewritten atomically after
  every finished item, so a crash or a kill leaves a true table behind;
* **resumption**: an item whose ``is_finished`` says so is skipped (its row says "finished earlier");
  :func:`file_stamp` / :func:`input_stamp` give the size-and-mtime stamps that make a finished item stale when
  its input changes;
* **failure isolation**: an exception in one item becomes that item's row and the batch goes on; a worker
  process that dies (out of memory) fails only its item;
* **workers**: :class:`LocalExecutor` runs items in this process (``n_jobs=1``) or in spawned processes with
  a fixed number of threads each (:func:`init_worker`); another executor plugs in by offering the same
  ``run(work, items)`` method: :class:`synth7t.runtime.cluster.SlurmExecutor` places chunks of items as a SLURM job
  array through submitit;
* **shards**: ``shard=(K, N)`` (or an executor's ``shard``) keeps items ``K, K + N, K + 2N, ...`` of the list
  (:func:`shard_indices`) and suffixes the status table's name (:func:`shard_status_path`), so that N
  processes started by a hand-written ``sbatch --array`` (:func:`parse_shard` reads ``SLURM_ARRAY_TASK_ID``)
  cover every item exactly once without overwriting each other's table;
* **progress**: a tqdm bar over the items that run.

:func:`write_json` (atomic, NumPy-aware) is the one JSON writer of the library's stages.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import pandas as pd

PathLike = Union[str, os.PathLike]
STATUS_COLUMNS = ("status", "seconds", "reason")


# ------------------------------------------------------------------------------------------------ files


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for NumPy scalars and arrays and paths."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (:func:`write_text`); NumPy values and paths are converted."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default))


def read_json(path: PathLike) -> Optional[dict]:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable (a half-written file)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_table(table: pd.DataFrame, path: PathLike) -> Path:
    """Write a TSV atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)
    return path


def file_stamp(path: Optional[PathLike]) -> Optional[list]:
    """``[size, mtime_ns]`` of a file, ``None`` when it does not exist: a changed input makes its output stale."""
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def input_stamp(paths: Mapping[str, Optional[PathLike]]) -> dict:
    """:func:`file_stamp` of every named input that exists (missing optional inputs are left out)."""
    return {name: s for name, p in paths.items() if (s := file_stamp(p)) is not None}


# ----------------------------------------------------------------------------------------------- shards

#: ``<stem>.shard-<K>-of-<N><suffix>``: the status table of one shard (:func:`shard_status_path`)
SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<k>\d+)-of-(?P<n>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")

Shard = tuple[int, int]


def check_shard(shard: Any) -> Shard:
    """``(K, N)`` as two ints with ``0 <= K < N``.

    Raises:
        ValueError: anything else (the message says that K counts from 0).
    """
    try:
        k, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"a shard is (K, N) with 0 <= K < N, got {shard!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard K/N needs N >= 1 and 0 <= K < N (K counts from 0: 0/{max(n, 1)} is the first "
                         f"of {max(n, 1)}), got {k}/{n}")
    return k, n


def parse_shard(text: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Optional[Shard]:
    """The shard a process runs: ``"K/N"`` (K counts from 0) or ``"auto"`` (from a SLURM job array).

    ``auto`` reads ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``; K is the task's place in the array,
    ``(ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``, so ``--array=0-9``, ``--array=1-10`` and
    ``--array=0-18:2`` all give shards 0/10 to 9/10.

    Args:
        text: ``None`` or ``""`` (no shard), ``"K/N"`` or ``"auto"``.
        environ: the environment to read for ``auto`` (default ``os.environ``).

    Returns:
        ``(K, N)``, or ``None`` without a shard.

    Raises:
        ValueError: a malformed ``K/N``, or ``auto`` outside a SLURM array task.
    """
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if text == "auto":
        env = os.environ if environ is None else environ
        if not env.get("SLURM_ARRAY_TASK_ID") or not env.get("SLURM_ARRAY_TASK_COUNT"):
            raise ValueError("--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, which are set only "
                             "inside a task of an sbatch --array job; elsewhere give --shard K/N (K from 0)")
        try:
            task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            first, step = int(env.get("SLURM_ARRAY_TASK_MIN") or 0), int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
        except ValueError:
            raise ValueError("--shard auto: the SLURM_ARRAY_TASK_* variables are not integers") from None
        if step < 1 or (task - first) % step:
            raise ValueError(f"--shard auto: task {task} is not on the array's grid (min {first}, step {step}); "
                             "give --shard K/N")
        return check_shard(((task - first) // step, count))
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(f"--shard expects K/N (e.g. 0/10 for the first of 10 shards) or auto, got {text!r}")
    return check_shard((int(k), int(n)))


def shard_indices(n_items: int, shard: Optional[Shard]) -> list[int]:
    """The positions of a list of ``n_items`` that shard ``(K, N)`` runs: ``K, K + N, K + 2N, ...`` (strided, so
    that every shard gets a like share of a list sorted by site, size or date); all of them without a shard."""
    if shard is None:
        return list(range(n_items))
    k, n = check_shard(shard)
    return list(range(k, n_items, n))


def compose_shards(outer: Optional[Shard], inner: Optional[Shard]) -> Optional[Shard]:
    """Shard ``inner`` of the items of shard ``outer`` as one shard of the whole list (strided shards compose:
    position ``i`` is in both when ``i = K + N * (k + n * j)``), e.g. the torchrun ranks of one array task."""
    if outer is None or inner is None:
        return outer if inner is None else inner
    (k, n), (r, w) = check_shard(outer), check_shard(inner)
    return k + n * r, n * w


def shard_status_path(path: PathLike, shard: Optional[Shard]) -> Path:
    """``predictions.tsv`` -> ``predictions.shard-003-of-250.tsv`` (K padded to the digits of N - 1, to sort)."""
    path = Path(path)
    if shard is None:
        return path
    k, n = check_shard(shard)
    stem, dot, suffix = path.name.rpartition(".")
    if not dot:
        stem, suffix = path.name, "tsv"
    return path.with_name(f"{stem}.shard-{k:0{len(str(n - 1))}d}-of-{n}.{suffix}")


# ---------------------------------------------------------------------------------------------- workers


def init_worker(threads: int = 1) -> None:
    """Set up a worker process: ``threads`` ITK/OpenMP/torch threads, a non-interactive matplotlib."""
    threads = max(1, int(threads))
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    torch.set_num_threads(threads)


def call_item(work: Callable[[Any], Optional[dict]], item: Any) -> dict:
    """Run ``work(item)`` and turn its outcome into a status row; never raises.

    Returns:
        ``{"status": "done", "seconds", "reason": "", **fields}`` where ``fields`` is the dict the work returned,
        or ``{"status": "failed", "seconds", "reason": "<Type>: <message>", "traceback"}``.
    """
    t0 = time.perf_counter()
    try:
        fields = work(item) or {}
        row = {"status": "done", "reason": "", **fields}
    except Exception as exc:  # one item's failure must not stop the batch
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1000]
        row = {"status": "failed", "reason": reason, "traceback": traceback.format_exc(limit=8)}
    row.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return row


class Executor(Protocol):
    """Where the items of a batch run. ``run`` yields ``(index, row)`` as items finish, in any order.

    An executor may also have a ``shard`` attribute (``(K, N)`` or ``None``): :func:`run_batch` then runs only that
    shard's items. One that returns before every item has a row (a cluster executor told not to wait) leaves the
    others ``pending``; it may define ``attach(status_file, id_columns, labels)``, which :func:`run_batch` calls
    before ``run`` with the status table's path and the id fields of the items about to run, so that
    ``synth7t status`` can fill the table in later.
    """

    def run(self, work: Callable, items: Sequence[Any]) -> Iterator[tuple[int, dict]]: ...


def _call_indexed(payload) -> tuple[int, dict]:
    work, i, item, threads = payload
    init_worker(threads)
    return i, call_item(work, item)


def cores_per_worker(n_jobs: int) -> int:
    """Threads for each of ``n_jobs`` worker processes that share this machine's cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, int(n_jobs)))


@dataclass
class LocalExecutor:
    """Items in this process (``n_jobs=1``) or in ``n_jobs`` spawned worker processes.

    Attributes:
        n_jobs: worker processes; 1 runs in this process (a closure is then fine as the work function).
        threads_per_job: threads each worker process gets (:func:`init_worker`); not applied in-process.
        shard: ``(K, N)``: run only shard K of N of the batch's items (:func:`shard_indices`), e.g. one task of
            a hand-written ``sbatch --array`` script (:func:`parse_shard`); ``None`` runs them all.
    """

    n_jobs: int = 1
    threads_per_job: int = 1
    shard: Optional[Shard] = None

    def __post_init__(self):
        if int(self.n_jobs) < 1:
            raise ValueError(f"n_jobs must be >= 1, got {self.n_jobs}")
        if int(self.threads_per_job) < 1:
            raise ValueError(f"threads_per_job must be >= 1, got {self.threads_per_job}")
        if self.shard is not None:
            self.shard = check_shard(self.shard)

    @property
    def in_process(self) -> bool:
        """Whether items run in the calling process (``n_jobs == 1``)."""
        return int(self.n_jobs) == 1

    def run(self, work: Callable, items: Sequence[Any]) -> Iterator[tuple[int, dict]]:
        if int(self.n_jobs) == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, call_item(work, item)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        n = min(int(self.n_jobs), len(items))
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_call_indexed, (work, i, item, self.threads_per_job)): i
                    for i, item in enumerate(items)}
            for f in as_completed(futs):
                try:
                    yield f.result()
                except Exception as exc:  # the worker process itself died (e.g. out of memory)
                    yield futs[f], {"status": "failed", "seconds": float("nan"),
                                    "reason": f"worker process failed: {type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------------------------ batch


def run_batch(
    items: Sequence[Any], work: Callable[[Any], Optional[dict]], *,
    ids: Callable[[Any], Mapping[str, Any]], id_columns: Sequence[str] = ("key",),
    is_finished: Optional[Callable[[Any], bool]] = None,
    status_file: Optional[PathLike] = None, executor: Optional[Executor] = None, overwrite: bool = False,
    columns: Sequence[str] = (), on_failure: Optional[Callable[[Any, dict], None]] = None,
    progress: bool = True, desc: str = "batch", unit: str = "item", shard: Optional[Shard] = None,
) -> pd.DataFrame:
    """Process many items; resumable, failures recorded with their reasons, the batch goes on.

    Args:
        items: the work items (picklable when the executor uses processes).
        work: does one item and returns extra status fields (e.g. ``{"path": ...}``) or ``None``; raising fails
            the item. Must be a module-level function for process executors.
        ids: the identifying fields of an item's row (e.g. ``lambda s: {"key": s.key}``); called in this process.
        id_columns: the names of those fields (the table's first columns, also when there are no items).
        is_finished: whether an item finished earlier (skipped unless ``overwrite``).
        status_file: TSV rewritten after every finished item (atomically): one row per item, in item order;
            with a shard, :func:`shard_status_path` of it.
        executor: where items run (default :class:`LocalExecutor` ``(1)``, in this process).
        overwrite: redo finished items.
        columns: extra columns the table always has, in this order (after the ids and before ``reason``).
        on_failure: called in this process with ``(item, row)`` for every failed item (e.g. to write an error
            file beside the outputs); the row carries the ``traceback`` when one was caught.
        progress: tqdm bar over the items that run.
        desc, unit: the progress bar's label and unit.
        shard: ``(K, N)``: only shard K of N of ``items`` (:func:`shard_indices`; default the executor's
            ``shard``); shards are taken before finished items are skipped, so that which process owns an item
            never depends on what is finished.

    Returns:
        The status table: id fields, ``status`` (done / skipped / failed; ``pending`` for items that an executor
        which does not wait left running), ``seconds``, ``columns``, ``reason``.
    """
    from tqdm.auto import tqdm

    executor = executor or LocalExecutor()
    shard = shard if shard is not None else getattr(executor, "shard", None)
    items = list(items)
    if shard is not None:
        items = [items[i] for i in shard_indices(len(items), shard)]
        if status_file is not None:
            status_file = shard_status_path(status_file, shard)
    rows: list[Optional[dict]] = [None] * len(items)
    todo = []
    for i, item in enumerate(items):
        if not overwrite and is_finished is not None and is_finished(item):
            rows[i] = {**ids(item), "status": "skipped", "seconds": 0.0, "reason": "finished earlier"}
        else:
            todo.append(i)
            rows[i] = {**ids(item), "status": "pending", "seconds": float("nan"), "reason": ""}
    id_cols = list(id_columns)
    cols = [*id_cols, "status", "seconds", *[c for c in columns if c not in id_cols], "reason"]

    def table() -> pd.DataFrame:
        return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)

    if status_file is not None:
        write_table(table(), status_file)
    attach = getattr(executor, "attach", None)
    if callable(attach) and todo:
        attach(status_file=status_file, id_columns=id_cols, labels=[ids(items[i]) for i in todo])
    bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress)
    try:
        for j, row in executor.run(work, [items[i] for i in todo]):
            i = todo[j]
            if row["status"] == "failed" and on_failure is not None:
                on_failure(items[i], row)
            row.pop("traceback", None)
            rows[i] = {**ids(items[i]), **row}
            if status_file is not None:
                write_table(table(), status_file)
            bar.update(1)
    finally:
        bar.close()
    return table()

