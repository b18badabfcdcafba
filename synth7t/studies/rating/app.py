"""The rater app: the rating widget served by Voilà as a web page, with nothing else in reach (``synth7t rate``).

Who gets in. Each rater opens their own link, ``http://host:8866/?rater=ab&key=<secret>``, which the coordinator
made with ``synth7t rating-session add-rater`` (:mod:`synth7t.studies.rating.raters`). Before Voilà starts a kernel for a
page, the server's gate (:func:`page_gate`) asks :func:`~synth7t.studies.rating.raters.admit`: a page without a secret,
with a wrong or revoked one, with another rater's, or for a rater this server does not serve gets a plain refusal
page (403) and no kernel, so no widget and nothing that could write; a client refused again and again for one rater
waits, longer each time (429). The page's kernel checks the link once more before it shows the widget, and every
"Save and next" checks it inside the answer's transaction, so an answer is written only through its rater's active
link. The secret is never logged: the server's request log shows ``key=[secret]``, and pages send no referrer.
``synth7t rate SESSION --rater ab`` on 127.0.0.1 is the one exception: a local server for one registered rater at
the coordinator's own machine, without a secret.

What a rater's browser can reach, and why the key is not in it:

* Voilà renders one generated notebook, ``Blinded rating.ipynb``, written to a fresh temporary folder that holds
  nothing else; that folder is Voilà's root, so its file handler (``/voila/files/...``, which tornado confines to
  the root) has no session file to give, and it is configured to serve no file at all. The images reach the
  browser inside the widget (PNG bytes over the widget's connection), not as files.
* The notebook's code is stripped from the page and Voilà lets a page send its kernel widget messages only
  (``comm_*``, ``kernel_info_request``, ``shutdown_request``), never code to execute: the rater can click and type
  in the widget, nothing more.
* The kernel's code opens the session's ``session.json``, ``images/`` and ``answers.sqlite``; the key lives in
  another folder (``<session>-key/``, :func:`~synth7t.studies.rating.session.key_dir_of`) that nothing here opens, and
  :func:`check_servable` refuses a session folder that holds a key.

Every page load gets its own kernel, so several raters can rate at the same time on one server; each "Save and
next" is one SQLite transaction (:meth:`~synth7t.studies.rating.session.RatingStore.record_query`). A rater who comes back,
after closing the page or after the server was stopped or killed, opens their link again and continues at the first
unanswered query.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional, Union
from urllib.parse import parse_qs, unquote_plus

from .raters import admit, registered_raters
from .session import RatingStore, check_rater_id, key_dir_of
from .widget import RaterApp

PathLike = Union[str, Path]

#: the generated notebook's name (Voilà shows "Running Blinded rating..." while the page loads)
APP_NOTEBOOK = "Blinded rating.ipynb"

#: what a refused visitor sees: the same words whatever was wrong, so a refusal says nothing about the raters
REFUSAL_TITLE = "This link does not open the rating session."
REFUSAL_TEXT = ("Open the link the study coordinator gave you, exactly as given; if it still does not open, ask the "
                "coordinator for a new one.")


def _page(title: str, text: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Blinded rating</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")


def link_from_query(query_string: str) -> tuple[Optional[str], Optional[str]]:
    """``(rater, secret)`` of a page address's query string (``rater=ab&key=s3cr3t``); ``None`` for either absent."""
    values = parse_qs(query_string or "")
    return (values["rater"][0] if "rater" in values else None, values["key"][0] if "key" in values else None)


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def open_rater_page(session_dir: PathLike, rater: Optional[str] = None, *, local: bool = False
                    ) -> Optional[RaterApp]:
    """What the app's notebook runs in its kernel: the widget for the rater of the page's link, or a refusal.

    Voilà passes the page address's query as ``QUERY_STRING``. The widget opens for its ``rater`` only with that
    rater's active ``key`` (and, when the server serves one ``rater``, only for that one); ``local``: for
    ``rater`` without a secret (a local server, :func:`serve`). The server's gate has refused other pages before
    their kernel started; this is the second check, and the widget checks the link again at every answer.

    Returns:
        The displayed :class:`~synth7t.studies.rating.widget.RaterApp`, or ``None`` when the refusal was displayed instead.
    """
    from IPython.display import HTML, display

    asked, secret = link_from_query(os.environ.get("QUERY_STRING", ""))
    code = asked if asked is not None else (rater if local else None)
    app = None
    if code is not None and (rater is None or code == rater):
        try:
            app = (RaterApp(session_dir, code, registered_only=True) if local
                   else RaterApp(session_dir, code, secret=secret if secret is not None else ""))
        except (ValueError, PermissionError):
            app = None
    if app is None:
        display(HTML(f"<h3>{html.escape(REFUSAL_TITLE)}</h3><p>{html.escape(REFUSAL_TEXT)}</p>"))
        return None
    app.display()
    return app


