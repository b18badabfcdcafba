"""Synthetic 7T of many lone 3T files: in this process, in local worker processes, as a SLURM job array, or over
the GPUs of one node under ``torchrun``; and :func:`predict_many`, notebook 03's models side by side in worker
processes on a CPU.

:func:`predict_files` is one :func:`synth7t.runtime.batch.run_batch` batch: ``<output_dir>/predictions.tsv`` has one row per
input (status, seconds, output, reason), a failing input is recorded and the batch goes on, and an input whose
synth7t output exists is skipped. The work of one input is :class:`PredictFileWork`, which pickles as the model's
folder and loads the model once per process that runs it, so that the batch runs wherever an executor puts it
(:class:`synth7t.runtime.batch.LocalExecutor` processes, :class:`synth7t.runtime.cluster.SlurmExecutor` jobs).

Under ``torchrun --nproc_per_node G`` (``WORLD_SIZE`` > 1), rank ``r`` takes inputs ``r, r + G, ...`` (a strided
shard, :func:`synth7t.runtime.batch.shard_indices`), loads its own model copy on ``cuda:<LOCAL_RANK>`` (or the CPU), and
writes ``predictions.shard-<r>-of-<G>.tsv``; after a barrier rank 0 merges them, in input order, into
``predictions.tsv`` and removes them. The process group is gloo's whatever the device: prediction exchanges no
tensors, the group only lets the ranks wait for each other.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pandas as pd

from ..data import io as sio
from ..runtime.batch import (LocalExecutor, compose_shards, cores_per_worker, run_batch, shard_indices,
    shard_status_path, write_table)
from ..training.modelcard import ModelCardWarning, model_card_warnings
from ..preprocess.input_checks import summarise
from .files import check_output, demographics_of, expand_inputs, predict_file
from .model import load_model, model_folder
from .naming import input_key, prediction_path
from .predictor import Predictor
from .subjects import predict_subjects

PathLike = Union[str, Path]
STATUS_FILE = "predictions.tsv"


def batch_output_path(output_dir: PathLike, t3_path: PathLike) -> Path:
    """Where :func:`predict_files` writes the prediction of one input (:func:`synth7t.inference.naming.prediction_path`
    of the input's key, image type ``synth7t``, on the grid the model predicted on)."""
    return prediction_path(output_dir, input_key(t3_path), "synth7t", "grid")


class PredictFileWork:
    """The prediction of one input, in whichever process runs it.

    Args:
        model: a model folder (loaded on first use in each process, then kept) or a :class:`Predictor` (only in the
            calling process).
        output_dir: where :func:`batch_output_path` files go.
        participants: a participants table (:func:`synth7t.data.layout.read_participants`) or ``None``.
        age, sex, impaired: the context of every input without a participants table.
        overwrite: replace an output that synth7t wrote earlier.
        options: :func:`synth7t.inference.predict_file` options (``device``, ``method``, ...).
        source: the participants table's name, for error messages.
    """

    def __init__(self, model, output_dir: PathLike, participants: Optional[pd.DataFrame], age, sex, impaired,
                 overwrite: bool, options: dict, source: str = "participants.tsv"):
        self.model = Predictor.of(model) if isinstance(model, (Predictor, tuple)) else str(model)
        self.output_dir = Path(output_dir)
        self.participants = participants
        self.age, self.sex, self.impaired = age, sex, impaired
        self.overwrite = bool(overwrite)
        self.options = dict(options)
        self.source = source

    def loaded(self) -> Predictor:
        """The model, loaded once per process."""
        if isinstance(self.model, Predictor):
            return self.model
        return Predictor.from_folder(self.model, str(self.options.get("device", "cpu")), once_per_process=True)

    def __call__(self, t3: PathLike) -> dict:
        t3 = Path(t3)
        sio.read_nifti(t3)  # a bad input is reported before anything else
        out = batch_output_path(self.output_dir, t3)
        check_output(t3, out, self.overwrite)
        age, sex, imp = demographics_of(t3, self.participants, self.age, self.sex, self.impaired, self.source)
        rec = predict_file(t3, out, self.loaded(), age=age, sex=sex, impaired=None if imp is None else bool(imp),
                           **self.options)
        return {"output": rec["output"], "input_checks": summarise(rec.get("input_checks", [])),
                "ood_score": (rec.get("ood") or {}).get("score")}


def distributed_context() -> Optional[tuple[int, int, int]]:
    """``(rank, world size, local rank)`` under ``torchrun`` with more than one process, else ``None``."""
    from ..training.runtime import dist_info

    world, rank, local = dist_info()
    return (rank, world, local) if world > 1 else None


def predict_files(
    inputs: Sequence[PathLike], output_dir: PathLike, model, *, participants: Optional[PathLike] = None,
    age: Optional[float] = None, sex: Optional[str] = None, impaired: Optional[bool] = None,
    overwrite: bool = False, progress: bool = True, executor=None, **options: Any,
) -> pd.DataFrame:
    """Synthetic 7T of many lone 3T files; resumable, a failure is recorded and the batch goes on.

    Args:
        inputs: files, folders and ``.txt`` lists (:func:`synth7t.inference.expand_inputs`), taken in that order
            (shards and ranks split this list).
        output_dir: receives :func:`batch_output_path` files and ``predictions.tsv`` (``input,
            status, seconds, output, reason``), rewritten as each input finishes (``predictions.shard-K-of-N.tsv``
            for a shard).
        model: a model folder, or a :class:`Predictor` (in this process only).
        participants: a ``participants.tsv`` giving age, sex and diagnosis per ``sub-<id>`` (the first part of
            each file name); otherwise ``age``, ``sex`` and ``impaired`` apply to every input.
        overwrite: redo inputs whose synth7t output exists.
        progress: tqdm bars.
        executor: where inputs run (default: this process, one model loaded once):
            :class:`synth7t.runtime.batch.LocalExecutor` worker processes (a model copy each) or a
            :class:`synth7t.runtime.cluster.SlurmExecutor` job array (a model copy per job); its ``shard`` keeps one shard.
            Under ``torchrun`` each rank runs its share in its own process (see the module docstring).
        **options: passed to :func:`synth7t.inference.predict_file` (``method``, ``generalised``,
            ``preprocess_preset``, ``native``, ``batch_size``, ``device``, ``t3_mask``, ``work_dir``, ``views``,
            ``fusion``, ``uncertainty``, ``flips``).

    Returns:
        The status table (under ``torchrun``, every rank returns the merged one).

    Raises:
        ValueError: a loaded model with an executor that runs items elsewhere; an executor other than one local
            process under ``torchrun``; two inputs with one output name.
        synth7t.inference.ModelFolderError: ``model`` is not a model folder.
    """
    from ..data.layout import read_participants

    files = expand_inputs(inputs)
    out_dir = Path(output_dir)
    seen: dict = {}
    for f in files:  # two inputs writing one file would each find the other's output "finished"
        other = seen.setdefault(batch_output_path(out_dir, f), f)
        if other != f:
            raise ValueError(f"{other} and {f} would both be written to {batch_output_path(out_dir, f).name}: give "
                             "inputs whose names differ beyond .nii(.gz) and _T1w, or predict them into two folders")
    out_dir.mkdir(parents=True, exist_ok=True)
    elsewhere = executor is not None and not getattr(executor, "in_process", False)
    ctx = distributed_context()
    if ctx is not None and elsewhere:
        raise ValueError("under torchrun every rank predicts its share in its own process: leave --n-jobs at 1 and "
                         "--executor local (or run without torchrun)")
    if isinstance(model, (Predictor, tuple)):
        if elsewhere:
            raise ValueError("worker processes and cluster jobs load the model themselves: pass the model folder, "
                             "not a loaded model")
        loaded = Predictor.of(model)
    else:
        model_folder(model)  # a wrong folder is named before any input runs
        loaded = None
    options = dict(options)
    if ctx is not None:
        options["device"] = rank_device(options.get("device", "auto"), ctx[2])
    if loaded is None and not elsewhere:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ModelCardWarning)
            loaded = Predictor(*load_model(model, options.get("device", "cpu")))
    # a view the model did not learn fails here, once, not on every input
    checker = loaded if loaded is not None else Predictor.describe(model)
    checker.check_request(options.get("views"), uncertainty=bool(options.get("uncertainty")),
                          flips=bool(options.get("flips")))
    table = read_participants(participants) if participants is not None else None
    work = PredictFileWork(loaded if loaded is not None else model, out_dir, table, age, sex, impaired, overwrite,
                           options, str(participants))
    outer = getattr(executor, "shard", None)
    batch = dict(ids=lambda t3: {"input": str(t3)}, id_columns=("input",),
                 is_finished=lambda t3: sio.is_synth7t_output(batch_output_path(out_dir, t3)),
                 overwrite=overwrite, columns=("output", "input_checks", "ood_score"), desc="predict", unit="scan")
    if ctx is None:
        status = run_batch(files, work, status_file=out_dir / STATUS_FILE, executor=executor, progress=progress,
                           **batch)
    else:
        status = predict_ranks(files, work, out_dir, outer, ctx, progress, batch)
    skipped = status["status"] == "skipped"
    status.loc[skipped, "output"] = [str(batch_output_path(out_dir, t)) for t in status.loc[skipped, "input"]]
    return status


