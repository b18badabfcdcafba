"""Segmentation of many images through :func:`synth7t.runtime.batch.run_batch`: label maps with JSON sidecars (written last,
they mark finished items), ``segmentations.tsv`` (status per item) and ``volumes.tsv`` (regional volumes).

Atlas labels are byte-identical from run to run only with a fixed ANTs seed (``AtlasConfig.registration.seed``) and one
ITK thread (ITK's multi-threaded Mattes mutual information varies run to run), so every item runs with
``AtlasConfig.threads`` ITK threads, default 1 (in a worker or in the calling process), and its sidecar stores the
count really used (``itk_threads``). Every sidecar also records :func:`~synth7t.segment.provenance` (backend, tool,
version, settings), and ``provenance.json`` beside the tables gathers those of the label maps ``volumes.tsv`` lists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import io as sio
from ..runtime.batch import Executor, LocalExecutor, file_stamp, read_json, run_batch, shard_status_path, write_json
from ..preprocess.ants import set_itk_threads
from .backends import regional_volumes, segment
from .config import (APARC_LABELS, FREESURFER_LABELS, PROVENANCE_FILE, SEGMENTATIONS_FILE, SIDECAR_VERSION,
    TOTAL_BRAIN, VOLUMES_FILE, AtlasConfig, PathLike, SynthSegConfig, config_for, label_table)
from .provenance import provenance

# --------------------------------------------------------------------------------------------- batch


def output_path(out_dir: PathLike, key: str, image_type: str) -> Path:
    """``<out_dir>/<image_type>/<key>_dseg.nii.gz``, where :func:`segment_batch` writes one label map."""
    return Path(out_dir) / str(image_type) / f"{key}_dseg.nii.gz"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json"))


def _items_table(items) -> pd.DataFrame:
    if isinstance(items, pd.DataFrame):
        missing = {"key", "image_type", "path"} - set(items.columns)
        if missing:
            raise ValueError(f"items table needs the columns key, image_type, path; missing {', '.join(sorted(missing))}")
        table = items[["key", "image_type", "path"]].copy()
    else:
        rows = []
        for it in items:
            if isinstance(it, Mapping):
                rows.append({k: it[k] for k in ("key", "image_type", "path")})
            elif isinstance(it, (tuple, list)) and len(it) == 3:
                rows.append(dict(zip(("key", "image_type", "path"), it)))
            else:
                raise ValueError(f"each item must be (key, image_type, path) or a dict with those keys, got {it!r}")
        table = pd.DataFrame(rows, columns=["key", "image_type", "path"])
    table["key"] = table["key"].astype(str)
    table["image_type"] = table["image_type"].astype(str)
    table["path"] = table["path"].astype(str)
    for col in ("key", "image_type"):
        bad = [v for v in table[col] if not v or "/" in v or "\\" in v or v in (".", "..")]
        if bad:
            raise ValueError(f"{col} must be a non-empty file-name part without slashes, got {bad[0]!r}")
    dup = table.duplicated(["key", "image_type"])
    if dup.any():
        r = table[dup].iloc[0]
        raise ValueError(f"duplicate item key={r['key']!r}, image_type={r['image_type']!r}: each (key, image_type) "
                         "names one output file")
    return table.reset_index(drop=True)


def is_finished(out: Path, backend: str, fingerprint: str, input_path: Optional[PathLike] = None) -> bool:
    """True when the label map and its sidecar (written last, of the current :data:`SIDECAR_VERSION`, so with its
    provenance) exist, made by the same backend and settings and, when ``input_path`` is given, from the same input
    file (same size and modification time)."""
    side = _sidecar(out)
    if not (out.is_file() and side.is_file()):
        return False
    meta = read_json(side)
    if meta is None or meta.get("sidecar_version") != SIDECAR_VERSION or not meta.get("provenance"):
        return False
    if input_path is not None and meta.get("input_stamp") != file_stamp(input_path):
        return False
    return meta.get("backend") == backend and meta.get("config_fingerprint") == fingerprint


def item_threads(cfg: Union[AtlasConfig, SynthSegConfig]) -> int:
    """ITK threads per segmented image: the atlas config's ``threads``, else 1 (byte-identical reruns)."""
    return int(getattr(cfg, "threads", None) or 1)


