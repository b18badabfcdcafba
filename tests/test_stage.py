"""The run-stage helper of the notebooks (synth7t.workflow.stage)."""

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synth7t
from synth7t.workflow import stage as st


def test_stage_folder_tables_figures_and_outputs(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    old = tmp_path / "runs" / "r1" / "02_train" / "unet" / "old.txt"
    old.parent.mkdir(parents=True)
    old.write_text("from an earlier run")
    os.utime(old, (1e9, 1e9))  # written long before the stage started
    s = st.Stage(tmp_path / "runs", "r1", "02_train", "unet")
    assert s.dir == tmp_path / "runs" / "r1" / "02_train" / "unet" and s.dir.is_dir()
    assert s.stage_dir == tmp_path / "runs" / "r1" / "02_train"
    assert s.sibling("03_predict", "unet") == tmp_path / "runs" / "r1" / "03_predict" / "unet"
    assert not s.sibling("03_predict").exists()

    table = pd.DataFrame({"key": ["sub-01", "sub-02"], "psnr": [21.5, 22.25]})
    p = s.save_table(table, "scores")
    assert p == s.dir / "scores.tsv"
    pd.testing.assert_frame_equal(pd.read_csv(p, sep="\t"), table)
    assert s.save_table(table.set_index("key"), "indexed.tsv", index=True).read_text().startswith("key\tpsnr")
    fig, ax = plt.subplots()
    assert s.save_figure(fig, "figure").name == "figure.png" and (s.dir / "figure.png").stat().st_size > 0
    plt.close(fig)
    assert json.loads(s.save_json({"seed": 0, "path": tmp_path}, "config").read_text()) == {"seed": 0,
                                                                                          "path": str(tmp_path)}
    (s.path("session/images/a.png")).write_bytes(b"x" * 2048)
    (s.path("session/images/b.png")).write_bytes(b"y" * 1024)
    assert s.written == [s.dir / n for n in ("scores.tsv", "indexed.tsv", "figure.png", "config.json")]

    out = s.outputs(collapse=["session/images"])
    assert capsys.readouterr().out == f"outputs in {s.dir}\n"
    assert list(out.columns) == ["file", "kib", "updated"]
    rows = out.set_index("file")
    assert list(rows.index) == ["config.json", "figure.png", "indexed.tsv", "old.txt", "scores.tsv",
                                "session/images/ (2 files)"]
    assert rows.loc["scores.tsv", "updated"] and not rows.loc["old.txt", "updated"]
    assert rows.loc["session/images/ (2 files)", "kib"] == 3.0 and rows.loc["session/images/ (2 files)", "updated"]
    assert len(s.outputs(show_folder=False)) == len(out) + 1  # unfolded: both images listed
    assert s.clean("*.tsv") == [s.dir / "indexed.tsv", s.dir / "scores.tsv"]
    assert not (s.dir / "scores.tsv").exists() and (s.dir / "figure.png").exists()

    for bad in ("", "../escape", "/abs"):
        with pytest.raises(ValueError, match="relative folder name"):
            st.Stage(tmp_path, bad, "00_demo_data")


def test_derivatives_banner_notice_and_caption(tmp_path, capsys, coarse_cohort):
    from synth7t.simulate import demo
    from synth7t import preprocess

    s = st.Stage(tmp_path, "r", "04_evaluate")
    assert s.derivatives("data/x") == preprocess.derivatives_dir("data/x")
    assert s.derivatives("data/x", "/elsewhere/deriv") == Path("/elsewhere/deriv")
    line = s.banner(device="cpu", packages=["pandas", "no-such-distribution"])
    assert line.startswith(f"synth7t {synth7t.__version__} | python ")
    assert "| torch " in line and "| device cpu |" in line and f"pandas {pd.__version__}" in line
    assert "no-such-distribution not installed" in line
    assert capsys.readouterr().out.strip() == line
    import torch

    assert st.describe_device("cpu") == "cpu"
    assert st.describe_device("auto") == "cpu" or st.describe_device("auto").startswith("cuda:")
    if not torch.cuda.is_available():
        assert st.describe_device("cuda") == "cuda (not available)"

    assert not s.notice_if_simulated(tmp_path) and capsys.readouterr().out == ""
    assert s.caption("3T and 7T") == "3T and 7T"
    assert s.notice_if_simulated(coarse_cohort.root)
    assert capsys.readouterr().out.strip() == demo.SIMULATION_NOTICE
    assert s.caption("3T and 7T") == "3T and 7T (simulated data)"


def test_glue_stores_plain_values_for_the_book(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    s = st.Stage(tmp_path, "r", "09_compare_paper")
    assert s.glue("psnr", np.float64(21.5)) == 21.5
    s.glue("n", np.int64(3))
    s.glue("model", "U-Net")
    assert calls == [("psnr", 21.5, False), ("n", 3, False), ("model", "U-Net", False)]
    assert type(calls[0][1]) is float and type(calls[1][1]) is int  # repr '21.5', not 'np.float64(21.5)'
    assert s.results == {"psnr": 21.5, "n": 3, "model": "U-Net"}
    with pytest.raises(ValueError, match="twice"):
        s.glue("psnr", 1.0)

    # without myst-nb (a GPU node without the book extra) the same output is written directly
    import IPython.display

    shown = []
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    s.glue("ssim", np.float32(0.5))
    (bundle,), kwargs = shown[0]
    assert bundle == {"application/papermill.record/text/plain": "0.5"}
    assert kwargs["raw"] and kwargs["metadata"]["scrapbook"] == {"name": "ssim",
                                                                 "mime_prefix": "application/papermill.record/"}


def test_safe_name():
    assert st.safe_name("gan-unet nodiag/2") == "gan-unet_nodiag_2"
    assert st.safe_name("sim1") == "sim1"
    with pytest.raises(ValueError, match="file name"):
        st.safe_name("..")
