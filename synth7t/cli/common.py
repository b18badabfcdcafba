"""Helpers that several commands share: ``KEY=VALUE`` overrides, and where a batch runs (``--executor``,
``--shard``, the SLURM options) with its one-line outcome."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence


def json_or_text(text: str) -> Any:
    """A JSON value when ``text`` parses as one (``4``, ``[50, 50]``, ``true``, ``null``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_key_values(items: Optional[Sequence[str]], option: str = "--set",
                     parse: Callable[[str], Any] = json_or_text) -> dict:
    """``["lr_g=1e-4", "crop=[96, 96]"]`` -> ``{"lr_g": 0.0001, "crop": [96, 96]}``; a dotted key sets a
    setting of a nested config: ``registration.spacing=1.5`` -> ``{"registration": {"spacing": 1.5}}``.

    Args:
        items: ``KEY=VALUE`` strings, as the command line gave them.
        option: the option's name, for the error message.
        parse: turns each value's text into a value (default: JSON, else the text).

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        outer, dot, inner = key.strip().partition(".")
        if dot:
            if not inner or not isinstance(out.setdefault(outer, {}), dict):
                raise ValueError(f"{option}: {key.strip()!r} sets a setting of {outer!r}, which is given whole too")
            out[outer][inner] = parse(value.strip())
        else:
            out[outer] = parse(value.strip())
    return out


#: ``--executor`` choices: local processes, a SLURM job array, or the same jobs through submitit's local executor
EXECUTORS = ("local", "slurm", "submitit-local")


def add_executor_options(parser, *, default_cpus: str = "the command's threads per job") -> None:
    """The options of every batch command that say where its items run (see :func:`make_executor`).

    Args:
        parser: the command's parser.
        default_cpus: what ``--cpus-per-task`` defaults to, for the help text.
    """
    g = parser.add_argument_group(
        "where the batch runs",
        "local: worker processes on this machine. slurm: a SLURM job array through submitit, one job per chunk of "
        "items (run on the login node; --no-wait returns after submitting, then: synth7t status OUTPUT_DIR). "
        "submitit-local: the same jobs as local processes, to try the cluster path without SLURM. "
        "--shard K/N runs one shard of the items, for hand-written sbatch --array scripts.")
    g.add_argument("--executor", choices=EXECUTORS, default="local", help="default: local")
    g.add_argument("--shard", default=None, metavar="K/N|auto",
                   help="run items K, K+N, K+2N, ... only (K from 0 to N-1); auto reads SLURM_ARRAY_TASK_ID and "
                        "SLURM_ARRAY_TASK_COUNT (sbatch --array=0-<N-1>); each shard writes its own status table")
    g.add_argument("--no-wait", action="store_true",
                   help="slurm: submit the jobs and return; synth7t status OUTPUT_DIR follows them")
    g.add_argument("--partition", default=None, help="slurm: partition (default: the cluster's)")
    g.add_argument("--time", type=int, default=240, metavar="MIN",
                   help="slurm: time limit per job in minutes (default 240; a job that reaches it is requeued and "
                        "goes on)")
    g.add_argument("--mem-gb", type=float, default=16.0, help="slurm: memory per job (default 16)")
    g.add_argument("--cpus-per-task", type=int, default=None, help=f"slurm: CPUs per job (default: {default_cpus})")
    g.add_argument("--gpus-per-task", type=int, default=0, help="slurm: GPUs per job (default 0)")
    g.add_argument("--array-parallelism", type=int, default=64,
                   help="slurm: at most this many jobs at once (default 64)")
    g.add_argument("--chunk-size", type=int, default=8, help="slurm: items per job (default 8)")
    g.add_argument("--slurm-folder", default=None,
                   help="slurm: folder of the job logs and records (default: OUTPUT_DIR/slurm_logs)")
    g.add_argument("--slurm-setup", action="append", metavar="LINE",
                   help="slurm: a shell line each job runs first, e.g. --slurm-setup 'module load cuda'")
    g.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                   help="slurm: a further sbatch option, e.g. --slurm-option account=proj1 --slurm-option qos=short")


def make_executor(args, *, output_dir, n_jobs: int = 1, threads: int = 1, progress: bool = True):
    """The executor that the options of :func:`add_executor_options` describe.

    Args:
        args: the parsed options.
        output_dir: the command's output folder (``slurm_logs/`` goes inside it).
        n_jobs, threads: local worker processes and the threads of each (``threads`` is also the CPUs per SLURM job
            unless ``--cpus-per-task``).
        progress: progress bars.

    Returns:
        A :class:`synth7t.runtime.batch.LocalExecutor` or a :class:`synth7t.runtime.cluster.SlurmExecutor`.

    Raises:
        ValueError: ``--no-wait`` without a cluster executor, a malformed ``--shard`` or ``--slurm-option``.
    """
    from pathlib import Path

    from ..runtime.batch import LocalExecutor, parse_shard

    shard = parse_shard(args.shard)
    if args.executor == "local":
        if args.no_wait:
            raise ValueError("--no-wait applies to --executor slurm (or submitit-local): local workers end with the "
                             "command")
        return LocalExecutor(n_jobs, threads, shard=shard)
    from ..runtime.cluster import SlurmExecutor

    return SlurmExecutor(
        folder=Path(args.slurm_folder) if args.slurm_folder else Path(output_dir) / "slurm_logs",
        partition=args.partition, time_min=args.time, mem_gb=args.mem_gb,
        cpus_per_task=args.cpus_per_task or max(1, int(threads)), gpus_per_task=args.gpus_per_task,
        array_parallelism=args.array_parallelism, chunk_size=args.chunk_size, setup=tuple(args.slurm_setup or ()),
        slurm_options=parse_key_values(args.slurm_option, "--slurm-option", parse=str), wait=not args.no_wait,
        cluster="slurm" if args.executor == "slurm" else "local", progress=progress, shard=shard)


def report_batch(table, output_dir, what: str = "item") -> tuple[int, int]:
    """Print the one-line outcome of a batch; returns ``(failed, pending)``.

    Pending items are those of jobs that were submitted and not waited for (``--no-wait``).
    """
    failed = int((table["status"] == "failed").sum())
    pending = int((table["status"] == "pending").sum())
    finished = len(table) - failed - pending
    line = f"{finished} of {len(table)} {what}s finished"
    if failed:
        line += f", {failed} failed"
    if pending:
        line += f", {pending} pending in cluster jobs (follow them with: synth7t status {output_dir})"
    print(f"{line}; outputs in {output_dir}")
    return failed, pending
