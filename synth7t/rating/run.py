"""Running a session (chapter 05): raters, the image variants of a run, opening a session once, simulated raters,
progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .session import RatingStore, build_session, read_key
from .widget import RaterApp

PathLike = Union[str, Path]


def simulated_ranking(quality: Mapping[str, float], positions_of: Mapping[str, str], rng, noise: float = 1.0):
    """A simulated rater's ranking: variants ordered by latent quality plus Gumbel noise (Plackett-Luce).

    Args:
        quality: ``{variant: latent quality}`` (higher is better).
        positions_of: ``{variant: position}`` for the query.
        rng: a numpy Generator.
        noise: Gumbel scale; larger means less consistent raters.

    Returns:
        Positions, best first.
    """
    scores = {v: q + noise * rng.gumbel() for v, q in quality.items()}
    return [positions_of[v] for v in sorted(scores, key=scores.get, reverse=True)]


# ------------------------------------------------------------------------------ running a session (chapter 05)

#: the simulated raters' latent quality per variant (a stated assumption, not a finding); other variants: 1.0
SIMULATED_QUALITY = {"7T": 2.0, "3T": 0.0}


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
        images: :func:`synth7t.predict.collect_images` (``key``, ``image_type``, ``path``).
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


def open_session(session_dir: PathLike, volumes: Mapping[str, Mapping[str, PathLike]], *, seed: int = 0,
                 slices_per_subject: int = 1, overwrite: bool = False) -> tuple[RatingStore, list[str]]:
    """Reuse the session in ``session_dir``, or build it (:func:`build_session`) when there is none.

    A session is never rebuilt over its answers: with ``overwrite`` the existing folder is moved aside to
    ``session-replaced-<time>`` (kept, since its answers may have taken hours) and a new one is built.

    Args:
        session_dir: the session folder.
        volumes: ``{variant: {key: path}}`` (:func:`variant_volumes`), used only when a session is built.
        seed: draws of planes, slices and letters (only when a session is built).
        slices_per_subject: queries per subject (only when a session is built).
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
        notes.append(f"the previous session was moved to {aside} with its answers")
    if (session_dir / "session.json").is_file():
        store = RatingStore(session_dir)
        m = store.meta
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        notes.append(f"reusing the session built {built} (seed {m['seed']}, {m.get('slices_per_subject', 1)} "
                     "slice(s) per subject): its images and answers are kept; set overwrite_session = True for a "
                     "new one")
        if m.get("slices_per_subject", 1) != slices_per_subject or m["seed"] != seed:
            notes.append(f"note: the parameters ask for seed {seed} and {slices_per_subject} slice(s) per subject; "
                         "the session keeps the ones it was built with")
        return store, notes
    if session_dir.exists():
        raise RuntimeError(f"{session_dir} exists but is not a rating session (no session.json); move it away")
    subjects = sorted(set().union(*[set(v) for v in volumes.values()])) if volumes else []
    if len(volumes) < 2 or not subjects:
        raise RuntimeError(f"a session needs at least 2 image variants on at least one subject; found "
                           f"{list(volumes)} on {len(subjects)} subject(s) (run notebooks 01 and 03 first)")
    t0 = time.perf_counter()
    store = build_session(session_dir, volumes, subjects=subjects, seed=seed, slices_per_subject=slices_per_subject)
    notes.append(f"built in {time.perf_counter() - t0:.1f} s: {len(subjects)} subject(s) x {slices_per_subject} "
                 f"slice(s), {len(volumes)} variants per query")
    return store, notes


def simulate_raters(session_dir: PathLike, n_raters: int, *, quality: Optional[Mapping[str, float]] = None,
                    default_quality: float = 1.0, noise: Optional[Sequence[float]] = None,
                    seed: int = 0) -> pd.DataFrame:
    """Simulated raters ``sim1 ... simN`` answer every query they have not answered, through the widget's own path.

    Each goes through :meth:`RaterApp.answer` (the rank menus and "Save and next", as a person's clicks) with
    rankings from :func:`simulated_ranking`. To put the qualities on the right letters the simulation reads the
    key, which a real rater never sees. **These are not expert opinions.**

    Args:
        session_dir: the session.
        n_raters: how many simulated raters (0: none).
        quality: latent quality per variant (default :data:`SIMULATED_QUALITY`: real 7T 2, 3T 0).
        default_quality: the quality of every other variant (the models).
        noise: Gumbel scale per rater (default 0.6, 0.9, 1.2, ...: sim1 the most consistent).
        seed: seed of the rankings.

    Returns:
        One row per simulated rater: ``rater``, ``noise``, ``new_answers`` (queries answered now).
    """
    if n_raters < 0:
        raise ValueError(f"n_raters must be 0 or more, got {n_raters}")
    quality = dict(SIMULATED_QUALITY if quality is None else quality)
    noise = [0.6 + 0.3 * i for i in range(n_raters)] if noise is None else list(noise)
    if len(noise) != n_raters:
        raise ValueError(f"noise needs one value per simulated rater ({n_raters}), got {len(noise)}")
    key = read_key(session_dir)
    positions = {q: dict(zip(g["variant"], g["position"])) for q, g in key.groupby("query_index")}
    rng = np.random.default_rng(seed)
    rows = []
    for i, scale in enumerate(noise):
        app = RaterApp(session_dir, f"sim{i + 1}")
        before = app.store.progress(app.rater_id)[0]
        while app.current is not None:
            pos = positions[app.current]
            q = {v: quality.get(v, default_quality) for v in pos}
            app.answer({c: simulated_ranking(q, pos, rng, noise=scale) for c in app.store.criteria})
        new = app.store.progress(app.rater_id)[0] - before
        rows.append({"rater": app.rater_id, "noise": scale, "new_answers": new})
    return pd.DataFrame(rows, columns=["rater", "noise", "new_answers"])


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
