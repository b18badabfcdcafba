"""Registered raters and their secret links: who may answer in a session, and the door the rater app checks.

A coordinator registers each rater (``synth7t rating-session add-rater SESSION ab``) and hands them their own link,
``http://host:8866/?rater=ab&key=<secret>``. The secret is 32 random bytes (:func:`secrets.token_urlsafe`), shown
once; the session stores only its SHA-256 (a slow password hash protects secrets people choose; a 256-bit random
secret cannot be guessed from its digest, so a plain digest is enough). Both live in the session's
``answers.sqlite``, in two tables beside the answers:

``raters``
    ``rater_id``, ``secret_sha256``, ``added_at``, ``link_at`` (the current link's issue time) and ``revoked_at``
    (``NULL`` while the link opens the session).
``refusals``
    wrong links per client address and rater (``*`` for every code that names no registered rater): ``failures``
    in a row and the time of the last one. After :data:`FREE_REFUSALS` of them the client waits before the server
    looks at another link for that rater, ``2, 4, 8, ...`` seconds (at most :data:`MAX_WAIT_S`); the table lives in
    the session, so a restarted server keeps the wait.

:func:`admit` is the server's decision for a page request (before any kernel starts); :func:`verify_link` (or, on a
local server for one rater, :func:`verify_active`) runs inside each answer's transaction
(:meth:`~synth7t.studies.rating.session.RatingStore.record_query`), so a revoked link stops writing at once, also from a page
opened before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlencode

import pandas as pd

from .session import RatingStore, check_rater_id

PathLike = Union[str, Path]

#: bytes of randomness in a link's secret (``secrets.token_urlsafe``: 43 URL-safe characters)
SECRET_BYTES = 32
#: wrong links a client may try for one rater before it has to wait
FREE_REFUSALS = 3
#: the longest wait between two tries, in seconds
MAX_WAIT_S = 3600.0
#: the refusals bucket of codes that name no registered rater (one row per client, however many codes it tries)
UNKNOWN_RATER = "*"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (rater_id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, added_at REAL NOT NULL,
                                   link_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS refusals (client TEXT NOT NULL, rater_id TEXT NOT NULL, failures INTEGER NOT NULL,
                                     last_at REAL NOT NULL, PRIMARY KEY (client, rater_id));
"""
# compared against when a code names no rater, so that a refusal takes as long whether the rater exists or not
_NO_DIGEST = hashlib.sha256(b"no rater").hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _store(session: Union[PathLike, RatingStore]) -> RatingStore:
    return session if isinstance(session, RatingStore) else RatingStore(session)


def _has_raters_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'raters'").fetchone() is not None


def _write(store: RatingStore) -> sqlite3.Connection:
    """A connection holding the write lock, with the tables in place (sessions built before links lack them)."""
    conn = store.connect()
    conn.executescript(_SCHEMA)  # executescript commits first: the tables exist before the transaction below
    conn.execute("BEGIN IMMEDIATE")
    return conn


# --------------------------------------------------------------------------------------------- registration


def add_rater(session: Union[PathLike, RatingStore], rater_id: str) -> str:
    """Register a rater and issue their link's secret (or a new secret for a rater whose link was revoked).

    Args:
        session: the session folder or its store.
        rater_id: the rater's code (:func:`~synth7t.studies.rating.session.check_rater_id`).

    Returns:
        The secret, to put in the rater's link (:func:`rater_link`); it is not stored and cannot be shown again.

    Raises:
        ValueError: a bad code, or a rater whose link is still active (revoke it first for a new one).
    """
    store = _store(session)
    rater_id = check_rater_id(rater_id)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    now = time.time()
    with closing(_write(store)) as conn, conn:
        row = conn.execute("SELECT revoked_at FROM raters WHERE rater_id = ?", (rater_id,)).fetchone()
        if row is not None and row[0] is None:
            raise ValueError(f"rater {rater_id} already has an active link; for a new one revoke it first: "
                             f"synth7t rating-session revoke {store.dir} {rater_id}")
        if row is None:
            conn.execute("INSERT INTO raters VALUES (?, ?, ?, ?, NULL)", (rater_id, _digest(secret), now, now))
        else:
            conn.execute("UPDATE raters SET secret_sha256 = ?, link_at = ?, revoked_at = NULL WHERE rater_id = ?",
                         (_digest(secret), now, rater_id))
    return secret