def _work(item) -> dict:
    """Segment one image in a batch worker and write its label map, then its sidecar (last)."""
    key, image_type, path, out_dir, backend, cfg = item
    t0 = time.perf_counter()
    # a worker's environment already asks for this count; in the calling process it is fixed here
    itk = set_itk_threads(item_threads(cfg))
    out = output_path(out_dir, key, image_type)
    _sidecar(out).unlink(missing_ok=True)  # written last: a half-done or failed item is never "finished"
    stamp = file_stamp(path)
    vol = sio.load_volume(path)
    labels, aff = segment(vol.data, vol.affine, backend=backend, config=cfg)
    prov = provenance(backend, cfg)  # cached per process: the checks segment() made
    sio.save_volume(out, labels, aff, header=vol.header)
    vols = {k: round(v, 4) for k, v in regional_volumes(labels, aff, label_table(cfg.parc)).items()}
    total = round(float(np.count_nonzero(labels) * abs(np.linalg.det(aff[:3, :3])) / 1000.0), 4)
    seconds = round(time.perf_counter() - t0, 2)
    write_json(_sidecar(out), {
        "key": key, "image_type": image_type, "input": str(path), "input_stamp": stamp, "backend": backend,
        "config": cfg.to_dict(), "config_fingerprint": cfg.fingerprint(), "seconds": seconds,
        "sidecar_version": SIDECAR_VERSION, "volumes_ml": vols, "total_brain_ml": total, "itk_threads": itk,
        "provenance": prov})
    return {"seconds": seconds, "path": str(out)}


def segment_batch(items, out_dir: PathLike, *, backend: str = "atlas",
                  config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None, n_jobs: int = 1,
                  overwrite: bool = False, progress: bool = True,
                  executor: Optional[Executor] = None) -> pd.DataFrame:
    """Segment many images; resumable, a failure is recorded and the batch goes on.

    Args:
        items: a table with columns ``key, image_type, path`` (e.g. :func:`synth7t.inference.collect_images`), or
            a list of ``(key, image_type, path)`` tuples or dicts.
        out_dir: output folder: ``<out_dir>/<image_type>/<key>_dseg.nii.gz`` with a ``_dseg.json`` sidecar
            (backend, settings, provenance, seconds, volumes) written last, plus ``segmentations.tsv``,
            ``volumes.tsv`` and ``provenance.json`` (:func:`~synth7t.segment.provenance_note` prints it).
        backend: ``"atlas"`` or ``"synthseg"`` (see :func:`segment`).
        config: the backend's settings.
        n_jobs: worker processes (spawned); each gets ``config.threads`` ITK threads (atlas; default 1, which
            keeps the labels identical from run to run; more threads are faster but not reproducible).
        overwrite: redo items that finished earlier; otherwise an item is skipped when its sidecar says it was
            made by the same backend and settings from the same input file (size and modification time).
        progress: tqdm progress bar.
        executor: where images run (default local processes, ``n_jobs`` of them).

    Returns:
        The status table ``key, image_type, status (done|skipped|failed), seconds, path, reason`` (also written
        as ``segmentations.tsv``). ``volumes.tsv`` has one row per finished ``key, image_type`` in ``out_dir``
        (this run's and earlier runs') and one column per region of :data:`FREESURFER_LABELS` in mL (then, when
        any label map there has a cortical parcellation, one per region of :data:`APARC_LABELS`, empty for the
        maps without), plus ``Total-Brain`` (every labelled voxel: tissue and ventricles). ``provenance.json``
        lists the distinct provenances of those label maps (:func:`~synth7t.segment.provenance`) with their
        image counts.
    """
    cfg = config_for(backend, config)
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    table = _items_table(items)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint()
    if executor is None:
        n = max(1, min(int(n_jobs), len(table)))
        executor = LocalExecutor(n, item_threads(cfg))
    status = run_batch(
        [(r.key, r.image_type, r.path, str(out), backend, cfg) for r in table.itertuples(index=False)], _work,
        ids=lambda it: {"key": it[0], "image_type": it[1]}, id_columns=("key", "image_type"),
        is_finished=lambda it: is_finished(output_path(out, it[0], it[1]), backend, fp, it[2]),
        status_file=out / SEGMENTATIONS_FILE, executor=executor, overwrite=overwrite, columns=("path",),
        progress=progress, desc=f"segment ({backend})", unit="image")
    skipped = status["status"] == "skipped"
    status.loc[skipped, "path"] = [str(output_path(out, k, t)) for k, t in
                                   zip(status.loc[skipped, "key"], status.loc[skipped, "image_type"])]
    status = status.sort_values(["key", "image_type"], kind="stable").reset_index(drop=True)
    # the table run_batch wrote (a shard's has its own name), now in key order
    table_path = shard_status_path(out / SEGMENTATIONS_FILE, getattr(executor, "shard", None))
    status.to_csv(table_path, sep="\t", index=False)
    volumes, metas = _volumes_from_sidecars(out)
    volumes.to_csv(out / VOLUMES_FILE, sep="\t", index=False)
    _write_provenance(out, metas)
    return status


