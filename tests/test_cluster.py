"""Cohort-scale batches: the SLURM executor through submitit's real local executor (chunks, a preempted chunk that
requeues and goes on, a job that dies, a batch that is not waited for and ``synth7t status``), shards of a batch
command, and prediction over two ``torchrun`` ranks (gloo, CPU) against one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from synth7t.runtime import batch, cluster

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# submitit pickles the work function into each job; the job's Python cannot import this test module by name, so
# its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _flaky(item) -> dict:
    """The work of one item ``(name, kind, log folder)``: counts its runs, then does what ``kind`` says."""
    name, kind, log = item
    runs = Path(log) / f"{name}.runs"
    with open(runs, "a") as f:
        f.write("x")
    n = len(runs.read_text())
    if kind == "raise":
        raise ValueError(f"{name} is corrupt")
    if kind == "die-once" and n == 1:
        os._exit(3)  # as the kernel's out-of-memory killer ends a job: no exception, no result
    if kind == "preempt-once" and n == 1:
        os.kill(os.getpid(), signal.SIGUSR2)  # what SLURM sends before a preemption or the time limit
        time.sleep(60)
    (Path(log) / f"{name}.done").write_text("done")
    return {"runs": n}


def _batch(items, executor, status_file, failures=None):
    log = items[0][2]
    return batch.run_batch(items, _flaky, ids=lambda it: {"key": it[0]}, columns=("runs",),
                           is_finished=lambda it: (Path(log) / f"{it[0]}.done").exists(), executor=executor,
                           status_file=status_file, progress=False,
                           on_failure=None if failures is None else lambda it, row: failures.append((it[0], dict(row))))


def _runs(log: Path) -> dict:
    return {p.name.split(".")[0]: len(p.read_text()) for p in sorted(log.glob("*.runs"))}


def test_submitit_chunks_resume_after_preemption_and_record_dead_jobs(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    kinds = {"a": "ok", "b": "raise", "c": "preempt-once", "d": "ok", "e": "die-once", "f": "ok"}
    items = [(name, kind, str(log)) for name, kind in kinds.items()]
    status_file = tmp_path / "out" / "status.tsv"
    ex = cluster.SlurmExecutor(cluster="local", chunk_size=2, time_min=5, poll_s=0.2, progress=False)
    failures: list = []
    table = _batch(items, ex, status_file, failures)
    assert list(table["status"]) == ["done", "failed", "done", "done", "failed", "failed"]
    assert table.loc[1, "reason"] == "ValueError: b is corrupt"
    assert sorted(name for name, _ in failures) == ["b", "e", "f"]
    assert "Traceback" in dict(failures)["b"]["traceback"]  # the failure hook sees the job's traceback
    # the chunk [c, d]: c was preempted, submitit requeued the job, and it went on with c (d had not run)
    folder = tmp_path / "out" / "slurm_logs"
    record = batch.read_json(folder / "status.batch.json")
    assert [ch["positions"] for ch in record["chunks"]] == [[0, 1], [2, 3], [4, 5]]
    assert [ch["labels"] for ch in record["chunks"]][1] == [{"key": "c"}, {"key": "d"}]
    state = batch.read_json(record["chunks"][1]["result"])
    assert state["finished"] and state["starts"] == 2
    # the chunk [e, f]: the job died inside e; e and f fail with the job's state, f never started
    assert "while this item ran" in table.loc[4, "reason"] and table.loc[4, "reason"].startswith("job ")
    assert "not run: job" in table.loc[5, "reason"] and "before reaching it" in table.loc[5, "reason"]
    on_disk = pd.read_csv(status_file, sep="\t", keep_default_na=False)
    assert list(on_disk["status"]) == list(table["status"]) and list(on_disk["reason"]) == list(table["reason"])
    assert _runs(log) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}
    # the batch again: finished items are skipped, the failed ones run (e survives this time, f runs at last)
    again = _batch(items, ex, status_file)
    assert list(again["status"]) == ["skipped", "failed", "skipped", "skipped", "done", "done"]
    assert _runs(log) == {"a": 1, "b": 2, "c": 2, "d": 1, "e": 2, "f": 1}
    assert list(folder.glob("*_log.err")), "job logs are kept under the output folder"


def test_no_wait_returns_at_once_and_status_fills_the_table_in(tmp_path, capsys):
    from synth7t.cli import main

    log = tmp_path / "log"
    log.mkdir()
    items = [(name, kind, str(log)) for name, kind in {"g": "ok", "h": "die-once", "i": "raise"}.items()]
    out = tmp_path / "predictions"
    ex = cluster.SlurmExecutor(cluster="local", chunk_size=2, time_min=5, wait=False, progress=False)
    table = _batch(items, ex, out / "predictions.tsv")
    assert list(table["status"]) == ["pending"] * 3  # submitted, not waited for
    with pytest.raises(RuntimeError, match="still pending or running"):  # its jobs have only just started
        _batch(items, ex, out / "predictions.tsv")
    deadline = time.time() + 120
    while True:
        result = cluster.batch_status(out)
        [t] = result["tables"]
        if not t["pending"] or time.time() > deadline:
            break
        time.sleep(0.5)
    assert (t["items"], t["done"], t["failed"], t["pending"]) == (3, 1, 2, 0), t
    on_disk = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    assert list(on_disk["status"]) == ["done", "failed", "failed"]
    assert str(on_disk.loc[0, "runs"]) == "1"  # the work's own fields reach the table too
    assert "while this item ran" in on_disk.loc[1, "reason"] and on_disk.loc[2, "reason"] == "ValueError: i is corrupt"
    assert sum(t["jobs"].values()) == 2 and t["jobs"].get("COMPLETED") == 1
    assert main(["status", str(out)]) == 1  # an item failed
    text = capsys.readouterr().out
    assert "predictions.tsv: 3 items: 1 done, 0 skipped, 2 failed, 0 pending" in text
    assert "failed i: ValueError: i is corrupt" in text


def test_executor_options_of_the_batch_commands(tmp_path, monkeypatch, capsys):
    from synth7t.cli import build_parser, main
    from synth7t.cli.common import make_executor

    parse = build_parser().parse_args
    args = parse(["segment", "x.nii.gz", "--output-dir", str(tmp_path / "seg"), "--executor", "slurm",
                  "--partition", "gpu", "--time", "30", "--mem-gb", "8", "--gpus-per-task", "1", "--chunk-size", "3",
                  "--array-parallelism", "10", "--slurm-option", "account=proj1", "--slurm-setup", "module load x",
                  "--no-wait"])
    ex = make_executor(args, output_dir=args.output_dir, n_jobs=1, threads=2)
    assert isinstance(ex, cluster.SlurmExecutor) and ex.cluster == "slurm" and not ex.wait
    assert (ex.partition, ex.time_min, ex.mem_gb, ex.cpus_per_task, ex.gpus_per_task) == ("gpu", 30, 8.0, 2, 1)
    assert ex.folder == tmp_path / "seg" / "slurm_logs" and ex.slurm_options == {"account": "proj1"}
    assert ex.chunks(7) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(cluster.SlurmExecutor(chunk_size=2, max_array_size=10).chunks(100)) == 10
    local = make_executor(parse(["preprocess", "d", "--jobs", "3", "--shard", "1/4"]), output_dir="d", n_jobs=3)
    assert isinstance(local, batch.LocalExecutor) and local.shard == (1, 4) and local.n_jobs == 3
    # SLURM's sbatch is needed to submit, and said so
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="sbatch, which is not on PATH"):
        cluster.SlurmExecutor(cluster="slurm").submitit_executor(tmp_path / "logs")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="cluster must be one of"):
        cluster.SlurmExecutor(cluster="kubernetes")
    # the notebooks' executor parameter: None keeps the batch function's own local processes (n_jobs)
    assert cluster.executor_for("local") is None
    nb = cluster.executor_for("submitit-local", partition="cpu", chunk_size=4)
    assert (nb.cluster, nb.partition, nb.chunk_size, nb.wait) == ("local", "cpu", 4, True)
    for kind, settings, match in [("ssh", {}, "executor must be one of"), ("slurm", {"partiton": "x"}, "partiton"),
                                  ("local", {"partition": "x"}, "for executor 'local'")]:
        with pytest.raises(ValueError, match=match):
            cluster.executor_for(kind, **settings)
    for argv, message in [(["segment", "x.nii.gz", "--output-dir", "o", "--no-wait"], "--no-wait applies to"),
                          (["segment", "x.nii.gz", "--output-dir", "o", "--shard", "4/4"], "0 <= K < N"),
                          (["status", str(tmp_path / "nowhere")], "no such folder"),
                          (["status", str(tmp_path)], "no status table")]:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    """A model folder, 5 synthetic 3T scans and one corrupt file (tests/batch_data.py)."""
    sys.path.insert(0, str(TESTS))
    import batch_data as bd

    root = tmp_path_factory.mktemp("small_cohort")
    model = bd.write_model_folder(root / "model")
    good, bad, mask = bd.write_cohort(root / "scans", 6, corrupt_every=4)
    return root, model, good, bad, mask, bd.fast_options(mask)


def test_predict_shards_cover_every_input_once_and_status_merges_them(small_cohort, tmp_path, monkeypatch, capsys):
    from synth7t.cli import main

    root, model, good, bad, mask, _ = small_cohort
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    import batch_data as bd

    names = [bd.write_corrupt(corrupt / f"sub-{i:02d}_T1w.nii.gz", kind).name
             for i, kind in enumerate(bd.CORRUPT_KINDS)]
    out = tmp_path / "out"
    argv = ["predict", str(corrupt), "--output-dir", str(out), "--model", str(model), "--age", "70", "--sex", "F",
            "--impaired", "0", "--device", "cpu"]
    assert main([*argv, "--shard", "0/2"]) == 1
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")  # --array=1-2: the second task is shard 1
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main([*argv, "--shard", "auto"]) == 1
    capsys.readouterr()
    shards = [pd.read_csv(out / f"predictions.shard-{k}-of-2.tsv", sep="\t") for k in range(2)]
    seen = [Path(p).name for s in shards for p in s["input"]]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen)) == 5
    assert [Path(p).name for p in shards[0]["input"]] == names[0::2]  # strided: 0, 2, 4
    assert not (out / "predictions.tsv").exists()
    assert main(["status", str(out)]) == 1
    text = capsys.readouterr().out
    assert "predictions.tsv: 5 items: 0 done, 0 skipped, 5 failed, 0 pending" in text
    assert "merged from its 2 shards" in text
    merged = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert [Path(p).name for p in merged["input"]] == names and merged["reason"].str.len().gt(0).all()
    # one line, not a traceback, for a batch option that a single output does not take
    assert main(["predict", str(good[0]), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model), "--shard",
                 "0/2"]) == 1
    assert "apply to batches" in capsys.readouterr().err


def _torchrun_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_prediction_over_two_ranks_equals_one_process(small_cohort, tmp_path):
    import nibabel as nib
    import torch

    from synth7t import inference

    root, model, good, bad, mask, options = small_cohort
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank: the same kernels, the same sums
    try:
        one = inference.predict_files([root / "scans"], tmp_path / "one", model, age=70, sex="F",
                                          impaired=False, progress=False, **options)
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "predict_ranks.py"
    # each rank notes the inputs it predicts (around the real work), to show that the ranks split them
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import batch_data as bd\n"
        "from synth7t import inference\n"
        "from synth7t.inference import predict_files\n"
        "work = inference.batch.PredictFileWork.__call__\n"
        "def noted(self, t3):\n"
        f"    with open(os.path.join({str(tmp_path)!r}, 'rank-' + os.environ['RANK'] + '.txt'), 'a') as f:\n"
        "        f.write(os.path.basename(str(t3)) + '\\n')\n"
        "    return work(self, t3)\n"
        "inference.batch.PredictFileWork.__call__ = noted\n"
        f"predict_files([{str(root / 'scans')!r}], {str(tmp_path / 'two')!r}, {str(model)!r}, age=70, sex='F',\n"
        f"              impaired=False, progress=False, **bd.fast_options({str(mask)!r}))\n")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=REPO, env=_torchrun_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    names = [Path(p).name for p in one["input"]]
    shares = [(tmp_path / f"rank-{r}.txt").read_text().split() for r in range(2)]
    assert shares == [names[0::2], names[1::2]]  # strided shares: every input once, none twice
    two = pd.read_csv(tmp_path / "two" / "predictions.tsv", sep="\t", keep_default_na=False)
    assert list(two["input"]) == list(one["input"])  # one table, in input order
    assert list(two["status"]) == list(one["status"]) == ["done"] * 3 + ["failed"] + ["done"] * 2
    assert two.loc[3, "reason"] == one.loc[3, "reason"] != ""
    assert not list((tmp_path / "two").glob("predictions.shard-*")), "the ranks' tables are merged away"
    for a, b in zip(one["output"], two["output"]):
        if not a:
            continue
        ia, ib = nib.load(a), nib.load(b)
        assert Path(b).parent == tmp_path / "two" and Path(a).name == Path(b).name
        np.testing.assert_array_equal(ia.affine, ib.affine)
        np.testing.assert_allclose(np.asarray(ib.dataobj), np.asarray(ia.dataobj), rtol=0, atol=1e-6)