def rank_device(device: str, local_rank: int) -> str:
    """The device of one ``torchrun`` rank: ``cuda:<LOCAL_RANK>`` for ``auto`` and ``cuda`` when CUDA is there, else
    the device asked for (``cpu``, or an explicit ``cuda:N``)."""
    import torch

    if str(device) in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank))
        return f"cuda:{int(local_rank)}"
    return "cpu" if str(device) == "auto" else str(device)


def predict_ranks(files: Sequence[Path], work: PredictFileWork, out_dir: Path, outer, ctx: tuple, progress: bool,
                  batch: dict) -> pd.DataFrame:
    """One ``torchrun`` rank's share of the batch, then (rank 0) the merge of every rank's table.

    Returns:
        The merged status table (the same on every rank).
    """
    import torch.distributed as dist

    from ..runtime.cluster import merge_tables

    rank, world, _ = ctx
    owns = not dist.is_initialized()
    if owns:
        # gloo whatever the device: the ranks exchange no tensors, they only wait for each other (a long timeout:
        # the ranks' shares may take hours apart on a large cohort)
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
    try:
        base = shard_status_path(out_dir / STATUS_FILE, outer)
        run_batch(files, work, status_file=out_dir / STATUS_FILE, shard=compose_shards(outer, (rank, world)),
                  progress=progress and rank == 0, executor=LocalExecutor(1), **batch)
        dist.barrier()
        if rank == 0:
            parts = [shard_status_path(out_dir / STATUS_FILE, compose_shards(outer, (r, world))) for r in range(world)]
            order = [str(files[i]) for i in shard_indices(len(files), outer)]
            write_table(merge_tables(parts, order=order, order_column="input"), base)
            for p in parts:
                p.unlink()
        dist.barrier()
        merged = pd.read_csv(base, sep="\t")
        return merged.fillna({c: "" for c in merged.columns if c != "seconds"})
    finally:
        if owns:
            dist.destroy_process_group()


