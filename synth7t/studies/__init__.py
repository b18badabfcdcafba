"""The paper's studies: blinded rating, the amygdala and diagnosis studies, its numbers beside a run's.

- :mod:`~synth7t.studies.rating`      blinded rating sessions in SQLite, the rater app, the model observer
- :mod:`~synth7t.studies.stats`       repeated-measures ANOVA, post-hoc and paired tests
- :mod:`~synth7t.studies.lone`        lone 3T scans to Dice and regional volumes (§2.8.3, §2.8.4)
- :mod:`~synth7t.studies.diagnosis`   random forests on regional volumes
- :mod:`~synth7t.studies.paper`       the paper's reported numbers beside a run's
- :mod:`~synth7t.studies.deviations`  every departure from the paper and the authors' code, in one table
"""
