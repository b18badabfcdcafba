"""Running many items: the one batch runner and SLURM job arrays.

- :mod:`~synth7t.runtime.batch`    status rows as items finish, resumption, failures, workers, atomic writes
- :mod:`~synth7t.runtime.cluster`  SLURM job arrays through submitit, shards, ``synth7t status``
"""
