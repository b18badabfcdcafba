"""Validation of a training run against the identity baseline: the model and its 3T input scored on the same
validation slices (PSNR and SSIM, the paper's definitions, brain voxels), after every epoch.

Copying the input is the baseline every 3T-to-7T model must beat: a model below it degrades every scan it is
given. :class:`Validation` is the part of :class:`synth7t.training.trainer.Trainer` that scores and reports this (the run's
``val_log.csv`` holds both columns, ``train.log`` a line per validation, and the model card the verdict).
"""

from __future__ import annotations

import numpy as np

from .patches import nonzero_box, sliding_window_predict

__all__ = ["Validation", "beats_identity"]


def beats_identity(metrics: dict) -> bool:
    """Whether validation ``metrics`` (:meth:`Trainer.validate`) are above the identity baseline, the 3T input scored
    on the same slices, in both PSNR and SSIM (NaN scores are not above anything)."""
    return bool(metrics.get("psnr", np.nan) > metrics.get("psnr_3t", np.nan)
                and metrics.get("ssim", np.nan) > metrics.get("ssim_3t", np.nan))


class Validation:
    """Mixin of :class:`synth7t.training.trainer.Trainer`: scoring on the validation subjects and the identity notes."""

    @staticmethod
    def _slice_metrics(ref: np.ndarray, img: np.ndarray) -> tuple[float, float]:
        from ..evaluation.metrics import psnr, ssim_global

        m = ref > 0
        if m.sum() < 16:
            return float("nan"), float("nan")
        return psnr(ref, img, m), ssim_global(ref, img, m)

    def _sliding_window(self, x):
        """A baseline's prediction of whole slices (2D) or a slab (3D) by sliding window, as
        :func:`synth7t.inference.volume.predict_volume` predicts (windows per pass: this process's training share)."""
        with self._autocast():
            return sliding_window_predict(self.generator, x, patch_size=self.geometry.size,
                                          overlap=self.cfg.patch_overlap, batch_size=self.micro_batch)

    def validate(self) -> dict:
        """PSNR and SSIM (paper definitions, brain voxels) of the model and of the 3T input on validation slices.

        The U-Nets and WATNet-2D are scored on ``val_slices`` whole axial slices of the validation subjects (the
        same slices every epoch); WATNet-2D predicts each from its three-slice stack by sliding window. A 3D
        baseline is scored on the slices of one slab per validation subject (:meth:`_validation_slabs`).
        """
        import torch

        if self.geometry is not None and self.geometry.spatial_dims == 3:
            return self._validate_slabs()
        self.generator.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, len(self.val_ids), self.rank_batch):  # what one process holds in training
                items = [self.val_ds[int(i)] for i in self.val_ids[start:start + self.rank_batch]]
                x = torch.stack([it["x"] for it in items]).to(self.device)
                c = torch.stack([it["context"] for it in items]).to(self.device)
                if self.geometry is None:
                    with self._autocast():
                        pred = self.generator(x, c)
                else:
                    pred = self._sliding_window(x)
                pred = pred.float().clamp(0, 1).cpu().numpy()
                mid = x.shape[1] // 2
                for it, p, xin in zip(items, pred, x.cpu().numpy()):
                    # a coronal/sagittal slice's artefact rows (its loss mask) are not scored either
                    y = it["y"].numpy()[0] * (it["mask"].numpy()[0] if "mask" in it else 1)
                    mask = y > 0
                    rows.append((*self._slice_metrics(y, p[0] * mask), *self._slice_metrics(y, xin[mid] * mask)))
        self.generator.train()
        return self._summarise_validation(rows)

    def _validation_slabs(self) -> list:
        """The slabs a 3D baseline is validated on: ``(key, first row, last row + 1, scored z)`` per validation
        subject, in key order, until ``val_slices`` slices are scored.

        A slab is ``patch_size`` slices deep, centred on the subject's middle usable slice; the scored slices are
        its usable slices at least ``patch_overlap`` slices from a slab face that is not the volume's own face:
        there, as in a whole-volume prediction, every voxel lies well inside a window or is blended with a
        neighbour's, so the scores follow the predictions of :func:`synth7t.inference.volume.predict_volume`. A whole
        volume would cost a few hundred windows per subject and epoch on a CPU; a slab costs one layer of them.
        """
        P, ov = self.geometry.size, self.cfg.patch_overlap
        vols = self.cache.volumes.set_index("key")
        idx = self.cache.index
        slabs, n = [], 0
        for key in self.val_keys:
            offset, depth = int(vols.loc[key, "offset"]), int(vols.loc[key, "depth"])
            z = np.sort(idx.loc[idx["key"] == key, "z"].to_numpy())
            if not len(z):
                continue
            z0 = min(max(int(z[len(z) // 2]) - P // 2, 0), max(depth - P, 0))
            z1 = min(z0 + P, depth)
            lo, hi = (z0 + ov if z0 > 0 else 0), (z1 - ov if z1 < depth else depth)
            scored = [int(v) for v in z if lo <= v < hi][: max(self.cfg.val_slices - n, 0)]
            if scored:
                slabs.append((key, offset + z0, offset + z1, scored))
                n += len(scored)
            if n >= self.cfg.val_slices:
                break
        return slabs

    def _validate_slabs(self) -> dict:
        """:meth:`validate` for a 3D baseline: the slabs of :meth:`_validation_slabs`, each cropped in-plane to its
        non-zero voxels and predicted by sliding window; the scored slices are compared with the 7T."""
        import torch

        self.generator.eval()
        rows = []
        vols = self.cache.volumes.set_index("key")
        with torch.no_grad():
            for key, r0, r1, scored in self._validation_slabs():
                x3 = np.asarray(self.cache.t3[r0:r1], np.float32)
                y7 = np.asarray(self.cache.t7[r0:r1], np.float32)
                pred = np.zeros_like(x3)
                box = nonzero_box(x3)
                if box is not None:
                    inplane = (slice(None), box[1], box[2])
                    x = torch.from_numpy(np.ascontiguousarray(x3[inplane]))[None, None].to(self.device)
                    pred[inplane] = self._sliding_window(x).float().clamp(0, 1)[0, 0].cpu().numpy()
                first = r0 - int(vols.loc[key, "offset"])
                for z in scored:
                    y = y7[z - first]
                    mask = y > 0
                    rows.append((*self._slice_metrics(y, pred[z - first] * mask),
                                 *self._slice_metrics(y, x3[z - first] * mask)))
        self.generator.train()
        return self._summarise_validation(rows)

    @staticmethod
    def _summarise_validation(rows: list) -> dict:
        """Mean PSNR and SSIM of the model and of the 3T input over the scored slices (NaN-safe)."""
        if not rows:
            return {k: float("nan") for k in ("psnr", "ssim", "psnr_3t", "ssim_3t")}
        a = np.array(rows, dtype=float)
        keys = ("psnr", "ssim", "psnr_3t", "ssim_3t")
        return {k: float(np.nanmean(a[:, i])) for i, k in enumerate(keys)}

    def _note(self, line: str) -> None:
        """One line into the run's ``train.log`` (rank 0), and on the console."""
        if self.rank != 0:
            return
        from tqdm.auto import tqdm

        with open(self.run_dir / "train.log", "a") as f:
            f.write(line + "\n")
        tqdm.write(line)

    def _note_identity(self, metrics: dict) -> None:
        """After a validation: the model's scores against the identity baseline (the 3T input on the same slices)."""
        if self.rank != 0 or not metrics:
            return
        verdict = "above" if beats_identity(metrics) else "NOT above"
        self._note(f"epoch {self.pos.epoch + 1}, step {self.pos.step}: validation PSNR {metrics['psnr']:.2f} dB, SSIM "
                   f"{metrics['ssim']:.4f}; copying the 3T input {metrics['psnr_3t']:.2f} dB, {metrics['ssim_3t']:.4f}: "
                   f"{verdict} the identity")