def revoke_rater(session: Union[PathLike, RatingStore], rater_id: str) -> bool:
    """End a rater's link: new pages with it are refused and a page already open saves nothing more. The rater's
    answers so far are kept.

    Returns:
        ``True`` when the link was active, ``False`` when it was already revoked.

    Raises:
        ValueError: the code names no registered rater.
    """
    store = _store(session)
    rater_id = check_rater_id(rater_id)
    with closing(_write(store)) as conn, conn:
        row = conn.execute("SELECT revoked_at FROM raters WHERE rater_id = ?", (rater_id,)).fetchone()
        if row is None:
            known = [r for (r,) in conn.execute("SELECT rater_id FROM raters ORDER BY rater_id")]
            raise ValueError(f"rater_id {rater_id!r} is not registered in {store.dir}; registered: "
                             f"{', '.join(known) or 'none'}")
        if row[0] is not None:
            return False
        conn.execute("UPDATE raters SET revoked_at = ? WHERE rater_id = ?", (time.time(), rater_id))
    return True


def registered_raters(session: Union[PathLike, RatingStore]) -> pd.DataFrame:
    """Every registered rater: ``rater_id``, ``added_at``, ``link_at``, ``revoked_at`` (epoch seconds, NaN while
    active) and ``active``; empty for a session without registered raters."""
    columns = ["rater_id", "added_at", "link_at", "revoked_at"]
    with closing(_store(session).connect()) as conn:
        if not _has_raters_table(conn):
            df = pd.DataFrame(columns=columns)
        else:
            df = pd.read_sql_query(f"SELECT {', '.join(columns)} FROM raters ORDER BY rater_id", conn)
    df["revoked_at"] = pd.to_numeric(df["revoked_at"])
    df["active"] = df["revoked_at"].isna()
    return df


def rater_link(base_url: str, rater_id: str, secret: str) -> str:
    """The address a rater opens: ``base_url`` (e.g. ``http://localhost:8866/``) with ``?rater=...&key=...``."""
    return f"{base_url.rstrip('/')}/?{urlencode({'rater': check_rater_id(rater_id), 'key': secret})}"


def raters_table(session: Union[PathLike, RatingStore]) -> pd.DataFrame:
    """The registered raters for the coordinator: ``rater``, ``link`` (active, or revoked with its date),
    ``answered`` of ``total`` queries, ``done`` and ``last answer``. Secrets are never stored, so never shown."""
    store = _store(session)
    reg = registered_raters(store)
    last = store.answers().groupby("rater_id")["answered_at"].max()

    def when(t) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))

    rows = []
    for r in reg.itertuples():
        done, total = store.progress(r.rater_id)
        rows.append({"rater": r.rater_id, "link": "active" if r.active else f"revoked {when(r.revoked_at)}",
                     "answered": done, "total": total, "done": f"{100 * done / total:.0f} %",
                     "last answer": when(last[r.rater_id]) if r.rater_id in last else "-"})
    return pd.DataFrame(rows, columns=["rater", "link", "answered", "total", "done", "last answer"])


# ------------------------------------------------------------------------------------------------ checking


def _active_digest(conn: sqlite3.Connection, rater_id: str) -> Optional[str]:
    """The digest of the rater's active link, or ``None`` (not registered, or revoked)."""
    if not _has_raters_table(conn):
        return None
    row = conn.execute("SELECT secret_sha256 FROM raters WHERE rater_id = ? AND revoked_at IS NULL",
                       (rater_id,)).fetchone()
    return row[0] if row is not None else None


def _link_opens(conn: sqlite3.Connection, rater_id: str, secret: Optional[str]) -> bool:
    """Whether ``secret`` is the active link of exactly this rater (a missing secret opens nothing)."""
    digest = _active_digest(conn, rater_id)
    # constant-time, and compared even when there is nothing to match: a refusal's timing tells nothing
    same = hmac.compare_digest(_digest(secret or ""), digest if digest is not None else _NO_DIGEST)
    return same and digest is not None and bool(secret)


def verify_link(conn: sqlite3.Connection, rater_id: str, secret: str) -> None:
    """The check inside an answer's transaction (``RatingStore.record_query(guard=...)``) for a page opened with a
    link.

    Args:
        conn: the answer's connection, holding the write lock.
        rater_id: the rater the answer is written for.
        secret: the secret of the page's link.

    Raises:
        PermissionError: the link does not open the session for this rater (any longer).
    """
    if not _link_opens(conn, rater_id, secret):
        raise PermissionError(f"the link of rater {rater_id} does not open this session (revoked, or not theirs)")


