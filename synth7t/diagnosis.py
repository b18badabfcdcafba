"""Downstream diagnosis prediction from regional volumes (Gicquel et al., §2.8.4, §3.4 and Figure 6).

The paper segments every image type (3T, U-Net and GAN U-Net synthetic 7T), enters the regional volumes with age
and sex into a multiclass random forest that predicts the clinical diagnosis (CN, MCI or AD; SCD counted as CN),
and reports 10-fold cross-validated accuracy and balanced accuracy over 1000 repetitions per image type, the mean
impurity feature importances of the 3T models, and how much the synthetic types' importances deviate from the
3T's. This module computes each piece:

* :func:`read_volumes_table` / :func:`validate_volumes`: a table with one row per ``key, image_type`` and one
  column per region in mL (the ``volumes.tsv`` of :func:`synth7t.segment.segment_batch`, or an external table
  from SynthSeg, FastSurfer, ... so that a cohort of thousands can be analysed without its images).
* :func:`volume_features`: regions joined with the participants table (age, sex, diagnosis), head-size
  normalisation, left/right kept or summed, diagnoses mapped to classes.
* :func:`cross_validated_scores`: repeated stratified k-fold random forest, per-repeat (pooled out-of-fold)
  accuracy and balanced accuracy, per-fold scores, mean impurity (and optionally permutation) importances.
* :func:`compare_image_types`: each image type against the baseline with the corrected repeated k-fold t-test.
* :func:`importance_deviation`: per region, a type's importance minus the baseline's (Figure 6C analogue).
* :func:`plot_accuracy_distributions`, :func:`plot_importances`: Figure 6A and 6B/C analogues.

**Pairing.** Every image type is cross-validated on the same subjects (:func:`volume_features` keeps only keys
present in every type, by default) with the same seed, so repeat ``r`` uses the *same folds* and the same forest
seeds for every type. Differences between types are then paired by repeat and fold, which is what the comparison
test needs; :class:`CVResult` carries a digest of each repeat's folds and :func:`compare_image_types` refuses
results whose folds differ.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import layout

PathLike = Union[str, Path]

#: the paper's classes (§2.8.4): "CN or SCD", MCI, and AD dementia (all AD cases biomarker-confirmed). A
#: ``dementia`` diagnosis without the AD label is not the paper's AD class and is dropped by default; pass e.g.
#: ``{"CN": ["CN", "SCD"], "MCI": ["MCI"], "AD": ["AD", "dementia"]}`` to keep it.
PAPER_CLASSES: dict[str, tuple[str, ...]] = {"CN": ("CN", "SCD"), "MCI": ("MCI",), "AD": ("AD",)}

#: candidate names of a head-size column, in order of preference (case-insensitive); the first present is used
TOTAL_COLUMNS = ("eTIV", "EstimatedTotalIntraCranialVol", "TIV", "ICV", "total_intracranial", "Total-Brain",
                 "total_brain", "TotalBrain", "BrainSegVol")
#: features added from the participants table
DEMOGRAPHICS = ("age", "sex_male")
METRICS = ("accuracy", "balanced_accuracy")

_ID_COLUMNS = ("key", "image_type")
_HEMI_RE = re.compile(r"^(?P<pre>ctx[-_.])?(?P<side>left|right|lh|rh)(?P<sep>[-_. ])(?P<rest>.+)$", re.IGNORECASE)


class VolumesTableError(ValueError):
    """A volumes table that cannot be analysed; the message says what is wrong and how to fix it."""


# ------------------------------------------------------------------------------------------- input tables


def validate_volumes(volumes: pd.DataFrame, *, regions: Optional[Sequence[str]] = None,
                     source: str = "volumes table") -> list[str]:
    """Check a volumes table and return its region columns.

    Args:
        volumes: one row per ``key, image_type``; ``key`` is ``sub-<id>`` or ``sub-<id>_ses-<s>``; every other
            column is a regional volume (mL), unless ``regions`` names the ones to use.
        regions: region columns to use (default: every column but ``key`` and ``image_type``).
        source: how error messages name the table (e.g. its path).

    Raises:
        VolumesTableError: missing ``key``/``image_type`` columns, missing or non-numeric region columns,
            empty keys, duplicated ``key, image_type`` rows, or negative volumes.
    """
    missing = [c for c in _ID_COLUMNS if c not in volumes.columns]
    if missing:
        raise VolumesTableError(
            f"{source}: missing column(s) {', '.join(missing)}; a volumes table needs key (sub-<id> or "
            f"sub-<id>_ses-<s>), image_type (e.g. 3T, unet) and one column per region in mL "
            f"(has {', '.join(map(str, volumes.columns)) or 'no columns'})")
    if regions is None:
        regions = [c for c in volumes.columns if c not in _ID_COLUMNS]
    else:
        regions = list(regions)
        absent = [r for r in regions if r not in volumes.columns]
        if absent:
            raise VolumesTableError(f"{source}: region column(s) {', '.join(absent)} not found "
                                    f"(has {', '.join(c for c in volumes.columns if c not in _ID_COLUMNS)})")
    if not regions:
        raise VolumesTableError(f"{source}: no region columns besides key and image_type")
    bad = [r for r in regions if not pd.api.types.is_numeric_dtype(volumes[r])]
    if bad:
        raise VolumesTableError(f"{source}: column(s) {', '.join(bad)} are not numeric volumes; choose the volume "
                                "columns with regions= (the notebook's `regions` parameter)")
    keys = volumes["key"].astype(str).str.strip()
    if (keys == "").any() or volumes["key"].isna().any():
        raise VolumesTableError(f"{source}: {int((keys == '').sum() + volumes['key'].isna().sum())} row(s) "
                                "with an empty key")
    dup = volumes.assign(key=keys).duplicated(["key", "image_type"], keep=False)
    if dup.any():
        ex = volumes.loc[dup, ["key", "image_type"]].astype(str).agg(" ".join, axis=1).unique()[:5]
        raise VolumesTableError(f"{source}: {int(dup.sum())} rows share a key and image_type, e.g. "
                                f"{', '.join(ex)}; one row per key and image type")
    neg = (volumes[regions] < 0).any()
    if neg.any():
        raise VolumesTableError(f"{source}: negative volumes in {', '.join(neg.index[neg])}")
    return regions


def read_volumes_table(path: PathLike, *, regions: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Read and validate a volumes table (TSV, or CSV when the name ends in ``.csv``).

    A table with ``participant_id`` (and optionally ``session``) instead of ``key`` is accepted: the key is
    built as ``sub-<id>[_ses-<s>]``.

    Args:
        path: the table.
        regions: the region columns to validate (default: every column but ``key`` and ``image_type``).

    Raises:
        FileNotFoundError: no such file.
        VolumesTableError: see :func:`validate_volumes`.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: volumes table not found (expected a TSV/CSV with columns key, image_type "
                                "and one column per region in mL)")
    # ids stay text: "001" read as a number would become sub-1
    df = pd.read_csv(p, sep="," if p.suffix.lower() == ".csv" else "\t",
                     dtype={"key": str, "image_type": str, "participant_id": str, "session": str})
    if "key" not in df.columns and "participant_id" in df.columns:
        key = df["participant_id"].map(layout.normalise_participant_id)
        if "session" in df.columns:
            ses = df["session"].fillna("").astype(str).str.strip()
            key = key.where(ses.isin(["", "n/a"]), key + "_" + ses.map(layout.normalise_session))
            df = df.drop(columns="session")
        df = df.drop(columns="participant_id")
        df.insert(0, "key", key)
    if "image_type" in df.columns:
        df["image_type"] = df["image_type"].astype(str)
    validate_volumes(df, regions=regions, source=str(p))
    return df


def participant_of(key: str) -> str:
    """The participant id of a key (``sub-001_ses-2`` -> ``sub-001``)."""
    return layout.normalise_participant_id(str(key).strip().split("_")[0])


def _class_map(classes) -> dict[str, str]:
    """diagnosis -> class from a mapping ``{class: [diagnoses]}`` or a list of diagnoses (one class each)."""
    if isinstance(classes, Mapping):
        items = [(str(c), [dx] if isinstance(dx, str) else list(dx)) for c, dx in classes.items()]
    else:
        items = [(str(c), [c]) for c in classes]
    if len(items) < 2:
        raise ValueError(f"classes needs at least 2 classes, got {classes!r}")
    out: dict[str, str] = {}
    for cls, dxs in items:
        for dx in dxs:
            canon = layout.normalise_diagnosis(dx)
            if canon in out:
                raise ValueError(f"classes: diagnosis {canon} is in two classes ({out[canon]} and {cls})")
            out[canon] = cls
    return out


def _total_column(columns: Sequence[str], total_column: Optional[str]) -> Optional[str]:
    if total_column:
        if total_column not in columns:
            raise VolumesTableError(f"total_column {total_column!r} is not a column of the volumes table")
        return total_column
    lower = {c.lower(): c for c in columns}
    for cand in TOTAL_COLUMNS:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def combine_hemispheres(table: pd.DataFrame, regions: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Sum left and right regions into one (``Left-Hippocampus`` + ``Right-Hippocampus`` -> ``Hippocampus``).

    Recognised name patterns (any case): ``Left-X``/``Right-X``, ``lh_X``/``rh_X``, ``lh.X``, ``ctx-lh-X``. A
    region whose partner is absent keeps its own name.

    Returns:
        The table with the combined columns instead of the pairs, and the new region list (first-seen order).
    """
    parsed = {}
    for r in regions:
        m = _HEMI_RE.match(r)
        if m:
            side = "L" if m["side"].lower() in ("left", "lh") else "R"
            parsed[r] = (side, (m["pre"] or "") + m["rest"])
    bases: dict[str, dict[str, str]] = {}
    for r, (side, base) in parsed.items():
        bases.setdefault(base, {})[side] = r
    out = table.copy()
    new_regions: list[str] = []
    for r in regions:
        if r in parsed and set(bases[parsed[r][1]]) == {"L", "R"}:
            base = parsed[r][1]
            if base in new_regions:
                continue
            pair = bases[base]
            out[base] = out[pair["L"]] + out[pair["R"]]
            out = out.drop(columns=[pair["L"], pair["R"]])
            new_regions.append(base)
        else:
            new_regions.append(r)
    return out, new_regions


