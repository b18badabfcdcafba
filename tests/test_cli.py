"""The command line: every command is listed and documents itself, and a mistake a user can fix is one line on
stderr with exit status 1, never a traceback (fast: nothing here trains, registers or runs a notebook)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth7t.cli import COMMAND_MODULES, build_parser, main
from synth7t.cli.common import parse_key_values
from synth7t.inference import batch_output_path, expand_inputs

from conftest import write_nifti

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("demo-data", "discover", "split", "preprocess", "cache", "train", "import-model", "predict", "segment",
            "model-facts", "run-profile", "book", "status", "rating-session", "rate")


def _one_line_error(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, (argv, err)
    assert err.startswith(f"synth7t {argv[0]}: error: ") and message in err, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    return err


def test_help_lists_every_command(capsys):
    assert len(COMMAND_MODULES) == len(COMMANDS)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n    {name}" in out, name
    assert main([]) == 2  # no command: the help, and a usage status


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_documents_its_options(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: synth7t {command}") and "--help" in out


def test_every_command_module_exposes_add_parser_and_its_function():
    import importlib

    sub = build_parser()._subparsers._group_actions[0]
    assert sorted(sub.choices) == sorted(COMMANDS)
    for name in COMMAND_MODULES:
        mod = importlib.import_module(f"synth7t.cli.{name}")
        parser = sub.choices[name.replace("_", "-")]
        assert parser.get_default("func") is mod.run


def test_predict_takes_one_output_or_an_output_folder(tmp_path, capsys):
    good = write_nifti(tmp_path / "sub-01_acq-3T_T1w.nii.gz")
    other = write_nifti(tmp_path / "sub-02_acq-3T_T1w.nii.gz")
    model = ["--model", str(tmp_path), "--age", "70", "--sex", "F"]
    out = str(tmp_path / "o.nii.gz")
    _one_line_error(capsys, ["predict", str(good), str(other), "-o", out, *model], "-o takes one input file")
    _one_line_error(capsys, ["predict", str(tmp_path), "-o", out, *model], "use --output-dir")
    _one_line_error(capsys, ["predict", str(good), *model], "give -o OUT.nii.gz for one input, or --output-dir")
    _one_line_error(capsys, ["predict", str(good), "-o", out, "--output-dir", str(tmp_path / "d"), *model],
                    "not both")
    _one_line_error(capsys, ["predict", str(good), "-o", str(tmp_path / "o.png"), *model], "must end in .nii")
    _one_line_error(capsys, ["predict", str(good), "-o", out, *model, "--method", "generalised"],
                    "--generalised-from")
    # no guessing: a second positional file is an input, and -o with it is refused above; nothing was written
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name, other.name]


def test_predict_bad_inputs_give_one_line_errors(tmp_path, capsys):
    good = write_nifti(tmp_path / "ok.nii.gz")
    nan = write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    model = ["--model", str(tmp_path)]
    out = str(tmp_path / "o.nii.gz")
    _one_line_error(capsys, ["predict", str(tmp_path / "missing.nii.gz"), "-o", out, *model], "does not exist")
    _one_line_error(capsys, ["predict", str(nan), "-o", out, *model], "non-finite")
    _one_line_error(capsys, ["predict", str(good), "-o", out, *model], "not a model folder")
    # an existing file that synth7t did not write is never replaced without --overwrite
    foreign = write_nifti(tmp_path / "someone_elses.nii.gz")
    before = foreign.read_bytes()
    _one_line_error(capsys, ["predict", str(good), "-o", str(foreign), *model], "synth7t did not write it")
    assert foreign.read_bytes() == before
    # a batch names its own outputs, and an empty folder is an error, not an empty table
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["predict", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "many"), *model,
                             "--age", "70", "--sex", "F"], "no input images found")
    _one_line_error(capsys, ["predict", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "many"), *model],
                    "give --age and --sex")
    assert batch_output_path("d", "x/sub-01_acq-3T_T1w.nii.gz") == Path("d/sub-01_acq-synth7t_space-grid_T1w.nii.gz")
    assert batch_output_path("d", "x/scan.nii") == Path("d/scan_acq-synth7t_space-grid_T1w.nii.gz")
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"{good}\n\n{nan}\n")
    assert expand_inputs([lst, tmp_path / "empty"]) == [good, nan]


def test_preprocess_segment_and_the_rest_give_one_line_errors(tmp_path, capsys):
    _one_line_error(capsys, ["preprocess", str(tmp_path / "nope")], "dataset folder not found")
    _one_line_error(capsys, ["preprocess", str(tmp_path), "--set", "no_equals_sign"], "KEY=VALUE")
    _one_line_error(capsys, ["preprocess", str(tmp_path), "--fast", "--set", "threads_per_job=2"],
                    "--fast sets threads_per_job")
    _one_line_error(capsys, ["segment", str(tmp_path / "missing.nii.gz"), "--output-dir", str(tmp_path / "seg")],
                    "does not exist")
    _one_line_error(capsys, ["discover", str(tmp_path / "nope")], "dataset folder not found")
    _one_line_error(capsys, ["train", "--cache", str(tmp_path), "--run-dir", str(tmp_path / "r"), "--preset", "nope"],
                    "unknown TrainConfig preset 'nope'")
    _one_line_error(capsys, ["train", "--cache", str(tmp_path), "--run-dir", str(tmp_path / "r"),
                             "--set", "epochs=1", "no_such_field=2"], "no_such_field")
    _one_line_error(capsys, ["model-facts", "--preset", "nope"], "unknown model preset")
    # outside the repository the workflow commands say where to run them
    _one_line_error(capsys, ["run-profile", "smoke", "--root", str(tmp_path)],
                    "run from the repository root or pass --root")
    _one_line_error(capsys, ["book", "--root", str(tmp_path)], "run from the repository root or pass --root")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was written


def test_preprocess_fast_gives_each_subject_its_share_of_the_cpus(tmp_path, monkeypatch):
    """``--fast``: ITK threads = the CPUs divided by ``--jobs`` and :data:`FAST_SETTINGS` over the preset (a setting
    given with ``--set`` wins); without it one thread (identical bytes run to run) and the preset as it is."""
    import os

    import synth7t.preprocess as pp
    from synth7t.cli import main

    seen = []

    def stop(data_dir, cfg, **kw):
        seen.append((cfg.threads_per_job, cfg.n4_shrink_factor, cfg.registration.spacing, cfg.n4_iterations))
        raise ValueError("stopped before any work")

    monkeypatch.setattr(pp, "preprocess_dataset", stop)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for extra in (["--fast", "--jobs", "2"], ["--fast"], [], ["--fast", "--set", "registration.spacing=1.5"]):
        assert main(["preprocess", str(tmp_path), *extra]) == 1
    paper = (150,) * 4
    assert seen == [(4, 6, 1.0, paper), (8, 6, 1.0, paper), (1, 4, None, paper), (8, 6, 1.5, paper)]


def test_set_values_are_json_or_text():
    assert parse_key_values(["epochs=2", "crop=[96, 96]", "device=cpu", "x=null", "amp=false"]) == \
        {"epochs": 2, "crop": [96, 96], "device": "cpu", "x": None, "amp": False}
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        parse_key_values(["=3"])


@pytest.mark.parametrize("module", ["synth7t", "synth7t.cli"])
def test_python_dash_m_runs_the_command_line(module):
    """``python -m synth7t train`` is what torchrun runs on GPU nodes; ``python -m synth7t.cli`` what make runs."""
    res = subprocess.run([sys.executable, "-m", module, "train", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: synth7t train") and "--cache" in res.stdout and "--no-resume" in res.stdout


@pytest.mark.slow
def test_a_study_runs_from_the_command_line_alone(coarse_cohort, tmp_path, capsys):
    """discover -> split -> preprocess -> cache -> train -> predict with ``synth7t`` commands only (no Python), on
    the coarse simulated cohort; the held-out subject is not trained on and gets its synthetic 7T with a sidecar."""
    import json
    import shutil

    import pandas as pd

    root = tmp_path / "data"
    shutil.copytree(coarse_cohort.root, root)
    cache, run, out = tmp_path / "cache", tmp_path / "run", tmp_path / "held_out_7T.nii.gz"
    assert main(["discover", str(root)]) == 0
    assert main(["split", str(root), "--n-test", "1"]) == 0
    fast = ["target_spacing=null", "grid_inplane=[128, 96]", "mask_backend=given", "n4_3t=false", "n4_7t=false",
            "qc_figure=false"]
    assert main(["preprocess", str(root), "--preset", "quick", *[x for kv in fast for x in ("--set", kv)]]) == 0
    assert main(["cache", str(root), "-o", str(cache), "--quiet"]) == 0
    assert main(["train", "--cache", str(cache), "--run-dir", str(run), "--preset", "demo-cpu", "--set", "epochs=1",
                 "batch_size=4", "samples_per_epoch=8", "crop=[64, 64]", "val_slices=8", "lambda_perc=0.0",
                 "perceptual_share=null", "num_workers=0", "device=cpu"]) == 0
    split = pd.read_csv(root / "split.tsv", sep="\t")
    held = split.loc[split["split"] == "test", "participant_id"].iloc[0]
    s = next(x for x in coarse_cohort if x.participant_id == held)
    t3 = root / Path(s.t3).relative_to(coarse_cohort.root)
    mask = root / Path(s.t3_mask).relative_to(coarse_cohort.root)
    assert main(["predict", str(t3), "-o", str(out), "--model", str(run / "model"), "--age", str(s.age), "--sex",
                 s.sex, "--impaired", str(int(s.impaired)), "--mask", str(mask), "--device", "cpu"]) == 0
    volumes = pd.read_csv(cache / "volumes.tsv", sep="\t")
    assert set(volumes.loc[volumes["split"] == "test", "key"]) == {s.key}  # in the cache, labelled test ...
    trained = json.loads((run / "model" / "model_card.json").read_text())["input_statistics"]["keys"]
    assert trained and s.key not in trained  # ... and not trained on
    side = json.loads(out.with_name("held_out_7T.json").read_text())
    assert out.is_file() and all(f["outcome"] == "ok" for f in side["input_checks"])
    assert "slice cache:" in capsys.readouterr().out