def check_servable(session_dir: PathLike, rater: Optional[str] = None, *, local: bool = False) -> RatingStore:
    """The session, checked before it is served to raters.

    Args:
        session_dir: the session.
        rater: the one rater the server will serve, or ``None`` (every registered rater, by their link).
        local: a local server for ``rater`` without a secret.

    Raises:
        ValueError: not a session; its folder holds the key (a session built before the key moved out:
            :func:`synth7t.studies.rating.session.move_key_out` or ``synth7t rating-session`` moves it); no rater with an
            active link (or ``rater`` has none), with the command that registers one.
    """
    store = RatingStore(session_dir)
    if (store.dir / "key.sqlite").exists():
        raise ValueError(f"{store.dir / 'key.sqlite'}: the key is inside the session folder; move it out before "
                         f"raters see the session: synth7t rating-session move-key {store.dir} (moves it to "
                         f"{key_dir_of(store.dir)})")
    if local and rater is None:
        raise ValueError("a local server serves one rater: pass rater (synth7t rate SESSION --rater CODE)")
    reg = registered_raters(store)
    active = set(reg.loc[reg["active"], "rater_id"])
    if rater is not None and check_rater_id(rater) not in active:
        state = "has a revoked link" if rater in set(reg["rater_id"]) else "is not registered"
        raise ValueError(f"rater {rater} {state} in {store.dir}: synth7t rating-session add-rater {store.dir} "
                         f"{rater} issues their link (synth7t rating-session raters {store.dir} lists them)")
    if not active:
        raise ValueError(f"no rater of {store.dir} has an active link, so no page would open: register each rater "
                         f"with synth7t rating-session add-rater {store.dir} CODE (it prints their link)")
    return store


def write_app_notebook(folder: PathLike, session_dir: PathLike, rater: Optional[str] = None, *,
                       local: bool = False) -> Path:
    """Write the app's notebook (one code cell calling :func:`open_rater_page`) into ``folder``; returns its path.

    Args:
        folder: an otherwise empty folder: Voilà's root.
        session_dir: the session (stored as an absolute path).
        rater: the one rater the server serves, or ``None``.
        local: that rater without a secret.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    if rater is not None:
        rater = check_rater_id(rater)
    code = ("from synth7t.studies.rating.app import open_rater_page\n"
            f"app = open_rater_page({str(Path(session_dir).resolve())!r}, {rater!r}, local={bool(local)!r})")
    nb = new_notebook(cells=[new_code_cell(code)], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    path = Path(folder) / APP_NOTEBOOK
    nbformat.write(nb, path)
    return path


def page_gate(session_dir: PathLike, rater: Optional[str] = None, *, local: bool = False) -> Callable:
    """Voilà's ``prelaunch_hook`` for the app: admit a page request (:func:`~synth7t.studies.rating.raters.admit`) before
    its kernel starts, or finish it with the plain refusal page (403) or the page that says how long to wait (429).

    Args:
        session_dir: the session.
        rater: the one rater the server serves, or ``None``.
        local: that rater without a secret.
    """
    store = RatingStore(session_dir)

    def gate(request_handler, notebook=None, cwd=None):
        from tornado.web import Finish

        req = request_handler
        # read as the kernel reads QUERY_STRING, so that a repeated parameter cannot mean one rater here, another there
        asked, secret = link_from_query(req.request.query)
        decision = admit(store, asked, secret, req.request.remote_ip or "?", only_rater=rater, local=local)
        if decision.admitted:
            return None
        req.set_status(decision.status)
        if decision.status == 429:
            wait = int(decision.retry_after) + 1
            req.set_header("Retry-After", str(wait))
            raise Finish(_page("Too many refused links from your address.",
                               f"Wait {wait} seconds, then open the link the study coordinator gave you again."))
        raise Finish(_page(REFUSAL_TITLE, REFUSAL_TEXT))

    return gate


def scrub_uri(uri: str) -> str:
    """A request address fit for a log: every ``key`` value of its query replaced by ``[secret]``."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = [f"{name}=[secret]" if unquote_plus(name).strip().lower() == "key" else part
             for part in query.split("&") for name in [part.partition("=")[0]]]
    return f"{path}?{'&'.join(parts)}"