def _finished_sidecars(out_dir: Path) -> list[dict]:
    """The sidecars of the finished label maps in ``out_dir`` (this run's and earlier runs')."""
    metas = []
    for side in sorted(Path(out_dir).glob("*/*_dseg.json")):
        meta = read_json(side)
        if meta is None:
            continue
        if not side.with_name(side.name.replace(".json", ".nii.gz")).is_file() or "volumes_ml" not in meta:
            continue
        metas.append(meta)
    return metas


def _volumes_from_sidecars(out_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One row per finished label map in ``out_dir``, from the sidecars (returned too)."""
    metas = _finished_sidecars(out_dir)
    parc = any((m.get("config") or {}).get("parc") for m in metas)
    cols = ["key", "image_type", *FREESURFER_LABELS.values(), *(APARC_LABELS.values() if parc else ()), TOTAL_BRAIN]
    rows = [{"key": m["key"], "image_type": m["image_type"], **m["volumes_ml"], TOTAL_BRAIN: m["total_brain_ml"]}
            for m in metas]
    table = pd.DataFrame(rows, columns=cols).sort_values(["key", "image_type"], kind="stable").reset_index(drop=True)
    return table, metas


def _write_provenance(out_dir: Path, metas: list[dict]) -> Path:
    """``provenance.json``: the distinct provenances of the label maps in ``volumes.tsv``, with their counts."""
    groups: dict[str, dict] = {}
    for m in sorted(metas, key=lambda m: (m["key"], m["image_type"])):
        prov = m.get("provenance") or {
            "backend": m.get("backend"),
            "summary": f"{m.get('backend')}: provenance not recorded (label map made before synth7t recorded it; "
                       "rerun with overwrite=True)"}
        g = groups.setdefault(prov["summary"], {"summary": prov["summary"], "n_images": 0, "image_types": [],
                                                "provenance": prov})
        g["n_images"] += 1
        if m["image_type"] not in g["image_types"]:
            g["image_types"].append(m["image_type"])
    return write_json(out_dir / PROVENANCE_FILE, {"tables": [SEGMENTATIONS_FILE, VOLUMES_FILE],
                                                  "segmentations": list(groups.values())})


def volumes_table(out_dir: PathLike) -> pd.DataFrame:
    """The ``volumes.tsv`` that :func:`segment_batch` wrote in ``out_dir`` (regional volumes in mL)."""
    p = Path(out_dir) / VOLUMES_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; run segment_batch (or `synth7t segment`) with "
                                f"--output-dir {out_dir} first")
    return pd.read_csv(p, sep="\t", dtype={"key": str, "image_type": str})


# ----------------------------------------------------------------------------------------------- inputs

_NOT_IMAGES = ("_dseg", "_mask", "_probseg")


def _key_of(path: Path) -> str:
    name = path.name.split(".nii")[0]
    return name[: -len("_T1w")] if name.endswith("_T1w") else name


def _image_type_of(path: Path, given: Optional[str]) -> str:
    if given:
        return given
    for part in _key_of(path).split("_"):
        if part.startswith("acq-") and len(part) > 4:
            return part[4:]
    return "image"


def expand_inputs(inputs: Sequence[PathLike], image_type: Optional[str] = None) -> pd.DataFrame:
    """The batch items of files and folders (recursively: every ``.nii``/``.nii.gz`` that is not a label map
    or mask, i.e. without ``_dseg``, ``_mask`` or ``_probseg`` in its name).

    Args:
        inputs: NIfTI files and folders.
        image_type: the image type of every item (default: the ``acq-<x>`` entity of the name, else ``image``).

    Returns:
        Table ``key, image_type, path``; ``key`` is the file name without ``.nii[.gz]`` and a final ``_T1w``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not NIfTI, a folder without images, two files with one key.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and sio.is_nifti_path(q)
                           and not any(t in q.name for t in _NOT_IMAGES))
            if not found:
                raise ValueError(f"{p}: no NIfTI images (.nii, .nii.gz) in this folder")
            files += found
        elif not p.exists():
            raise FileNotFoundError(f"{p}: file does not exist")
        elif not sio.is_nifti_path(p):
            raise ValueError(f"{p}: not a NIfTI file (expected a .nii or .nii.gz name)")
        else:
            files.append(p)
    rows = [{"key": _key_of(f), "image_type": _image_type_of(f, image_type), "path": str(f)} for f in files]
    table = pd.DataFrame(rows, columns=["key", "image_type", "path"])
    dup = table.duplicated(["key", "image_type"], keep=False)
    if dup.any():
        raise ValueError("several inputs give the same output name: " + ", ".join(table.loc[dup, "path"]))
    return table
