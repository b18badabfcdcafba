"""Paired 3T/7T dataset layout: discovery, participants table, artefact table, train/test split.

The layout is BIDS-like::

    <root>/
      participants.tsv                 participant_id  age  sex  diagnosis
      artefacts.tsv                    (optional) participant_id  [session]  first_slice  last_slice  [note]
      sub-<id>/[ses-<s>/]anat/
        sub-<id>[_ses-<s>]_acq-3T_T1w.nii.gz
        sub-<id>[_ses-<s>]_acq-7T_T1w.nii.gz
        sub-<id>[_ses-<s>]_acq-3T_desc-brain_mask.nii.gz   (optional)
        sub-<id>[_ses-<s>]_acq-7T_desc-brain_mask.nii.gz   (optional)
        sub-<id>[_ses-<s>]_acq-7T_dseg.nii.gz              (optional label map, e.g. the demo's ground truth)

Diagnoses are ``CN``, ``SCD``, ``MCI``, ``AD`` and ``dementia``; they group as *unimpaired* (CN, SCD) and
*impaired* (MCI and dementia, AD included). Artefact rows give, per subject, inclusive ranges of axial 7T
slices to exclude; slice indices count along the third voxel axis of the 7T image **after reorientation
to RAS** (index 0 is the most inferior slice), so they do not depend on how the scanner stored the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

PathLike = Union[str, Path]

DIAGNOSES = ("CN", "SCD", "MCI", "AD", "dementia")
UNIMPAIRED = ("CN", "SCD")
IMPAIRED = ("MCI", "AD", "dementia")
SEXES = ("F", "M")
_SEX_ALIASES = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
_DX_LOOKUP = {d.lower(): d for d in DIAGNOSES}

PARTICIPANTS_FILE = "participants.tsv"
ARTEFACTS_FILE = "artefacts.tsv"
SPLIT_FILE = "split.tsv"

_IMAGE_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)(?:_(?P<ses>ses-[A-Za-z0-9]+))?_acq-(?P<acq>3T|7T)_"
    r"(?P<kind>T1w|desc-brain_mask|dseg)\.nii(?:\.gz)?$"
)


class LayoutError(ValueError):
    """A dataset that does not follow the layout; the message lists every problem found."""


def normalise_participant_id(value) -> str:
    """``"001"`` and ``"sub-001"`` both become ``"sub-001"``."""
    s = str(value).strip()
    return s if s.startswith("sub-") else f"sub-{s}"


def normalise_session(value) -> str:
    """``"1"`` and ``"ses-1"`` both become ``"ses-1"``."""
    s = str(value).strip()
    return s if s.startswith("ses-") else f"ses-{s}"


def normalise_sex(value) -> str:
    """Map ``F``/``female``/``M``/``male`` (any case) to ``"F"``/``"M"``; anything else is a ValueError."""
    s = str(value).strip().lower()
    if s not in _SEX_ALIASES:
        raise ValueError(f"sex must be one of F, M (or female, male), got {value!r}")
    return _SEX_ALIASES[s]


def normalise_diagnosis(value) -> str:
    """Map a diagnosis to its canonical spelling; unknown values are a ValueError."""
    s = str(value).strip().lower()
    if s not in _DX_LOOKUP:
        raise ValueError(f"diagnosis must be one of {', '.join(DIAGNOSES)}, got {value!r}")
    return _DX_LOOKUP[s]


def is_impaired(diagnosis: str) -> bool:
    """True for MCI, AD and dementia; False for CN and SCD."""
    return normalise_diagnosis(diagnosis) in IMPAIRED


@dataclass
class Subject:
    """One paired acquisition (a participant, optionally a session).

    Attributes:
        participant_id: ``sub-<id>``.
        session: ``ses-<s>`` or ``None``.
        t3: path of the 3T T1w image.
        t7: path of the 7T T1w image (``None`` for a lone 3T at inference time).
        t3_mask, t7_mask, t7_labels: optional brain masks and label map.
        age, sex, diagnosis: from ``participants.tsv``.
        artefact_slices: inclusive ``(first, last)`` axial 7T slice ranges to exclude.
    """

    participant_id: str
    session: Optional[str]
    t3: Optional[Path]
    t7: Optional[Path]
    age: float = float("nan")
    sex: str = ""
    diagnosis: str = ""
    t3_mask: Optional[Path] = None
    t7_mask: Optional[Path] = None
    t7_labels: Optional[Path] = None
    artefact_slices: list[tuple[int, int]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``sub-<id>`` or ``sub-<id>_ses-<s>``: the BIDS entity prefix of this acquisition's files."""
        return self.participant_id if self.session is None else f"{self.participant_id}_{self.session}"

    @property
    def impaired(self) -> bool:
        return self.diagnosis in IMPAIRED

    def excluded_slices(self) -> np.ndarray:
        """Sorted unique axial slice indices listed in the artefact table."""
        idx = [np.arange(a, b + 1) for a, b in self.artefact_slices]
        return np.unique(np.concatenate(idx)) if idx else np.zeros(0, dtype=int)


