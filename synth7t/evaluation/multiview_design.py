"""The multi-view design study's results (chapter 04, beyond the paper): ``benchmarks/multiview_design.py`` trains
the multi-view designs over seeds and writes one table; these functions summarise it for the book."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]

__all__ = ["DESIGN_RESULTS", "DESIGN_COMMAND", "DESIGN_COLUMNS", "design_summary", "design_text", "design_glue"]

#: The committed output of ``benchmarks/multiview_design.py``: one row per seed and image type.
DESIGN_RESULTS = "benchmarks/results/multiview_design.tsv"
#: The command that writes it (after ``make demo`` has preprocessed ``data/demo``).
DESIGN_COMMAND = "python benchmarks/multiview_design.py --seeds 0 1 2"
#: Columns the results file must hold (the metrics are the means over the held-out subjects of one seed).
DESIGN_COLUMNS = ("seed", "image_type", "n_subjects", "samples", "grid", "psnr", "ssim", "artefact_index", "rho",
                  "rho_block3")


def design_summary(path: PathLike = DESIGN_RESULTS, generator_version: Optional[str] = None):
    """Mean and SD over seeds of each image type of the multi-view design study.

    Args:
        path: the study's results (:data:`DESIGN_RESULTS`, written by ``benchmarks/multiview_design.py``).
        generator_version: the demo cohort's generator version (:func:`synth7t.data.layout.dataset_facts`); when given,
            the results must have been measured on a cohort of that version.

    Returns:
        A DataFrame indexed by ``image_type`` (in the file's order): ``n_seeds``, and ``<metric>_mean`` and
        ``<metric>_sd`` (SD over seeds, ``ddof=1``; NaN with one seed) for ``psnr``, ``ssim``, ``artefact_index``,
        ``rho`` and ``rho_block3``; its ``attrs`` hold the ``grid``, ``samples`` and ``n_subjects`` of the runs.

    Raises:
        FileNotFoundError: no results file (the message gives the command that writes it).
        ValueError: missing columns, or runs on different grids or step counts mixed in one file.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: the multi-view design study's results are missing; after `make demo` has "
                                f"preprocessed data/demo, run `{DESIGN_COMMAND}` from the repository root (it writes "
                                f"{DESIGN_RESULTS})")
    table = pd.read_csv(p, sep="\t")
    missing = [c for c in DESIGN_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)}; rewrite it with `{DESIGN_COMMAND}`")
    if generator_version is not None:
        measured_on = sorted(set(table["generator_version"].astype(str))) if "generator_version" in table.columns \
            else ["unrecorded"]
        if measured_on != [str(generator_version)]:
            raise ValueError(f"{p}: measured on the demo cohort of generator version {', '.join(measured_on)}, this "
                             f"run's is {generator_version}; rerun `{DESIGN_COMMAND}`")
    for col in ("grid", "samples", "n_subjects"):
        if table[col].nunique() != 1:
            raise ValueError(f"{p}: runs with different {col} ({sorted(table[col].unique())}) in one file; rerun "
                             f"`{DESIGN_COMMAND}` into a fresh --out folder")
    metrics = ["psnr", "ssim", "artefact_index", "rho", "rho_block3"]
    g = table.groupby("image_type", sort=False)
    out = pd.DataFrame({"n_seeds": g["seed"].nunique()})
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_sd"] = g[m].mean(), g[m].std(ddof=1)
    out.attrs.update(grid=str(table["grid"].iloc[0]), samples=int(table["samples"].iloc[0]),
                     n_subjects=int(table["n_subjects"].iloc[0]))
    return out


def design_text(summary, image_type: str, metric: str, digits: int = 2, unit: str = "") -> str:
    """``"24.57 ± 0.30 dB"``: one metric of one image type of :func:`design_summary` as mean ± SD over seeds
    (``"24.57 dB (one seed)"`` with one seed)."""
    if image_type not in summary.index:
        raise KeyError(f"no image type {image_type!r} in the design results (has {', '.join(summary.index)})")
    mean, sd = summary.loc[image_type, f"{metric}_mean"], summary.loc[image_type, f"{metric}_sd"]
    suffix = f" {unit}" if unit else ""
    if int(summary.loc[image_type, "n_seeds"]) < 2:
        return f"{mean:.{digits}f}{suffix} (one seed)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}{suffix}"


def design_glue(summary) -> dict:
    """The texts chapter 04's paragraph on the multi-view design quotes, by glue name, from :func:`design_summary`.

    Fused designs by the mean: ``mv_psnr_cond``, ``mv_psnr_nocond``, ``mv_psnr_three`` and ``mv_ai_*`` (the
    slicing-artefact index), the axial-only U-Net's ``mv_psnr_axial`` and ``mv_ai_axial``, the plane-conditioned
    model fused by the median (``mv_psnr_cond_median``, ``mv_ai_cond_median``), the view spread's correlation with
    the error (``mv_rho_*``, ``mv_rho3_*``), the runs' description ``mv_runs`` and ``mv_ranking``, the order of the
    fused designs by mean PSNR.
    """
    names = {"cond": "mv-cond fused mean", "nocond": "mv-nocond fused mean", "three": "three fused mean",
             "axial": "axial model"}
    out = {}
    for short, it in names.items():
        out[f"mv_psnr_{short}"] = design_text(summary, it, "psnr", 2, "dB")
        out[f"mv_ai_{short}"] = design_text(summary, it, "artefact_index", 2)
    out["mv_psnr_cond_median"] = design_text(summary, "mv-cond fused median", "psnr", 2, "dB")
    out["mv_ai_cond_median"] = design_text(summary, "mv-cond fused median", "artefact_index", 2)
    for short in ("cond", "three"):
        out[f"mv_rho_{short}"] = design_text(summary, names[short], "rho", 2)
        out[f"mv_rho3_{short}"] = design_text(summary, names[short], "rho_block3", 2)
    a = summary.attrs
    n_seeds = int(summary["n_seeds"].min())
    out["mv_runs"] = (f"{n_seeds} seed{'s' if n_seeds != 1 else ''}, {a.get('samples')} slices per epoch for 3 "
                      f"epochs, {a.get('n_subjects')} held-out subject(s), grid {a.get('grid')}")
    labels = {"cond": "one plane-conditioned U-Net", "nocond": "one U-Net without the plane condition",
              "three": "three single-plane U-Nets", "axial": "the axial-only U-Net"}
    order = sorted(labels, key=lambda k: -float(summary.loc[names[k], "psnr_mean"]))
    out["mv_ranking"] = "By mean PSNR: " + " > ".join(labels[k] for k in order) + "."
    return out
