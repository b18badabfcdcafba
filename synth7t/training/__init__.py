"""Training: slices and patches, losses, the configuration, the trainer and what it exports.

- :mod:`~synth7t.training.slices`      the memory-mapped 2.5D slice cache and its datasets
- :mod:`~synth7t.training.patches`     the baselines' patches, and whole volumes by sliding window
- :mod:`~synth7t.training.losses`      L1, perceptual and adversarial losses
- :mod:`~synth7t.training.config`      training settings and named presets
- :mod:`~synth7t.training.runtime`     checkpoint files, devices and processes, seeding, batch order
- :mod:`~synth7t.training.validation`  each epoch scored against the identity (the 3T input itself)
- :mod:`~synth7t.training.trainer`     the trainer (CPU, one GPU, DDP), resume and export
- :mod:`~synth7t.training.modelcard`   the model card written beside every exported model
- :mod:`~synth7t.training.summary`     the models of a run in one table, from their cards
- :mod:`~synth7t.training.limits`      what limits a short training: retrained with one setting changed
"""
