"""Blinded rating sessions (paper §2.8.2): anonymised queries, a rater web app, answers in SQLite.

A session folder holds what raters' app reads, and nothing else::

    session.json       criteria, number of queries and positions (no variant names)
    images/<token>.png one anonymised 2D slice per (query, position); token names carry no meaning
    answers.sqlite     the queries (positions -> image files) and every answer, one transaction per answer

and beside it, never inside, the analyst's folder ``<session>-key/key.sqlite``: which variant (3T, 7T, U-Net, ...)
sits at which position of which query.

``synth7t rating-session`` (or chapter 05) builds a session and registers its raters, each with a secret link
(:mod:`~synth7t.studies.rating.raters`); ``synth7t rate SESSION`` serves the widget to them as a Voilà web app
(:mod:`~synth7t.studies.rating.app`) that opens only with a registered rater's own link, shows no code and cannot reach
the key. Each answer is committed before the widget moves on, so a closed page, a killed server or a crash loses
nothing already answered, and a rater who comes back continues at the first query they have not answered.

Chapter 05 runs a session with :func:`run_images`, :func:`variant_volumes`, :func:`open_session` (build once, then
reuse), :func:`plot_query`, :func:`simulate_raters` (the model observer of :mod:`~synth7t.studies.rating.observer`) and
:func:`progress_table`; chapter 06 unblinds it with :func:`analysis_ranks` and :func:`observer_table` before the
statistics of :mod:`synth7t.studies.stats`.

Modules: :mod:`~synth7t.studies.rating.session` (building and storing a session, the key), :mod:`~synth7t.studies.rating.raters`
(registered raters, their links, refusals), :mod:`~synth7t.studies.rating.widget` (what a rater sees),
:mod:`~synth7t.studies.rating.app` (the widget as a web app), :mod:`~synth7t.studies.rating.observer` (the simulated raters'
measurements), :mod:`~synth7t.studies.rating.run` (chapter 05 and the session command) and :mod:`~synth7t.studies.rating.analysis`
(chapter 06). Every public name is importable from here.
"""

from .analysis import analysis_ranks, is_simulated_rater, variant_order
from .app import check_servable, open_rater_page, serve
from .observer import MEASURES, OBSERVER_WEIGHTS, measure_query, measure_session, observer_ranking, observer_scores
from .raters import add_rater, admit, link_opens, rater_link, raters_table, registered_raters, revoke_rater
from .run import (PAPER_N_QUERIES, default_rater_noise, observer_table, open_session, progress_table, rater_list,
    run_images, simulate_raters, variant_volumes)
from .session import (CRITERIA, PLANES, Query, RatingStore, build_session, check_rater_id, key_dir_of, key_file,
    move_key_out, query_design, ranks_table, read_key)
from .widget import CriterionRanker, RaterApp, plot_query

__all__ = [
    "CRITERIA", "MEASURES", "OBSERVER_WEIGHTS", "PAPER_N_QUERIES", "PLANES", "CriterionRanker", "Query", "RaterApp",
    "RatingStore", "add_rater", "admit", "analysis_ranks", "build_session", "check_rater_id", "check_servable",
    "default_rater_noise", "is_simulated_rater", "key_dir_of", "key_file", "link_opens", "measure_query",
    "measure_session", "move_key_out", "observer_ranking", "observer_scores", "observer_table", "open_rater_page",
    "open_session", "plot_query", "progress_table", "query_design", "ranks_table", "rater_link", "rater_list",
    "raters_table", "read_key", "registered_raters", "revoke_rater", "run_images", "serve", "simulate_raters",
    "variant_order", "variant_volumes",
]