def verify_active(conn: sqlite3.Connection, rater_id: str) -> None:
    """The check inside an answer's transaction for a local server's one rater (no secret): still registered, and
    not revoked.

    Raises:
        PermissionError: the rater is not registered or their link was revoked.
    """
    if _active_digest(conn, rater_id) is None:
        raise PermissionError(f"rater {rater_id} is not registered in this session, or their link was revoked")


def link_opens(session: Union[PathLike, RatingStore], rater_id: Optional[str], secret: Optional[str]) -> bool:
    """Whether ``secret`` is rater ``rater_id``'s active link; a missing or malformed code or secret opens nothing."""
    try:
        rater_id = check_rater_id(rater_id)
    except ValueError:
        return False
    with closing(_store(session).connect()) as conn:
        return _link_opens(conn, rater_id, secret)


def is_active(session: Union[PathLike, RatingStore], rater_id: Optional[str]) -> bool:
    """Whether ``rater_id`` is registered with a link that is not revoked (a local server's check: no secret)."""
    try:
        rater_id = check_rater_id(rater_id)
    except ValueError:
        return False
    with closing(_store(session).connect()) as conn:
        return _active_digest(conn, rater_id) is not None


@dataclass(frozen=True)
class Admission:
    """The server's answer to a page request: ``status`` 200 (open the rater's page), 403 (refused) or 429 (too many
    refusals: ``retry_after`` seconds to wait); ``rater`` the admitted rater's code."""

    status: int
    rater: Optional[str] = None
    retry_after: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.status == 200


def wait_after(failures: int) -> float:
    """Seconds a client waits after ``failures`` refusals in a row: none for the first :data:`FREE_REFUSALS`, then
    2, 4, 8, ... up to :data:`MAX_WAIT_S`."""
    if failures < FREE_REFUSALS:
        return 0.0
    return float(min(2.0 ** (failures - FREE_REFUSALS + 1), MAX_WAIT_S))


def admit(session: Union[PathLike, RatingStore], rater_id: Optional[str], secret: Optional[str], client: str, *,
          only_rater: Optional[str] = None, local: bool = False, now: Optional[float] = None) -> Admission:
    """Decide whether a page request opens a rater's page (the rater app's server asks before it starts a kernel).

    Admitted: a registered, active rater with their own link's secret (``local``: the server's one rater, without a
    secret). Refused (403): no secret, a wrong one, a revoked one, another rater's, or a code that names no rater or
    another rater than ``only_rater``; each refusal is counted for ``client`` and the rater, and a client with
    :data:`FREE_REFUSALS` refusals in a row waits (429, :func:`wait_after`) before any link for that rater is looked
    at again. An admission clears the client's count for that rater.

    Args:
        session: the session folder or its store.
        rater_id: the ``rater`` of the address (``None`` when absent).
        secret: the ``key`` of the address (``None`` when absent).
        client: the client's address (the count's key).
        only_rater: the one rater this server serves (``synth7t rate --rater``), or ``None``.
        local: a local server for ``only_rater`` (127.0.0.1): no secret needed.
        now: the time (tests).

    Returns:
        An :class:`Admission`.
    """
    store = _store(session)
    now = time.time() if now is None else float(now)
    try:
        code: Optional[str] = check_rater_id(rater_id) if rater_id is not None else None
    except ValueError:
        code = None
    if local:
        if only_rater is None:
            raise ValueError("local needs only_rater: a local server serves one rater without a secret")
        code = code if rater_id is not None else only_rater  # a local page may leave the code out
    with closing(_write(store)) as conn, conn:
        registered = code is not None and conn.execute(
            "SELECT 1 FROM raters WHERE rater_id = ?", (code,)).fetchone() is not None
        bucket = code if registered else UNKNOWN_RATER
        row = conn.execute("SELECT failures, last_at FROM refusals WHERE client = ? AND rater_id = ?",
                           (client, bucket)).fetchone()
        failures = int(row[0]) if row else 0
        if row and now < row[1] + wait_after(failures):
            return Admission(429, retry_after=row[1] + wait_after(failures) - now)
        opens = (registered and (only_rater is None or code == only_rater)
                 and (_active_digest(conn, code) is not None if local else _link_opens(conn, code, secret)))
        if opens:
            conn.execute("DELETE FROM refusals WHERE client = ? AND rater_id = ?", (client, bucket))
            return Admission(200, rater=code)
        conn.execute("INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?)", (client, bucket, failures + 1, now))
    return Admission(403)
