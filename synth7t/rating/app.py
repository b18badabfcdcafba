"""The rater app: the rating widget served by Voilà as a web page, with nothing else in reach (``synth7t rate``).

What a rater's browser can reach, and why the key is not in it:

* Voilà renders one generated notebook, ``Blinded rating.ipynb``, written to a fresh temporary folder that holds
  nothing else; that folder is Voilà's root, so its file handler (``/voila/files/...``, which tornado confines to
  the root) has no session file to give, and it is configured to serve no file at all. The images reach the
  browser inside the widget (PNG bytes over the widget's connection), not as files.
* The notebook's code is stripped from the page and Voilà lets a page send its kernel widget messages only
  (``comm_*``, ``kernel_info_request``, ``shutdown_request``), never code to execute: the rater can click and type
  in the widget, nothing more.
* The kernel's code opens the session's ``session.json``, ``images/`` and ``answers.sqlite``; the key lives in
  another folder (``<session>-key/``, :func:`~synth7t.rating.session.key_dir_of`) that nothing here opens, and
  :func:`check_servable` refuses a session folder that holds a key.

Every page load gets its own kernel, so several raters can rate at the same time on one server; each "Save and
next" is one SQLite transaction (:meth:`~synth7t.rating.session.RatingStore.record_query`). A rater who comes back,
after closing the page or after the server was stopped or killed, continues at the first unanswered query.

The rater's code comes from ``synth7t rate --rater ID`` (one server per rater), from the page address
(``http://host:8866/?rater=ID``, a link the coordinator can hand out) or, when neither is given, from a field on the
first page.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import parse_qs

from .session import RatingStore, check_rater_id, key_dir_of
from .widget import RaterApp

PathLike = Union[str, Path]

#: the generated notebook's name (Voilà shows "Running Blinded rating..." while the page loads)
APP_NOTEBOOK = "Blinded rating.ipynb"


def rater_from_query(query_string: str) -> Optional[str]:
    """The ``rater`` parameter of a page address's query string (``rater=ab&x=1`` -> ``ab``), or ``None``."""
    values = parse_qs(query_string or "").get("rater")
    return values[0] if values else None


def open_rater_page(session_dir: PathLike, rater: Optional[str] = None) -> RaterApp:
    """What the app's notebook runs in its kernel: the widget for ``rater``, else for the page address's
    ``?rater=`` (Voilà passes it as ``QUERY_STRING``), else asking for the code; displayed, and returned."""
    if rater is None:
        asked = rater_from_query(os.environ.get("QUERY_STRING", ""))
        try:
            rater = check_rater_id(asked) if asked is not None else None
        except ValueError:
            rater = None  # a mistyped link: the rater types the code on the page
    app = RaterApp(session_dir, rater)
    app.display()
    return app


def check_servable(session_dir: PathLike) -> RatingStore:
    """The session, checked before it is served to raters.

    Raises:
        ValueError: not a session, or its folder holds the key (a session built before the key moved out:
            :func:`synth7t.rating.session.move_key_out` or ``synth7t rating-session`` moves it).
    """
    store = RatingStore(session_dir)
    if (store.dir / "key.sqlite").exists():
        raise ValueError(f"{store.dir / 'key.sqlite'}: the key is inside the session folder; move it out before "
                         f"raters see the session: synth7t rating-session move-key {store.dir} (moves it to "
                         f"{key_dir_of(store.dir)})")
    return store


def write_app_notebook(folder: PathLike, session_dir: PathLike, rater: Optional[str] = None) -> Path:
    """Write the app's notebook (one code cell calling :func:`open_rater_page`) into ``folder``; returns its path.

    Args:
        folder: an otherwise empty folder: Voilà's root.
        session_dir: the session (stored as an absolute path).
        rater: a fixed rater code, or ``None``.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    if rater is not None:
        rater = check_rater_id(rater)
    code = ("from synth7t.rating.app import open_rater_page\n"
            f"app = open_rater_page({str(Path(session_dir).resolve())!r}, {rater!r})")
    nb = new_notebook(cells=[new_code_cell(code)], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    path = Path(folder) / APP_NOTEBOOK
    nbformat.write(nb, path)
    return path


def voila_config(port: int, ip: str = "127.0.0.1"):
    """Voilà's settings for the app: the given address only, no browser, code stripped, no tracebacks, no files.

    Returns:
        A traitlets ``Config``.
    """
    from traitlets.config import Config

    c = Config()
    c.Voila.port = int(port)
    c.Voila.port_retries = 0  # a busy port is an error, not a silent move to another address
    c.Voila.ip = ip
    c.Voila.open_browser = False
    c.VoilaConfiguration.strip_sources = True
    c.VoilaConfiguration.show_tracebacks = False
    c.VoilaConfiguration.file_allowlist = []  # /voila/files/ serves nothing: the images travel inside the widget
    c.VoilaConfiguration.file_denylist = [".*"]
    return c


def check_port_free(port: int, ip: str = "127.0.0.1") -> None:
    """Raise ``RuntimeError`` naming the port when something already listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado: a port in TIME_WAIT is free
        try:
            sock.bind((ip, int(port)))
        except OSError as err:
            raise RuntimeError(f"port {port} on {ip} is not free ({err.strerror}); pass another --port") from None


@contextlib.contextmanager
def app_folder(session_dir: PathLike, rater: Optional[str] = None) -> Iterator[Path]:
    """A temporary folder holding only the app's notebook (Voilà's root), removed afterwards; yields the notebook."""
    folder = Path(tempfile.mkdtemp(prefix="synth7t-rate-"))
    try:
        yield write_app_notebook(folder, session_dir, rater)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(session_dir: PathLike, rater: Optional[str] = None, *, port: int = 8866, ip: str = "127.0.0.1",
          quiet: bool = False) -> None:
    """Serve the rater app until interrupted (Ctrl-C or SIGTERM); blocks.

    Args:
        session_dir: the session (checked by :func:`check_servable`).
        rater: a fixed rater code for every page of this server, or ``None`` (from the address or the page).
        port: the port (a busy port is an error).
        ip: the address to listen on: ``127.0.0.1`` (this machine only; raters elsewhere through an SSH tunnel) or
            ``0.0.0.0`` (every interface: only on a network you trust, the app has no login).
        quiet: Voilà logs warnings only.
    """
    from voila.app import Voila

    store = check_servable(session_dir)
    if rater is not None:
        rater = check_rater_id(rater)
    check_port_free(port, ip)

    def stop(_signum, _frame):
        raise KeyboardInterrupt  # Voilà's loop stops on it and shuts its kernels down

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with app_folder(store.dir, rater) as notebook:
            argv = [str(notebook)] + (["--Voila.log_level=WARN"] if quiet else [])
            Voila.launch_instance(argv=argv, config=voila_config(port, ip))
    finally:
        signal.signal(signal.SIGTERM, previous)


def session_summary(store: RatingStore) -> str:
    """A few lines about the session for the console: queries, letters, criteria, raters and their progress."""
    lines = [f"session {store.dir}: {store.n_queries} queries, letters {', '.join(store.meta['positions'])}, "
             f"criteria {', '.join(store.criteria)}"]
    for r in store.raters():
        done, total = store.progress(r)
        lines.append(f"  {r}: {done} of {total} queries answered")
    return "\n".join(lines)
