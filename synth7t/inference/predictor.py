"""A loaded model that knows how it predicts: :class:`Predictor` (after nnU-Net's predictor object).

Every prediction of synth7t goes through :meth:`Predictor.predict`, one volume at a time, whatever the model; its
kind (:data:`KINDS`) chooses the pass:

- ``unet``: the paper's 2.5D U-Net (and its GAN variant): axial slices with their neighbours and the subject's
  context (:func:`synth7t.inference.volume.predict_volume`);
- ``multiview``: a 2.5D U-Net that learned several planes: each plane's slices, the views fused and their spread
  (:func:`synth7t.inference.views.predict_multiview`);
- ``patch``: a V-Net or WATNet baseline: sliding windows of its training patch over the brain's box
  (:func:`synth7t.inference.volume.predict_volume_patches`);
- ``imported``: an imported network of the authors: their input recipe on their 7T template's grid
  (:func:`synth7t.inference.volume.predict_volume_released`).

Subjects (:mod:`synth7t.inference.subjects`), lone files (:mod:`synth7t.inference.files`), batches
(:mod:`synth7t.inference.batch`) and the lone-3T studies (:mod:`synth7t.studies.lone`) hold a Predictor and call
:meth:`Predictor.predict`; none of them looks at the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..training.patches import patch_geometry
from .model import is_imported, lone_grid, load_model, process_model
from .precision import choose_precision, inference_precision
from .volume import grid_divisor_of, patch_overlap_of, predict_volume, predict_volume_released
from .views import check_view_request, is_multiview, model_planes, predict_multiview

PathLike = Union[str, Path]

__all__ = ["Predictor", "Prediction", "KINDS"]

#: the kinds of model a Predictor knows (see the module docstring)
KINDS = ("unet", "multiview", "patch", "imported")


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        image: the synthetic 7T, float32, of the input's shape (zero outside the brain mask).
        uncertainty: the SD across the views (and flips), or None when not asked.
        precision: ``"fp32"`` or ``"bf16"``.
        precision_note: the line that says why ``"auto"`` chose bf16 (else None).
    """

    image: np.ndarray
    uncertainty: Optional[np.ndarray] = None
    precision: str = "fp32"
    precision_note: Optional[str] = None


