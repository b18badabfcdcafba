"""2.5D slice data: preprocessed pairs cached as memory-mapped arrays, one sample per axial slice.

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
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import io as sio
from .layout import Dataset, dataset_facts, read_split
from .models.unet import slice_location

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


def build_cache(
    derivatives: PathLike, cache_dir: PathLike, dataset: Dataset, *, split_file: Optional[PathLike] = None,
    keys: Optional[Sequence[str]] = None, allow_unsplit: bool = False, progress: bool = True,
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

    Returns:
        The cache folder. An existing cache built from the same records is reused as it is. ``cache.json``
        records the keys, the grid and the dataset's name and whether it is simulated (for the model card).

    Raises:
        ValueError: no preprocessed subjects, a missing split (unless ``allow_unsplit``), mixed grids.
    """
    from tqdm.auto import tqdm

    derivatives, cache_dir = Path(derivatives), Path(cache_dir)
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
    meta_path = cache_dir / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        # a cache from before spacing_mm was recorded is rebuilt: the exported model must know its grid
        if old.get("fingerprint") == fp and "spacing_mm" in old:
            return cache_dir
    split = read_split(split_file).set_index("participant_id")["split"] if split_file else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    shapes = [tuple(recs[k]["grid"]["shape"]) for k in keys]
    inplane = {s[:2] for s in shapes}
    if len(inplane) != 1:
        raise ValueError(f"subjects have different in-plane grids {sorted(inplane)}; preprocess them with one config")
    nx, ny = next(iter(inplane))
    spacings = {round(float(np.linalg.norm(np.asarray(recs[k]["grid_affine"], float)[:3, 0])), 4) for k in keys}
    if len(spacings) != 1:
        raise ValueError(f"subjects have different voxel sizes {sorted(spacings)} mm; preprocess them with one config")
    total = sum(s[2] for s in shapes)
    tmp = {n: cache_dir / f"{n}.npy.tmp" for n in ("t3", "t7")}
    arrays = {n: np.lib.format.open_memmap(tmp[n], mode="w+", dtype=np.float16, shape=(total, ny, nx)) for n in tmp}
    vol_rows, idx_rows = [], []
    offset = 0
    for vi, k in enumerate(tqdm(keys, desc="slice cache", unit="subject", disable=not progress)):
        r = recs[k]
        base = Path(r["_json"]).parent
        files = {n: derivatives / r["files"][n] for n in ("t3", "t7", "mask")}
        vols = {n: sio.load_volume(files[n]).data for n in files}
        depth = vols["t7"].shape[2]
        for n in ("t3", "t7"):
            arrays[n][offset:offset + depth] = np.transpose(vols[n], (2, 1, 0)).astype(np.float16)
        s = dataset[k]
        bottom, top = int(r["bottom_slice"]), int(r["top_slice"])
        excluded = {z for a, b in r.get("excluded_slices", []) for z in range(int(a), int(b) + 1)}
        brain = vols["mask"].reshape(-1, depth).any(0)
        sp = str(split.get(s.participant_id, "unsplit")) if split is not None else "unsplit"
        vol_rows.append({"key": k, "volume": vi, "offset": offset, "depth": depth, "bottom": bottom, "top": top,
                         "age": s.age, "sex": s.sex, "impaired": int(s.impaired), "split": sp,
                         "n_excluded": len(excluded), "dir": str(base)})
        for z in range(depth):
            if brain[z] and z not in excluded and top != bottom:
                loc = slice_location(z, bottom, top)
                idx_rows.append({"key": k, "volume": vi, "z": z, "offset": offset + z, "age": s.age,
                                 "sex": 1.0 if s.sex == "M" else 0.0, "impaired": float(s.impaired),
                                 "slice_location": loc, "split": sp})
        offset += depth
    for arr in arrays.values():
        arr.flush()
    arrays.clear()  # close the memory maps before renaming their files
    for n, p in tmp.items():
        os.replace(p, cache_dir / f"{n}.npy")
    pd.DataFrame(vol_rows).to_csv(cache_dir / "volumes.tsv", sep="\t", index=False)
    pd.DataFrame(idx_rows).to_csv(cache_dir / "index.tsv", sep="\t", index=False)
    meta_path.write_text(json.dumps({"fingerprint": fp, "keys": keys, "shape": [total, ny, nx],
                                     "spacing_mm": next(iter(spacings)), "dataset": dataset_facts(dataset.root),
                                     "split_file": str(split_file) if split_file else None}, indent=2))
    return cache_dir