@dataclass
class Dataset:
    """A discovered paired dataset. Iterate over it for :class:`Subject` objects."""

    root: Path
    subjects: list[Subject]
    participants: pd.DataFrame

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def __getitem__(self, key: Union[int, str]) -> Subject:
        if isinstance(key, int):
            return self.subjects[key]
        for s in self.subjects:
            if key in (s.key, s.participant_id):
                return s
        raise KeyError(f"no subject {key!r} in {self.root}")

    def summary(self) -> pd.DataFrame:
        """One row per acquisition: ids, demographics, which files exist, number of excluded slices."""
        rows = []
        for s in self.subjects:
            rows.append(
                dict(
                    key=s.key, participant_id=s.participant_id, session=s.session or "", age=s.age, sex=s.sex,
                    diagnosis=s.diagnosis, group="impaired" if s.impaired else "unimpaired",
                    has_3t=s.t3 is not None, has_7t=s.t7 is not None, has_7t_mask=s.t7_mask is not None,
                    has_labels=s.t7_labels is not None, n_artefact_slices=int(s.excluded_slices().size),
                )
            )
        return pd.DataFrame(rows)

    def describe(self) -> str:
        """A short human-readable account of what discovery found."""
        df = self.summary()
        if df.empty:
            return f"{self.root}: no subjects"
        dx = ", ".join(f"{k} {v}" for k, v in df["diagnosis"].value_counts().reindex(DIAGNOSES).dropna()
                       .astype(int).items())
        sex = ", ".join(f"{k} {v}" for k, v in df["sex"].value_counts().sort_index().items())
        n_art = int((df["n_artefact_slices"] > 0).sum())
        return (
            f"{self.root}: {len(df)} paired acquisitions from {df['participant_id'].nunique()} participants; "
            f"age {df['age'].mean():.1f} ± {df['age'].std(ddof=0):.1f} (range {df['age'].min():.0f}-"
            f"{df['age'].max():.0f}); sex {sex}; diagnosis {dx}; "
            f"{int((df['group'] == 'impaired').sum())} impaired; {n_art} with 7T artefact slices"
        )


