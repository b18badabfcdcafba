"""Input tables and features of the diagnosis analysis: regional volumes joined with the participants table.

:func:`read_volumes_table` / :func:`validate_volumes` read and check a table with one row per ``key, image_type``
and one column per region in mL; :func:`volume_features` joins it with age, sex and diagnosis (the paper's features),
optionally adds or divides by head size, keeps or sums hemispheres (:func:`combine_hemispheres`) and maps diagnoses to classes (:class:`FeatureSet`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import pandas as pd

from ...data import layout

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
        total_column: the head-size column used (None when neither ``normalise`` nor ``head_size_feature`` used
            one).
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


def _rows_to_analyse(volumes: pd.DataFrame, regions: Optional[Sequence[str]],
                     image_types: Optional[Sequence[str]], normalise: Optional[str],
                     total_column: Optional[str], head_size_feature: bool
                     ) -> tuple[pd.DataFrame, list[str], Optional[str]]:
    """The validated rows of the wanted image types, their region columns and the head-size column (or None)."""
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
    if head_size_feature and total is None:
        raise VolumesTableError(
            f"head_size_feature=True needs a head-size column ({', '.join(TOTAL_COLUMNS)}) or total_column=; "
            "pass head_size_feature=False to leave head size out")
    return vol, [r for r in region_cols if r != total], total


def _drop_unusable_rows(vol: pd.DataFrame, parts: pd.DataFrame, region_cols: list[str], total: Optional[str],
                        normalise: Optional[str], head_size_feature: bool, dx_to_class: dict[str, str],
                        require_all_types: bool, on_missing_participant: str,
                        verbose: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows that can be analysed (with ``participant_id`` and ``diagnosis`` added) and the dropped ones with why."""
    wanted_types = list(dict.fromkeys(vol["image_type"]))
    dropped: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str):
        nonlocal vol
        if mask.any():
            dropped.append(vol.loc[mask, ["key", "image_type"]].assign(reason=reason))
            if verbose:
                print(f"dropped {int(mask.sum())} row(s) ({vol.loc[mask, 'key'].nunique()} key(s)): {reason}")
            vol = vol.loc[~mask]

    vol = vol.assign(participant_id=vol["key"].map(participant_of))
    no_row = ~vol["participant_id"].isin(parts.index)
    if no_row.any() and on_missing_participant == "raise":
        miss = sorted(vol.loc[no_row, "participant_id"].unique())
        raise ValueError(f"{len(miss)} participant(s) of the volumes table have no row in the participants table: "
                         f"{', '.join(miss[:10])}{' ...' if len(miss) > 10 else ''} (add them, or pass "
                         "on_missing_participant='drop')")
    drop(no_row, "no row in the participants table")
    used_total = [total] if total and (normalise == "icv" or head_size_feature) else []
    drop(vol[region_cols + used_total].isna().any(axis=1), "missing volume(s)")
    if normalise == "icv":
        drop(~(vol[total] > 0), f"head-size column {total} is not positive")
    vol = vol.assign(diagnosis=vol["participant_id"].map(parts["diagnosis"]))
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
    drops = (pd.concat(dropped, ignore_index=True) if dropped
             else pd.DataFrame(columns=["key", "image_type", "reason"]))
    return vol, drops


def _feature_table(vol: pd.DataFrame, parts: pd.DataFrame, region_cols: list[str], total: Optional[str],
                   normalise: Optional[str], hemispheres: str, head_size_feature: bool, add_age_sex: bool,
                   dx_to_class: dict[str, str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The features table (ids, ``label`` and feature columns), the feature names and the region names."""
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
    if total and head_size_feature:
        feats[total] = vol[total].astype(float)
        region_names = region_names + [total]
    features = list(region_names)
    if add_age_sex:
        feats["age"] = feats["participant_id"].map(parts["age"]).astype(float)
        feats["sex_male"] = (feats["participant_id"].map(parts["sex"]) == "M").astype(int)
        features += list(DEMOGRAPHICS)
    return feats, features, region_names


def volume_features(
    volumes: pd.DataFrame,
    participants,
    *,
    regions: Optional[Sequence[str]] = None,
    image_types: Optional[Sequence[str]] = None,
    hemispheres: str = "separate",
    add_age_sex: bool = True,
    normalise: Optional[str] = None,
    total_column: Optional[str] = None,
    head_size_feature: bool = False,
    classes=PAPER_CLASSES,
    require_all_types: bool = True,
    on_missing_participant: str = "raise",
    verbose: bool = True,
) -> FeatureSet:
    """Join regional volumes with the participants table into features and diagnosis classes.

    **The paper's features** (§2.8.4, the defaults): the regional volumes as the segmentation measured them (mL) with
    age and sex, nothing else. A head-size column of the table (the first of :data:`TOTAL_COLUMNS` present, or
    ``total_column``) is set aside, not a feature, unless one of two named options asks for it:

    - ``normalise="icv"`` makes each region its percentage of the head-size column of the same row (the ratio
      method). Prefer an intracranial volume (``eTIV`` from FreeSurfer/FastSurfer); :func:`synth7t.segment.segment_batch`
      writes ``Total-Brain`` (every labelled voxel, tissue *and* ventricles), which tracks head size better than brain
      tissue alone because ventricles widen as tissue shrinks, but it still falls slightly with atrophy. The ratio is
      computed per image type from that type's own segmentation, as a user of the synthetic images would. A random
      forest is invariant to monotone rescaling of a feature, so the choice matters only through the per-row
      division.
    - ``head_size_feature=True`` adds the head-size column itself as a feature (mL), so the forest sees global size.

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
        normalise: None (the paper: volumes in mL) or ``"icv"`` (ratio to the head-size column, in %).
        total_column: the head-size column; default: detected from :data:`TOTAL_COLUMNS`.
        head_size_feature: add the head-size column as a feature (mL); False (the paper) sets it aside.
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
    vol, region_cols, total = _rows_to_analyse(volumes, regions, image_types, normalise, total_column,
                                               head_size_feature)
    parts = _read_participants_any(participants)
    vol, drops = _drop_unusable_rows(vol, parts, region_cols, total, normalise, head_size_feature, dx_to_class,
                                     require_all_types, on_missing_participant, verbose)
    feats, features, region_names = _feature_table(vol, parts, region_cols, total, normalise, hemispheres,
                                                   head_size_feature, add_age_sex, dx_to_class)
    present = [c for c in class_names if c in set(feats["label"])]
    if len(present) < 2:
        raise ValueError(f"fewer than 2 classes left ({', '.join(present) or 'none'}); classes were "
                         f"{class_names}")
    type_order = list(dict.fromkeys(volumes["image_type"].astype(str)))
    feats["_t"] = feats["image_type"].map({t: i for i, t in enumerate(type_order)})
    feats = feats.sort_values(["_t", "key"]).drop(columns="_t").reset_index(drop=True)
    used = total if (normalise == "icv" or head_size_feature) else None
    return FeatureSet(table=feats, features=features, regions=region_names, classes=present,
                      total_column=used, normalise=normalise, dropped=drops)
