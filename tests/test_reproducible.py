"""The same seeds give the same bytes at every stage: a tiny pipeline run twice, in two fresh processes.

``tests/repro_pipeline.py`` simulates a coarse cohort, preprocesses two pairs (deepbet, N4, affine + SyN),
aligns a lone 3T to the template, builds the slice cache, trains a few ``demo-cpu`` steps, predicts one volume
and atlas-segments it, writing the sha256 of every stage's arrays. The two runs go side by side (one thread
each), so a difference can come only from the code, not from a shared process state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

HELPER = Path(__file__).with_name("repro_pipeline.py")


def _first_difference(a: dict, b: dict) -> str:
    """The first stage (pipeline order) whose digests differ, with the outputs that differ; '' when none."""
    for stage, da in a.items():
        if stage == "seconds":
            continue
        db = b.get(stage, {})
        if da != db:
            names = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
            return f"stage {stage!r} differs between the two runs in {len(names)} output(s): {names[:5]}"
    return "" if set(a) == set(b) else f"different stages: {sorted(a)} vs {sorted(b)}"


def test_two_runs_give_the_same_bytes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}  # the default: 1
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    runs = ("a", "b")
    with ExitStack() as stack:  # side by side: one thread each
        logs = [stack.enter_context(open(tmp_path / f"{run}.log", "w")) for run in runs]
        procs = [subprocess.Popen([sys.executable, str(HELPER), str(tmp_path / run), str(tmp_path / f"{run}.json")],
                                  env=env, stdout=log, stderr=subprocess.STDOUT) for run, log in zip(runs, logs)]
        codes = [proc.wait(timeout=600) for proc in procs]
    for run, rc in zip(runs, codes):
        assert rc == 0, f"run {run} failed:\n{(tmp_path / f'{run}.log').read_text()[-3000:]}"
    a, b = (json.loads((tmp_path / f"{run}.json").read_text()) for run in runs)
    assert not (diff := _first_difference(a, b)), diff
    # every stage produced something to compare
    assert all(a[stage] for stage in a), {k: len(v) for k, v in a.items()}
    # the records hold the thread counts the bytes depend on
    recs = sorted((tmp_path / "a" / "derivatives").glob("sub-*/anat/*_desc-preproc.json"))
    assert recs and all(json.loads(r.read_text())["threads"] == {"itk": 1, "torch": 1} for r in recs)
    assert json.loads((tmp_path / "a" / "run" / "config.json").read_text())["threads"] == 1