def read_participants(path: PathLike) -> pd.DataFrame:
    """Read and validate ``participants.tsv``.

    Returns:
        A DataFrame indexed by ``participant_id`` with columns ``age`` (float), ``sex`` (``F``/``M``),
        ``diagnosis`` (canonical spelling) and ``impaired`` (bool); extra columns are kept.

    Raises:
        LayoutError: listing every bad row (missing columns, duplicate ids, an age that is not a positive
            number, an unknown sex or diagnosis).
    """
    p = Path(path)
    if not p.is_file():
        raise LayoutError(f"{p}: participants table not found (expected columns participant_id, age, sex, diagnosis)")
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in ("participant_id", "age", "sex", "diagnosis") if c not in df.columns]
    if missing:
        raise LayoutError(f"{p}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
    problems: list[str] = []
    ids, ages, sexes, dxs = [], [], [], []
    for i, row in df.iterrows():
        line = i + 2  # header is line 1
        pid = normalise_participant_id(row["participant_id"]) if row["participant_id"].strip() else ""
        if not pid:
            problems.append(f"line {line}: empty participant_id")
        try:
            age = float(row["age"])
            if not np.isfinite(age) or not (0 < age < 130):
                raise ValueError
        except ValueError:
            problems.append(f"line {line} ({pid}): age must be a number between 0 and 130, got {row['age']!r}")
            age = float("nan")
        try:
            sex = normalise_sex(row["sex"])
        except ValueError as exc:
            problems.append(f"line {line} ({pid}): {exc}")
            sex = ""
        try:
            dx = normalise_diagnosis(row["diagnosis"])
        except ValueError as exc:
            problems.append(f"line {line} ({pid}): {exc}")
            dx = ""
        ids.append(pid), ages.append(age), sexes.append(sex), dxs.append(dx)
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        problems.append(f"duplicate participant_id: {', '.join(dup)}")
    if problems:
        raise LayoutError(f"{p}: " + "; ".join(problems))
    out = df.drop(columns=["participant_id", "age", "sex", "diagnosis"]).copy()
    out.insert(0, "participant_id", ids)
    out.insert(1, "age", ages)
    out.insert(2, "sex", sexes)
    out.insert(3, "diagnosis", dxs)
    out["impaired"] = [d in IMPAIRED for d in dxs]
    return out.set_index("participant_id")


def read_artefacts(path: PathLike) -> pd.DataFrame:
    """Read and validate the artefact table (``participant_id, [session,] first_slice, last_slice[, note]``).

    Returns:
        A DataFrame with integer ``first_slice <= last_slice`` (inclusive, axial 7T slices in RAS order)
        and a ``session`` column (empty string when absent).
    """
    p = Path(path)
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in ("participant_id", "first_slice", "last_slice") if c not in df.columns]
    if missing:
        raise LayoutError(f"{p}: missing column(s) {', '.join(missing)}")
    if "session" not in df.columns:
        df["session"] = ""
    problems = []
    firsts, lasts = [], []
    for i, row in df.iterrows():
        try:
            a, b = int(row["first_slice"]), int(row["last_slice"])
            if a < 0 or b < a:
                raise ValueError
        except ValueError:
            problems.append(
                f"line {i + 2} ({row['participant_id']}): first_slice and last_slice must be integers with "
                f"0 <= first <= last, got {row['first_slice']!r}, {row['last_slice']!r}"
            )
            a, b = -1, -1
        firsts.append(a), lasts.append(b)
    if problems:
        raise LayoutError(f"{p}: " + "; ".join(problems))
    df["participant_id"] = [normalise_participant_id(x) for x in df["participant_id"]]
    df["session"] = ["" if s.strip() in ("", "n/a") else normalise_session(s) for s in df["session"]]
    df["first_slice"], df["last_slice"] = firsts, lasts
    return df


def write_artefacts(path: PathLike, rows: Sequence[dict]) -> Path:
    """Write an artefact table from dicts with ``participant_id, first_slice, last_slice[, session, note]``."""
    df = pd.DataFrame(list(rows), columns=["participant_id", "session", "first_slice", "last_slice", "note"])
    df["session"] = df["session"].fillna("n/a").replace("", "n/a")
    df["note"] = df["note"].fillna("")
    p = Path(path)
    df.to_csv(p, sep="\t", index=False)
    return p


def _scan_images(root: Path) -> dict[tuple[str, Optional[str]], dict[str, Path]]:
    found: dict[tuple[str, Optional[str]], dict[str, Path]] = {}
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        anat_dirs = [sub_dir / "anat"] + sorted(d / "anat" for d in sub_dir.glob("ses-*") if d.is_dir())
        for anat in anat_dirs:
            if not anat.is_dir():
                continue
            for f in sorted(anat.iterdir()):
                m = _IMAGE_RE.match(f.name)
                if not m:
                    continue
                if m["sub"] != sub_dir.name or (m["ses"] and m["ses"] != anat.parent.name):
                    continue  # a file in the wrong folder is not part of the layout
                key = (m["sub"], m["ses"])
                slot = {"T1w": m["acq"].lower(), "desc-brain_mask": f"{m['acq'].lower()}_mask",
                        "dseg": f"{m['acq'].lower()}_labels"}[m["kind"]]
                found.setdefault(key, {})[slot] = f
    return found


