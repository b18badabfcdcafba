"""Blinded rating sessions in SQLite: building a session, the store raters answer into, the key and the ranks."""

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
    from .. import io as sio

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