@dataclass
class FeatureSet:
    """Features and labels for every image type, from :func:`volume_features`.

    Attributes:
        table: one row per ``key, image_type`` (sorted by image type, then key): ``key``, ``participant_id``,
            ``image_type``, ``diagnosis``, ``label`` (the class) and the feature columns.
        features: feature column names (regions, then ``age`` and ``sex_male`` when added).
        regions: the region features (after hemisphere combination and normalisation).
        classes: class names in order.
        total_column: the head-size column used (None when not normalised).
        normalise: ``"icv"`` or None.
        dropped: one row per dropped ``key, image_type`` with its ``reason``.
    """

    table: pd.DataFrame
    features: list[str]
    regions: list[str]
    classes: list[str]
    total_column: Optional[str]
    normalise: Optional[str]
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "image_type", "reason"]))

    @property
    def image_types(self) -> list[str]:
        return list(dict.fromkeys(self.table["image_type"]))

    def xy(self, image_type: str) -> tuple[pd.DataFrame, pd.Series]:
        """Features ``X`` (index ``key``) and class labels ``y`` of one image type, sorted by key."""
        if image_type not in self.image_types:
            raise KeyError(f"no image type {image_type!r} (have {', '.join(self.image_types)})")
        sub = self.table[self.table["image_type"] == image_type].sort_values("key").set_index("key")
        return sub[self.features], sub["label"].rename("label")

    def groups(self, image_type: str) -> pd.Series:
        """Participant id per key of one image type (sessions of one participant stay in one fold)."""
        sub = self.table[self.table["image_type"] == image_type].sort_values("key").set_index("key")
        return sub["participant_id"]

    def class_counts(self) -> pd.DataFrame:
        """Number of rows per image type (rows) and class (columns), with a total."""
        c = (self.table.groupby(["image_type", "label"]).size().unstack("label", fill_value=0)
             .reindex(index=self.image_types, columns=self.classes, fill_value=0))
        c["total"] = c.sum(axis=1)
        return c.rename_axis(index="image_type", columns=None)