def discover(
    root: PathLike, *, require_7t: bool = True, on_error: str = "raise", verbose: bool = False
) -> Dataset:
    """Find and validate every paired acquisition under ``root``.

    Args:
        root: dataset folder in the layout of this module.
        require_7t: when False, a 3T without its 7T is accepted (inference-only datasets).
        on_error: ``"raise"`` (default) raises one :class:`LayoutError` listing every problem; ``"skip"``
            leaves out the acquisitions with problems and warns.
        verbose: print :meth:`Dataset.describe`.

    Raises:
        LayoutError: a 3T without its 7T (or the reverse), an acquisition whose participant has no row in
            ``participants.tsv``, a bad participants or artefact table, artefact rows for unknown subjects,
            or no acquisition at all.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: dataset folder not found")
    participants = read_participants(root / PARTICIPANTS_FILE)
    art_path = root / ARTEFACTS_FILE
    artefacts = read_artefacts(art_path) if art_path.is_file() else None
    found = _scan_images(root)
    problems: list[str] = []
    bad_keys: set = set()
    subjects: list[Subject] = []
    for (sub, ses), files in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        key = sub if ses is None else f"{sub}_{ses}"
        if "3t" not in files and "7t" not in files:
            continue  # masks or labels alone: nothing to pair
        if "3t" not in files:
            problems.append(f"{key}: 7T image without its 3T partner ({files['7t'].name})")
            bad_keys.add(key)
            continue
        if "7t" not in files and require_7t:
            problems.append(f"{key}: 3T image without its 7T partner ({files['3t'].name})")
            bad_keys.add(key)
            continue
        if sub not in participants.index:
            problems.append(f"{key}: no row for {sub} in {PARTICIPANTS_FILE}")
            bad_keys.add(key)
            continue
        row = participants.loc[sub]
        subjects.append(
            Subject(
                participant_id=sub, session=ses, t3=files.get("3t"), t7=files.get("7t"), age=float(row["age"]),
                sex=str(row["sex"]), diagnosis=str(row["diagnosis"]), t3_mask=files.get("3t_mask"),
                t7_mask=files.get("7t_mask"), t7_labels=files.get("7t_labels"),
            )
        )
    if artefacts is not None:
        by_key = {s.key: s for s in subjects}
        by_sub: dict[str, list[Subject]] = {}
        for s in subjects:
            by_sub.setdefault(s.participant_id, []).append(s)
        for _, row in artefacts.iterrows():
            sub, ses = row["participant_id"], row["session"]
            targets = [by_key[f"{sub}_{ses}"]] if ses and f"{sub}_{ses}" in by_key else \
                (by_sub.get(sub, []) if not ses else [])
            if not targets:
                k = f"{sub}_{ses}" if ses else sub
                if k not in bad_keys and sub not in {b.split("_")[0] for b in bad_keys}:
                    problems.append(f"{ARTEFACTS_FILE}: row for {k}, which has no paired images")
                continue
            for s in targets:
                s.artefact_slices.append((int(row["first_slice"]), int(row["last_slice"])))
    if problems:
        msg = f"{root}: {len(problems)} problem(s): " + "; ".join(problems)
        if on_error == "raise":
            raise LayoutError(msg)
        import warnings

        warnings.warn(msg + " (skipped)", stacklevel=2)
    if not subjects:
        raise LayoutError(
            f"{root}: no paired acquisitions found (expected sub-<id>/anat/sub-<id>_acq-3T_T1w.nii.gz "
            "and ..._acq-7T_T1w.nii.gz)"
        )
    used = {s.participant_id for s in subjects}
    ds = Dataset(root=root, subjects=subjects, participants=participants.loc[sorted(used)])
    if verbose:
        print(ds.describe())
    return ds


# ------------------------------------------------------------------------------------------ description

#: what :mod:`synth7t.simulate.demo` writes as the generator of its ``dataset_description.json``
DEMO_GENERATOR = "synth7t.simulate.demo"


def dataset_facts(data_dir: PathLike) -> dict:
    """Name of a dataset and whether it is simulated, from its BIDS ``dataset_description.json``.

    The demo generator writes ``GeneratedBy: [{"Name": "synth7t.simulate.demo"}]`` and a name that says "simulated"; a real
    dataset has no such entry (or no description at all, when its name is the folder's).

    Returns:
        ``{"name": str, "simulated": bool, "generator_version": the demo generator's version or None}``.
    """
    root = Path(data_dir)
    desc = {}
    try:
        desc = json.loads((root / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    if not isinstance(desc, dict):
        desc = {}
    generated = desc.get("GeneratedBy") or []
    by_demo = any(isinstance(g, dict) and g.get("Name") == DEMO_GENERATOR for g in generated)
    simulated = bool(by_demo or desc.get("Simulated") is True or "simulated" in str(desc.get("Name", "")).lower())
    version = next((str(g["Version"]) for g in generated if isinstance(g, dict) and g.get("Name") == DEMO_GENERATOR
                    and g.get("Version") is not None), None)
    return {"name": str(desc.get("Name") or root.resolve().name), "simulated": simulated, "generator_version": version}


def is_simulated(data_dir: PathLike) -> bool:
    """Whether ``data_dir`` holds data simulated by :mod:`synth7t.simulate.demo` (:func:`dataset_facts`)."""
    return dataset_facts(data_dir)["simulated"]


# --------------------------------------------------------------------------------------------------- split


def age_bins(ages: Sequence[float], n_bins: int = 3) -> np.ndarray:
    """Quantile bins of age (0..n_bins-1); ties at bin edges go to the lower bin."""
    a = np.asarray(ages, dtype=float)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.quantile(a, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 else np.zeros(0)
    return np.searchsorted(edges, a, side="left")


def make_split(
    participants: Union[pd.DataFrame, Dataset],
    *,
    n_test: Optional[int] = None,
    test_fraction: float = 28 / 164,
    seed: int = 0,
    n_age_bins: int = 3,
) -> pd.DataFrame:
    """Train/test split stratified by age bin, sex and impaired/unimpaired, deterministic for a seed.

    The test count is spread over the strata in proportion to their sizes (largest remainders), then the
    test members of each stratum are drawn at random. Splitting is per participant, so sessions of one
    participant never straddle the split. The paper held out 28 of 164 usable pairs, the default fraction.

    Args:
        participants: a participants table (index ``participant_id``; columns age, sex, impaired or
            diagnosis) or a :class:`Dataset`.
        n_test: number of test participants; by default ``round(test_fraction * n)``.
        test_fraction: used when ``n_test`` is None.
        seed: random seed; the same seed and table give the same split.
        n_age_bins: number of age quantile bins.

    Returns:
        A DataFrame with columns ``participant_id``, ``split`` (``train``/``test``), ``stratum``.
    """
    df = participants.participants if isinstance(participants, Dataset) else participants
    if "participant_id" in df.columns:
        df = df.set_index("participant_id")
    df = df.sort_index()
    n = len(df)
    if n < 2:
        raise ValueError(f"need at least 2 participants to split, got {n}")
    if n_test is None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        n_test = max(1, int(round(test_fraction * n)))
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be between 1 and {n - 1} for {n} participants, got {n_test}")
    impaired = df["impaired"] if "impaired" in df.columns else df["diagnosis"].map(is_impaired)
    strata = (
        pd.Series(age_bins(df["age"].to_numpy(), n_age_bins), index=df.index).astype(str)
        + "|" + df["sex"].astype(str) + "|" + np.where(impaired.astype(bool), "impaired", "unimpaired")
    )
    counts = strata.value_counts().sort_index()
    quota = counts / n * n_test
    alloc = np.floor(quota).astype(int)
    remainder = (quota - alloc).sort_values(ascending=False, kind="stable")
    for name in remainder.index[: n_test - int(alloc.sum())]:
        alloc[name] += 1
    rng = np.random.default_rng(seed)
    test: set = set()
    for name in counts.index:  # sorted order: deterministic draws
        members = sorted(strata.index[strata == name])
        k = int(alloc[name])
        if k:
            test.update(rng.choice(members, size=k, replace=False).tolist())
    out = pd.DataFrame(
        {"participant_id": df.index, "split": ["test" if p in test else "train" for p in df.index],
         "stratum": strata.to_numpy()}
    )
    return out


def ensure_split(dataset: Dataset, *, n_test: Optional[int] = None, test_fraction: float = 28 / 164,
                 seed: int = 0) -> tuple[Path, bool]:
    """The dataset's ``split.tsv``: kept when it exists (a split is decided once), else made and written.

    Args:
        dataset: the discovered dataset (its root receives ``split.tsv``).
        n_test, test_fraction, seed: as in :func:`make_split`.

    Returns:
        ``(path, created)``.
    """
    path = Path(dataset.root) / SPLIT_FILE
    if path.is_file():
        read_split(path)  # a broken split is an error, not silently replaced
        return path, False
    return write_split(make_split(dataset, n_test=n_test, test_fraction=test_fraction, seed=seed), path), True


def select_keys(keys: Iterable[str], data_dir: PathLike, subjects: str = "test") -> list[str]:
    """The acquisitions a stage scores: the held-out participants of ``split.tsv``, or all of them.

    Args:
        keys: acquisition keys (``sub-<id>`` or ``sub-<id>_ses-<s>``), e.g. the preprocessed subjects.
        data_dir: the dataset root; its ``split.tsv`` (:data:`SPLIT_FILE`) names the test participants.
        subjects: ``"test"`` (the held-out participants) or ``"all"`` (said explicitly: training subjects
            included).

    Returns:
        The selected keys, sorted.

    Raises:
        ValueError: ``subjects`` is neither ``"test"`` nor ``"all"``; ``"test"`` for a dataset without a split
            (there are no held-out subjects to score).
    """
    if subjects not in ("test", "all"):
        raise ValueError(f"subjects must be 'test' or 'all', got {subjects!r}")
    keys = sorted(set(keys))
    if subjects == "all":
        return keys
    split_file = Path(data_dir) / SPLIT_FILE
    if not split_file.is_file():
        raise ValueError(f"{data_dir} has no {SPLIT_FILE}: there are no held-out subjects to score; write a split "
                         f"(synth7t split {data_dir}) before training, or score every subject with subjects='all'")
    split = read_split(split_file)
    held_out = set(split.loc[split["split"] == "test", "participant_id"])
    return [k for k in keys if k.split("_")[0] in held_out]


def describe_subjects(keys: Iterable[str], data_dir: PathLike) -> str:
    """Which subjects a table scores, in words: ``"3 held-out (test): sub-005, sub-009, sub-011"``, or with the
    training subjects counted when they are included (``"12 (9 train, 3 test): sub-001, ..."``)."""
    keys = sorted(set(keys))
    split_file = Path(data_dir) / SPLIT_FILE
    label = {}
    if split_file.is_file():
        label = read_split(split_file).set_index("participant_id")["split"].to_dict()
    kinds = pd.Series([label.get(k.split("_")[0], "unsplit") for k in keys], dtype=object).value_counts()
    if list(kinds.index) == ["test"]:
        head = f"{len(keys)} held-out (test)"
    else:
        head = f"{len(keys)} (" + ", ".join(f"{int(n)} {kind}" for kind, n in kinds.sort_index().items()) + ")"
    return f"{head}: {', '.join(keys)}"


def write_split(split: pd.DataFrame, path: PathLike) -> Path:
    """Write a split table as TSV (``participant_id``, ``split``, ``stratum``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(p, sep="\t", index=False)
    return p


def read_split(path: PathLike) -> pd.DataFrame:
    """Read a split table written by :func:`write_split` and validate its values."""
    p = Path(path)
    if not p.is_file():
        raise LayoutError(f"{p}: split file not found (create it with synth7t.data.layout.make_split / `synth7t split`)")
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    if not {"participant_id", "split"} <= set(df.columns):
        raise LayoutError(f"{p}: a split file needs columns participant_id and split")
    bad = sorted(set(df["split"]) - {"train", "test"})
    if bad:
        raise LayoutError(f"{p}: split values must be train or test, got {', '.join(bad)}")
    return df


def model_building_participants(split: Union[pd.DataFrame, PathLike]) -> set[str]:
    """The participants whose scans built a model: every participant not on the test side of its split.

    Validation subjects are carved from the training side, so they count. Accepts a split table (``split.tsv``,
    columns ``participant_id, split``) or a training cache's ``volumes.tsv`` (columns ``key, split``).
    """
    df = read_split(split) if not isinstance(split, pd.DataFrame) else split
    if "split" not in df.columns or not ({"participant_id", "key"} & set(df.columns)):
        raise LayoutError("a split needs columns split and participant_id (or key)")
    ids = df["participant_id"] if "participant_id" in df.columns else df["key"].astype(str).str.split("_").str[0]
    return {normalise_participant_id(i) for i, s in zip(ids, df["split"]) if str(s) != "test"}


def exclude_model_participants(table: pd.DataFrame, building: Iterable[str], *,
                               column: str = "participant_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out the rows of participants who built the model (§2.1: "those from participants already used to
    build the model"); the model's test participants stay, as in the paper.

    Args:
        table: one row per scan, with a participant column.
        building: :func:`model_building_participants`.
        column: the participant column.

    Returns:
        ``(kept, excluded)``; ``excluded`` has a ``reason`` column.
    """
    if column not in table.columns:
        raise ValueError(f"the table has no {column!r} column (has {', '.join(map(str, table.columns))})")
    building = {normalise_participant_id(b) for b in building}
    out = table[column].map(normalise_participant_id).isin(building)
    excluded = table[out].assign(reason="built the model (train or validation side of the run's split)")
    return table[~out].reset_index(drop=True), excluded.reset_index(drop=True)
