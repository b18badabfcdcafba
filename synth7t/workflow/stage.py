"""One stage of a run, as a notebook sees it: its folder, a version banner, notices, saved tables, key results.

Every notebook under ``notebooks/`` is one stage of a run and writes only under
``<runs_dir>/<run_name>/<NN_stage>/``. The set-up that each of them used to repeat lives here::

    stage = Stage(runs_dir, run_name, "04_evaluate")
    stage.banner(device=device)              # synth7t | python | numpy | torch | device
    stage.notice_if_simulated(data_dir)      # the simulated-data statement when data_dir is the demo cohort
    derivatives = stage.derivatives(data_dir, derivatives_dir)
    stage.save_table(table1, "table1")       # runs/<run>/04_evaluate/table1.tsv
    stage.glue("psnr_gain", gain)            # a number the chapter's "Key result" line shows (myst-nb glue)
    stage.outputs()                          # every file of the stage folder, with size and whether it changed

Whether a dataset is the simulated demo cohort is read from its ``dataset_description.json``
(:func:`synth7t.data.layout.is_simulated`), never guessed from a folder name.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import layout

PathLike = Union[str, Path]

#: the MIME prefix under which myst-nb stores a glued value that is not displayed
GLUE_PREFIX = "application/papermill.record/"
# file times come from a coarse kernel clock that may lag time.time() by a tick
_MTIME_SLACK = 0.05


def describe_device(device: str) -> str:
    """The device a ``device`` parameter resolves to, in words (``"cpu"``, ``"cuda:0 (NVIDIA H200)"``).

    ``"auto"`` means CUDA when available, else the CPU (as :func:`synth7t.training.trainer.resolve_device`). A CUDA device
    that is not available is described as such rather than refused: the stage that uses it raises.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return str(dev)
    if not torch.cuda.is_available():
        return f"{dev} (not available)"
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def safe_name(text: str) -> str:
    """``text`` usable as a file or folder name: every character but letters, digits, ``_``, ``.`` and ``-``
    becomes ``_`` (a rater code or a model name inside a file name)."""
    out = re.sub(r"[^A-Za-z0-9_.-]", "_", str(text))
    if not out.strip("."):
        raise ValueError(f"{text!r} gives no usable file name")
    return out


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers: myst-nb reads a glued number back from its ``repr``, and
    ``repr(np.float64(0.5))`` is ``'np.float64(0.5)'``, which it cannot format."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class Stage:
    """The output folder of one notebook stage and the chores every notebook repeats.

    Args:
        runs_dir: root folder of all runs.
        run_name: the run (``runs/<run_name>/``).
        name: the stage folder, ``NN_verb_object`` (e.g. ``"04_evaluate"``).
        *subfolders: further folders inside the stage (e.g. the model name of ``02_train/<model_name>``).

    Attributes:
        run_dir: ``<runs_dir>/<run_name>``.
        stage_dir: ``<run_dir>/<name>``.
        dir: where this stage writes: ``stage_dir`` and the subfolders, created.
        written: every file saved through this object, in order.
        results: the key results glued so far, ``{name: value}``.
        simulated: whether :meth:`notice_if_simulated` found the simulated demo cohort.
        started: when the object was made (``time.time()``); :meth:`outputs` flags files changed since.
    """

    def __init__(self, runs_dir: PathLike, run_name: str, name: str, *subfolders: str):
        for what, value in (("run_name", run_name), ("name", name), *(("subfolder", s) for s in subfolders)):
            if not str(value).strip() or Path(str(value)).is_absolute() or ".." in Path(str(value)).parts:
                raise ValueError(f"{what} must be a non-empty relative folder name, got {value!r}")
        self.run_name = str(run_name)
        self.name = str(name)
        self.run_dir = Path(runs_dir) / self.run_name
        self.stage_dir = self.run_dir / self.name
        self.dir = self.stage_dir.joinpath(*map(str, subfolders))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []
        self.results: dict[str, Any] = {}
        self.simulated = False
        self.started = time.time() - _MTIME_SLACK

    def __repr__(self) -> str:
        return f"Stage({str(self.dir)!r})"

    # ------------------------------------------------------------------------------------------ paths
    def sibling(self, name: str, *parts: str) -> Path:
        """A path in another stage of the same run (not created), e.g. ``stage.sibling("03_predict")``."""
        return self.run_dir.joinpath(name, *parts)

    def path(self, name: PathLike) -> Path:
        """``<dir>/<name>``, its parent folder created."""
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def derivatives(self, data_dir: PathLike, derivatives_dir: PathLike = "") -> Path:
        """The preprocessing outputs: ``derivatives_dir`` when given, else ``<data_dir>/derivatives/synth7t-preproc``
        (:func:`synth7t.preprocess.derivatives_dir`)."""
        if derivatives_dir:
            return Path(derivatives_dir)
        from ..preprocess import derivatives_dir as default

        return Path(default(data_dir))

    def clean(self, *patterns: str) -> list[Path]:
        """Delete the stage folder's files matching glob ``patterns`` (not recursive), e.g. ``"*.tsv"``.

        For stages whose tables must not outlive a change of their inputs (an earlier run's table for a rater
        who has since answered again). Returns the deleted paths.
        """
        gone = sorted({p for pat in patterns for p in self.dir.glob(pat) if p.is_file()})
        for p in gone:
            p.unlink()
        return gone

    # ------------------------------------------------------------------------------------------ notices
    def banner(self, device: Optional[str] = None, packages: Sequence[str] = ()) -> str:
        """Print (and return) one line of versions: synth7t, python, numpy, torch when it is loaded or a device
        is given, the device ``device`` resolves to, and the versions of ``packages`` (distribution names)."""
        import synth7t

        parts = [f"synth7t {synth7t.__version__}", f"python {platform.python_version()}", f"numpy {np.__version__}"]
        if device is not None or "torch" in sys.modules:
            import torch

            parts.append(f"torch {torch.__version__}")
        if device is not None:
            parts.append(f"device {describe_device(device)}")
        for pkg in packages:
            try:
                parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
            except importlib.metadata.PackageNotFoundError:
                parts.append(f"{pkg} not installed")
        line = " | ".join(parts)
        print(line)
        return line

    def notice_if_simulated(self, data_dir: PathLike) -> bool:
        """Print the simulated-data statement of :mod:`synth7t.simulate.demo` when ``data_dir`` is the demo cohort
        (:func:`synth7t.data.layout.is_simulated`); returns whether it did, and remembers it for :meth:`caption`."""
        self.simulated = layout.is_simulated(data_dir)
        if self.simulated:
            from ..simulate.demo import SIMULATION_NOTICE

            print(SIMULATION_NOTICE)
        return self.simulated

    def caption(self, text: str) -> str:
        """A figure title that says "(simulated data)" when :meth:`notice_if_simulated` found the demo cohort."""
        return f"{text} (simulated data)" if self.simulated else text

    # ------------------------------------------------------------------------------------------ writing
    def record(self, path: PathLike) -> Path:
        """Note a file this stage wrote by other means (listed in :attr:`written`)."""
        p = Path(path)
        if p not in self.written:
            self.written.append(p)
        return p

    def save_table(self, table: pd.DataFrame, name: str, *, index: bool = False) -> Path:
        """Write a table as TSV in the stage folder (``name`` with or without ``.tsv``); returns its path."""
        p = self.path(name if name.endswith(".tsv") else f"{name}.tsv")
        table.to_csv(p, sep="\t", index=index)
        return self.record(p)

    def save_figure(self, fig, name: str, *, dpi: int = 110, **kwargs) -> Path:
        """Save a matplotlib figure in the stage folder (``name`` with or without ``.png``); returns its path."""
        p = self.path(name if Path(name).suffix else f"{name}.png")
        fig.savefig(p, dpi=dpi, **kwargs)
        return self.record(p)

    def save_json(self, obj: Any, name: str) -> Path:
        """Write ``obj`` as indented JSON in the stage folder (``name`` with or without ``.json``)."""
        p = self.path(name if name.endswith(".json") else f"{name}.json")
        p.write_text(json.dumps(obj, indent=2, default=str))
        return self.record(p)

    # ------------------------------------------------------------------------------------------ the book
    def glue(self, name: str, value: Any) -> Any:
        """Store a key result for the book without displaying it (myst-nb's ``glue(name, value, display=False)``).

        The chapter's opening markdown shows it with ``{glue:text}`name:.3f```. numpy scalars are turned into
        Python numbers first (myst-nb formats a glued number from its ``repr``). Without myst-nb installed (a
        GPU node without the ``book`` extra) the same notebook output is written directly.

        Returns:
            The stored value.
        """
        value = _plain(value)
        if name in self.results:
            raise ValueError(f"key result {name!r} glued twice (the book refuses duplicate glue keys)")
        self.results[name] = value
        try:
            from myst_nb import glue
        except ImportError:
            from IPython.core.formatters import format_display_data
            from IPython.display import display

            bundle, metadata = format_display_data(value)
            metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_PREFIX}
            display({GLUE_PREFIX + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
        else:
            glue(name, value, display=False)
        return value

    def outputs(self, *, collapse: Sequence[str] = (), show_folder: bool = True) -> pd.DataFrame:
        """Every file under the stage folder: ``file`` (relative to :attr:`dir`), ``kib`` (size) and ``updated``
        (written since this object was made); the folder itself is printed first.

        Args:
            collapse: sub-folders (relative to :attr:`dir`) listed as one row each with their file count,
                e.g. ``["session/images"]``.
            show_folder: print ``outputs in <dir>`` before returning the table.
        """
        if show_folder:
            print(f"outputs in {self.dir}")
        folded = [self.dir / c for c in collapse]
        rows, counts = [], {}
        for p in sorted(q for q in self.dir.rglob("*") if q.is_file()):
            parent = next((f for f in folded if f in p.parents), None)
            st = p.stat()
            fresh = st.st_mtime >= self.started
            if parent is None:
                rows.append({"file": str(p.relative_to(self.dir)), "kib": round(st.st_size / 1024, 1),
                             "updated": fresh})
            else:
                n, size, updated = counts.get(parent, (0, 0, False))
                counts[parent] = (n + 1, size + st.st_size, updated or fresh)
        rows += [{"file": f"{f.relative_to(self.dir)}/ ({n} files)", "kib": round(size / 1024, 1), "updated": updated}
                 for f, (n, size, updated) in counts.items()]
        return pd.DataFrame(rows, columns=["file", "kib", "updated"])
