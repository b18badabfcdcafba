"""The Jupyter Book: check that its chapters are executed, build it, and look at it in a real browser.

``make demo`` runs the notebooks of a profile into ``book/notebooks/`` (:mod:`synth7t.workflow.profiles`), then
:func:`build_book` checks every notebook chapter of ``_toc.yml`` (present, every code cell executed, no error
output) and runs ``jupyter-book build`` with warnings treated as errors. :func:`check_in_browser` serves the built
HTML on localhost and opens pages in headless Chromium (Debian's ``chromium`` and ``chromium-driver`` packages,
driven by Selenium): every image must have loaded with a non-zero size and no cell may show an error.

The book's folder (``root``) is the one with ``_config.yml`` and ``_toc.yml``: the repository root, which is the
current working directory by default (``synth7t book --root`` names another). The installed library never looks
for it beside its own files.

Command line: ``synth7t book`` (build, print the front page) and ``synth7t book --browser`` (also the browser check).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import nbformat
import pandas as pd
import yaml

from .measurements import write_measurements_page

PathLike = Union[str, Path]

#: Chromium flags for a headless run on a closed network: without the networking flags Chromium keeps trying to
#: reach Google's services and its connections are refused.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,2000")

# what a page reports: image sizes after load, and the error outputs MyST-NB renders
_PAGE_REPORT_JS = """
const imgs = Array.from(document.querySelectorAll('main img, article img, .bd-article img'));
const uniq = Array.from(new Set(imgs));
const errors = document.querySelectorAll('.output.error, .output.traceback, div.traceback, .cell_output .error');
const text = document.body ? document.body.innerText : '';
return {
  title: document.title,
  n_images: uniq.length,
  broken: uniq.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).map(i => i.src),
  sizes: uniq.map(i => [i.naturalWidth, i.naturalHeight]),
  n_errors: errors.length,
  traceback_text: text.includes('Traceback (most recent call last)'),
  text_length: text.length,
  simulated: text.toLowerCase().includes('simulated'),
};
"""


class BookError(RuntimeError):
    """The book cannot be built or did not render as it should; the message lists every problem."""


def book_root(root: Optional[PathLike] = None, *, need: Sequence[str] = ("_toc.yml",)) -> Path:
    """The book's folder, checked: ``root`` (default: the current working directory), which must hold ``need``.

    Raises:
        BookError: a file of ``need`` is missing (the message says to run from the repository root or pass
            ``--root``).
    """
    path = Path(root if root is not None else Path.cwd()).resolve()
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        raise BookError(f"no {' or '.join(missing)} in {path}: run from the repository root or pass --root")
    return path


def toc_entries(root: Optional[PathLike] = None) -> list[str]:
    """Every ``file`` of ``<root>/_toc.yml`` in reading order (the root page first), without suffix.

    Args:
        root: the book's folder (default: the current working directory).

    Raises:
        BookError: ``root`` has no ``_toc.yml``.
    """
    toc = yaml.safe_load((book_root(root) / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return files


def _source(root: Path, entry: str) -> Optional[Path]:
    for suffix in (".ipynb", ".md"):
        if (root / f"{entry}{suffix}").is_file():
            return root / f"{entry}{suffix}"
    return None


def chapter_status(root: Optional[PathLike] = None) -> pd.DataFrame:
    """One row per page of the table of contents: its source, whether it is a notebook, and for notebooks the
    number of code cells, of cells never executed and of error outputs.

    A chapter is ready when its source exists and, for a notebook, every code cell with source has an
    execution count and no output is an error.

    Args:
        root: the book's folder (default: the current working directory).
    """
    root = book_root(root)
    rows = []
    for entry in toc_entries(root):
        src = _source(root, entry)
        row = dict(entry=entry, source=str(src) if src else "", notebook=bool(src and src.suffix == ".ipynb"),
                   code_cells=0, unexecuted=0, errors=0, problem="")
        if src is None:
            row["problem"] = "missing (run `make demo` or `synth7t run-profile demo`)"
        elif row["notebook"]:
            nb = nbformat.read(src, as_version=4)
            code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
            row["code_cells"] = len(code)
            row["unexecuted"] = sum(c.get("execution_count") is None for c in code)
            row["errors"] = sum(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
            if row["unexecuted"]:
                row["problem"] = f"{row['unexecuted']} of {len(code)} code cells not executed"
            if row["errors"]:
                row["problem"] = (row["problem"] + "; " if row["problem"] else "") + f"{row['errors']} error output(s)"
        rows.append(row)
    return pd.DataFrame(rows)


def jupyter_book_executable() -> str:
    """The ``jupyter-book`` command of this environment (beside the running Python first, then on PATH)."""
    here = Path(sys.executable).with_name("jupyter-book")
    found = str(here) if here.is_file() else shutil.which("jupyter-book")
    if not found:
        raise BookError('jupyter-book is not installed: pip install -e ".[book]" (Jupyter Book 1)')
    return found


def build_book(root: Optional[PathLike] = None, *, warnings_as_errors: bool = True, check_chapters: bool = True,
               clean: bool = True, quiet: bool = True) -> Path:
    """Build the HTML book of ``root`` (``_config.yml``, ``_toc.yml``) and return the front page's path.

    Args:
        root: the book's folder (default: the current working directory, the repository root when ``make`` runs;
            or a copy of its book files for a test).
        warnings_as_errors: pass ``-W`` (and ``--keep-going``, so every warning is listed before failing).
        check_chapters: first require every chapter to exist and every notebook chapter to be fully executed
            without errors (:func:`chapter_status`); the book build itself never executes notebooks.
        clean: remove ``<root>/_build/html`` first, so no page of an earlier build survives.
        quiet: keep Sphinx's output unless the build fails.

    Returns:
        ``<root>/_build/html/index.html``.

    Raises:
        BookError: ``root`` has no ``_config.yml`` or ``_toc.yml``, a chapter is missing or not executed, or the
            build failed (the message ends with the build's warnings and errors).
    """
    root = book_root(root, need=("_config.yml", "_toc.yml"))
    write_measurements_page(root)
    if check_chapters:
        status = chapter_status(root)
        bad = status[status["problem"] != ""]
        if len(bad):
            raise BookError("chapters not ready:\n" + "\n".join(f"  {r.entry}: {r.problem}" for r in bad.itertuples()))
    html = root / "_build" / "html"
    if clean and html.exists():
        shutil.rmtree(html)
    cmd = [jupyter_book_executable(), "build", str(root), "--builder", "html"]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    index = html / "index.html"
    if proc.returncode != 0 or not index.is_file():
        lines = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}):\n" + "\n".join(lines[-40:] or
                                                                                          log.splitlines()[-40:]))
    if not quiet:
        print(log)
    return index


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # the browser dropping a connection it no longer needs is not an error of the book
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(directory: PathLike, failed: Optional[list] = None) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free localhost port; yields the base URL.

    Args:
        directory: the folder to serve.
        failed: when given, the path of every request answered with an error status (404: a missing file) is
            appended to it.
    """

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def log_request(self, code="-", size="-"):
            if failed is not None and str(getattr(code, "value", code)).startswith(("4", "5")):
                failed.append(self.path)

    handler = functools.partial(Quiet, directory=str(directory))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def find_browser() -> tuple[str, str]:
    """Paths of ``chromium`` and ``chromedriver``; a clear error naming the Debian packages when absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise BookError("the browser check needs Chromium and ChromeDriver: "
                        "apt-get update && apt-get install -y chromium chromium-driver")
    return chromium, driver


def check_in_browser(html_dir: PathLike, pages: Sequence[str] = ("index.html",), *, min_images: int = 0,
                     timeout: float = 60.0) -> pd.DataFrame:
    """Open built pages in headless Chromium and report what rendered.

    Each page is loaded over HTTP from a local server and, once the document is complete, reports its images
    (loaded with a non-zero natural size or broken), the error outputs of its cells, the files it asked for that
    the build lacks (the browser's own ``/favicon.ico`` aside), and whether its text mentions simulated data.

    Args:
        html_dir: the built HTML folder (``_build/html``).
        pages: paths of pages relative to it.
        min_images: images each page must show at least (0: no requirement).
        timeout: seconds allowed per page load.

    Returns:
        One row per page: ``page``, ``title``, ``n_images``, ``broken``, ``n_errors``, ``traceback_text``,
        ``missing`` (requests answered 404), ``text_length``, ``simulated``, ``ok``.

    Raises:
        BookError: Chromium or ChromeDriver is missing, or a page does not exist.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    html_dir = Path(html_dir)
    missing = [p for p in pages if not (html_dir / p).is_file()]
    if missing:
        raise BookError(f"pages not built in {html_dir}: {', '.join(missing)}")
    chromium, driver_path = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="synth7t-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    rows = []
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.set_page_load_timeout(timeout)
        failed: list = []
        with serve(html_dir, failed) as base:
            for page in pages:
                failed.clear()
                driver.get(f"{base}/{page}")
                WebDriverWait(driver, timeout).until(
                    lambda d: d.execute_script("return document.readyState") == "complete")
                # lazy images load when scrolled to: scroll through the page, then wait for every image
                driver.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });"
                                      "window.scrollTo(0, document.body.scrollHeight);")
                WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
                    "return Array.from(document.images).every(i => i.complete);"))
                r = driver.execute_script(_PAGE_REPORT_JS)
                missing = sorted({p for p in failed if p.split("?")[0] != "/favicon.ico"})
                ok = (not r["broken"] and r["n_errors"] == 0 and not r["traceback_text"] and not missing
                      and r["n_images"] >= min_images and r["text_length"] > 0)
                rows.append(dict(page=page, title=r["title"], n_images=r["n_images"], broken=len(r["broken"]),
                                 n_errors=r["n_errors"], traceback_text=r["traceback_text"],
                                 missing=" ".join(missing), text_length=r["text_length"], simulated=r["simulated"],
                                 ok=ok))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return pd.DataFrame(rows)


def notebook_pages(root: Optional[PathLike] = None) -> list[str]:
    """HTML paths of the notebook chapters of the table of contents (``book/notebooks/04_evaluate.html``)."""
    status = chapter_status(root)
    return [f"{e}.html" for e in status.loc[status["notebook"], "entry"]]
