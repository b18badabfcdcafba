"""Running a session (chapter 05 and ``synth7t rating-session``): raters, the image variants of a run, opening a
session once, simulated raters, progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .observer import measure_session, observer_ranking, observer_scores
from .raters import add_rater, registered_raters
from .session import RatingStore, build_session, key_dir_of, move_key_out, read_key
from .widget import RaterApp

PathLike = Union[str, Path]

#: the paper's survey: 28 queries (one per test subject), ranked by four raters
PAPER_N_QUERIES = 28


def rater_list(rater_ids) -> list[str]:
    """Rater codes as a list: a single code given as a string (``papermill -p rater_ids alice``) becomes a list.

    Raises:
        ValueError: no rater, or an empty code.
    """
    if isinstance(rater_ids, str) and not rater_ids.lstrip().startswith("["):
        rater_ids = [rater_ids]
    if isinstance(rater_ids, str) or not rater_ids or not all(str(r).strip() for r in rater_ids):
        raise ValueError(f"rater_ids must be a non-empty list of rater codes, e.g. ['rater1'] (papermill: "
                         f"-y 'rater_ids: [rater1]'), got {rater_ids!r}")
    return [str(r).strip() for r in rater_ids]


def variant_volumes(images: pd.DataFrame, image_types: Sequence[str] = ()) -> tuple[dict, list[str]]:
    """Every variant's file per subject, for the subjects that have every variant (a model that failed on one
    subject would otherwise leave a query with a missing letter).

    Args:
        images: :func:`synth7t.inference.collect_images` (``key``, ``image_type``, ``path``).
        image_types: variants to show; empty: every image type of ``images``, in its order.

    Returns:
        ``({variant: {key: path}}, dropped keys)``, ready for :func:`build_session`.

    Raises:
        ValueError: an image type of ``image_types`` has no image.
    """
    available = list(dict.fromkeys(images["image_type"]))
    unknown = [t for t in image_types if t not in available]
    if unknown:
        raise ValueError(f"image_types {unknown} have no image for these subjects; available: {sorted(available)}")
    variants = list(image_types) or available
    paths = {v: dict(zip(g["key"], g["path"])) for v, g in images.groupby("image_type", sort=False)}
    keys = sorted(set(images["key"]))
    complete = [k for k in keys if all(k in paths[v] for v in variants)]
    return {v: {k: paths[v][k] for k in complete} for v in variants}, sorted(set(keys) - set(complete))


def run_images(data_dir: PathLike, derivatives: PathLike, predict_dir: PathLike, subjects: str = "test"
               ) -> pd.DataFrame:
    """Every image type of a run for the chosen subjects: the preprocessed 3T and 7T of each finished subject and
    each model's prediction of chapter 03 (:func:`synth7t.inference.collect_images`).

    Args:
        data_dir: the dataset root (its ``split.tsv`` names the held-out subjects).
        derivatives: the preprocessing outputs.
        predict_dir: ``<runs_dir>/<run_name>/03_predict``.
        subjects: ``"test"`` (held out) or ``"all"``.

    Returns:
        ``key, image_type, name, path``.
    """
    from ... import inference
    from ...data import layout
    from ...preprocess import load_records

    keys = layout.select_keys([r["key"] for r in load_records(derivatives) if r.get("status") == "done"],
                              data_dir, subjects)
    return inference.collect_images(derivatives, predict_dir, keys=keys)


def open_session(session_dir: PathLike, volumes: Mapping[str, Mapping[str, PathLike]], *, seed: int = 0,
                 n_queries: Optional[int] = None, overwrite: bool = False) -> tuple[RatingStore, list[str]]:
    """Reuse the session in ``session_dir``, or build it (:func:`build_session`) when there is none.

    A session is never rebuilt over its answers: with ``overwrite`` the existing folder is moved aside to
    ``session-replaced-<time>`` with its key folder (kept, since its answers may have taken hours) and a new one
    is built. A session built with the key inside its folder has its key moved out (to
    :func:`~synth7t.studies.rating.session.key_dir_of`) before raters can be served it.

    Args:
        session_dir: the session folder; its key goes to ``<session_dir>-key/``.
        volumes: ``{variant: {key: path}}`` (:func:`variant_volumes`), used only when a session is built.
        seed: draws of planes, slices and letters (only when a session is built).
        n_queries: number of queries (the paper's: 28); ``None``: one per subject (only when a session is built).
        overwrite: move an existing session aside and build a new one.

    Returns:
        ``(store, notes)``: the session and what happened, in sentences.

    Raises:
        RuntimeError: the folder exists but is no session, or there is not enough to build one.
    """
    session_dir = Path(session_dir)
    notes = []
    if overwrite and session_dir.exists():
        aside = session_dir.with_name(f"session-replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        session_dir.rename(aside)
        if key_dir_of(session_dir).exists():
            key_dir_of(session_dir).rename(key_dir_of(aside))
        notes.append(f"the previous session was moved to {aside} with its answers (key: {key_dir_of(aside)})")
    if (session_dir / "session.json").is_file():
        store = RatingStore(session_dir)
        m = store.meta
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        notes.append(f"reusing the session built {built} (seed {m['seed']}, {m['n_queries']} queries): its images "
                     "and answers are kept; set overwrite_session = True for a new one")
        if (n_queries is not None and m["n_queries"] != n_queries) or m["seed"] != seed:
            notes.append(f"note: the parameters ask for seed {seed} and {n_queries or 'one query per subject'} "
                         "queries; the session keeps the ones it was built with")
        moved = move_key_out(session_dir)
        if moved is not None:
            notes.append(f"its key was inside the session folder, where the raters' app reads: moved to {moved}")
        return store, notes
    if session_dir.exists():
        raise RuntimeError(f"{session_dir} exists but is not a rating session (no session.json); move it away")
    subjects = sorted(set().union(*[set(v) for v in volumes.values()])) if volumes else []
    if len(volumes) < 2 or not subjects:
        raise RuntimeError(f"a session needs at least 2 image variants on at least one subject; found "
                           f"{list(volumes)} on {len(subjects)} subject(s) (run notebooks 01 and 03 first)")
    t0 = time.perf_counter()
    store = build_session(session_dir, volumes, subjects=subjects, seed=seed, n_queries=n_queries)
    notes.append(f"built in {time.perf_counter() - t0:.1f} s: {store.n_queries} queries over {len(subjects)} "
                 f"subject(s), {len(volumes)} variants per query; key in {key_dir_of(session_dir)}")
    return store, notes


# ------------------------------------------------------------------------------ simulated raters (demo, tests)


def default_rater_noise(n_raters: int) -> list[float]:
    """The simulated raters' noise SDs (score units): 0.25, 0.5, 0.75, ...: sim1 the most consistent. On the demo's
    session four such raters give ranks with SDs of about 1 to 1.7, the spread of the paper's four raters."""
    return [round(0.25 * (i + 1), 3) for i in range(n_raters)]


def simulate_raters(session_dir: PathLike, n_raters: int, *, noise: Optional[Sequence[float]] = None,
                    weights: Optional[Mapping[str, Mapping[str, float]]] = None, seed: int = 0) -> pd.DataFrame:
    """Simulated raters ``sim1 ... simN`` rank every query they have not answered from measured image properties
    (the model observer of :mod:`synth7t.studies.rating.observer`), through the widget's own clicks.

    Every rater scores each image of a query by the observer's weighted measures (sharpness, grey/white contrast,
    noise, signal loss) plus Gaussian noise of their own, and clicks the letters in that order and "Save and
    next" (:meth:`RaterApp.answer`). The observer reads the anonymised images only, never the key. **These are not
    expert opinions.** Each is registered in the session (:func:`~synth7t.studies.rating.raters.add_rater`; its link is
    given to no one), since the analysis reads registered raters' answers only.

    Args:
        session_dir: the session.
        n_raters: how many simulated raters (0: none).
        noise: noise SD per rater (default :func:`default_rater_noise`).
        weights: the observer's ``{criterion: {measure: weight}}`` (default
            :data:`~synth7t.studies.rating.observer.OBSERVER_WEIGHTS`).
        seed: seed of the raters' noise.

    Returns:
        One row per simulated rater: ``rater``, ``noise``, ``new_answers`` (queries answered now).
    """
    if n_raters < 0:
        raise ValueError(f"n_raters must be 0 or more, got {n_raters}")
    noise = default_rater_noise(n_raters) if noise is None else list(noise)
    if len(noise) != n_raters:
        raise ValueError(f"noise needs one value per simulated rater ({n_raters}), got {len(noise)}")
    rows = []
    if n_raters:
        store = RatingStore(session_dir)
        scores = observer_scores(measure_session(session_dir), weights, criteria=list(store.criteria))
        by_query = {int(q): g.set_index("position") for q, g in scores.groupby("query_index")}
        rng = np.random.default_rng(seed)
        known = set(registered_raters(store)["rater_id"])
        for i, sd in enumerate(noise):
            if f"sim{i + 1}" not in known:
                add_rater(store, f"sim{i + 1}")  # the secret is dropped: a simulated rater opens no page
            app = RaterApp(session_dir, f"sim{i + 1}")
            before = app.store.progress(app.rater_id)[0]
            while app.current is not None:
                s = by_query[app.current]
                app.answer({c: observer_ranking(s[c].to_dict(), rng, sd) for c in store.criteria})
            rows.append({"rater": app.rater_id, "noise": sd,
                         "new_answers": app.store.progress(app.rater_id)[0] - before})
    return pd.DataFrame(rows, columns=["rater", "noise", "new_answers"])


def observer_table(session_dir: PathLike, key_dir: Optional[PathLike] = None, order: Sequence[str] = ()
                   ) -> pd.DataFrame:
    """What the model observer measured, unblinded: each measure's mean and SD per image type over the queries,
    and the observer's noise-free mean rank per criterion (1 = best). For the analysis (it reads the key).

    Args:
        session_dir: the session.
        key_dir: the folder of its key (default ``<session_dir>-key``).
        order: display names in table order (e.g. :func:`analysis_ranks`'s); others follow.

    Returns:
        One row per image type: ``image_type``, ``variant`` (its display name), ``<measure>`` and
        ``<measure>_sd`` for each measure, then ``rank_<criterion>``.
    """
    from ...data.names import display_name
    from .observer import MEASURES

    store = RatingStore(session_dir)
    measures = measure_session(session_dir)
    scores = observer_scores(measures, criteria=list(store.criteria))
    rank_cols = [f"rank_{c}" for c in store.criteria]
    for c, col in zip(store.criteria, rank_cols):
        scores[col] = scores.groupby("query_index")[c].rank(ascending=False, method="average")
    key = read_key(session_dir, key_dir)[["query_index", "position", "variant"]]
    m = measures.merge(scores[["query_index", "position", *rank_cols]], on=["query_index", "position"])
    m = m.merge(key, on=["query_index", "position"])
    grouped = m.groupby("variant", sort=False)
    means, sds = grouped[list(MEASURES)].mean(), grouped[list(MEASURES)].std(ddof=0).add_suffix("_sd")
    table = pd.concat([means, sds], axis=1)[[c for name in MEASURES for c in (name, f"{name}_sd")]]
    out = pd.concat([table, grouped[rank_cols].mean()], axis=1).reset_index().rename(columns={"variant": "image_type"})
    out.insert(1, "variant", out["image_type"].map(display_name))
    place = {v: i for i, v in enumerate(order)}
    return out.sort_values("variant", key=lambda col: col.map(lambda v: place.get(v, len(place))), kind="stable",
                           ignore_index=True)


def progress_table(store: RatingStore, rater_ids: Sequence[str] = ()) -> pd.DataFrame:
    """Each rater's progress: queries fully answered, of how many, and the time of the last answer.

    Args:
        store: the session.
        rater_ids: raters listed even without an answer; every rater with an answer follows.
    """
    answers = store.answers()
    last = answers.groupby("rater_id")["answered_at"].max()
    rows = []
    for r in dict.fromkeys([*rater_ids, *store.raters()]):
        done, total = store.progress(r)
        rows.append({"rater": r, "answered": done, "total": total, "done": f"{100 * done / total:.0f} %",
                     "last answer": time.strftime("%Y-%m-%d %H:%M", time.localtime(last[r])) if r in last else "-"})
    return pd.DataFrame(rows, columns=["rater", "answered", "total", "done", "last answer"])
