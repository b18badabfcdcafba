"""Batches on a SLURM cluster through submitit, and the state of batches that run elsewhere (``synth7t status``).

:class:`SlurmExecutor` is an executor of :func:`synth7t.runtime.batch.run_batch`: the batch runner still owns the items,
the status table and resumption; the executor only places the work. It cuts the items that need running into
chunks, submits one job per chunk as a SLURM job array (``submitit``; a concurrency limit, partition, time,
memory, CPUs and GPUs per task), and then either follows the jobs with a progress bar over their states, handing
each item's row to the batch runner as it appears, or returns at once (``wait=False``) and leaves the rows to
``synth7t status``. ``cluster="local"`` runs the same jobs through submitit's local executor (processes on this
machine): the path the tests take, and a way to try the cluster path on a laptop.

Inside a job, :class:`ChunkRunner` runs the chunk's items one after the other through
:func:`synth7t.runtime.batch.call_item` and rewrites the chunk's result file after each, so:

* a job that SLURM preempts or that reaches its time limit is requeued by submitit (it is checkpointable) and
  goes on from the first item without a row; a batch run again later skips the finished items as always
  (the batch runner's ``is_finished``);
* a job that dies (out of memory, a node failure, ``scancel``) fails only its unfinished items, each with the
  job's state and the last lines of its log as the reason, in the same status table as a local run.

Files, under ``folder`` (by default ``slurm_logs/`` beside the status table):

* submitit's: ``<job>_submitted.pkl`` (the chunk a job runs, pickled by submitit itself), ``<job>_0_log.out`` and
  ``<job>_0_log.err`` (the job's output), ``<job>_0_result.pkl``, ``<array>_submission.sh``;
* ``chunks/<batch>/chunk-00012.json``: the rows of one chunk's items (JSON; ``current`` is the item in progress,
  ``finished`` is set when the chunk is through, ``starts`` counts requeues);
* ``<status table>.batch.json``: the batch record (jobs, their chunks, the id fields of their items, the status
  table), which :func:`refresh_batch` reads to fill in the status table of a batch that was not waited for.

:func:`batch_status` is ``synth7t status``: it refreshes every batch record of an output folder, merges the tables
of shards (:func:`synth7t.runtime.batch.shard_status_path`) and counts done / skipped / failed / pending.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import pandas as pd
import submitit

from .batch import SHARD_NAME, Shard, call_item, check_shard, init_worker, read_json, write_json, write_table

PathLike = Union[str, os.PathLike]
CLUSTERS = ("slurm", "local")
#: SLURM (and submitit local) job states of a job that may still run its items
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
                           "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
                           "UNKNOWN", "READY"})
BATCH_FORMAT = "synth7t-batch-1"
STATUS_TABLES = ("summary.tsv", "predictions.tsv", "segmentations.tsv")


# ------------------------------------------------------------------------------------------ in the job


class ChunkRunner(submitit.helpers.Checkpointable):
    """What one job runs: the items of a chunk, each through :func:`synth7t.runtime.batch.call_item`.

    The chunk's result file (JSON) is rewritten after every item, and items that already have a row there are
    skipped, so that a job requeued after a preemption or a timeout (submitit calls ``checkpoint``, which
    resubmits the same chunk) goes on where it stopped.

    Args:
        work: the batch's work function (picklable; submitit pickles it with the chunk).
        threads: ITK/OpenMP/torch threads in the job (:func:`synth7t.runtime.batch.init_worker`), its CPUs per task.
    """

    def __init__(self, work: Callable[[Any], Optional[dict]], threads: int = 1):
        self.work = work
        self.threads = int(threads)

    def __call__(self, chunk: Mapping[str, Any]) -> int:
        """Run ``chunk`` (``items``, their ``positions`` in the batch, the ``result`` file); returns the number of
        items with a row."""
        init_worker(self.threads)
        path = Path(chunk["result"])
        state = read_json(path) or {}
        rows: dict = state.get("rows", {})
        starts = int(state.get("starts", 0)) + 1
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
        for pos, item in zip(chunk["positions"], chunk["items"]):
            if str(pos) in rows:  # finished before a requeue
                continue
            write_json(path, {"rows": rows, "current": pos, "finished": False, "starts": starts, "job": job})
            rows[str(pos)] = call_item(self.work, item)
        write_json(path, {"rows": rows, "current": None, "finished": True, "starts": starts, "job": job})
        return len(rows)


# ------------------------------------------------------------------------------------------ job states


def job_states(cluster: str, folder: PathLike, job_ids: Sequence[str]) -> dict:
    """The states of jobs submitted earlier, without a handle on them: SLURM's (one ``sacct`` call for all), or for
    submitit's local executor ``FINISHED`` (its result file exists), ``RUNNING`` (its process lives) or
    ``INTERRUPTED``.

    Returns:
        ``{job id: state}``.
    """
    if cluster == "slurm":
        jobs = [submitit.SlurmJob(folder=folder, job_id=str(j)) for j in job_ids]  # registered, then one sacct
        return {str(j.job_id): str(j.state).split()[0].upper() for j in jobs}
    return {str(j): local_job_state(folder, str(j)) for j in job_ids}


def local_job_state(folder: PathLike, job_id: str) -> str:
    """``FINISHED``, ``RUNNING`` or ``INTERRUPTED``: a job of submitit's local executor (its id is the process id of
    its controller), from its result file and its process."""
    if submitit.core.utils.JobPaths(folder, job_id=job_id, task_id=0).result_pickle.exists():
        return "FINISHED"
    try:
        stat = Path(f"/proc/{int(job_id)}/stat").read_text()
        return "INTERRUPTED" if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X") else "RUNNING"
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(int(job_id), 0)
        return "RUNNING"
    except (OSError, ValueError):
        return "INTERRUPTED"


def ended(state: str) -> str:
    """The state to report for a job that ended before its chunk was through: submitit's local ``FINISHED`` (it
    wrote a result, an error's) is a failure there."""
    return "FAILED" if state in ("FINISHED", "COMPLETED") else state