class Predictor:
    """A trained (or imported) model, loaded, with what it needs to know to predict a volume.

    Args:
        network: the generator (from :func:`synth7t.inference.load_model`); None for a description that only checks
            requests (:meth:`describe`: ``model.json`` read, no weights loaded).
        meta: its ``model.json`` as :func:`synth7t.inference.load_model` returns it.

    Attributes:
        kind: one of :data:`KINDS`.
        planes: the planes the network learned (``("axial",)`` but for a multi-view model).
        grid: what a lone 3T is aligned onto (:func:`synth7t.inference.model.lone_grid`; ``{}`` for an imported
            model, which has its template's grid).
        conditioning: the context the network reads, among ``age``, ``sex``, ``diagnosis``, ``location``.
        recipe: how an input reaches the network: ``n_input_slices``, ``grid_divisor``, a baseline's
            ``patch_size`` and ``patch_overlap``; an imported model's ``model.json`` ``input`` (their slicing axis,
            stack, clip percentiles, templates).
    """

    def __init__(self, network, meta: Mapping):
        self.network, self.meta = network, dict(meta)
        cfg = self.meta.get("model_config") or {}
        if is_imported(self.meta):
            self.kind = "imported"
        elif patch_geometry(cfg) is not None:
            self.kind = "patch"
        elif is_multiview(self.meta):
            self.kind = "multiview"
        else:
            self.kind = "unet"
        self.planes = model_planes(self.meta)
        self.grid = lone_grid(self.meta)
        if network is not None:
            config = network.config
        else:
            from ..models.config import config_from_dict

            config = config_from_dict(cfg)
        if self.kind == "imported":
            self.conditioning = tuple({"position": "location"}.get(t, t) for t in getattr(config, "tokens", ()))
            self.recipe = dict(self.meta.get("input") or {})
        elif self.kind == "patch":
            self.conditioning = ()
            self.recipe = {"patch_size": patch_geometry(cfg).size, "patch_overlap": patch_overlap_of(self.meta),
                           "n_input_slices": cfg.get("n_input_slices"), "grid_divisor": 1}
        else:
            dx = bool(getattr(config, "use_diagnosis", cfg.get("use_diagnosis", True)))
            ctx = bool(getattr(config, "uses_context", True))
            self.conditioning = ("age", "sex", *(("diagnosis",) if dx else ()), "location") if ctx else ()
            self.recipe = {"n_input_slices": int(getattr(config, "n_input_slices", 3)),
                           "grid_divisor": grid_divisor_of(self.meta)}

    @classmethod
    def from_folder(cls, model_dir: PathLike, device: str = "cpu", *, once_per_process: bool = False) -> "Predictor":
        """Load a model folder (:func:`synth7t.inference.load_model`; with ``once_per_process`` the copy this process
        loaded before, :func:`synth7t.inference.model.process_model`)."""
        loaded = process_model(model_dir, device) if once_per_process else load_model(model_dir, device)
        return cls(*loaded)

    @classmethod
    def describe(cls, model_dir: PathLike) -> "Predictor":
        """What a model folder can predict, from its ``model.json`` alone (no weights loaded: a batch whose inputs
        run in other processes checks its request here; :meth:`predict` refuses)."""
        import json

        from .model import model_folder

        folder = model_folder(model_dir)
        return cls(None, {**json.loads((folder / "model.json").read_text()), "model_dir": str(folder)})

    @classmethod
    def of(cls, model, device: str = "cpu") -> "Predictor":
        """A Predictor from a Predictor (itself), a ``(generator, meta)`` pair or a model folder."""
        if isinstance(model, Predictor):
            return model
        if isinstance(model, tuple):
            return cls(*model)
        return cls.from_folder(model, device)

    @property
    def device(self):
        if self.network is None:
            raise ValueError(f"{self.name}: a description only (Predictor.describe); load it to predict")
        return next(self.network.parameters()).device

    @property
    def reads_diagnosis(self) -> bool:
        """Whether the output depends on the diagnosis given (a ``-nodiag`` model, a baseline: no)."""
        return "diagnosis" in self.conditioning

    @property
    def name(self) -> str:
        """The model's name: its run's ``model_name`` when recorded, else its folder's name."""
        folder = Path(self.meta.get("model_dir", "model"))
        return str(self.meta.get("model_name") or (folder.parent.name if folder.name == "model" else folder.name))

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, kind={self.kind!r}, planes={self.planes}, device={self.device})"

    def check_request(self, views: Optional[Union[str, Sequence[str]]] = None, *, uncertainty: bool = False,
                      flips: bool = False, impaired: Optional[bool] = None, check_impaired: bool = False) -> tuple:
        """Refuse, before any work, what this model cannot do: views it did not learn, an uncertainty with one member,
        views or flips of a baseline or an imported model, no diagnosis for a model that reads it (with
        ``check_impaired``).

        Returns:
            The planes a multi-view request will predict (the model's own for an axial request).
        """
        if self.kind in ("patch", "imported"):
            asked = [n for n, v in (("views", views), ("uncertainty", uncertainty), ("flips", flips)) if v]
            if asked and not (self.kind == "patch" and views is not None and tuple(views) == ("axial",)
                              and not uncertainty and not flips):
                what = "a V-Net or WATNet: it predicts by sliding window along the axial plane" \
                    if self.kind == "patch" else \
                    "an imported model of the authors: it predicts on their 7T template's grid with their recipe"
                raise ValueError(f"{', '.join(asked)} not available for {what}")
        planes = check_view_request(self.meta, views, uncertainty=uncertainty, flips=flips)
        if check_impaired and self.reads_diagnosis and impaired is None:
            raise ValueError("this model is conditioned on the diagnosis: give --impaired 0 or 1 (or use a -nodiag "
                             "model)")
        return planes

    def predict(self, t3: np.ndarray, *, age: float, sex: str, impaired: Optional[bool],
                mask: Optional[np.ndarray] = None, axial_range: Optional[tuple] = None,
                views: Optional[Union[str, Sequence[str]]] = None, fusion: str = "mean", uncertainty: bool = False,
                flips: bool = False, batch_size: Optional[int] = None, precision: str = "fp32",
                progress: bool = False) -> Prediction:
        """One volume's synthetic 7T, by the path of this model's kind.

        Args:
            t3: the 3T on the model's grid: normalised by synth7t's preprocessing for synth7t's models; for an
                imported model brain-extracted raw intensities on their 7T template's grid (their recipe normalises).
            age, sex, impaired: the subject's context (``impaired`` may be None when the model does not read it).
            mask: the brain mask; the output is zero outside it.
            axial_range: the first and last axial brain slice (the preprocessing record's), else from the mask.
            views, fusion, uncertainty, flips: multi-view prediction (:func:`synth7t.inference.views.predict_multiview`);
                an axial model asked for nothing more takes the paper's axial pass.
            batch_size: slices (windows) per forward pass.
            precision: ``auto``, ``fp32`` or ``bf16`` (:func:`synth7t.inference.precision.choose_precision`).
            progress: a tqdm bar over the slices.
        """
        self.check_request(views, uncertainty=uncertainty, flips=flips, impaired=impaired, check_impaired=True)
        chosen, note = choose_precision(precision, self.device, self.network, self.meta)
        if str(sex) not in ("F", "M"):
            raise ValueError(f"sex must be F or M, got {sex!r}")
        unc = None
        with inference_precision(chosen, self.device):
            if self.kind == "imported":
                image = predict_volume_released(self.network, t3, self.recipe, age=float(age), sex=sex,
                                                impaired=impaired, mask=mask, batch_size=batch_size,
                                                progress=progress)
            elif views is None and not uncertainty and not flips and self.kind != "multiview":
                if axial_range is None:
                    axial_range = _axial_range(t3, mask)
                image = predict_volume(self.network, t3, age=float(age), sex=sex, impaired=impaired,
                                       bottom=int(axial_range[0]), top=int(axial_range[1]), mask=mask,
                                       batch_size=batch_size, patch_overlap=self.recipe.get("patch_overlap"),
                                       progress=progress)
            else:
                res = predict_multiview((self.network, self.meta), t3, age=float(age), sex=sex, impaired=impaired,
                                        mask=mask, views=views, fusion=fusion, uncertainty=uncertainty, flips=flips,
                                        batch_size=batch_size, axial_range=axial_range, progress=progress)
                image, unc = res.prediction, res.uncertainty
        return Prediction(image, unc, chosen, note)


def _axial_range(t3: np.ndarray, mask: Optional[np.ndarray]) -> tuple:
    """The first and last axial slice with brain (the mask's, else the 3T's non-zero voxels)."""
    brain = (np.asarray(mask) > 0) if mask is not None else (np.asarray(t3) != 0)
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    if not len(zs):
        raise ValueError("the volume has no brain (an empty mask, or a 3T of zeros)")
    return int(zs[0]), int(zs[-1])
