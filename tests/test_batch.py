"""The one batch runner: status rows, resumption, failure isolation, process workers, atomic files."""

import json

import numpy as np
import pandas as pd
import pytest

from synth7t.runtime import batch


def test_rows_skip_failures_and_status_file(tmp_path):
    seen = []

    def work(item):
        seen.append(item)
        if item == "bad":
            raise ValueError("no brain here")
        return {"path": f"{item}.nii.gz"}

    status_file = tmp_path / "status.tsv"
    table = batch.run_batch(["a", "done-before", "bad", "c"], work, ids=lambda it: {"key": it},
                            is_finished=lambda it: it == "done-before", status_file=status_file,
                            columns=("path",), progress=False)
    assert seen == ["a", "bad", "c"]  # the finished item never runs
    assert list(table.columns) == ["key", "status", "seconds", "path", "reason"]
    assert list(table["status"]) == ["done", "skipped", "failed", "done"]
    assert table.loc[2, "reason"] == "ValueError: no brain here"
    assert table.loc[0, "path"] == "a.nii.gz" and table.loc[1, "reason"] == "finished earlier"
    on_disk = pd.read_csv(status_file, sep="\t", keep_default_na=False)
    assert list(on_disk["status"]) == list(table["status"])
    # overwrite runs the finished item too
    again = batch.run_batch(["done-before"], work, ids=lambda it: {"key": it}, is_finished=lambda it: True,
                            overwrite=True, progress=False)
    assert list(again["status"]) == ["done"]


def test_status_file_is_true_after_each_item(tmp_path):
    status_file = tmp_path / "status.tsv"
    snapshots = []

    def work(item):
        snapshots.append(list(pd.read_csv(status_file, sep="\t")["status"]))

    batch.run_batch([1, 2, 3], work, ids=lambda it: {"key": it}, status_file=status_file, progress=False)
    # before each item runs, the file shows the earlier ones done and the rest pending
    assert snapshots == [["pending"] * 3, ["done", "pending", "pending"], ["done", "done", "pending"]]


def test_failure_hook_sees_the_traceback():
    failures = []
    batch.run_batch([0], lambda it: 1 / it, ids=lambda it: {"key": it},
                    on_failure=lambda item, row: failures.append((item, row["traceback"])), progress=False)
    assert failures[0][0] == 0 and "ZeroDivisionError" in failures[0][1]


def test_process_workers_give_the_same_rows():
    # ``dict`` is a picklable work function: a mapping becomes status fields, an int fails
    items = [{"value": 1}, 5, {"value": 3}]
    table = batch.run_batch(items, dict, ids=lambda it: {"key": str(it)}, columns=("value",),
                            executor=batch.LocalExecutor(n_jobs=2, threads_per_job=1), progress=False)
    assert list(table["status"]) == ["done", "failed", "done"]
    assert list(table["value"]) == [1, "", 3]
    assert table.loc[1, "reason"].startswith("TypeError")


def test_no_items_still_has_the_columns():
    table = batch.run_batch([], dict, ids=lambda it: {"key": it}, id_columns=("key",), progress=False)
    assert table.empty and list(table.columns) == ["key", "status", "seconds", "reason"]


@pytest.mark.parametrize("kwargs, match", [({"n_jobs": 0}, "n_jobs"), ({"threads_per_job": 0}, "threads_per_job")])
def test_executor_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        batch.LocalExecutor(**kwargs)


def test_json_and_stamps(tmp_path):
    p = batch.write_json(tmp_path / "a" / "rec.json", {"n": np.int64(3), "x": np.float32(0.5),
                                                        "v": np.arange(2), "p": tmp_path})
    assert json.loads(p.read_text()) == {"n": 3, "x": 0.5, "v": [0, 1], "p": str(tmp_path)}
    assert not list(p.parent.glob("*.tmp"))
    assert batch.read_json(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text("{\"n\": ")
    assert batch.read_json(tmp_path / "half.json") is None
    stamp = batch.file_stamp(p)
    assert stamp[0] == p.stat().st_size
    assert batch.input_stamp({"rec": p, "gone": tmp_path / "gone", "none": None}) == {"rec": stamp}


@pytest.mark.parametrize("n_items, n_shards", [(0, 1), (1, 3), (7, 3), (10, 10), (23, 4)])
def test_shards_cover_every_item_exactly_once(n_items, n_shards):
    parts = [batch.shard_indices(n_items, (k, n_shards)) for k in range(n_shards)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n_items)) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # like shares
    # shard r of 2 inside shard k of N is one shard of the whole list (torchrun ranks inside an array task)
    for k in range(n_shards):
        inner = [[parts[k][j] for j in batch.shard_indices(len(parts[k]), (r, 2))] for r in range(2)]
        assert inner == [batch.shard_indices(n_items, batch.compose_shards((k, n_shards), (r, 2))) for r in range(2)]


def test_parse_shard_from_text_and_from_a_slurm_array():
    assert batch.parse_shard(None) is None and batch.parse_shard("") is None
    assert batch.parse_shard("0/10") == (0, 10) and batch.parse_shard(" 9/10 ") == (9, 10)
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10"}
    assert batch.parse_shard("auto", env) == (3, 10)  # --array=0-9
    assert batch.parse_shard("auto", {**env, "SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "1"}) == (9, 10)
    assert batch.parse_shard("auto", {**env, "SLURM_ARRAY_TASK_ID": "18", "SLURM_ARRAY_TASK_STEP": "2"}) == (9, 10)
    for text, environ, match in [("10/10", None, "0 <= K < N"), ("1-10", None, "expects K/N"),
                                 ("a/b", None, "expects K/N"), ("auto", {}, "only inside a task of an sbatch --array"),
                                 ("auto", {**env, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2"},
                                  "not on the array's grid")]:
        with pytest.raises(ValueError, match=match):
            batch.parse_shard(text, environ)


def test_a_shard_runs_its_items_into_its_own_table(tmp_path):
    items = [{"value": i} for i in range(7)]
    tables = [batch.run_batch(items, dict, ids=lambda it: {"key": it["value"]}, columns=("value",),
                              executor=batch.LocalExecutor(shard=(k, 3)), status_file=tmp_path / "status.tsv",
                              progress=False) for k in range(3)]
    assert [list(t["key"]) for t in tables] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"status.shard-{k}-of-3.tsv" for k in range(3)]
    assert batch.shard_status_path("a/predictions.tsv", (3, 250)).name == "predictions.shard-003-of-250.tsv"
    # the shard argument wins over the executor's; finished items are skipped inside a shard as everywhere
    t = batch.run_batch(items, dict, ids=lambda it: {"key": it["value"]}, shard=(1, 2), progress=False,
                        executor=batch.LocalExecutor(shard=(0, 3)), is_finished=lambda it: it["value"] == 3)
    assert list(t["key"]) == [1, 3, 5] and list(t["status"]) == ["done", "skipped", "done"]