def log_tail(folder: PathLike, job_id: str, lines: int = 3) -> str:
    """The last non-empty lines of a job's stderr log (submitit's ``<job>_0_log.err``), joined by a vertical bar."""
    path = submitit.core.utils.JobPaths(folder, job_id=str(job_id), task_id=0).stderr
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"no log yet at {path}"
    tail = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("submitit ")]
    return " | ".join(tail[-lines:]) or f"no error output in {path} (killed from outside: memory, time, scancel?)"


def unfinished_rows(chunk: Mapping[str, Any], state: Optional[Mapping[str, Any]], job_id: str, job_state_: str,
                    folder: PathLike) -> dict:
    """Failed rows for the items of a chunk whose job ended without giving them a row: the job's state and the
    end of its log as the reason (the item in progress, then those never reached)."""
    state = state or {}
    rows = state.get("rows", {})
    current = state.get("current")
    tail = log_tail(folder, job_id)
    out = {}
    for pos in chunk["positions"]:
        if str(pos) in rows:
            continue
        if current is not None and int(current) == int(pos):
            reason = f"job {job_id} ended ({job_state_}) while this item ran; log: {tail}"
        else:
            reason = f"not run: job {job_id} ended ({job_state_}) before reaching it; log: {tail}"
        out[str(pos)] = {"status": "failed", "seconds": float("nan"), "reason": reason[:1000]}
    return out


def check_no_batch_running(record_path: Path) -> None:
    """Refuse to submit a batch while the jobs of the last one submitted for the same status table still run (both
    would work on the same items).

    Raises:
        RuntimeError: a job of that batch is pending or running (the message says how to see and stop it).
    """
    record = read_json(record_path)
    if not record or record.get("format") != BATCH_FORMAT:
        return
    open_ = [ch["job_id"] for ch in record["chunks"] if not (read_json(ch["result"]) or {}).get("finished")]
    states = job_states(record["cluster"], record["folder"], open_) if open_ else {}
    # UNKNOWN: a job that sacct no longer lists, long over
    active = sorted(j for j, st in states.items() if st in ACTIVE_STATES and st != "UNKNOWN")
    if active:
        listed = ", ".join(active[:5]) + (", ..." if len(active) > 5 else "")
        raise RuntimeError(f"{len(active)} job(s) of the batch submitted at {record.get('created')} for this table "
                           f"are still pending or running ({listed}); follow them with synth7t status, or cancel "
                           "them (scancel) before submitting again")


# -------------------------------------------------------------------------------------------- executor