def _read_participants_any(participants) -> pd.DataFrame:
    if isinstance(participants, (str, Path)):
        return layout.read_participants(participants)
    df = participants.copy()
    if "participant_id" in df.columns:
        df = df.set_index("participant_id")
    missing = [c for c in ("age", "sex", "diagnosis") if c not in df.columns]
    if missing:
        raise ValueError(f"participants table: missing column(s) {', '.join(missing)} "
                         "(expected participant_id, age, sex, diagnosis)")
    df.index = [layout.normalise_participant_id(i) for i in df.index]
    df["sex"] = df["sex"].map(layout.normalise_sex)
    df["diagnosis"] = df["diagnosis"].map(layout.normalise_diagnosis)
    df["age"] = df["age"].astype(float)
    return df


def volume_features(
    volumes: pd.DataFrame,
    participants,
    *,
    regions: Optional[Sequence[str]] = None,
    image_types: Optional[Sequence[str]] = None,
    hemispheres: str = "separate",
    add_age_sex: bool = True,
    normalise: Optional[str] = "icv",
    total_column: Optional[str] = None,
    keep_total: bool = True,
    classes=PAPER_CLASSES,
    require_all_types: bool = True,
    on_missing_participant: str = "raise",
    verbose: bool = True,
) -> FeatureSet:
    """Join regional volumes with the participants table into features and diagnosis classes.

    **Head size.** With ``normalise="icv"`` each region becomes its percentage of a head-size column of the same
    row (the ratio method): the first of :data:`TOTAL_COLUMNS` present, or ``total_column``. Prefer an
    intracranial volume (``eTIV`` from FreeSurfer/FastSurfer); :func:`synth7t.segment.segment_batch` writes
    ``Total-Brain`` (every labelled voxel, tissue *and* ventricles), which tracks head size better than brain
    tissue alone because ventricles widen as tissue shrinks, but it still falls slightly with atrophy. The ratio
    is computed per image type from that type's own segmentation, as a user of the synthetic images would. The
    head-size column itself stays a feature in mL (``keep_total``), so the forest still sees global size. A
    random forest is invariant to monotone rescaling of a feature, so the choice matters only through the
    per-row division. ``normalise=None`` keeps mL.

    **Classes.** ``classes`` maps a class to the diagnoses it holds (default :data:`PAPER_CLASSES`: CN = CN + SCD,
    MCI, AD); a list of diagnoses makes one class each. Rows with other diagnoses are dropped and counted.

    Args:
        volumes: table of :func:`read_volumes_table` (``key``, ``image_type``, region columns in mL).
        participants: a path to ``participants.tsv`` or a table with ``participant_id`` (column or index),
            ``age``, ``sex``, ``diagnosis``; a key's participant is the part before the first ``_``.
        regions: region columns to use (default: all but key, image_type). The head-size column is found among
            all columns whether or not ``regions`` lists it, and is handled apart.
        image_types: image types to keep (default all).
        hemispheres: ``"separate"`` keeps left and right; ``"combine"`` sums pairs (:func:`combine_hemispheres`).
        add_age_sex: add ``age`` (years) and ``sex_male`` (1 for M, 0 for F), as in the paper.
        normalise: ``"icv"`` (ratio to the head-size column, in %) or None.
        total_column: the head-size column; default: detected from :data:`TOTAL_COLUMNS`.
        keep_total: keep the head-size column as a feature (mL).
        classes: see above.
        require_all_types: keep only keys present in every image type, so that the types are compared on the
            same subjects and folds (needed by :func:`compare_image_types`).
        on_missing_participant: ``"raise"`` (default) or ``"drop"`` keys whose participant has no row.
        verbose: print what was dropped and why.

    Raises:
        VolumesTableError: bad table (see :func:`validate_volumes`), normalisation without a head-size column.
        ValueError: keys without participants (with ``on_missing_participant="raise"``), bad arguments, fewer
            than 2 classes left.
    """
    if hemispheres not in ("separate", "combine"):
        raise ValueError(f"hemispheres must be 'separate' or 'combine', got {hemispheres!r}")
    if normalise not in ("icv", None):
        raise ValueError(f"normalise must be 'icv' or None, got {normalise!r}")
    if on_missing_participant not in ("raise", "drop"):
        raise ValueError(f"on_missing_participant must be 'raise' or 'drop', got {on_missing_participant!r}")
    dx_to_class = _class_map(classes)
    class_names = list(dict.fromkeys(dx_to_class.values()))
    region_cols = validate_volumes(volumes, regions=regions)
    vol = volumes.copy()
    vol["key"] = vol["key"].astype(str).str.strip()
    vol["image_type"] = vol["image_type"].astype(str)
    if image_types is not None:
        unknown = [t for t in image_types if t not in set(vol["image_type"])]
        if unknown:
            raise ValueError(f"image_types {', '.join(map(str, unknown))} not in the volumes table "
                             f"(has {', '.join(dict.fromkeys(vol['image_type']))})")
        vol = vol[vol["image_type"].isin(list(image_types))]
    total = _total_column(list(vol.columns), total_column)
    if normalise == "icv" and total is None:
        raise VolumesTableError(
            f"normalise='icv' needs a head-size column ({', '.join(TOTAL_COLUMNS)}) or total_column=; "
            "pass normalise=None to use volumes in mL")
    region_cols = [r for r in region_cols if r != total]
    wanted_types = list(dict.fromkeys(vol["image_type"]))

    dropped: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str):
        nonlocal vol
        if mask.any():
            dropped.append(vol.loc[mask, ["key", "image_type"]].assign(reason=reason))
            if verbose:
                print(f"dropped {int(mask.sum())} row(s) ({vol.loc[mask, 'key'].nunique()} key(s)): {reason}")
            vol = vol.loc[~mask]

    parts = _read_participants_any(participants)
    vol["participant_id"] = vol["key"].map(participant_of)
    no_row = ~vol["participant_id"].isin(parts.index)
    if no_row.any() and on_missing_participant == "raise":
        miss = sorted(vol.loc[no_row, "participant_id"].unique())
        raise ValueError(f"{len(miss)} participant(s) of the volumes table have no row in the participants table: "
                         f"{', '.join(miss[:10])}{' ...' if len(miss) > 10 else ''} (add them, or pass "
                         "on_missing_participant='drop')")
    drop(no_row, "no row in the participants table")
    need = region_cols + ([total] if total else [])
    drop(vol[need].isna().any(axis=1), "missing volume(s)")
    if normalise == "icv":
        drop(~(vol[total] > 0), f"head-size column {total} is not positive")
    vol["diagnosis"] = vol["participant_id"].map(parts["diagnosis"])
    other = ~vol["diagnosis"].isin(list(dx_to_class))
    if other.any() and verbose:
        counts = vol.loc[other].drop_duplicates("key")["diagnosis"].value_counts()
        print("diagnoses outside the classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    drop(other, "diagnosis not in classes")
    if require_all_types and len(vol):
        per_key = vol.groupby("key")["image_type"].transform("nunique")
        drop(per_key < len(wanted_types), "key not present in every image type")
    if vol.empty:
        raise ValueError("no rows left to analyse (see the dropped counts above)")

    feats = vol[["key", "participant_id", "image_type", "diagnosis"]].copy()
    feats["label"] = vol["diagnosis"].map(dx_to_class)
    reg = vol[region_cols].astype(float)
    if normalise == "icv":
        reg = reg.div(vol[total].astype(float), axis=0) * 100.0
    if hemispheres == "combine":
        reg, region_names = combine_hemispheres(reg, region_cols)
    else:
        region_names = list(region_cols)
    feats = pd.concat([feats, reg[region_names]], axis=1)
    if total and keep_total:
        feats[total] = vol[total].astype(float)
        region_names = region_names + [total]
    features = list(region_names)
    if add_age_sex:
        feats["age"] = feats["participant_id"].map(parts["age"]).astype(float)
        feats["sex_male"] = (feats["participant_id"].map(parts["sex"]) == "M").astype(int)
        features += list(DEMOGRAPHICS)
    present = [c for c in class_names if c in set(feats["label"])]
    if len(present) < 2:
        raise ValueError(f"fewer than 2 classes left ({', '.join(present) or 'none'}); classes were "
                         f"{class_names}")
    type_order = list(dict.fromkeys(volumes["image_type"].astype(str)))
    feats["_t"] = feats["image_type"].map({t: i for i, t in enumerate(type_order)})
    feats = feats.sort_values(["_t", "key"]).drop(columns="_t").reset_index(drop=True)
    drops = (pd.concat(dropped, ignore_index=True) if dropped
             else pd.DataFrame(columns=["key", "image_type", "reason"]))
    return FeatureSet(table=feats, features=features, regions=region_names, classes=present,
                      total_column=total, normalise=normalise,
                      dropped=drops)


# ------------------------------------------------------------------------------------- cross-validation


@dataclass
class CVResult:
    """The outcome of :func:`cross_validated_scores`.

    Attributes:
        scores: one row per repeat: ``repeat``, ``accuracy``, ``balanced_accuracy`` (each on the pooled
            out-of-fold predictions of all subjects, so every subject is predicted once per repeat).
        fold_scores: one row per repeat and fold: ``repeat``, ``fold``, ``n_train``, ``n_test``, ``accuracy``,
            ``balanced_accuracy`` (used by the corrected test of :func:`compare_image_types`).
        importances: one row per repeat, one column per feature: the forests' mean decrease in impurity
            averaged over the repeat's folds (each forest's importances sum to 1).
        permutation_importances: same shape, the drop in held-out balanced accuracy when a feature is permuted,
            averaged over folds; None unless asked for.
        classes: class labels in order.
        n_splits: folds actually used (reduced for tiny classes).
        split_digests: one digest per repeat of its fold assignment (the pairing check).
        settings: the arguments that produced the result.
    """

    scores: pd.DataFrame
    fold_scores: pd.DataFrame
    importances: pd.DataFrame
    permutation_importances: Optional[pd.DataFrame]
    classes: list
    n_splits: int
    split_digests: list[str]
    settings: dict

    @property
    def n_repeats(self) -> int:
        return len(self.scores)

    def mean_importances(self, kind: str = "impurity") -> pd.Series:
        """Mean importance per feature over repeats (``kind``: ``"impurity"`` or ``"permutation"``)."""
        return self._imp(kind).mean(axis=0)

    def _imp(self, kind: str) -> pd.DataFrame:
        if kind == "impurity":
            return self.importances
        if kind == "permutation":
            if self.permutation_importances is None:
                raise ValueError("no permutation importances: run cross_validated_scores(..., permutation=True)")
            return self.permutation_importances
        raise ValueError(f"kind must be 'impurity' or 'permutation', got {kind!r}")

    def summary(self) -> dict:
        """Mean, SD and 2.5/97.5 percentiles of each metric over repeats."""
        out = {"n_repeats": self.n_repeats, "n_splits": self.n_splits}
        for m in METRICS:
            v = self.scores[m].to_numpy(float)
            out.update({f"{m}_mean": v.mean(), f"{m}_sd": v.std(ddof=1) if len(v) > 1 else float("nan"),
                        f"{m}_q025": np.quantile(v, 0.025), f"{m}_q975": np.quantile(v, 0.975)})
        return out

    def save(self, folder: PathLike) -> Path:
        """Write the tables (TSV) and the metadata (JSON) to ``folder``; :meth:`load` reads them back."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        self.scores.to_csv(d / "scores.tsv", sep="\t", index=False)
        self.fold_scores.to_csv(d / "fold_scores.tsv", sep="\t", index=False)
        self.importances.to_csv(d / "importances.tsv", sep="\t", index_label="repeat")
        if self.permutation_importances is not None:
            self.permutation_importances.to_csv(d / "permutation_importances.tsv", sep="\t", index_label="repeat")
        meta = {"classes": [str(c) for c in self.classes], "n_splits": self.n_splits,
                "split_digests": self.split_digests, "settings": self.settings}
        (d / "cv.json").write_text(json.dumps(meta, indent=1))  # written last: marks a complete result
        return d

    @classmethod
    def load(cls, folder: PathLike) -> "CVResult":
        d = Path(folder)
        meta = json.loads((d / "cv.json").read_text())
        perm = d / "permutation_importances.tsv"
        return cls(scores=pd.read_csv(d / "scores.tsv", sep="\t"),
                   fold_scores=pd.read_csv(d / "fold_scores.tsv", sep="\t"),
                   importances=pd.read_csv(d / "importances.tsv", sep="\t", index_col="repeat"),
                   permutation_importances=(pd.read_csv(perm, sep="\t", index_col="repeat")
                                            if perm.is_file() else None),
                   classes=meta["classes"], n_splits=meta["n_splits"], split_digests=meta["split_digests"],
                   settings=meta["settings"])


def _effective_splits(y: np.ndarray, groups: Optional[np.ndarray], n_splits: int) -> int:
    if groups is None:
        counts = pd.Series(y).value_counts()
    else:
        counts = pd.DataFrame({"y": y, "g": groups}).drop_duplicates("g")["y"].value_counts()
    smallest = int(counts.min())
    unit = "participant" if groups is not None else "subject"
    if smallest < 2:
        raise ValueError(f"class {counts.idxmin()!r} has {smallest} {unit}; every class needs at least 2 for "
                         "cross-validation (drop it, or merge it into another with classes=)")
    if smallest < n_splits:
        warnings.warn(f"n_splits reduced from {n_splits} to {smallest}: the smallest class ({counts.idxmin()}) has "
                      f"only {smallest} {unit}s", stacklevel=3)
        return smallest
    return n_splits


def _one_repeat(X: np.ndarray, y: np.ndarray, groups: Optional[np.ndarray], n_splits: int, seeds: np.ndarray,
                forest: dict, permutation: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    split_seed, forest_seed = int(seeds[0]), int(seeds[1])
    if groups is None:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=split_seed)
        folds = list(cv.split(X, y))
    else:
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=split_seed)
        folds = list(cv.split(X, y, groups))
    pred = np.empty_like(y)
    fold_of = np.empty(len(y), dtype=np.int16)
    fold_rows, imps, perms = [], [], []
    for f, (tr, te) in enumerate(folds):
        rf = RandomForestClassifier(random_state=forest_seed + f, **forest).fit(X[tr], y[tr])
        p = rf.predict(X[te])
        pred[te], fold_of[te] = p, f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fold without some class (grouped folds) warns; the score stands
            fold_rows.append({"fold": f, "n_train": len(tr), "n_test": len(te), "accuracy": accuracy_score(y[te], p),
                              "balanced_accuracy": balanced_accuracy_score(y[te], p)})
        imps.append(rf.feature_importances_)
        if permutation:
            from sklearn.inspection import permutation_importance

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = permutation_importance(rf, X[te], y[te], scoring="balanced_accuracy", n_repeats=permutation,
                                           random_state=forest_seed + 7919 + f)
            perms.append(r.importances_mean)
    digest = hashlib.sha1(fold_of.tobytes()).hexdigest()[:16]
    return {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
            "folds": fold_rows, "importances": np.mean(imps, axis=0),
            "permutation": np.mean(perms, axis=0) if permutation else None, "digest": digest}


def _run_batch(X, y, groups, n_splits, seeds, forest, permutation, start):
    return [(start + i, _one_repeat(X, y, groups, n_splits, s, forest, permutation)) for i, s in enumerate(seeds)]


def cross_validated_scores(
    X,
    y,
    *,
    n_repeats: int = 1000,
    n_splits: int = 10,
    seed: int = 0,
    n_estimators: int = 100,
    max_features: Union[str, float, int, None] = "sqrt",
    class_weight: Optional[str] = "balanced",
    groups=None,
    permutation: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
    desc: str = "CV repeats",
) -> CVResult:
    """Repeated stratified k-fold cross-validation of a random forest classifier (paper §2.8.4).

    Each repeat draws a new stratified partition into ``n_splits`` folds, trains one forest per fold on the
    other folds, predicts the held-out fold, and scores the pooled out-of-fold predictions: every subject is
    predicted exactly once per repeat. Scores per fold are kept too. The forest is scikit-learn's
    ``RandomForestClassifier`` with ``class_weight="balanced"`` by default: the paper does not say whether it
    weighted classes; balanced accuracy is the metric that matters with unequal classes, and without weights a
    forest leans to the majority class (CN), lowering it. Pass ``class_weight=None`` for an unweighted forest.

    Seeds: one child of ``numpy.random.SeedSequence(seed)`` per repeat gives that repeat's partition seed and
    forest seeds, so the result is identical for a given seed whatever ``n_jobs``, and every image type
    cross-validated with the same subjects, labels and seed gets the same folds (paired comparisons).

    Cost: one forest per fold and repeat: 1000 repeats x 10 folds = 10 000 forests. Forests of 100 trees on
    ~60 subjects take about 0.3 s each on one core (scikit-learn's per-tree overhead dominates), on ~3000
    subjects x 90 features about 3 s: parallelise over repeats with ``n_jobs`` and keep forests small.

    Args:
        X: features ``(n_samples, n_features)`` (a DataFrame keeps the feature names).
        y: class labels ``(n_samples,)``.
        n_repeats: number of repetitions of the k-fold partition.
        n_splits: folds per repeat; reduced, with a warning, to the smallest class size when a class is smaller.
        seed: master seed.
        n_estimators, max_features, class_weight: forest settings.
        groups: optional participant id per sample; sessions of one participant then stay in one fold
            (``StratifiedGroupKFold``). Ignored when every group has one sample.
        permutation: when > 0, also compute permutation importances on each held-out fold (balanced accuracy
            drop, this many permutations per feature); multiplies the cost.
        n_jobs: worker processes over repeats (``-1``: all cores).
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        A :class:`CVResult`.
    """
    names = list(X.columns) if isinstance(X, pd.DataFrame) else [f"x{i}" for i in range(np.shape(X)[1])]
    Xa = np.asarray(X, dtype=float)
    ya = np.asarray(y)
    if Xa.ndim != 2 or len(Xa) != len(ya):
        raise ValueError(f"X must be (n_samples, n_features) with one label per sample; got X {Xa.shape}, "
                         f"y {ya.shape}")
    if not np.isfinite(Xa).all():
        raise ValueError("X holds NaN or infinite values; drop or impute them first")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    g = None if groups is None else np.asarray(groups)
    if g is not None and len(np.unique(g)) == len(g):
        g = None
    k = _effective_splits(ya, g, int(n_splits))
    seeds = np.array([c.generate_state(2) for c in np.random.SeedSequence(int(seed)).spawn(int(n_repeats))],
                     dtype=np.int64) % (2**31 - 10**6)  # room for per-fold forest seeds below 2**31
    forest = dict(n_estimators=int(n_estimators), max_features=max_features, class_weight=class_weight, n_jobs=1)
    from tqdm.auto import tqdm

    bar = tqdm(total=int(n_repeats), desc=desc, unit="repeat", disable=not progress)
    results: dict[int, dict] = {}
    workers = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if workers == 1 or n_repeats == 1:
        for i, s in enumerate(seeds):
            results[i] = _one_repeat(Xa, ya, g, k, s, forest, int(permutation))
            bar.update(1)
    else:
        from joblib import Parallel, delayed

        size = max(1, min(50, math.ceil(n_repeats / (workers * 4))))
        starts = range(0, int(n_repeats), size)
        par = Parallel(n_jobs=workers, return_as="generator_unordered")
        for batch in par(delayed(_run_batch)(Xa, ya, g, k, seeds[s:s + size], forest, int(permutation), s)
                         for s in starts):
            for i, r in batch:
                results[i] = r
            bar.update(len(batch))
    bar.close()
    order = range(int(n_repeats))
    scores = pd.DataFrame({"repeat": list(order), **{m: [results[i][m] for i in order] for m in METRICS}})
    fold_scores = pd.DataFrame([{"repeat": i, **row} for i in order for row in results[i]["folds"]])
    imps = pd.DataFrame([results[i]["importances"] for i in order], columns=names).rename_axis("repeat")
    perm = (pd.DataFrame([results[i]["permutation"] for i in order], columns=names).rename_axis("repeat")
            if permutation else None)
    settings = dict(n_repeats=int(n_repeats), n_splits_requested=int(n_splits), seed=int(seed),
                    n_estimators=int(n_estimators), max_features=max_features, class_weight=class_weight,
                    grouped=g is not None, permutation=int(permutation), n_samples=int(len(ya)),
                    features=names)
    return CVResult(scores=scores, fold_scores=fold_scores, importances=imps, permutation_importances=perm,
                    classes=sorted(pd.unique(ya).tolist()), n_splits=k,
                    split_digests=[results[i]["digest"] for i in order], settings=settings)


def fingerprint(X, y, **settings) -> str:
    """A digest of the data and settings of a cross-validation, to tell whether a saved result still holds."""
    h = hashlib.sha1()
    if isinstance(X, pd.DataFrame):
        h.update(json.dumps([list(map(str, X.columns)), list(map(str, X.index))]).encode())
    h.update(np.ascontiguousarray(np.asarray(X, dtype=float)).tobytes())
    h.update(json.dumps([str(v) for v in np.asarray(y)]).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def cached_cross_validated_scores(X, y, folder: PathLike, **kwargs) -> tuple[CVResult, bool]:
    """:func:`cross_validated_scores`, saved to ``folder`` and reused when data and settings are unchanged.

    Returns:
        ``(result, reused)``; ``reused`` is True when a complete earlier result with the same fingerprint
        (data, labels and every argument but ``n_jobs``/``progress``/``desc``) was loaded instead of computed.
    """
    d = Path(folder)
    key = {k: v for k, v in kwargs.items() if k not in ("n_jobs", "progress", "desc")}
    if key.get("groups") is not None:
        key["groups"] = [str(v) for v in np.asarray(key["groups"])]
    fp = fingerprint(X, y, **key)
    meta = d / "cv.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text())["settings"].get("fingerprint") == fp:
                return CVResult.load(d), True
        except (ValueError, KeyError, OSError):
            pass  # an unreadable earlier result is recomputed
    res = cross_validated_scores(X, y, **kwargs)
    res.settings["fingerprint"] = fp
    res.save(d)
    return res, False


# ------------------------------------------------------------------------------------------ comparisons


def _as_result_map(results: Mapping[str, CVResult], baseline: str) -> dict[str, CVResult]:
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} not among the image types ({', '.join(results)})")
    return dict(results)


def compare_image_types(scores_by_type: Mapping[str, CVResult], baseline: str = "3T",
                        metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Each image type's cross-validated scores against the baseline's, with a corrected paired test.

    **Why not a t-test over the repeats.** The 1000 repeats reuse the same subjects: their scores are strongly
    correlated, and their number is chosen by the analyst, so a t-test (or a Mann–Whitney test) treating them as
    1000 independent samples has a p-value that shrinks towards 0 as repeats are added, whatever the real
    difference. The paper's "did not differ significantly" needs a test whose variance accounts for the overlap
    of training and test sets.

    **The test.** The corrected repeated k-fold t-test (Nadeau & Bengio 2003, *Machine Learning* 52:239; in its
    repeated k-fold form, Bouckaert & Frank 2004, PAKDD): with both types evaluated on the *same* folds (same
    subjects and seed, checked through the split digests), take the per-fold score differences
    ``d_ij`` (repeat i, fold j; n = r·k of them), their mean ``d̄`` and variance ``s²``, and

        t = d̄ / sqrt((1/n + n_test/n_train) · s²),   df = n − 1,

    where the ``n_test/n_train`` term (≈ 1/(k−1)) inflates the naive ``1/n`` for the correlation between
    resamples. It is conservative and its p-value no longer falls just because repeats are added.

    **Effect size and description.** Alongside the test: each type's mean score (per-repeat pooled scores, the
    numbers the boxplots show), the mean per-repeat difference (the effect size, in score units), the 2.5–97.5
    percentiles of the per-repeat differences (how much the difference moves with the partition; not a
    confidence interval for new data), and the proportions of repeats in which the type beats, ties or loses to
    the baseline. BH-adjusted p-values (``p_bh``) run over every row of the table.

    Args:
        scores_by_type: image type -> :class:`CVResult` (from the same subjects and seed).
        baseline: the reference type (``"3T"``).
        metrics: score columns to compare.

    Returns:
        One row per (image type, metric): ``image_type``, ``baseline``, ``metric``, ``mean``, ``mean_baseline``,
        ``mean_diff``, ``diff_q025``, ``diff_q975``, ``prop_better``, ``prop_tied``, ``prop_worse``,
        ``t_corrected``, ``df``, ``p_corrected``, ``p_bh``, ``n_repeats``, ``n_splits``.

    Raises:
        ValueError: the baseline is missing, or a type's folds differ from the baseline's (not paired).
    """
    res = _as_result_map(scores_by_type, baseline)
    base = res[baseline]
    rows = []
    for t, r in res.items():
        if t == baseline:
            continue
        if r.n_repeats != base.n_repeats or r.split_digests != base.split_digests:
            raise ValueError(f"{t} and {baseline} were not cross-validated on the same folds (different subjects, "
                             "seed, n_repeats or n_splits); use volume_features(require_all_types=True) and the same "
                             "seed for every type")
        for m in metrics:
            a, b = r.scores[m].to_numpy(float), base.scores[m].to_numpy(float)
            d = a - b
            fa = r.fold_scores.sort_values(["repeat", "fold"])
            fb = base.fold_scores.sort_values(["repeat", "fold"])
            fd = fa[m].to_numpy(float) - fb[m].to_numpy(float)
            n = len(fd)
            ratio = float(fa["n_test"].mean() / fa["n_train"].mean())
            s2 = fd.var(ddof=1) if n > 1 else float("nan")
            if not n > 1 or s2 <= 1e-24:
                tstat = float("nan") if not n > 1 or abs(fd.mean()) < 1e-12 else float(np.sign(fd.mean()) * np.inf)
                p = float("nan") if not n > 1 else (1.0 if abs(fd.mean()) < 1e-12 else 0.0)
            else:
                tstat = float(fd.mean() / math.sqrt((1.0 / n + ratio) * s2))
                p = float(2 * sps.t.sf(abs(tstat), n - 1))
            tol = 1e-12
            rows.append({"image_type": t, "baseline": baseline, "metric": m, "mean": a.mean(),
                         "mean_baseline": b.mean(), "mean_diff": d.mean(), "diff_q025": np.quantile(d, 0.025),
                         "diff_q975": np.quantile(d, 0.975),
                         "prop_better": float((d > tol).mean()), "prop_tied": float((np.abs(d) <= tol).mean()),
                         "prop_worse": float((d < -tol).mean()), "t_corrected": tstat, "df": n - 1,
                         "p_corrected": p, "n_repeats": r.n_repeats, "n_splits": r.n_splits})
    cols = ["image_type", "baseline", "metric", "mean", "mean_baseline", "mean_diff", "diff_q025", "diff_q975",
            "prop_better", "prop_tied", "prop_worse", "t_corrected", "df", "p_corrected", "n_repeats", "n_splits"]
    out = pd.DataFrame(rows, columns=cols)
    from .stats import benjamini_hochberg

    out.insert(out.columns.get_loc("p_corrected") + 1, "p_bh", benjamini_hochberg(out["p_corrected"].to_numpy(float)))
    return out


def _importance_frames(imp_by_type, kind: str) -> dict[str, pd.DataFrame]:
    out = {}
    for t, v in imp_by_type.items():
        if isinstance(v, CVResult):
            out[t] = v._imp(kind)
        elif isinstance(v, pd.Series):
            out[t] = v.to_frame().T
        else:
            out[t] = pd.DataFrame(v)
    return out


def importance_deviation(imp_by_type, baseline: str = "3T", kind: str = "impurity") -> pd.DataFrame:
    """Per feature, each image type's mean importance minus the baseline's (Figure 6C analogue).

    Args:
        imp_by_type: image type -> :class:`CVResult`, or a per-repeat importance table (repeats x features), or a
            Series of mean importances.
        baseline: the reference type.
        kind: ``"impurity"`` (mean decrease in impurity, the paper's) or ``"permutation"``.

    Returns:
        Tidy table, one row per (feature, image type), in the baseline's feature order: ``feature``,
        ``image_type``, ``importance`` (mean over repeats), ``importance_baseline``, ``deviation``
        (``importance - importance_baseline``; 0 for the baseline itself) and, when per-repeat importances of
        equal length exist, ``deviation_q025``/``deviation_q975``: percentiles of the per-repeat differences
        (repeat i of both types used the same folds), a band of how much the deviation moves with the partition.
    """
    frames = _importance_frames(imp_by_type, kind)
    if baseline not in frames:
        raise ValueError(f"baseline {baseline!r} not among the image types ({', '.join(frames)})")
    base = frames[baseline]
    feats = list(base.columns)
    rows = []
    for t, f in frames.items():
        missing = [c for c in feats if c not in f.columns]
        if missing:
            raise ValueError(f"{t} lacks feature(s) {', '.join(missing)} of the baseline")
        paired = len(f) == len(base) and len(f) > 1
        for c in feats:
            a, b = f[c].to_numpy(float), base[c].to_numpy(float)
            row = {"feature": c, "image_type": t, "importance": a.mean(), "importance_baseline": b.mean(),
                   "deviation": a.mean() - b.mean()}
            if paired:
                dd = a - b
                row.update(deviation_q025=np.quantile(dd, 0.025), deviation_q975=np.quantile(dd, 0.975))
            else:
                row.update(deviation_q025=np.nan, deviation_q975=np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def score_table(scores_by_type: Mapping[str, CVResult]) -> pd.DataFrame:
    """Long table of per-repeat scores: ``image_type``, ``repeat``, ``accuracy``, ``balanced_accuracy``."""
    return pd.concat([r.scores.assign(image_type=t) for t, r in scores_by_type.items()], ignore_index=True)[
        ["image_type", "repeat", *METRICS]]


def summary_table(scores_by_type: Mapping[str, CVResult]) -> pd.DataFrame:
    """One row per image type: :meth:`CVResult.summary` (mean, SD, 2.5/97.5 percentiles per metric)."""
    return pd.DataFrame([{"image_type": t, **r.summary()} for t, r in scores_by_type.items()])


# ------------------------------------------------------------------------------------------------- plots


def plot_accuracy_distributions(scores_by_type: Mapping[str, CVResult], *, metrics: Sequence[str] = METRICS,
                                order: Optional[Sequence[str]] = None, labels: Optional[Mapping[str, str]] = None,
                                n_classes: Optional[int] = None, majority: Optional[float] = None, axes=None):
    """Figure 6A analogue: violins with boxplots of each metric over repeats, one panel per metric.

    Chance lines: balanced accuracy ``1 / n_classes`` (any classifier that ignores the features); accuracy, the
    majority-class share ``majority`` (always answering the largest class), when given.

    Args:
        scores_by_type: image type -> :class:`CVResult`.
        metrics: panels.
        order: image types on the x axis (default: the mapping's order).
        labels: display names of the image types.
        n_classes: number of classes (default: from the first result).
        majority: proportion of the largest class.
    """
    import matplotlib.pyplot as plt

    order = list(order or scores_by_type)
    labels = dict(labels or {})
    n_classes = n_classes or len(next(iter(scores_by_type.values())).classes)
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 1.5 * len(order) * len(metrics), 3.6),
                                 squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    for ax, m in zip(axes, metrics):
        data = [scores_by_type[t].scores[m].to_numpy(float) for t in order]
        pos = np.arange(1, len(order) + 1)
        if all(len(d) > 1 and np.ptp(d) > 0 for d in data):
            parts = ax.violinplot(data, positions=pos, showextrema=False, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.35)
        ax.boxplot(data, positions=pos, widths=0.25, showfliers=False, medianprops={"color": "k"})
        chance = 1.0 / n_classes if m == "balanced_accuracy" else majority
        if chance is not None:
            what = f"chance (1/{n_classes})" if m == "balanced_accuracy" else "majority class"
            ax.axhline(chance, color="grey", ls="--", lw=1, label=what)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(pos, [labels.get(t, t) for t in order], rotation=20, ha="right", fontsize=8)
        ax.set_title(m.replace("_", " "))
        ax.set_ylabel("score")
        lo = min([chance or 1.0] + [float(np.min(d)) for d in data])
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(float(np.max(d)) for d in data) + 0.05))
    fig.tight_layout()
    return fig


