"""The one batch runner: status rows, resumption, failure isolation, process workers, atomic files."""

import json

import numpy as np
import pandas as pd
import pytest

from synth7t import batch


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