@dataclass
class SlurmExecutor:
    """A :func:`synth7t.runtime.batch.run_batch` executor that runs chunks of items as a SLURM job array (submitit).

    Attributes:
        folder: where submitit's files, the job logs, the chunk results and the batch record go (default:
            ``slurm_logs/`` beside the batch's status table).
        partition: SLURM partition (``None``: the cluster's default).
        time_min: time limit of each job, in minutes (a job that reaches it is requeued up to 3 times and goes
            on from its first unfinished item).
        mem_gb: memory of each job.
        cpus_per_task: CPUs of each job; also the threads its items use.
        gpus_per_task: GPUs of each job (``--gpus-per-node``; each job is one task on one node).
        array_parallelism: at most this many jobs of the array run at once (``--array=0-N%P``).
        chunk_size: items per job; raised when the batch would need more than ``max_array_size`` jobs.
        max_array_size: the most jobs in one array (SLURM's ``MaxArraySize`` is 1001 by default).
        setup: shell lines each job runs first (``module load ...``, ``source .venv/bin/activate``).
        slurm_options: further ``sbatch`` options without the dashes (``{"account": "proj1", "qos": "short"}``).
        wait: follow the jobs until every item has a row; ``False`` submits, writes the batch record and returns
            (the items stay ``pending``; ``synth7t status`` fills them in).
        cluster: ``"slurm"``, or ``"local"`` for submitit's local executor (the same jobs as processes here).
        poll_s: seconds between two looks at the jobs (default 15 on SLURM, 0.5 locally).
        progress: a tqdm bar over the jobs, with their states.
        shard: ``(K, N)``: only shard K of N of the batch's items (see :func:`synth7t.runtime.batch.shard_indices`).
        name: the jobs' name in ``squeue`` (default ``synth7t-<status table>``, e.g. ``synth7t-predictions``).
    """

    folder: Optional[PathLike] = None
    partition: Optional[str] = None
    time_min: int = 240
    mem_gb: float = 16.0
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    array_parallelism: int = 64
    chunk_size: int = 8
    max_array_size: int = 1000
    setup: Sequence[str] = ()
    slurm_options: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = True
    cluster: str = "slurm"
    poll_s: Optional[float] = None
    progress: bool = True
    shard: Optional[Shard] = None
    name: Optional[str] = None

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ValueError(f"cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        for name in ("time_min", "cpus_per_task", "array_parallelism", "chunk_size", "max_array_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.gpus_per_task) < 0 or float(self.mem_gb) <= 0:
            raise ValueError(f"gpus_per_task must be >= 0 and mem_gb > 0, got {self.gpus_per_task} and {self.mem_gb}")
        if self.shard is not None:
            self.shard = check_shard(self.shard)
        self._batch: dict = {}

    @property
    def in_process(self) -> bool:
        """Always ``False``: items run in jobs, so the work function is pickled."""
        return False

    def attach(self, status_file: Optional[PathLike], id_columns: Sequence[str], labels: Sequence[Mapping]) -> None:
        """Called by :func:`synth7t.runtime.batch.run_batch` before :meth:`run`: the status table and the id fields of the
        items about to run, for the batch record."""
        self._batch = {"status_file": None if status_file is None else str(Path(status_file).resolve()),
                       "id_columns": list(id_columns), "labels": [dict(lab) for lab in labels]}

    def chunks(self, n_items: int) -> list[list[int]]:
        """Contiguous runs of positions, ``chunk_size`` long (longer when ``max_array_size`` requires)."""
        size = max(int(self.chunk_size), -(-n_items // int(self.max_array_size)))
        return [list(range(i, min(n_items, i + size))) for i in range(0, n_items, size)]

    def resolved_folder(self) -> Path:
        """``folder``, or ``slurm_logs/`` beside the attached status table."""
        if self.folder is not None:
            return Path(self.folder).resolve()
        if self._batch.get("status_file"):
            return Path(self._batch["status_file"]).parent / "slurm_logs"
        raise ValueError("SlurmExecutor needs a folder for its jobs' files (folder=...), or a batch with a status "
                         "table beside which to put slurm_logs/")

    def submitit_executor(self, folder: Path):
        """The configured ``submitit.AutoExecutor``.

        Raises:
            RuntimeError: ``cluster="slurm"`` where SLURM's ``sbatch`` is not on ``PATH``.
        """
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise RuntimeError("--executor slurm submits with SLURM's sbatch, which is not on PATH here: run on the "
                               "cluster's login node, or use --executor local")
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params = dict(name=self.name, timeout_min=int(self.time_min), mem_gb=float(self.mem_gb),
                      cpus_per_task=int(self.cpus_per_task), gpus_per_node=int(self.gpus_per_task),
                      tasks_per_node=1, nodes=1)
        if self.cluster == "slurm":
            params.update(slurm_array_parallelism=int(self.array_parallelism),
                          slurm_additional_parameters=dict(self.slurm_options))
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.setup:
                params["slurm_setup"] = list(self.setup)
        elif self.setup:
            params["local_setup"] = list(self.setup)
        ex.update_parameters(**params)
        return ex

    def run(self, work: Callable, items: Sequence[Any]) -> Iterator[tuple[int, dict]]:
        """Submit the chunks of ``items`` as one job array; yield ``(position, row)`` as items finish (nothing when
        ``wait`` is off)."""
        items = list(items)
        if not items:
            return
        folder = self.resolved_folder()
        status_file = self._batch.get("status_file")
        stem = Path(status_file).stem if status_file else "batch"
        check_no_batch_running(folder / f"{stem}.batch.json")
        tag = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        chunks = [{"items": [items[j] for j in pos], "positions": pos,
                   "result": str(folder / "chunks" / tag / f"chunk-{c:05d}.json")}
                  for c, pos in enumerate(self.chunks(len(items)))]
        ex = self.submitit_executor(folder)
        ex.update_parameters(name=self.name or f"synth7t-{stem}")
        jobs = ex.map_array(ChunkRunner(work, self.cpus_per_task), chunks)
        labels = self._batch.get("labels") or [{} for _ in items]
        record = {"format": BATCH_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "cluster": self.cluster,
                  "folder": str(folder), "status_file": status_file, "id_columns": self._batch.get("id_columns", []),
                  "n_items": len(items),
                  "chunks": [{"job_id": str(job.job_id), "result": ch["result"], "positions": ch["positions"],
                              "labels": [labels[j] for j in ch["positions"]]} for job, ch in zip(jobs, chunks)]}
        record_path = write_json(folder / f"{stem}.batch.json", record)
        if self.progress:
            array = f", array {str(jobs[0].job_id).split('_')[0]}" if self.cluster == "slurm" else ""
            print(f"submitted {len(jobs)} {self.cluster} job(s) for {len(items)} item(s){array}; logs in {folder}",
                  file=sys.stderr)
        if not self.wait:
            if self.progress:
                where = Path(status_file).parent if status_file else Path(record_path).parent
                print(f"not waiting: follow the batch with synth7t status {where}", file=sys.stderr)
            return
        yield from self.follow(jobs, chunks, folder)

    def follow(self, jobs: Sequence[Any], chunks: Sequence[Mapping], folder: Path) -> Iterator[tuple[int, dict]]:
        """Poll the jobs until every chunk is through; yield each item's row as it appears in its chunk's file, and
        failed rows for the items of a job that died."""
        from tqdm.auto import tqdm

        poll = self.poll_s if self.poll_s is not None else (15.0 if self.cluster == "slurm" else 0.5)
        seen: list[set] = [set() for _ in chunks]
        open_ = set(range(len(chunks)))
        bar = tqdm(total=len(chunks), desc="jobs", unit="job", disable=not self.progress, position=1, leave=False)
        shown: dict = {}
        try:
            while open_:
                states: Counter = Counter()
                for c in sorted(open_):
                    done = jobs[c].done()  # before reading the file: a done job has written its last row
                    result = read_json(chunks[c]["result"]) or {}
                    rows = dict(result.get("rows", {}))
                    if done and not result.get("finished"):
                        job_id = str(jobs[c].job_id)
                        state = (local_job_state(folder, job_id) if self.cluster == "local"
                                 else str(jobs[c].state).split()[0].upper())
                        rows.update(unfinished_rows(chunks[c], result, job_id, ended(state), folder))
                    for key, row in rows.items():
                        if key not in seen[c]:
                            seen[c].add(key)
                            yield int(key), dict(row)
                    if done:
                        open_.discard(c)
                        bar.update(1)
                    states[str(jobs[c].state).split()[0].upper()] += 1
                now = {k.lower(): v for k, v in sorted(states.items())}
                if now != shown:  # the bar is redrawn when a job changes state, not at every look
                    bar.set_postfix(now, refresh=True)
                    shown = now
                if open_:
                    time.sleep(poll)
        finally:
            bar.close()


# -------------------------------------------------------------------------------------- status of a batch


def read_status_table(path: PathLike) -> pd.DataFrame:
    """A status TSV as text (empty cells stay empty strings)."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def is_status_table(path: Path) -> bool:
    """Whether ``path`` is a TSV whose header has ``status`` and ``reason`` (a :func:`run_batch` table)."""
    try:
        with open(path) as f:
            header = f.readline().rstrip("\n").split("\t")
    except OSError:
        return False
    return "status" in header and "reason" in header


def refresh_batch(record_path: PathLike) -> dict:
    """Fill the status table of a submitted batch in from its chunks' result files and its jobs' states.

    Returns:
        ``{"status_file", "jobs": Counter of job states, "rows": rows updated}``.
    """
    record = read_json(record_path)
    if not record or record.get("format") != BATCH_FORMAT:
        raise ValueError(f"{record_path}: not a synth7t batch record")
    folder, cluster = record["folder"], record["cluster"]
    jobs: Counter = Counter()
    found: dict = {}
    results = [read_json(chunk["result"]) or {} for chunk in record["chunks"]]
    states = job_states(cluster, folder, [ch["job_id"] for ch, res in zip(record["chunks"], results)
                                          if not res.get("finished")])
    for chunk, result in zip(record["chunks"], results):
        rows = dict(result.get("rows", {}))
        if result.get("finished"):
            jobs["COMPLETED"] += 1
        else:
            state = states[str(chunk["job_id"])]
            jobs[state] += 1
            if state not in ACTIVE_STATES:
                rows.update(unfinished_rows(chunk, result, chunk["job_id"], ended(state), folder))
        for pos, label in zip(chunk["positions"], chunk["labels"]):
            if str(pos) in rows:
                found[tuple(str(label.get(c, "")) for c in record["id_columns"])] = rows[str(pos)]
    updated = 0
    path = record.get("status_file")
    if path and Path(path).is_file() and record["id_columns"]:
        table = read_status_table(path)
        keys = [tuple(r) for r in table[record["id_columns"]].astype(str).itertuples(index=False)]
        for i, key in enumerate(keys):
            row = found.get(key)
            if row is None or table.at[i, "status"] not in ("pending", ""):
                continue
            for col in table.columns:
                if col in row and col not in record["id_columns"]:
                    value = row[col]
                    if col == "seconds" and isinstance(value, float):
                        value = round(value, 2)
                    table.at[i, col] = "" if value is None else str(value)
            updated += 1
        if updated:
            write_table(table, path)
    return {"status_file": path, "jobs": jobs, "rows": updated}


def shard_groups(folder: PathLike) -> dict:
    """The shard tables of a folder, ``{(base name, N): {K: path}}``."""
    groups: dict = {}
    for p in sorted(Path(folder).glob("*.shard-*-of-*.*")):
        m = SHARD_NAME.match(p.name)
        if m and is_status_table(p):
            groups.setdefault((m["stem"] + m["suffix"], int(m["n"])), {})[int(m["k"])] = p
    return groups


def merge_tables(paths: Sequence[PathLike], order: Optional[Sequence[str]] = None,
                 order_column: Optional[str] = None) -> pd.DataFrame:
    """One table from the tables of several shards (or ranks).

    Args:
        paths: the shard tables.
        order: the values of ``order_column`` in the order of the whole batch (e.g. the inputs), for a table in
            the order a one-process run writes; without it, rows are sorted by their first column.
        order_column: the column ``order`` lists (default: the first).
    """
    tables = [read_status_table(p) for p in paths]
    merged = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if merged.empty:
        return merged
    col = order_column or merged.columns[0]
    if order is not None:
        rank = {str(v): i for i, v in enumerate(order)}
        merged = merged.iloc[sorted(range(len(merged)), key=lambda i: rank.get(merged[col].iat[i], len(rank)))]
    else:
        merged = merged.sort_values(col, kind="stable")
    return merged.reset_index(drop=True)


def merge_shards(folder: PathLike) -> list[dict]:
    """Write the union of every complete set of shard tables as the table a one-process run writes
    (``predictions.shard-*-of-10.tsv`` -> ``predictions.tsv``), when a shard table is newer than it.

    Returns:
        One ``{"table", "shards", "missing", "merged"}`` per set of shards.
    """
    out = []
    for (base, n), parts in shard_groups(folder).items():
        missing = [k for k in range(n) if k not in parts]
        target = Path(folder) / base
        newest = max(p.stat().st_mtime_ns for p in parts.values())
        merged = False
        if not missing and (not target.exists() or target.stat().st_mtime_ns < newest):
            write_table(merge_tables([parts[k] for k in range(n)]), target)
            merged = True
        out.append({"table": base, "shards": n, "missing": missing, "merged": merged})
    return out


def batch_status(folder: PathLike) -> dict:
    """``synth7t status``: refresh the batch records of an output folder, merge its shard tables, count its rows.

    Args:
        folder: the output folder of ``preprocess`` (``<data_dir>/derivatives/synth7t-preproc``), ``predict`` or
            ``segment``, or a ``--slurm-folder`` that holds batch records (``*.batch.json``).

    Returns:
        A dict: ``tables``, one dict per status table (``table``, ``items``, ``done``, ``skipped``, ``failed``,
        ``pending``, ``jobs``, ``failures``: the failed rows with their id fields and reason), and ``shards``, what
        :func:`merge_shards` did.

    Raises:
        FileNotFoundError: a folder that does not exist.
        ValueError: a folder with neither a status table nor a batch record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    jobs: dict = {}
    for rec in sorted([*(folder / "slurm_logs").glob("*.batch.json"), *folder.glob("*.batch.json")]):
        res = refresh_batch(rec)
        if res["status_file"]:
            jobs[Path(res["status_file"]).resolve()] = res["jobs"]
    shards = merge_shards(folder)
    shard_files = {p.resolve() for parts in shard_groups(folder).values() for p in parts.values()}
    paths = {p.resolve() for p in folder.glob("*.tsv")} | {p for p in jobs if p.is_file()}
    tables = []
    for p in sorted(paths):
        if not is_status_table(p):
            continue
        t = read_status_table(p)
        counts = Counter(t["status"])
        ids = [c for c in t.columns if c not in ("status", "seconds", "reason")][:1]
        failed = t[t["status"] == "failed"]
        name = p.name if p.parent == folder.resolve() else str(p)
        tables.append({"table": name, "items": len(t), "done": counts["done"], "skipped": counts["skipped"],
                       "failed": counts["failed"], "pending": counts["pending"], "jobs": dict(jobs.get(p, {})),
                       "shard": p in shard_files,
                       "failures": [{**{c: r[c] for c in ids}, "reason": r["reason"]} for _, r in failed.iterrows()]})
    if not tables and not jobs:
        raise ValueError(f"{folder}: no status table ({', '.join(STATUS_TABLES)} or their shards) and no batch "
                         "record (slurm_logs/*.batch.json); give the output folder of preprocess "
                         "(<data_dir>/derivatives/synth7t-preproc), predict or segment")
    return {"tables": tables, "shards": shards}


def executor_for(kind: str = "local", **settings: Any) -> Optional[SlurmExecutor]:
    """The executor that a notebook's ``executor`` parameter names.

    Args:
        kind: ``"local"`` (``None``: the batch function's own worker processes, its ``n_jobs``), ``"slurm"`` (a
            SLURM job array) or ``"submitit-local"`` (the same jobs as local processes).
        **settings: :class:`SlurmExecutor` attributes for a cluster executor (``partition``, ``time_min``,
            ``mem_gb``, ``cpus_per_task``, ``gpus_per_task``, ``array_parallelism``, ``chunk_size``, ``setup``,
            ``slurm_options``, ``wait``, ``folder``, ...).

    Raises:
        ValueError: an unknown kind or setting, or settings for ``"local"``.
    """
    from dataclasses import fields

    kinds = ("local", "slurm", "submitit-local")
    if kind not in kinds:
        raise ValueError(f"executor must be one of {', '.join(kinds)}, got {kind!r}")
    if kind == "local":
        if settings:
            raise ValueError(f"SLURM settings {sorted(settings)} were given for executor 'local'; use "
                             "executor 'slurm' or leave them empty")
        return None
    known = {f.name for f in fields(SlurmExecutor)} - {"cluster"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown SLURM executor setting(s) {unknown}; known: {', '.join(sorted(known))}")
    return SlurmExecutor(**settings, cluster="slurm" if kind == "slurm" else "local")
