"""2.5D slice data: preprocessed pairs cached as memory-mapped arrays, one sample per slice of each cached plane.

A sample is the ``n_input_slices`` neighbouring axial 3T slices (the centre one and as many above as below),
the matching 7T slice and the context vector (age, sex, impaired, slice location). Slices listed as 7T
artefacts and slices without brain are never samples (a neighbour of a sample may be either).

The cache is a folder of ``.npy`` files opened with ``mmap_mode="r"``, so a training process (or each of
several DistributedDataParallel processes and their loader workers) reads only the slices it touches::

    t3.npy, t7.npy   float16 (N_slices_total, H, W): every grid slice of every subject, subject after subject
    index.tsv        one row per usable sample: key, volume, z, offset (row of slice z in the arrays), context
    volumes.tsv      one row per subject: key, offset, depth, bottom, top, age, sex, impaired, split
    cache.json       source records' fingerprints (a cache is rebuilt only when its inputs change), the array
                     shape and the grid's voxel size ``spacing_mm``

Slices are stored as ``(H, W) = (anterior-posterior, left-right)``, i.e. the grid's axial array transposed:
the paper's 288 x 224 inputs.

Multi-view caches (``build_cache(..., planes=("axial", "coronal", "sagittal"))``, beyond the paper) also hold, per
extra plane ``p``, the stacks of :func:`synth7t.data.planes.to_plane_stack` (``(S, H, W)``: coronal ``(Y, Z, X)``,
sagittal ``(X, Z, Y)``, H the grid's depth zero-padded at the superior end to a multiple of 32 so that every
subject's slices share one shape)::

    t3_<p>.npy, t7_<p>.npy   float16 (n_subjects * S, H, W), subject after subject (S = Y or X rows each)
    index_<p>.tsv            the samples of that plane, as index.tsv, ``z`` the slice index along the plane's axis
                             and ``slice_location`` along it (its own brain range)
    volumes.tsv              gains offset_<p>, bottom_<p>, top_<p> (and ``excluded``: the artefact slice ranges)

A cached axial slice is a sample as before. A coronal or sagittal slice crosses every axial slice, artefact slices
included, so its samples carry a ``mask`` that is 0 on the rows of excluded axial slices and of the padding: the
trainer multiplies prediction and target by it before the loss, and the 7T's artefacts are never learned.
Axial arrays are always cached; the other planes are added to an existing cache of the same records without
rewriting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import io as sio
from ..data.layout import Dataset, dataset_facts, read_split
from ..models.config import PLANES, check_planes
from ..models.unet import slice_location

PathLike = Union[str, Path]


def _records(derivatives: Path) -> dict[str, dict]:
    recs = {}
    for p in sorted(derivatives.glob("sub-*/**/anat/*_desc-preproc.json")):
        r = json.loads(p.read_text())
        if r.get("status") == "done" and r.get("mode", "pair") == "pair":
            r["_json"] = str(p)
            recs[r["key"]] = r
    return recs


def _fingerprint(recs: dict[str, dict], keys: Sequence[str]) -> str:
    h = hashlib.sha1()
    for k in keys:
        r = recs[k]
        h.update(json.dumps([k, r.get("config_fingerprint"), r.get("seconds"), r.get("files")], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _split_digest(split_file: PathLike) -> str:
    """A changed split must rebuild the cache (its labels are stored per sample)."""
    return hashlib.sha1(Path(split_file).read_bytes()).hexdigest()[:8]


def _cache_planes(planes) -> tuple:
    """The planes a cache holds: axial always, then the others asked for, in :data:`PLANES` order."""
    asked = set(check_planes(planes, "planes"))
    return tuple(p for p in PLANES if p == "axial" or p in asked)


def build_cache(
    derivatives: PathLike, cache_dir: PathLike, dataset: Dataset, *, split_file: Optional[PathLike] = None,
    keys: Optional[Sequence[str]] = None, allow_unsplit: bool = False, progress: bool = True,
    planes: Sequence[str] = ("axial",),
) -> Path:
    """Write (or reuse) the slice cache of preprocessed pairs.

    Args:
        derivatives: ``<data_dir>/derivatives/synth7t-preproc`` (the preprocessing outputs).
        cache_dir: folder of the cache (e.g. ``runs/<run>/02_train/cache``).
        dataset: the discovered dataset (demographics for the context).
        split_file: ``split.tsv``; its train/test labels are stored per subject. Required: test subjects must
            never be trained on, and a model trained on every subject cannot be evaluated on any.
        keys: subjects to include (default: every preprocessed subject).
        allow_unsplit: build a cache without a split (every subject ``unsplit``, all of them trainable); only
            for a model that will never be scored on these subjects.
        progress: show a progress bar.
        planes: slicing planes to cache (``axial``, ``coronal``, ``sagittal``; axial is always cached). A
            multi-view model's ``TrainConfig.planes``.

    Returns:
        The cache folder. An existing cache built from the same records is reused as it is; planes it lacks are
        added to it. ``cache.json`` records the keys, the grid, the planes and the dataset's name and whether it
        is simulated (for the model card).

    Raises:
        ValueError: no preprocessed subjects, a missing split (unless ``allow_unsplit``), mixed grids, an unknown
            plane.
    """
    derivatives, cache_dir = Path(derivatives), Path(cache_dir)
    planes = _cache_planes(planes)
    if split_file is None and not allow_unsplit:
        raise ValueError(f"no train/test split for {dataset.root}: training would see every subject and no "
                         f"subject could be scored; write one with `synth7t split {dataset.root}` (split.tsv), "
                         "or pass allow_unsplit=True for a model that will never be evaluated on these data")
    recs = _records(derivatives)
    if not recs:
        raise ValueError(f"{derivatives}: no preprocessed subjects (run notebooks/01_preprocess.ipynb first)")
    keys = sorted(recs) if keys is None else list(keys)
    missing = [k for k in keys if k not in recs]
    if missing:
        raise ValueError(f"not preprocessed: {', '.join(missing)}")
    fp = _fingerprint(recs, keys) + ("" if split_file is None else "-" + _split_digest(split_file))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache_dir):  # trainings side by side (a profile's lanes) build or extend it one at a time
        return _build_locked(cache_dir, fp, planes, keys, recs, derivatives, dataset, split_file, progress)


@contextlib.contextmanager
def _cache_lock(cache_dir: Path):
    """An exclusive lock on ``cache_dir/.lock`` for the time of a build (POSIX ``flock``; released on a crash)."""
    import fcntl

    with open(cache_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_table(table: pd.DataFrame, path: Path) -> None:
    """Write a TSV under a temporary name, then rename it: a reader never sees half a table."""
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)


def _build_locked(cache_dir: Path, fp: str, planes: tuple, keys: list, recs: dict, derivatives: Path,
                  dataset: Dataset, split_file: Optional[Path], progress: bool) -> Path:
    meta_path = cache_dir / "cache.json"
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    # a cache from before spacing_mm was recorded is rebuilt: the exported model must know its grid
    reuse = old.get("fingerprint") == fp and "spacing_mm" in old
    have = tuple(old.get("planes", ["axial"])) if reuse else ()
    todo = tuple(p for p in planes if p not in have)
    if not todo:
        return cache_dir
    split = read_split(split_file).set_index("participant_id")["split"] if split_file else None
    if not have:  # rebuilt from other records: the other planes' files would be stale
        for p in PLANES:
            if p not in todo:
                for name in (_array_name("t3", p), _array_name("t7", p), _index_name(p)):
                    (cache_dir / name).unlink(missing_ok=True)
    shapes = [tuple(recs[k]["grid"]["shape"]) for k in keys]
    inplane = {s[:2] for s in shapes}
    if len(inplane) != 1:
        raise ValueError(f"subjects have different in-plane grids {sorted(inplane)}; preprocess them with one config")
    nx, ny = next(iter(inplane))
    spacings = {round(float(np.linalg.norm(np.asarray(recs[k]["grid_affine"], float)[:3, 0])), 4) for k in keys}
    if len(spacings) != 1:
        raise ValueError(f"subjects have different voxel sizes {sorted(spacings)} mm; preprocess them with one config")
    vol_rows, idx_rows, plane_shapes = _write_arrays(cache_dir, todo, keys, recs, derivatives, dataset, split,
                                                     (nx, ny, [s[2] for s in shapes]), progress)
    new_vols = pd.DataFrame(vol_rows)
    if have:  # same records: keep the cached planes, add the new planes' columns
        vols = pd.read_csv(cache_dir / "volumes.tsv", sep="\t")
        for c in new_vols.columns:
            if c not in vols.columns:
                vols[c] = new_vols[c].to_numpy()
        new_vols = vols
    _replace_table(new_vols, cache_dir / "volumes.tsv")
    for plane, rows in idx_rows.items():
        _replace_table(pd.DataFrame(rows), cache_dir / _index_name(plane))
    total = sum(s[2] for s in shapes)
    meta = {"fingerprint": fp, "keys": keys, "shape": [total, ny, nx], "spacing_mm": next(iter(spacings)),
            "dataset": dataset_facts(dataset.root), "split_file": str(split_file) if split_file else None,
            "planes": [p for p in PLANES if p in set(have) | set(todo)],
            "plane_shapes": {**old.get("plane_shapes", {}), **plane_shapes} if have else plane_shapes}
    meta_path.with_name("cache.json.tmp").write_text(json.dumps(meta, indent=2))
    os.replace(meta_path.with_name("cache.json.tmp"), meta_path)
    return cache_dir


def _index_name(plane: str) -> str:
    return "index.tsv" if plane == "axial" else f"index_{plane}.tsv"


def _array_name(image: str, plane: str) -> str:
    return f"{image}.npy" if plane == "axial" else f"{image}_{plane}.npy"


def _write_arrays(cache_dir: Path, planes: Sequence[str], keys: Sequence[str], recs: dict, derivatives: Path,
                  dataset: Dataset, split, grid: tuple, progress: bool):
    """Fill the arrays of ``planes`` in one pass over the subjects (each volume is read once).

    Returns:
        ``(volume rows, {plane: sample rows}, {plane: array shape})``.
    """
    from tqdm.auto import tqdm

    from ..data.planes import PLANE_AXIS, brain_range, padded_height, to_plane_stack

    nx, ny, depths = grid
    height = padded_height(max(depths))
    per_subject = {"coronal": ny, "sagittal": nx}
    shapes = {"axial": (sum(depths), ny, nx), "coronal": (len(keys) * ny, height, nx),
              "sagittal": (len(keys) * nx, height, ny)}
    tmp = {(n, p): cache_dir / (_array_name(n, p) + ".tmp") for p in planes for n in ("t3", "t7")}
    arrays = {np_: np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shapes[np_[1]])
              for np_, path in tmp.items()}
    vol_rows, idx_rows = [], {p: [] for p in planes}
    offset = 0
    for vi, k in enumerate(tqdm(keys, desc="slice cache", unit="subject", disable=not progress)):
        r = recs[k]
        base = Path(r["_json"]).parent
        files = {n: derivatives / r["files"][n] for n in ("t3", "t7", "mask")}
        vols = {n: sio.load_volume(files[n]).data for n in files}
        depth = vols["t7"].shape[2]
        s = dataset[k]
        bottom, top = int(r["bottom_slice"]), int(r["top_slice"])
        ranges = [[int(a), int(b)] for a, b in r.get("excluded_slices", [])]
        excluded = {z for a, b in ranges for z in range(a, b + 1)}
        sp = str(split.get(s.participant_id, "unsplit")) if split is not None else "unsplit"
        row = {"key": k, "volume": vi, "offset": offset, "depth": depth, "bottom": bottom, "top": top,
               "age": s.age, "sex": s.sex, "impaired": int(s.impaired), "split": sp,
               "n_excluded": len(excluded), "dir": str(base), "excluded": json.dumps(ranges)}
        demo = {"age": s.age, "sex": 1.0 if s.sex == "M" else 0.0, "impaired": float(s.impaired)}
        mask = vols["mask"] > 0
        for p in planes:
            if p == "axial":
                for n in ("t3", "t7"):
                    arrays[(n, p)][offset:offset + depth] = np.transpose(vols[n], (2, 1, 0)).astype(np.float16)
                brain = mask.reshape(-1, depth).any(0)
                for z in range(depth):
                    if brain[z] and z not in excluded and top != bottom:
                        idx_rows[p].append({"key": k, "volume": vi, "z": z, "offset": offset + z, **demo,
                                            "slice_location": slice_location(z, bottom, top), "split": sp})
                continue
            first = vi * per_subject[p]
            for n in ("t3", "t7"):
                arrays[(n, p)][first:first + per_subject[p]] = to_plane_stack(vols[n], p, height=height)
            b, t = brain_range(mask, p)
            axis = PLANE_AXIS[p]
            brain = mask.any(axis=tuple(a for a in range(3) if a != axis))
            row.update({f"offset_{p}": first, f"bottom_{p}": b, f"top_{p}": t})
            for z in np.flatnonzero(brain) if t != b else []:
                idx_rows[p].append({"key": k, "volume": vi, "z": int(z), "offset": first + int(z), **demo,
                                    "slice_location": slice_location(int(z), b, t), "split": sp, "plane": p})
        vol_rows.append(row)
        offset += depth
    for arr in arrays.values():
        arr.flush()
    arrays.clear()  # close the memory maps before renaming their files
    for (n, p), path in tmp.items():
        os.replace(path, cache_dir / _array_name(n, p))
    return vol_rows, idx_rows, {p: list(shapes[p]) for p in planes}


def validation_keys(volumes: pd.DataFrame, fraction: float = 0.1, seed: int = 0) -> list[str]:
    """Subjects carved from the training side for validation during training (test subjects are never used).

    The training participants of a cache (``split`` ``train``, or ``unsplit`` when the cache has no split) are split
    again with :func:`synth7t.data.layout.make_split` (stratified by age bin, sex and impairment), ``fraction`` of them
    (at least one) for validation. Needs at least two training participants.

    Args:
        volumes: the cache's volume table (``key``, ``split``, ``age``, ``sex``, ``impaired``).
        fraction: share of the training participants used for validation.
        seed: seed of the draw.

    Returns:
        The validation keys (all sessions of the drawn participants), sorted.
    """
    from ..data.layout import make_split

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    side = volumes[volumes["split"].isin(["train", "unsplit"])].copy()
    side["participant_id"] = side["key"].str.split("_").str[0]
    people = side.drop_duplicates("participant_id").set_index("participant_id")[["age", "sex", "impaired"]]
    if len(people) < 2:
        raise ValueError(f"need at least 2 training participants to carve out a validation set, got {len(people)}")
    n_val = max(1, int(round(fraction * len(people))))
    drawn = make_split(people, n_test=min(n_val, len(people) - 1), seed=seed)
    val = set(drawn.loc[drawn["split"] == "test", "participant_id"])
    return sorted(side.loc[side["participant_id"].isin(val), "key"])


@dataclass
class SliceCache:
    """An opened cache: memory-mapped arrays and its tables (``t3``, ``t7``, ``index``: the axial ones)."""

    root: Path
    t3: np.ndarray
    t7: np.ndarray
    index: pd.DataFrame
    volumes: pd.DataFrame
    _planes: dict = field(default_factory=dict, repr=False)

    @property
    def meta(self) -> dict:
        """``cache.json``: fingerprint, keys, array shape and ``spacing_mm`` (absent in caches built before it)."""
        return json.loads((self.root / "cache.json").read_text())

    @property
    def planes(self) -> tuple:
        """The cached planes (``("axial",)`` for a cache built before multi-view)."""
        return tuple(self.meta.get("planes", ["axial"]))

    @classmethod
    def open(cls, root: PathLike) -> "SliceCache":
        root = Path(root)
        if not (root / "cache.json").is_file():
            raise ValueError(f"{root}: not a slice cache (build it with synth7t.training.slices.build_cache)")
        return cls(root, np.load(root / "t3.npy", mmap_mode="r"), np.load(root / "t7.npy", mmap_mode="r"),
                   pd.read_csv(root / "index.tsv", sep="\t"), pd.read_csv(root / "volumes.tsv", sep="\t"))

    def plane(self, plane: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(t3, t7, index)`` of one cached plane: memory-mapped ``(N, H, W)`` stacks and its samples (with a
        ``plane`` column).

        Raises:
            ValueError: an unknown plane, or one this cache does not hold.
        """
        plane = check_planes([plane], "plane")[0]
        if plane not in self._planes:
            if plane == "axial":
                self._planes[plane] = (self.t3, self.t7, self.index.assign(plane="axial"))
            else:
                if plane not in self.planes:
                    raise ValueError(f"the slice cache {self.root} holds {', '.join(self.planes)} slices, not "
                                     f"{plane}: build it with synth7t.training.slices.build_cache(..., planes=[...]) "
                                     f"(notebook 02 passes the training config's planes)")
                self._planes[plane] = tuple(np.load(self.root / _array_name(n, plane), mmap_mode="r")
                                            for n in ("t3", "t7")) + (
                    pd.read_csv(self.root / _index_name(plane), sep="\t"),)
        return self._planes[plane]