def _predict_task(task: dict) -> dict:
    """One :func:`synth7t.inference.predict_subjects` call in a worker process (its progress bar off; the model's
    warning is said by the calling process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelCardWarning)
        table = predict_subjects(**{**task, "progress": False})
    return {"rows": table.to_dict("records"), "columns": list(table.columns)}


def predict_many(tasks: Sequence[dict], *, n_jobs: int = 1, progress: bool = True) -> list[pd.DataFrame]:
    """Several :func:`synth7t.inference.predict_subjects` calls (one per model or view variant), in worker processes
    on a CPU.

    Small CPU networks use threads poorly: on 2 cores a demo U-Net predicts a slice in 50 ms with 2 threads and in
    72 ms with 1, so two 1-thread workers, each with its own models, predict about 1.4 times as many volumes per
    second as one process with both threads. The calls are handed out heaviest first (the most views), so that a
    multi-view model does not finish last alone.

    Args:
        tasks: keyword arguments of :func:`synth7t.inference.predict_subjects`, one dict per call (``model_dir``,
            ``derivatives``, ``dataset``, ``out_dir``, ...; picklable).
        n_jobs: worker processes; 1, or any task on a GPU (``device`` "cuda", or "auto" with CUDA present), runs
            them here, one after the other.
        progress: a bar per call (here) or over the calls (workers).

    Returns:
        Each call's status table, in the order of ``tasks``.

    Raises:
        synth7t.inference.ModelFolderError: a task's ``model_dir`` is not a model folder (before any prediction).
        RuntimeError: a call failed as a whole in a worker (e.g. weights that do not match ``model.json``); a
            subject's failure is a row of its table, as in :func:`synth7t.inference.predict_subjects`.
    """
    import torch

    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    tasks = [dict(t) for t in tasks]
    gpu = any(str(t.get("device", "auto")).startswith("cuda") or (str(t.get("device", "auto")) == "auto"
                                                                 and torch.cuda.is_available()) for t in tasks)
    if int(n_jobs) == 1 or len(tasks) < 2 or gpu:
        return [predict_subjects(**{**t, "progress": progress}) for t in tasks]
    for t in tasks:  # a wrong folder fails here, before any worker starts; what load_model would say, said once
        for category, note in model_card_warnings(model_folder(t["model_dir"])):
            warnings.warn(note, category, stacklevel=2)

    def cost(t: dict) -> int:  # forward passes per slice
        return len(t.get("views") or ("axial",)) * (2 if t.get("flips") else 1)

    order = sorted(range(len(tasks)), key=lambda i: -cost(tasks[i]))
    executor = LocalExecutor(int(n_jobs), cores_per_worker(int(n_jobs)))
    from tqdm.auto import tqdm

    out: dict = {}
    with tqdm(total=len(tasks), desc="predict (workers)", unit="model", disable=not progress) as bar:
        for j, row in executor.run(_predict_task, [tasks[i] for i in order]):
            i = order[j]
            if row["status"] != "done":
                raise RuntimeError(f"prediction into {tasks[i].get('out_dir')} failed: {row['reason']}")
            out[i] = pd.DataFrame(row["rows"], columns=row["columns"])
            bar.update()
    return [out[i] for i in range(len(tasks))]