def plot_importances(imp_by_type, *, baseline: str = "3T", kind: str = "impurity", top: Optional[int] = None,
                     labels: Optional[Mapping[str, str]] = None, axes=None):
    """Figure 6B/C analogue: the baseline's mean importance per feature, and each type's deviation from it.

    Left panel: horizontal bars of the baseline's mean importance, features sorted by it (largest on top).
    Right panel: per feature, horizontal bars of each other type's importance minus the baseline's, with the
    2.5–97.5 percentile band of the per-repeat differences as error bars when available.

    Args:
        imp_by_type: as for :func:`importance_deviation`.
        baseline: the reference type.
        kind: ``"impurity"`` or ``"permutation"``.
        top: show only the ``top`` features of the baseline (default all).
        labels: display names of the image types.
    """
    import matplotlib.pyplot as plt

    dev = importance_deviation(imp_by_type, baseline=baseline, kind=kind)
    labels = dict(labels or {})
    base = dev[dev["image_type"] == baseline].set_index("feature")["importance"].sort_values(ascending=False)
    feats = list(base.index[:top] if top else base.index)
    others = [t for t in dict.fromkeys(dev["image_type"]) if t != baseline]
    n_panels = 2 if others else 1
    if axes is None:
        fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels + 1.5, 0.9 + 0.22 * len(feats)),
                                 squeeze=False, sharey=True)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    ypos = np.arange(len(feats))[::-1]
    axes[0].barh(ypos, base.reindex(feats).to_numpy(), color="tab:red", alpha=0.75)
    axes[0].set_yticks(ypos, feats, fontsize=7)
    axes[0].set_xlabel(f"{'mean decrease in impurity' if kind == 'impurity' else 'permutation importance'}")
    axes[0].set_title(f"{labels.get(baseline, baseline)}: importance", fontsize=9)
    if others:
        ax = axes[1]
        h = 0.8 / len(others)
        for i, t in enumerate(others):
            d = dev[dev["image_type"] == t].set_index("feature").reindex(feats)
            y = ypos + 0.4 - h * (i + 0.5)
            err = None
            if d["deviation_q025"].notna().all():
                err = np.vstack([d["deviation"] - d["deviation_q025"], d["deviation_q975"] - d["deviation"]])
                err = np.clip(err, 0, None)
            ax.barh(y, d["deviation"].to_numpy(), height=h, xerr=err, label=labels.get(t, t),
                    error_kw={"lw": 0.6, "capsize": 0, "ecolor": "0.4"})
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"importance minus {labels.get(baseline, baseline)}'s")
        ax.set_title("deviation from " + labels.get(baseline, baseline), fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
