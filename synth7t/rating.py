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
"""

from __future__ import annotations

import io as _io
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

PathLike = Union[str, Path]

CRITERIA = {
    "looks_best": "Rank the images by how good they look (1 = best looking)",
    "most_detailed": "Rank the images by how detailed they are (1 = most detailed)",
}
PLANES = ("axial", "coronal", "sagittal")
_POSITIONS = "ABCDEFGHIJKLMNOP"


@dataclass
class Query:
    """One query as a rater sees it: anonymous positions and their image files."""

    index: int
    positions: list[str]
    images: dict[str, Path]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")  # an answer is on disk when record() returns
    return conn


class RatingStore:
    """The answers database of one session folder (the key stays in ``key.sqlite``)."""

    def __init__(self, session_dir: PathLike):
        self.dir = Path(session_dir)
        self.db = self.dir / "answers.sqlite"
        meta = self.dir / "session.json"
        if not meta.is_file() or not self.db.is_file():
            raise ValueError(f"{self.dir}: not a rating session (build one with synth7t.rating.build_session)")
        self.meta = json.loads(meta.read_text())
        self.criteria: dict[str, str] = self.meta["criteria"]

    # -------------------------------------------------------------------------------------------- reads
    def queries(self) -> list[Query]:
        with closing(_connect(self.db)) as conn:
            rows = conn.execute("SELECT query_index, position, image FROM query_images ORDER BY query_index, position")
            out: dict[int, Query] = {}
            for qi, pos, img in rows:
                q = out.setdefault(qi, Query(qi, [], {}))
                q.positions.append(pos)
                q.images[pos] = self.dir / img
        return [out[k] for k in sorted(out)]

    @property
    def n_queries(self) -> int:
        return int(self.meta["n_queries"])

    def answers(self, rater_id: Optional[str] = None) -> pd.DataFrame:
        """All answers (or one rater's): rater_id, query_index, criterion, ranking (positions best to worst)."""
        sql = "SELECT rater_id, query_index, criterion, ranking, answered_at FROM answers"
        args: tuple = ()
        if rater_id is not None:
            sql += " WHERE rater_id = ?"
            args = (rater_id,)
        with closing(_connect(self.db)) as conn:
            df = pd.read_sql_query(sql + " ORDER BY rater_id, query_index, criterion", conn, params=args)
        df["ranking"] = df["ranking"].map(json.loads)
        return df

    def raters(self) -> list[str]:
        with closing(_connect(self.db)) as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT rater_id FROM answers ORDER BY rater_id")]

    def answered(self, rater_id: str) -> set[tuple[int, str]]:
        with closing(_connect(self.db)) as conn:
            rows = conn.execute("SELECT query_index, criterion FROM answers WHERE rater_id = ?", (rater_id,))
            return {(int(q), c) for q, c in rows}

    def next_unanswered(self, rater_id: str) -> Optional[int]:
        """Index of the first query this rater has not answered on every criterion (None when done)."""
        done = self.answered(rater_id)
        for q in range(self.n_queries):
            if any((q, c) not in done for c in self.criteria):
                return q
        return None

    def progress(self, rater_id: str) -> tuple[int, int]:
        """(fully answered queries, total queries) for a rater."""
        done = self.answered(rater_id)
        full = sum(all((q, c) in done for c in self.criteria) for q in range(self.n_queries))
        return full, self.n_queries

    # ------------------------------------------------------------------------------------------- writes
    def record(self, rater_id: str, query_index: int, criterion: str, ranking: Sequence[str]) -> None:
        """Store one ranking in its own transaction (replacing an earlier answer to the same question).

        Args:
            rater_id: a non-empty rater name or code.
            query_index: 0-based query index.
            criterion: one of the session's criteria.
            ranking: every position of the query exactly once, best first.
        """
        rater_id = str(rater_id).strip()
        if not rater_id:
            raise ValueError("rater_id must be a non-empty string")
        if criterion not in self.criteria:
            raise ValueError(f"criterion must be one of {', '.join(self.criteria)}, got {criterion!r}")
        if not 0 <= int(query_index) < self.n_queries:
            raise ValueError(f"query_index must be in [0, {self.n_queries - 1}], got {query_index}")
        positions = self.meta["positions"]
        ranking = [str(p) for p in ranking]
        if sorted(ranking) != sorted(positions):
            raise ValueError(f"a ranking must list each of {', '.join(positions)} exactly once, got {ranking}")
        with closing(_connect(self.db)) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO answers (rater_id, query_index, criterion, ranking, answered_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (rater_id, int(query_index), criterion, json.dumps(ranking), time.time()),
            )


def _slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A 2D slice of an RAS volume, oriented for display (superior or anterior up)."""
    if plane == "axial":
        sl = volume[:, :, index].T
    elif plane == "coronal":
        sl = volume[:, index, :].T
    elif plane == "sagittal":
        sl = volume[index, :, :].T
    else:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    return np.flipud(sl)


def _to_png(sl: np.ndarray, pct=(0.5, 99.5), upscale: int = 2) -> bytes:
    from PIL import Image

    nz = sl[sl > 0]
    lo, hi = (np.percentile(nz, pct) if nz.size else (0.0, 1.0))
    img = np.clip((sl - lo) / max(hi - lo, 1e-6), 0, 1)
    im = Image.fromarray((img * 255).astype(np.uint8), mode="L")
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.NEAREST)
    buf = _io.BytesIO()
    im.save(buf, format="PNG")  # no text chunks: nothing in the file names its variant
    return buf.getvalue()


def _load_ras(path_or_array) -> np.ndarray:
    if isinstance(path_or_array, np.ndarray):
        return path_or_array
    from . import io as sio

    return sio.load_volume(path_or_array, reorient=True).data


def _draw_slice(rng: np.random.Generator, fg: np.ndarray, planes: Sequence[str], central_fraction: float,
                used: set) -> tuple[Optional[str], int]:
    """A random plane and slice in the central part of the brain's extent that this subject does not have yet.

    A drawn (plane, slice) already used is drawn again (at most 100 times; ``(None, -1)`` then); with one slice per
    subject nothing is redrawn, so a seed gives the same session as before several slices per subject existed.
    """
    for _attempt in range(100):
        plane = str(rng.choice(list(planes)))
        axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
        extent = np.flatnonzero(fg.any(axis=tuple(i for i in range(3) if i != axis)))
        lo, hi = extent[0], extent[-1]
        margin = (1 - central_fraction) / 2 * (hi - lo)
        index = int(rng.integers(int(lo + margin), int(hi - margin) + 1))
        if (plane, index) not in used:
            return plane, index
    return None, -1


def _write_session_tables(out: Path, image_rows: list, key_rows: list) -> None:
    """The raters' database (which image sits where) and the key (which variant each image is), apart."""
    with closing(_connect(out / "answers.sqlite")) as conn, conn:
        conn.executescript(
            """
            CREATE TABLE query_images (query_index INTEGER NOT NULL, position TEXT NOT NULL, image TEXT NOT NULL,
                                       PRIMARY KEY (query_index, position));
            CREATE TABLE answers (rater_id TEXT NOT NULL, query_index INTEGER NOT NULL, criterion TEXT NOT NULL,
                                  ranking TEXT NOT NULL, answered_at REAL NOT NULL,
                                  PRIMARY KEY (rater_id, query_index, criterion));
            """
        )
        conn.executemany("INSERT INTO query_images VALUES (?, ?, ?)", image_rows)
    with closing(_connect(out / "key.sqlite")) as conn, conn:
        conn.execute(
            "CREATE TABLE key (query_index INTEGER NOT NULL, position TEXT NOT NULL, variant TEXT NOT NULL, "
            "subject TEXT NOT NULL, plane TEXT NOT NULL, slice_index INTEGER NOT NULL, "
            "PRIMARY KEY (query_index, position))"
        )
        conn.executemany("INSERT INTO key VALUES (?, ?, ?, ?, ?, ?)", key_rows)


def build_session(
    session_dir: PathLike,
    volumes: Mapping[str, Mapping[str, Union[PathLike, np.ndarray]]],
    *,
    subjects: Optional[Sequence[str]] = None,
    seed: int = 0,
    planes: Sequence[str] = PLANES,
    criteria: Optional[Mapping[str, str]] = None,
    central_fraction: float = 0.6,
    slices_per_subject: int = 1,
    overwrite: bool = False,
) -> RatingStore:
    """Build a blinded session: per subject one random slice in a random plane, every variant anonymised.

    The paper showed one slice per subject; ``slices_per_subject > 1`` draws several, each its own query with its
    own random plane and slice (never the same plane and slice twice for a subject), which gives a small cohort
    enough queries for the statistics. Queries are ordered subject by subject.

    Args:
        session_dir: folder to create.
        volumes: ``{variant: {subject: NIfTI path or RAS array}}``; all variants of a subject must share one
            grid (e.g. the 7T grid of preprocessing, where predictions are written).
        subjects: subjects to include (default: those every variant has), ``slices_per_subject`` queries each.
        seed: draws of plane, slice and position order.
        planes: planes to draw from.
        criteria: ``{name: instruction}`` (default: the paper's two).
        central_fraction: slices are drawn from this central fraction of the brain's extent.
        slices_per_subject: queries (random plane and slice) per subject; the paper's is 1.
        overwrite: replace an existing session folder.

    Returns:
        The session's :class:`RatingStore`.
    """
    import shutil

    if isinstance(slices_per_subject, bool) or int(slices_per_subject) != slices_per_subject \
            or slices_per_subject < 1:
        raise ValueError(f"slices_per_subject must be a positive integer, got {slices_per_subject!r}")
    slices_per_subject = int(slices_per_subject)
    out = Path(session_dir)
    if out.exists():
        if not overwrite:
            raise ValueError(f"{out}: a session already exists (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    variants = list(volumes)
    if len(variants) < 2:
        raise ValueError(f"a session needs at least 2 variants, got {variants}")
    if len(variants) > len(_POSITIONS):
        raise ValueError(f"at most {len(_POSITIONS)} variants, got {len(variants)}")
    common = set.intersection(*(set(v) for v in volumes.values()))
    subjects = sorted(common) if subjects is None else list(subjects)
    missing = [(v, s) for s in subjects for v in variants if s not in volumes[v]]
    if missing:
        raise ValueError(f"missing images: {', '.join(f'{v}/{s}' for v, s in missing[:5])}")
    if not subjects:
        raise ValueError("no subject has every variant")
    bad_planes = [p for p in planes if p not in PLANES]
    if bad_planes:
        raise ValueError(f"planes must be among {', '.join(PLANES)}, got {bad_planes}")
    crit = dict(criteria or CRITERIA)
    positions = list(_POSITIONS[: len(variants)])
    rng = np.random.default_rng(seed)
    # a build that fails half-way leaves no folder behind: a half-built session would block the next try
    try:
        (out / "images").mkdir(parents=True)
        key_rows, image_rows = [], []
        qi = 0
        for subject in subjects:
            vols = {v: _load_ras(volumes[v][subject]) for v in variants}
            shapes = {v: a.shape for v, a in vols.items()}
            if len(set(shapes.values())) != 1:
                raise ValueError(f"{subject}: variants are on different grids {shapes}; resample them to one grid")
            fg = np.zeros(shapes[variants[0]], bool)
            for a in vols.values():
                fg |= a > 0
            if not fg.any():
                raise ValueError(f"{subject}: every variant is empty")
            used: set[tuple[str, int]] = set()
            for _ in range(slices_per_subject):
                plane, index = _draw_slice(rng, fg, planes, central_fraction, used)
                if plane is None:
                    raise ValueError(f"{subject}: cannot draw {slices_per_subject} distinct slices; lower "
                                     f"slices_per_subject or raise central_fraction")
                used.add((plane, index))
                order = rng.permutation(len(variants))
                for pos, vi in zip(positions, order):
                    variant = variants[vi]
                    token = "".join(f"{x:02x}" for x in rng.integers(0, 256, 8))
                    rel = f"images/{token}.png"
                    (out / rel).write_bytes(_to_png(_slice(vols[variant], plane, index)))
                    image_rows.append((qi, pos, rel))
                    key_rows.append((qi, pos, variant, subject, plane, index))
                qi += 1
        _write_session_tables(out, image_rows, key_rows)
        (out / "session.json").write_text(json.dumps(
            {"n_queries": qi, "positions": positions, "criteria": crit, "seed": int(seed),
             "slices_per_subject": slices_per_subject, "created_at": time.time()}, indent=2))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return RatingStore(out)


def read_key(session_dir: PathLike) -> pd.DataFrame:
    """The session key: query_index, position, variant, subject, plane, slice_index."""
    p = Path(session_dir) / "key.sqlite"
    if not p.is_file():
        raise ValueError(f"{p}: the session key is missing")
    with closing(_connect(p)) as conn:
        return pd.read_sql_query("SELECT * FROM key ORDER BY query_index, position", conn)


def ranks_table(session_dir: PathLike) -> pd.DataFrame:
    """Unblinded tidy table of every answer: rater_id, query_index, criterion, variant, rank (1 = best)."""
    store = RatingStore(session_dir)
    key = read_key(session_dir)
    rows = []
    for _, a in store.answers().iterrows():
        for rank, pos in enumerate(a["ranking"], start=1):
            rows.append((a["rater_id"], int(a["query_index"]), a["criterion"], pos, rank))
    df = pd.DataFrame(rows, columns=["rater_id", "query_index", "criterion", "position", "rank"])
    return df.merge(key, on=["query_index", "position"], how="left")[
        ["rater_id", "query_index", "criterion", "variant", "rank", "subject", "plane"]]


# ------------------------------------------------------------------------------------------------- widget


class RaterApp:
    """The rater's widget: one query at a time, a full ranking per criterion, saved on each "Save".

    Use ``display(app.widget)`` in JupyterLab. Programmatic use goes through the same path as the buttons:
    :meth:`answer` fills the rank menus and clicks "Save and next".
    """

    def __init__(self, session_dir: PathLike, rater_id: str, *, image_width: int = 220):
        import ipywidgets as w

        self.store = RatingStore(session_dir)
        self.rater_id = str(rater_id).strip()
        if not self.rater_id:
            raise ValueError("rater_id must be a non-empty string")
        self.queries = self.store.queries()
        self.positions = self.store.meta["positions"]
        n = len(self.positions)
        self.header = w.HTML()
        self.images = {p: w.Image(format="png", width=image_width) for p in self.positions}
        tiles = [w.VBox([w.HTML(f"<b>{p}</b>"), self.images[p]]) for p in self.positions]
        self.grid = w.GridBox(tiles, layout=w.Layout(grid_template_columns=f"repeat({min(n, 3)}, auto)"))
        self.menus: dict[str, dict[str, w.Dropdown]] = {}
        rows = []
        for crit, text in self.store.criteria.items():
            self.menus[crit] = {p: w.Dropdown(options=[("-", 0)] + [(str(r), r) for r in range(1, n + 1)],
                                              value=0, description=p, layout=w.Layout(width="110px"))
                                for p in self.positions}
            rows.append(w.HTML(f"<p>{text}</p>"))
            rows.append(w.HBox(list(self.menus[crit].values())))
        self.message = w.HTML()
        self.save_button = w.Button(description="Save and next", button_style="primary")
        self.save_button.on_click(self._on_save)
        self.widget = w.VBox([self.header, self.grid, *rows, w.HBox([self.save_button]), self.message])
        self.current: Optional[int] = None
        self._go(self.store.next_unanswered(self.rater_id))

    def _go(self, qi: Optional[int]) -> None:
        self.current = qi
        done, total = self.store.progress(self.rater_id)
        if qi is None:
            self.header.value = f"<h3>All {total} queries answered. Thank you, {self.rater_id}.</h3>"
            self.grid.layout.display = "none"
            self.save_button.disabled = True
            return
        q = self.queries[qi]
        self.header.value = f"<h3>Query {qi + 1} of {total}</h3><p>{done} answered so far, rater {self.rater_id}</p>"
        for p in self.positions:
            self.images[p].value = q.images[p].read_bytes()
        for crit in self.menus:
            for m in self.menus[crit].values():
                m.value = 0

    def _on_save(self, _button=None) -> None:
        if self.current is None:
            return
        rankings = {}
        for crit, menus in self.menus.items():
            ranks = {p: m.value for p, m in menus.items()}
            if sorted(ranks.values()) != list(range(1, len(self.positions) + 1)):
                self.message.value = (f"<span style='color:#b00'>Give each image a different rank from 1 to "
                                      f"{len(self.positions)} for every criterion.</span>")
                return
            rankings[crit] = sorted(ranks, key=ranks.get)
        for crit, ranking in rankings.items():
            self.store.record(self.rater_id, self.current, crit, ranking)
        self.message.value = f"Saved query {self.current + 1}."
        self._go(self.store.next_unanswered(self.rater_id))

    def answer(self, rankings: Mapping[str, Sequence[str]]) -> None:
        """Fill the menus with ``{criterion: positions best first}`` and press "Save and next"."""
        for crit, order in rankings.items():
            for rank, pos in enumerate(order, start=1):
                self.menus[crit][pos].value = rank
        self.save_button.click()

    def visible_text(self) -> list[str]:
        """Every string the widget tree shows or carries (for checking that nothing names a variant)."""
        out: list[str] = []

        def walk(wd):
            for attr in ("value", "description", "placeholder", "tooltip"):
                v = getattr(wd, attr, None)
                if isinstance(v, str):
                    out.append(v)
            opts = getattr(wd, "options", None)
            if opts:
                out.extend(str(o) for o in opts)
            for child in getattr(wd, "children", ()) or ():
                walk(child)

        walk(self.widget)
        return out


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


def plot_query(store: RatingStore, index: int, *, axes=None):
    """A query as the rater sees it (a static figure of the widget): its anonymous images under their letters,
    3 across; ``index`` is 0-based, ``axes`` one matplotlib axis per position at least. Returns the figure."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if not 0 <= int(index) < store.n_queries:
        raise ValueError(f"index must be in [0, {store.n_queries - 1}], got {index}")
    query = store.queries()[int(index)]
    n = len(query.positions)
    ncol = min(n, 3)
    if axes is None:
        nrow = -(-n // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 3.2 * nrow), squeeze=False)
    axes = np.ravel(axes)
    fig = axes[0].figure
    for ax in axes:
        ax.set_axis_off()
    for ax, pos in zip(axes, query.positions):
        ax.imshow(np.asarray(Image.open(query.images[pos])), cmap="gray", vmin=0, vmax=255)
        ax.set_title(pos, fontweight="bold")
    fig.suptitle(f"query {index + 1} of {store.n_queries}: rank A-{query.positions[-1]} on each criterion")
    fig.tight_layout()
    return fig


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


# ------------------------------------------------------------------------------ analysing a session (chapter 06)


def variant_order(shown: Sequence[str], preferred: Sequence[str] = ()) -> list[str]:
    """The order of the image types in tables and figures: 3T, the models alphabetically, 7T (those shown), or
    ``preferred`` (those shown) followed by any other shown type in that default order."""
    shown = list(dict.fromkeys(shown))
    default = [v for v in ["3T", *sorted(v for v in shown if v not in ("3T", "7T")), "7T"] if v in shown]
    order = [v for v in preferred if v in shown]
    return order + [v for v in default if v not in order]


def analysis_ranks(session_dir: PathLike, criteria: Sequence[str], *, preferred_order: Sequence[str] = (),
                   raters: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The unblinded ranks of a session, ready for the analysis: chosen criteria and raters, display names.

    Args:
        session_dir: the session.
        criteria: criteria to analyse, in order (each must be one of the session's).
        preferred_order: image types in table order (:func:`variant_order`); empty: 3T, models, 7T.
        raters: rater ids to keep; empty: every rater with an answer.

    Returns:
        ``(ranks, order, notes)``: the tidy ranks (:func:`ranks_table` with ``image_type``, the run's name, and
        ``variant``, its display name; rows by criterion), the display names in table order, and notes (criteria
        left out, variants never shown, raters without answers, simulated raters, a single rater).

    Raises:
        ValueError: a criterion is not one of the session's.
    """
    import re

    from .names import display_name

    store = RatingStore(session_dir)
    unknown = [c for c in criteria if c not in store.criteria]
    if unknown or not criteria:
        raise ValueError(f"criteria must be among this session's {list(store.criteria)}, got {list(criteria)}")
    notes = []
    skipped = [c for c in store.criteria if c not in criteria]
    if skipped:
        notes.append(f"criteria of the session not analysed (not in `criteria`): {', '.join(skipped)}")
    shown = list(dict.fromkeys(read_key(session_dir)["variant"]))
    never = [v for v in preferred_order if v not in shown]
    if never:
        notes.append(f"never shown in this session, left out: {', '.join(never)} "
                     f"(the session shows {', '.join(sorted(shown))})")
    order = [display_name(v) for v in variant_order(shown, preferred_order)]
    ranks = ranks_table(session_dir)
    absent = [r for r in raters if r not in set(ranks["rater_id"])]
    if absent:
        notes.append(f"no answer from: {', '.join(absent)}")
    if raters:
        ranks = ranks[ranks["rater_id"].isin(raters)]
    ranks = pd.concat([ranks[ranks["criterion"] == c] for c in criteria], ignore_index=True)
    ranks.insert(3, "image_type", ranks["variant"])
    ranks["variant"] = ranks["image_type"].map(display_name)
    answering = sorted(ranks["rater_id"].unique())
    if not answering:
        notes.append("No answers yet: nothing to analyse. Run this notebook again once raters have answered.")
    elif len(answering) == 1:
        notes.append(f"Only one rater ({answering[0]}): the ANOVA over raters and the Bonferroni tests on raters' "
                     "means need at least 2; the query-level tests stand in for them.")
    simulated = [r for r in answering if re.fullmatch(r"sim\d+", r)]
    if simulated:
        notes.append(f"{', '.join(simulated)}: simulated raters (chapter 05), not expert opinions")
    return ranks, order, notes

