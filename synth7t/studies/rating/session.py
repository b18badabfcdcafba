"""Blinded rating sessions in SQLite: building a session, the store raters answer into, the key and the ranks.

The key (which variant sits at which letter) is written to a folder of its own beside the session folder,
``<session>-key/key.sqlite`` (:func:`key_dir_of`), never inside the session folder that raters' app reads.
"""

from __future__ import annotations

import io as _io
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

PathLike = Union[str, Path]

CRITERIA = {
    "looks_best": "Rank the images by how good they look (1 = best looking)",
    "most_detailed": "Rank the images by how detailed they are (1 = most detailed)",
}
PLANES = ("axial", "coronal", "sagittal")
_POSITIONS = "ABCDEFGHIJKLMNOP"
#: pixels per voxel of the session's PNG images (nearest-neighbour enlargement, recorded in ``session.json``)
DISPLAY_UPSCALE = 2


#: the session folder's own files: what the rater app may read (the key is never among them)
SESSION_FILES = ("session.json", "answers.sqlite", "images")


def key_dir_of(session_dir: PathLike) -> Path:
    """The default folder of a session's key: ``<session_dir>-key`` beside the session folder (never inside it)."""
    session_dir = Path(session_dir)
    return session_dir.parent / f"{session_dir.name}-key"


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
    """The answers database of one session folder (the key is elsewhere: :func:`key_dir_of`)."""

    def __init__(self, session_dir: PathLike):
        self.dir = Path(session_dir)
        self.db = self.dir / "answers.sqlite"
        meta = self.dir / "session.json"
        if not meta.is_file() or not self.db.is_file():
            raise ValueError(f"{self.dir}: not a rating session (build one with synth7t.studies.rating.build_session)")
        self.meta = json.loads(meta.read_text())
        self.criteria: dict[str, str] = self.meta["criteria"]

    def connect(self) -> sqlite3.Connection:
        """A new connection to ``answers.sqlite`` (foreign keys on, full sync); the caller closes it."""
        return _connect(self.db)

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
    def _checked(self, query_index: int, criterion: str, ranking: Sequence[str]) -> list[str]:
        if criterion not in self.criteria:
            raise ValueError(f"criterion must be one of {', '.join(self.criteria)}, got {criterion!r}")
        if not 0 <= int(query_index) < self.n_queries:
            raise ValueError(f"query_index must be in [0, {self.n_queries - 1}], got {query_index}")
        positions = self.meta["positions"]
        ranking = [str(p) for p in ranking]
        if sorted(ranking) != sorted(positions):
            raise ValueError(f"a ranking must list each of {', '.join(positions)} exactly once, got {ranking}")
        return ranking

    def record(self, rater_id: str, query_index: int, criterion: str, ranking: Sequence[str]) -> None:
        """Store one ranking in its own transaction (replacing an earlier answer to the same question).

        Args:
            rater_id: a rater code (:func:`check_rater_id`).
            query_index: 0-based query index.
            criterion: one of the session's criteria.
            ranking: every position of the query exactly once, best first.
        """
        self.record_query(rater_id, query_index, {criterion: ranking})

    def record_query(self, rater_id: str, query_index: int, rankings: Mapping[str, Sequence[str]], *,
                     guard: Optional[Callable[[sqlite3.Connection], None]] = None) -> None:
        """Store a query's rankings (``{criterion: positions best first}``) in one transaction: all or none.

        Every ranking is checked before anything is written. Several raters may write at the same time (each
        from their own process): SQLite locks the database for the few milliseconds of a write and a writer that
        finds it locked waits (up to 30 s) instead of failing.

        Args:
            rater_id: a rater code (:func:`check_rater_id`).
            query_index: 0-based query index.
            rankings: ``{criterion: positions best first}``.
            guard: called with the connection inside the answer's transaction, after its write lock is taken and
                before anything is written; whatever it raises aborts the answer (the rater app checks the
                rater's link here: :func:`synth7t.studies.rating.raters.verify_link`).

        Raises:
            ValueError: a bad rater code, query index, criterion or ranking.
            PermissionError: (from the rater app's ``guard``) the rater's link does not open the session.
        """
        rater_id = check_rater_id(rater_id)
        rows = [(rater_id, int(query_index), c, json.dumps(self._checked(query_index, c, r)), time.time())
                for c, r in rankings.items()]
        if not rows:
            raise ValueError("rankings must hold at least one criterion")
        with closing(_connect(self.db)) as conn, conn:
            # the write lock first: a link revoked after the guard's read could otherwise still write this answer
            conn.execute("BEGIN IMMEDIATE")
            if guard is not None:
                guard(conn)
            conn.executemany("INSERT OR REPLACE INTO answers (rater_id, query_index, criterion, ranking, answered_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)


def check_rater_id(rater_id) -> str:
    """A rater code, stripped: 1 to 40 letters, digits, ``.``, ``_`` or ``-`` (it names files and appears in URLs).

    Raises:
        ValueError: anything else, with the rule.
    """
    import re

    text = str(rater_id).strip() if rater_id is not None else ""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", text):
        raise ValueError(f"rater_id must be 1 to 40 letters, digits, '.', '_' or '-', got {rater_id!r}")
    return text


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
    from ...data import io as sio

    return sio.load_volume(path_or_array, reorient=True).data


def _draw_index(rng: np.random.Generator, fg: np.ndarray, plane: str, central_fraction: float,
                used: set) -> Optional[int]:
    """A random slice of ``plane`` in the central part of the brain's extent that this subject does not have yet
    (at most 100 draws; ``None`` when every draw was taken)."""
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    extent = np.flatnonzero(fg.any(axis=tuple(i for i in range(3) if i != axis)))
    lo, hi = extent[0], extent[-1]
    margin = (1 - central_fraction) / 2 * (hi - lo)
    for _attempt in range(100):
        index = int(rng.integers(int(lo + margin), int(hi - margin) + 1))
        if (plane, index) not in used:
            return index
    return None


def query_design(subjects: Sequence[str], n_queries: int, planes: Sequence[str],
                 rng: np.random.Generator) -> list[tuple[str, str]]:
    """The subject and plane of each query: subjects in turn (query ``q`` shows ``subjects[q % len(subjects)]``, so
    each subject gets ``n_queries // len(subjects)`` queries or one more, never two in a row when there are two or
    more subjects), and the planes balanced over the queries (each ``n_queries // len(planes)`` times or once more)
    in random order.

    Returns:
        ``[(subject, plane)]``, one per query, in query order.
    """
    plane_list = [planes[i % len(planes)] for i in range(n_queries)]
    rng.shuffle(plane_list)
    return [(subjects[q % len(subjects)], plane_list[q]) for q in range(n_queries)]


def _write_session_tables(out: Path, key_file: Path, image_rows: list, key_rows: list) -> None:
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
    with closing(_connect(key_file)) as conn, conn:
        conn.execute(
            "CREATE TABLE key (query_index INTEGER NOT NULL, position TEXT NOT NULL, variant TEXT NOT NULL, "
            "subject TEXT NOT NULL, plane TEXT NOT NULL, slice_index INTEGER NOT NULL, "
            "PRIMARY KEY (query_index, position))"
        )
        conn.executemany("INSERT INTO key VALUES (?, ?, ?, ?, ?, ?)", key_rows)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _prepare_folders(out: Path, key_dir: Path, overwrite: bool) -> None:
    """Refuse a key folder inside the session folder and existing folders (unless ``overwrite``: removed)."""
    import shutil

    if key_dir.resolve() == out.resolve() or out.resolve() in key_dir.resolve().parents:
        raise ValueError(f"key_dir {key_dir} is inside the session folder {out}: the key must live outside what "
                         f"raters' app reads (default: {key_dir_of(out)})")
    for folder, what in ((out, "a session"), (key_dir, "a session key")):
        if folder.exists():
            if not overwrite:
                raise ValueError(f"{folder}: {what} already exists (pass overwrite=True to replace it)")
            shutil.rmtree(folder)


def build_session(
    session_dir: PathLike,
    volumes: Mapping[str, Mapping[str, Union[PathLike, np.ndarray]]],
    *,
    subjects: Optional[Sequence[str]] = None,
    n_queries: Optional[int] = None,
    seed: int = 0,
    planes: Sequence[str] = PLANES,
    criteria: Optional[Mapping[str, str]] = None,
    central_fraction: float = 0.6,
    key_dir: Optional[PathLike] = None,
    overwrite: bool = False,
) -> RatingStore:
    """Build a blinded session as the paper's survey (§2.8.2): each query one 2D slice of one subject, shown as every
    variant (3T, 7T, each model) under shuffled letters, ranked on every criterion.

    The paper asked 28 queries, one per test subject, each a random slice in any plane. Here the number of queries
    is a parameter: subjects take turns (a small cohort gives several distinct slices per subject) and the planes
    are balanced over the queries (:func:`query_design`); each slice is drawn at random in the central part of the
    brain's extent, never the same plane and slice twice for a subject.

    Args:
        session_dir: folder to create: ``session.json``, ``images/`` and ``answers.sqlite``, what raters' app reads.
        volumes: ``{variant: {subject: NIfTI path or RAS array}}``; all variants of a subject must share one
            grid (e.g. the 7T grid of preprocessing, where predictions are written).
        subjects: subjects to include (default: those every variant has).
        n_queries: number of queries (the paper's: 28); default one per subject.
        seed: draws of plane order, slices and letter order.
        planes: planes to draw from.
        criteria: ``{name: instruction}`` (default: the paper's two).
        central_fraction: slices are drawn from this central fraction of the brain's extent.
        key_dir: folder of the key (``key.sqlite``), outside ``session_dir``; default :func:`key_dir_of`.
        overwrite: replace an existing session folder and key folder.

    Returns:
        The session's :class:`RatingStore`.
    """
    import shutil

    out = Path(session_dir)
    key_dir = Path(key_dir) if key_dir is not None else key_dir_of(out)
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
    n_queries = len(subjects) if n_queries is None else _check_count("n_queries", n_queries)
    bad_planes = [p for p in planes if p not in PLANES]
    if bad_planes or not planes:
        raise ValueError(f"planes must be among {', '.join(PLANES)}, got {list(planes)}")
    crit = dict(criteria or CRITERIA)
    positions = list(_POSITIONS[: len(variants)])
    rng = np.random.default_rng(seed)
    design = query_design(subjects, n_queries, list(planes), rng)
    _prepare_folders(out, key_dir, overwrite)
    # a build that fails half-way leaves no folder behind: a half-built session would block the next try
    try:
        (out / "images").mkdir(parents=True)
        key_dir.mkdir(parents=True)
        key_rows, image_rows = [], []
        for subject in dict.fromkeys(s for s, _ in design):
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
            for qi in (q for q, (s, _) in enumerate(design) if s == subject):
                plane = design[qi][1]
                index = _draw_index(rng, fg, plane, central_fraction, used)
                if index is None:
                    raise ValueError(f"{subject}: cannot draw {sum(s == subject for s, _ in design)} distinct "
                                     f"slices; lower n_queries or raise central_fraction")
                used.add((plane, index))
                order = rng.permutation(len(variants))
                for pos, vi in zip(positions, order):
                    variant = variants[vi]
                    token = "".join(f"{x:02x}" for x in rng.integers(0, 256, 8))
                    rel = f"images/{token}.png"
                    (out / rel).write_bytes(_to_png(_slice(vols[variant], plane, index), upscale=DISPLAY_UPSCALE))
                    image_rows.append((qi, pos, rel))
                    key_rows.append((qi, pos, variant, subject, plane, index))
        _write_session_tables(out, key_dir / "key.sqlite", sorted(image_rows), sorted(key_rows))
        (out / "session.json").write_text(json.dumps(
            {"n_queries": n_queries, "positions": positions, "criteria": crit, "seed": int(seed),
             "n_subjects": len(subjects), "upscale": DISPLAY_UPSCALE, "created_at": time.time()}, indent=2))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(key_dir, ignore_errors=True)
        raise
    return RatingStore(out)


def key_file(session_dir: PathLike, key_dir: Optional[PathLike] = None) -> Path:
    """The session's ``key.sqlite``: in ``key_dir`` (default :func:`key_dir_of`), or, for a session built before the
    key moved out, inside the session folder (such a session cannot be served to raters: see
    :func:`move_key_out`).

    Raises:
        ValueError: no key in either place.
    """
    folder = Path(key_dir) if key_dir is not None else key_dir_of(session_dir)
    for p in (folder / "key.sqlite", Path(session_dir) / "key.sqlite"):
        if p.is_file():
            return p
    raise ValueError(f"{folder / 'key.sqlite'}: the session key is missing (it is written beside the session "
                     f"folder, in <session>-key/, when the session is built)")


def move_key_out(session_dir: PathLike, key_dir: Optional[PathLike] = None) -> Optional[Path]:
    """Move the key of a session built with the key inside its folder to ``key_dir`` (default :func:`key_dir_of`).

    Returns:
        The new key file, or ``None`` when the session folder holds no key.

    Raises:
        ValueError: ``key_dir`` already holds a key.
    """
    inside = Path(session_dir) / "key.sqlite"
    if not inside.is_file():
        return None
    folder = Path(key_dir) if key_dir is not None else key_dir_of(session_dir)
    if (folder / "key.sqlite").exists():
        raise ValueError(f"{folder / 'key.sqlite'} exists and {inside} too: keep the right one, delete the other")
    folder.mkdir(parents=True, exist_ok=True)
    return Path(inside.replace(folder / "key.sqlite"))


def read_key(session_dir: PathLike, key_dir: Optional[PathLike] = None) -> pd.DataFrame:
    """The session key: query_index, position, variant, subject, plane, slice_index (:func:`key_file`)."""
    with closing(_connect(key_file(session_dir, key_dir))) as conn:
        return pd.read_sql_query("SELECT * FROM key ORDER BY query_index, position", conn)


def ranks_table(session_dir: PathLike, key_dir: Optional[PathLike] = None) -> pd.DataFrame:
    """Unblinded tidy table of every answer: rater_id, query_index, criterion, variant, rank (1 = best)."""
    store = RatingStore(session_dir)
    key = read_key(session_dir, key_dir)
    rows = []
    for _, a in store.answers().iterrows():
        for rank, pos in enumerate(a["ranking"], start=1):
            rows.append((a["rater_id"], int(a["query_index"]), a["criterion"], pos, rank))
    df = pd.DataFrame(rows, columns=["rater_id", "query_index", "criterion", "position", "rank"])
    return df.merge(key, on=["query_index", "position"], how="left")[
        ["rater_id", "query_index", "criterion", "variant", "rank", "subject", "plane"]]
