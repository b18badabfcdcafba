"""What a scan costs: the tables of ``benchmarks/bench_speed.py`` (``speed_lone.tsv``, ``speed_pair.tsv``) as the
book quotes them (chapter 10's "What a scan costs", the "Run it on your data" chapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pandas as pd

#: the benchmark's measurements, one table each: a lone 3T through ``synth7t predict``, a pair at the paper preset
SPEED_TABLES = {"lone": "one lone 3T through synth7t predict", "pair": "one 3T/7T pair at the paper preset"}
_RUN_COLUMNS = ("cpus", "baseline", "date", "model")  # facts of the run, said once in the note


def read_speed_tables(folder: Union[str, Path]) -> dict:
    """``{"lone": ..., "pair": ...}``: each table of ``folder`` indexed by mode (its run's date, CPUs and baseline
    in ``attrs``), or, where the file is missing, the line that says how to measure it."""
    out = {}
    for what in SPEED_TABLES:
        path = Path(folder) / f"speed_{what}.tsv"
        if not path.is_file():
            out[what] = f"{path}: not measured yet (python benchmarks/bench_speed.py {what})"
            continue
        t = pd.read_csv(path, sep="\t")
        table = t.drop(columns=[c for c in _RUN_COLUMNS if c in t]).set_index("mode")
        table = table.round({c: 6 if c in ("max_abs", "mean_abs") else 3 for c in table.columns})
        table.attrs.update({c: str(t[c].iloc[0]) for c in _RUN_COLUMNS if c in t})
        out[what] = table
    return out


def speed_note(tables: dict) -> str:
    """The before/after wall times of :func:`read_speed_tables`' tables in a sentence or two, with when and where
    each was measured."""
    parts = []
    for what, title in SPEED_TABLES.items():
        t = tables.get(what)
        if not isinstance(t, pd.DataFrame):
            parts.append(f"{title[0].upper()}{title[1:]}: {t}.")
            continue
        when = f"(measured {t.attrs.get('date')} on {t.attrs.get('cpus')} CPUs against {t.attrs.get('baseline')})"
        scale, unit = (60.0, "min") if what == "pair" else (1.0, "s")
        parts.append(f"{title[0].upper()}{title[1:]}: {t.loc['baseline', 'whole'] / scale:.1f} {unit} before, "
                     f"{t.loc['reproducible', 'whole'] / scale:.1f} {unit} now on one ITK thread, "
                     f"{t.loc['fast', 'whole'] / scale:.1f} {unit} on every thread ({t.loc['fast', 'ratio']:.2f} times "
                     f"as fast) {when}.")
    return " ".join(parts)
