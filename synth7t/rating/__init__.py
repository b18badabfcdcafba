"""Blinded rating sessions (paper §2.8.2): anonymised queries, a rater widget, answers in SQLite.

A session folder holds::

    session.json       criteria, number of queries and positions (no variant names)
    images/<token>.png one anonymised 2D slice per (query, position); token names carry no meaning
    answers.sqlite     the queries (positions -> image files) and every answer, one transaction per answer
    key.sqlite         the key: which variant (3T, 7T, U-Net, ...) sits at which position of which query

The widget reads ``session.json``, ``images/`` and ``answers.sqlite`` only; the key is read by the analysis.
Each answer is committed before the widget moves on, so a closed kernel or a crash loses nothing already
answered, and a rater who comes back continues at the first query they have not answered.

Chapter 05 runs a session with :func:`variant_volumes`, :func:`open_session` (build once, then reuse),
:func:`plot_query`, :func:`simulate_raters` and :func:`progress_table`; chapter 06 unblinds it with
:func:`analysis_ranks` before the statistics of :mod:`synth7t.stats`.

Modules: :mod:`~synth7t.rating.session` (building and storing a session), :mod:`~synth7t.rating.widget` (what a
rater sees), :mod:`~synth7t.rating.run` (chapter 05: raters, variants, simulated raters) and
:mod:`~synth7t.rating.analysis` (chapter 06). Every public name is importable from here.
"""

from .analysis import analysis_ranks, variant_order
from .run import (
    SIMULATED_QUALITY,
    open_session,
    progress_table,
    rater_list,
    simulate_raters,
    simulated_ranking,
    variant_volumes,
)
from .session import (
    CRITERIA,
    PLANES,
    Query,
    RatingStore,
    build_session,
    ranks_table,
    read_key,
)
from .widget import RaterApp, plot_query

__all__ = [
    "CRITERIA", "PLANES", "SIMULATED_QUALITY", "Query", "RaterApp", "RatingStore", "analysis_ranks", "build_session",
    "open_session", "plot_query", "progress_table", "ranks_table", "rater_list", "read_key", "simulate_raters",
    "simulated_ranking", "variant_order", "variant_volumes",
]