class SliceDataset:
    """Torch-style dataset of 2.5D samples from a :class:`SliceCache`.

    Args:
        cache: the opened cache (or its folder).
        split: ``"train"``, ``"test"``, ``None`` (every sample) or a list of subject keys.
        n_input_slices: odd number of neighbouring 3T slices (clamped at the grid's edges).
        crop: optional ``(h, w)`` random crop (centre crop when ``random_crop`` is False), each side a
            multiple of the model's downsampling factor; for small machines.
        random_crop: draw crops at random (training) or take the centre (validation).
        augment: random left-right flips (the brain is roughly symmetric; the flip keeps the context valid). A
            sagittal slice is not flipped: its in-plane axes are anterior-posterior and inferior-superior, which
            have no mirror symmetry (the draw is made all the same, so the other samples' streams do not move).
        seed: base seed; sample ``i`` of epoch ``e`` uses ``(seed, e, i)`` so runs are reproducible.
        planes: slicing planes to draw samples from (multi-view; default the paper's axial slices). Without a
            crop, the slices of several planes are zero-padded (below and to the right) to the largest height and
            width among them, so that a batch stacks.
        plane_context: append the plane's code (0 axial, 1 coronal, 2 sagittal) to the context (a
            plane-conditioned model's fifth column).

    Items are dicts of ``x`` (n_input_slices, h, w), ``y`` (1, h, w), ``context`` (4,) float32 tensors and
    ``key``/``z`` (and ``plane``); with a coronal or sagittal plane every item also has a ``mask`` (1, h, w):
    1 on the rows of usable axial slices, 0 on artefact slices and padding (all 1 on an axial sample).
    """

    def __init__(self, cache: Union[SliceCache, PathLike], split: Union[str, Sequence[str], None] = "train", *,
                 n_input_slices: int = 3, crop: Optional[Sequence[int]] = None, random_crop: bool = True,
                 augment: bool = False, seed: int = 0, planes: Sequence[str] = ("axial",),
                 plane_context: bool = False):
        self.cache = cache if isinstance(cache, SliceCache) else SliceCache.open(cache)
        if n_input_slices < 1 or n_input_slices % 2 == 0:
            raise ValueError(f"n_input_slices must be a positive odd number, got {n_input_slices}")
        self.planes = check_planes(planes, "planes")
        tables = []
        self._arrays, shapes = {}, {}
        for p in self.planes:
            t3, t7, idx = self.cache.plane(p)
            self._arrays[p] = (t3, t7)
            shapes[p] = t3.shape[1:]
            tables.append(idx.assign(plane=p))
        idx = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        if isinstance(split, str):
            if split not in ("train", "test", "unsplit"):
                raise ValueError(f"split must be 'train', 'test', a list of keys or None, got {split!r}")
            idx = idx[idx["split"] == split]
        elif split is not None:
            idx = idx[idx["key"].isin(list(split))]
        if idx.empty:
            raise ValueError(f"no samples for split {split!r} in {self.cache.root}")
        self.index = idx.reset_index(drop=True)
        self.half = n_input_slices // 2
        #: the slices' (H, W); with several planes the largest of each (what whole slices are padded to)
        self.height = max(int(h) for h, _ in shapes.values())
        self.width = max(int(w) for _, w in shapes.values())
        self._shapes = shapes
        self.crop = tuple(int(c) for c in crop) if crop else None
        if self.crop:
            for p, (h, w) in shapes.items():
                if self.crop[0] > h or self.crop[1] > w:
                    raise ValueError(f"crop {self.crop} is larger than the {p} slices ({h}, {w})"
                                     if len(shapes) > 1 else f"crop {self.crop} is larger than the slices ({h}, {w})")
        self.random_crop, self.augment, self.seed = random_crop, augment, int(seed)
        self.plane_context = bool(plane_context)
        self.with_mask = any(p != "axial" for p in self.planes)
        self.epoch = 0
        vols = self.cache.volumes.set_index("volume")
        #: (plane, volume) -> first and last row of the volume's slices in the plane's arrays
        self._bounds: dict = {}
        #: (plane, volume) -> per row of a coronal/sagittal slice (an axial slice index): 1 usable, 0 artefact/padding
        self._rows_ok: dict = {}
        per_subject = {"coronal": self.cache.t3.shape[1], "sagittal": self.cache.t3.shape[2]}
        for p in self.planes:
            for v, r in vols.iterrows():
                if p == "axial":
                    self._bounds[(p, int(v))] = (int(r["offset"]), int(r["offset"] + r["depth"] - 1))
                    continue
                first = int(r[f"offset_{p}"])
                self._bounds[(p, int(v))] = (first, first + per_subject[p] - 1)
                ok = np.zeros(shapes[p][0], np.float32)
                ok[: int(r["depth"])] = 1.0
                for a, b in json.loads(r["excluded"]):
                    ok[int(a): int(b) + 1] = 0.0
                self._rows_ok[(p, int(v))] = ok

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/flips for a new epoch (deterministic per epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        import torch

        r = self.index.iloc[int(i)]
        plane = str(r["plane"]) if "plane" in r else "axial"
        t3, t7 = self._arrays[plane]
        lo, hi = self._bounds[(plane, int(r["volume"]))]
        rows = np.clip(np.arange(r["offset"] - self.half, r["offset"] + self.half + 1), lo, hi)
        x = np.asarray(t3[rows], dtype=np.float32)
        y = np.asarray(t7[int(r["offset"])], dtype=np.float32)[None]
        m = None
        if self.with_mask:
            m = np.ones_like(y) if plane == "axial" else np.broadcast_to(
                self._rows_ok[(plane, int(r["volume"]))][None, :, None], y.shape).astype(np.float32)
        height, width = y.shape[1:]
        if not self.crop and (height, width) != (self.height, self.width):
            pad = ((0, 0), (0, self.height - height), (0, self.width - width))
            x, y = np.pad(x, pad), np.pad(y, pad)
            m = None if m is None else np.pad(m, pad)
            height, width = self.height, self.width
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self.crop:
            ch, cw = self.crop
            if self.random_crop:
                y0, x0 = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
            else:
                y0, x0 = (height - ch) // 2, (width - cw) // 2
            x, y = x[:, y0:y0 + ch, x0:x0 + cw], y[:, y0:y0 + ch, x0:x0 + cw]
            m = None if m is None else m[:, y0:y0 + ch, x0:x0 + cw]
        # W is left-right in axial and coronal slices; a sagittal slice has no left-right axis to mirror
        if self.augment and rng.random() < 0.5 and plane != "sagittal":
            x, y = x[:, :, ::-1], y[:, :, ::-1]
            m = None if m is None else m[:, :, ::-1]
        ctx = [r["age"], r["sex"], r["impaired"], r["slice_location"]]
        if self.plane_context:
            ctx.append(PLANES.index(plane))
        item = {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(np.ascontiguousarray(y)),
                "context": torch.from_numpy(np.array(ctx, dtype=np.float32)), "key": str(r["key"]), "z": int(r["z"]),
                "plane": plane}
        if m is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(m))
        return item


def check_slice_grid(cache: SliceCache, planes, divisor: int, crop, model: str) -> None:
    """Refuse, when a U-Net is built, slices it cannot take: every plane's whole slices (what prediction feeds it)
    and the training crops must have sizes divisible by ``divisor`` (``2 ** n_downsamplings``).

    Raises:
        ValueError: the sizes, the model and the fix (a grid whose sizes divide, e.g. preprocessing's
            ``grid_inplane`` with ``grid_divisor``).
    """
    for plane in planes:
        h, w = (int(n) for n in cache.plane(plane)[0].shape[1:])
        if h % divisor or w % divisor:
            raise ValueError(f"model {model!r} downsamples to 1/{divisor} and cannot take the cache's {plane} slices "
                             f"of {h} x {w}: preprocess onto a grid whose in-plane sizes divide by {divisor} "
                             f"(grid_inplane with grid_divisor={divisor}), or choose a model with fewer stages")
    if crop is not None and any(int(c) % divisor for c in crop):
        raise ValueError(f"crop={list(crop)} must divide by {divisor} for model {model!r} (it downsamples to "
                         f"1/{divisor}); e.g. crop={[int(c) // divisor * divisor or divisor for c in crop]}")