def log_request(handler) -> None:
    """The server's request log line, without the link's secret (tornado's own line would show the address)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    logging.getLogger("tornado.access").log(level, "%d %s %s (%s) %.1f ms", status, handler.request.method,
                                            scrub_uri(handler.request.uri), handler.request.remote_ip,
                                            1000.0 * handler.request.request_time())


def voila_config(port: int, ip: str = "127.0.0.1", gate: Optional[Callable] = None):
    """Voilà's settings for the app: the given address only, no browser, code stripped, no tracebacks, no files, the
    page gate, a request log without secrets, and no referrer sent from its pages.

    Args:
        port: the port.
        ip: the address to listen on.
        gate: the ``prelaunch_hook`` (:func:`page_gate`), or ``None``.

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
    if gate is not None:
        c.VoilaConfiguration.prelaunch_hook = gate
    # the link's secret is in the page's address: neither the log nor a Referer header may carry it on
    c.Voila.tornado_settings = {"log_function": log_request, "headers": {"Referrer-Policy": "no-referrer"}}
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
def app_folder(session_dir: PathLike, rater: Optional[str] = None, *, local: bool = False) -> Iterator[Path]:
    """A temporary folder holding only the app's notebook (Voilà's root), removed afterwards; yields the notebook."""
    folder = Path(tempfile.mkdtemp(prefix="synth7t-rate-"))
    try:
        yield write_app_notebook(folder, session_dir, rater, local=local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_local(ip: str, rater: Optional[str], require_link: bool = False) -> bool:
    """Whether a server skips the secret: one rater, this machine only, and no ``require_link``."""
    return rater is not None and is_loopback(ip) and not require_link


def serve(session_dir: PathLike, rater: Optional[str] = None, *, port: int = 8866, ip: str = "127.0.0.1",
          quiet: bool = False, require_link: bool = False) -> None:
    """Serve the rater app until interrupted (Ctrl-C or SIGTERM); blocks.

    Args:
        session_dir: the session (checked by :func:`check_servable`).
        rater: serve this registered rater only, or ``None`` (every registered rater, each by their own link).
        port: the port (a busy port is an error).
        ip: the address to listen on: ``127.0.0.1`` (this machine only; raters elsewhere through an SSH tunnel) or
            ``0.0.0.0`` (every interface: pages open only with a rater's link).
        quiet: Voilà logs warnings only (refused pages among them).
        require_link: ask for the link's secret even from a local server for one ``rater``; without it, ``rater``
            on a loopback ``ip`` rates without a secret (:func:`is_local`).
    """
    from voila.app import Voila

    local = is_local(ip, rater, require_link)
    store = check_servable(session_dir, rater, local=local)
    if rater is not None:
        rater = check_rater_id(rater)
    check_port_free(port, ip)

    def stop(_signum, _frame):
        raise KeyboardInterrupt  # Voilà's loop stops on it and shuts its kernels down

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with app_folder(store.dir, rater, local=local) as notebook:
            argv = [str(notebook)] + (["--Voila.log_level=WARN"] if quiet else [])
            config = voila_config(port, ip, page_gate(store.dir, rater, local=local))
            Voila.launch_instance(argv=argv, config=config)
    finally:
        signal.signal(signal.SIGTERM, previous)


def session_summary(store: RatingStore) -> str:
    """A few lines about the session for the console: queries, letters, criteria, registered raters and their
    progress, and raters with answers but no registration (the analysis leaves those out)."""
    lines = [f"session {store.dir}: {store.n_queries} queries, letters {', '.join(store.meta['positions'])}, "
             f"criteria {', '.join(store.criteria)}"]
    reg = registered_raters(store)
    for r in reg.itertuples():
        done, total = store.progress(r.rater_id)
        state = "link active" if r.active else "link revoked"
        lines.append(f"  {r.rater_id}: {done} of {total} queries answered ({state})")
    others = [r for r in store.raters() if r not in set(reg["rater_id"])]
    if others:
        lines.append(f"  answers from raters not registered (left out of the analysis): {', '.join(others)}")
    return "\n".join(lines)