def validation_keys(volumes: pd.DataFrame, fraction: float = 0.1, seed: int = 0) -> list[str]:
    """Subjects carved from the training side for validation during training (test subjects are never used).

    The training participants of a cache (``split`` ``train``, or ``unsplit`` when the cache has no split) are split
    again with :func:`synth7t.layout.make_split` (stratified by age bin, sex and impairment), ``fraction`` of them
    (at least one) for validation. Needs at least two training participants.

    Args:
        volumes: the cache's volume table (``key``, ``split``, ``age``, ``sex``, ``impaired``).
        fraction: share of the training participants used for validation.
        seed: seed of the draw.

    Returns:
        The validation keys (all sessions of the drawn participants), sorted.
    """
    from .layout import make_split

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
    """An opened cache: memory-mapped arrays and its tables."""

    root: Path
    t3: np.ndarray
    t7: np.ndarray
    index: pd.DataFrame
    volumes: pd.DataFrame

    @property
    def meta(self) -> dict:
        """``cache.json``: fingerprint, keys, array shape and ``spacing_mm`` (absent in caches built before it)."""
        return json.loads((self.root / "cache.json").read_text())

    @classmethod
    def open(cls, root: PathLike) -> "SliceCache":
        root = Path(root)
        if not (root / "cache.json").is_file():
            raise ValueError(f"{root}: not a slice cache (build it with synth7t.slices.build_cache)")
        return cls(root, np.load(root / "t3.npy", mmap_mode="r"), np.load(root / "t7.npy", mmap_mode="r"),
                   pd.read_csv(root / "index.tsv", sep="\t"), pd.read_csv(root / "volumes.tsv", sep="\t"))


class SliceDataset:
    """Torch-style dataset of 2.5D samples from a :class:`SliceCache`.

    Args:
        cache: the opened cache (or its folder).
        split: ``"train"``, ``"test"``, ``None`` (every sample) or a list of subject keys.
        n_input_slices: odd number of neighbouring 3T slices (clamped at the grid's edges).
        crop: optional ``(h, w)`` random crop (centre crop when ``random_crop`` is False), each side a
            multiple of the model's downsampling factor; for small machines.
        random_crop: draw crops at random (training) or take the centre (validation).
        augment: random left-right flips (the brain is roughly symmetric; the flip keeps the context valid).
        seed: base seed; sample ``i`` of epoch ``e`` uses ``(seed, e, i)`` so runs are reproducible.

    Items are dicts of ``x`` (n_input_slices, h, w), ``y`` (1, h, w), ``context`` (4,) float32 tensors and
    ``key``/``z``.
    """

    def __init__(self, cache: Union[SliceCache, PathLike], split: Union[str, Sequence[str], None] = "train", *,
                 n_input_slices: int = 3, crop: Optional[Sequence[int]] = None, random_crop: bool = True,
                 augment: bool = False, seed: int = 0):
        self.cache = cache if isinstance(cache, SliceCache) else SliceCache.open(cache)
        if n_input_slices < 1 or n_input_slices % 2 == 0:
            raise ValueError(f"n_input_slices must be a positive odd number, got {n_input_slices}")
        idx = self.cache.index
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
        _, self.height, self.width = self.cache.t3.shape
        self.crop = tuple(int(c) for c in crop) if crop else None
        if self.crop and (self.crop[0] > self.height or self.crop[1] > self.width):
            raise ValueError(f"crop {self.crop} is larger than the slices ({self.height}, {self.width})")
        self.random_crop, self.augment, self.seed = random_crop, augment, int(seed)
        self.epoch = 0
        vols = self.cache.volumes.set_index("volume")
        self._bounds = {int(v): (int(r["offset"]), int(r["offset"] + r["depth"] - 1)) for v, r in vols.iterrows()}

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/flips for a new epoch (deterministic per epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        import torch

        r = self.index.iloc[int(i)]
        lo, hi = self._bounds[int(r["volume"])]
        rows = np.clip(np.arange(r["offset"] - self.half, r["offset"] + self.half + 1), lo, hi)
        x = np.asarray(self.cache.t3[rows], dtype=np.float32)
        y = np.asarray(self.cache.t7[int(r["offset"])], dtype=np.float32)[None]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self.crop:
            ch, cw = self.crop
            if self.random_crop:
                y0, x0 = int(rng.integers(0, self.height - ch + 1)), int(rng.integers(0, self.width - cw + 1))
            else:
                y0, x0 = (self.height - ch) // 2, (self.width - cw) // 2
            x, y = x[:, y0:y0 + ch, x0:x0 + cw], y[:, y0:y0 + ch, x0:x0 + cw]
        if self.augment and rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        ctx = np.array([r["age"], r["sex"], r["impaired"], r["slice_location"]], dtype=np.float32)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(np.ascontiguousarray(y)),
                "context": torch.from_numpy(ctx), "key": str(r["key"]), "z": int(r["z"])}
