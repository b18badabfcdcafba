"""The rater app as raters meet it: ``synth7t rate`` serving the widget with Voilà, driven in headless Chromium.

Each rater opens their own link (``synth7t rating-session add-rater``). A rater answers three queries by clicking on a
local server (``--rater`` on 127.0.0.1: no secret), the server is killed, and the rater continues at query 4 through
their link on a server that asks for links, with exactly the clicked rankings stored; an incomplete ranking cannot be
saved. Two raters with their links answer at the same time, each sees only their own progress, nothing is lost, and
the analysis reads registered raters only. Pages without a rater's own active link (none, wrong, another rater's,
revoked, unregistered) get the plain refusal page and no kernel, leave no answer, repeated wrong links make the
client wait, a link revoked while its page is open saves nothing more, and no secret reaches the server's log. The
key cannot be fetched through the app and the page's kernel runs no code sent to it. Needs Chromium and
ChromeDriver (``apt-get install chromium chromium-driver``); skipped without them unless ``SYNTH7T_REQUIRE_BROWSER``
is set, as the book's browser check.

``SYNTH7T_RATER_SCREENSHOT=book/images/rater_app.png`` also writes the screenshot the first test takes there;
:func:`screenshot_app` takes one of any session (the book's comes from the demo's session).
"""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import require_browser

from synth7t.studies import rating
from synth7t.workflow import book

CRITERIA = list(rating.CRITERIA)


@pytest.fixture(scope="module")
def browser_available():
    require_browser()


@pytest.fixture(scope="module")
def browser(browser_available, tmp_path_factory):
    """One headless Chromium for the module (a second one is the second rater's own browser session)."""
    driver = _browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


@pytest.fixture
def session(tmp_path):
    from test_rating import phantom_variants

    vols = {v: {f"sub-{s}": a for s in range(2)} for v, a in list(phantom_variants().items())[:3]}
    return rating.build_session(tmp_path / "session", vols, n_queries=6, seed=0)


# ------------------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rate_server(session_dir, port, log_path, *options):
    """``synth7t rate`` as a real process (its own process group), yielded once it accepts connections."""
    log = open(log_path, "a")
    # its app folder goes to the test's folder (TMPDIR): a killed server cannot remove it
    env = {**os.environ, "TMPDIR": str(Path(log_path).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "synth7t", "rate", str(session_dir), "--port", str(port),
                             *options], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"synth7t rate exited ({proc.returncode}): {Path(log_path).read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.time() > deadline:
                raise RuntimeError(f"synth7t rate did not listen within 60 s: {Path(log_path).read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _kill_hard(proc) -> None:
    """SIGKILL the server's process group: no shutdown, no cleanup, as a crash or a pulled plug."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


# ----------------------------------------------------------------------------------------- the browser


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = book.find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (*book.CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_window_size(1280, 1400)
    return driver


def _wait(driver, condition, timeout=60, what=""):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except Exception as err:
        raise AssertionError(f"waited {timeout} s for {what}; page text: {_text(driver, 'body')[:800]!r}") from err


def _text(driver, css) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return " ".join(e.text for e in found)


def _wait_text(driver, css, text, timeout=60):
    _wait(driver, lambda d: text in _text(d, css), timeout, f"{text!r} in {css}")


def _click(driver, css):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    _wait(driver, ec.element_to_be_clickable((By.CSS_SELECTOR, css)), 30, f"{css} clickable").click()


def _save_enabled(driver) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "button.rate-save").is_enabled()


def _link(session, rater, port) -> str:
    """Register ``rater`` and return their link on this test's server (the coordinator's add-rater)."""
    return rating.rater_link(f"http://127.0.0.1:{port}/", rater, rating.add_rater(session, rater))


def _path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def _rank_by_clicks(driver, orders, save=True):
    for crit, order in orders.items():
        for p in order:
            _click(driver, f"button.rank-{crit}-{p}")
        _wait_text(driver, f".summary-{crit}", "✓", 30)
    _wait(driver, _save_enabled, 30, "Save and next enabled")
    if save:
        _click(driver, "button.rate-save")


def _rank_by_keyboard(driver, orders, save=True):
    """Type each criterion's letters into its field (lower case, as a hurried rater), Enter in the last saves."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for crit, order in orders.items():
        field = driver.find_element(By.CSS_SELECTOR, f".order-{crit} input")
        field.send_keys(order.lower())
        _wait_text(driver, f".summary-{crit}", "✓", 30)
    _wait(driver, _save_enabled, 30, "Save and next enabled")
    if save:
        field.send_keys(Keys.ENTER)


def _orders(rng, positions, n):
    return [{c: "".join(rng.permutation(positions)) for c in CRITERIA} for _ in range(n)]


def _stored(store, rater):
    return {(int(r.query_index), r.criterion): "".join(r.ranking) for r in store.answers(rater).itertuples()}


def _expected(orders):
    return {(q, c): o for q, by_crit in enumerate(orders) for c, o in by_crit.items()}


# ------------------------------------------------------------------------------------------------ tests


def test_a_rater_answers_locally_survives_a_killed_server_and_continues_through_their_link(session, tmp_path,
                                                                                          browser):
    positions = session.meta["positions"]
    orders = _orders(np.random.default_rng(1), positions, 3)
    port, log = _free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}/"
    link = _link(session, "alice", port)
    driver = browser
    try:
        # at the coordinator's own machine: one rater, 127.0.0.1, no secret (and the server says so)
        with rate_server(session.dir, port, log, "--rater", "alice") as server:
            assert f"local: rater alice rates at http://localhost:{port}/ without a secret link" in log.read_text()
            driver.get(url)
            _wait_text(driver, ".rate-header", "Query 1 of 6", 90)
            # an incomplete ranking cannot be saved: two letters of one criterion, the button stays disabled and a
            # click on it (as the page would send it) stores nothing
            for p in positions[:2]:
                _click(driver, f"button.rank-{CRITERIA[0]}-{p}")
            _wait_text(driver, f".summary-{CRITERIA[0]}", "still to rank", 30)
            time.sleep(0.5)
            assert not _save_enabled(driver)
            from selenium.webdriver.common.by import By

            driver.execute_script("arguments[0].click();", driver.find_element(By.CSS_SELECTOR, "button.rate-save"))
            time.sleep(1.0)
            assert session.answers("alice").empty and "Query 1 of 6" in _text(driver, ".rate-header")
            _click(driver, f"button.clear-{CRITERIA[0]}")
            _wait_text(driver, f".summary-{CRITERIA[0]}", "nothing ranked yet", 30)
            for q, by_crit in enumerate(orders):
                _rank_by_clicks(driver, by_crit)
                _wait_text(driver, ".rate-header", f"Query {q + 2} of 6", 30)
            _kill_hard(server)
        assert _stored(session, "alice") == _expected(orders)  # the clicks, and nothing else, are on disk

        with rate_server(session.dir, port, log):  # every registered rater, each by their own link
            driver.get(link)  # the rater comes back with their link
            _wait_text(driver, ".rate-header", "Query 4 of 6", 90)
            assert "3 of 6 queries answered" in _text(driver, ".rate-header")
            _click(driver, f"button.rank-{CRITERIA[0]}-{positions[1]}")
            _wait_text(driver, f".summary-{CRITERIA[0]}", "still to rank", 30)
            shot = tmp_path / "rater_app.png"
            driver.save_screenshot(str(shot))
    finally:
        driver.get("about:blank")  # the page lets its kernel go before the server stops
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SYNTH7T_RATER_SCREENSHOT"):
        shutil.copy(shot, os.environ["SYNTH7T_RATER_SCREENSHOT"])
    assert _stored(session, "alice") == _expected(orders)


def _request(port, path):
    """One raw GET (the path sent as is, no normalisation of ``..``): ``(status, headers, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, dict(res.getheaders()), body


def _get(port, path):
    """One raw GET; follows one redirect: ``(first status, body, final status)``."""
    status, headers, body = _request(port, path)
    if status in (301, 302, 303, 307, 308):
        location = headers["Location"].split(f":{port}", 1)[-1]
        return (status, *_get(port, location)[1:])
    return status, body, status


def _kernel_runs_sent_code(port, page: bytes, key: Path, marker: Path) -> dict:
    """Connect to the page's kernel as the page does and send it code that would copy the key to ``marker``, then
    a kernel_info_request; returns the count of each message type that came back."""
    import re

    from tornado import ioloop, websocket

    kernel_id = re.search(rb'"kernelId": "([0-9a-f-]+)"', page).group(1).decode()

    def message(msg_type, content):
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": uuid.uuid4().hex, "username": "",
                  "version": "5.3", "date": "2026-01-01T00:00:00Z"}
        return json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                           "channel": "shell", "buffers": []})

    async def talk():
        ws = await websocket.websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels")
        code = f"open({str(marker)!r}, 'w').write(open({str(key)!r}, 'rb').read().hex())"
        await ws.write_message(message("execute_request", {"code": code, "silent": False, "store_history": False,
                                                           "user_expressions": {}, "allow_stdin": False}))
        await ws.write_message(message("kernel_info_request", {}))
        seen = {}
        deadline = time.time() + 20
        while time.time() < deadline and "kernel_info_reply" not in seen:
            msg = await ws.read_message()
            if msg is None:
                break
            if isinstance(msg, str):
                kind = json.loads(msg)["header"]["msg_type"]
                seen[kind] = seen.get(kind, 0) + 1
        ws.close()
        return seen

    return ioloop.IOLoop().run_sync(talk, timeout=40)


def test_two_raters_at_once_see_their_own_progress_lose_nothing_and_the_key_is_out_of_reach(session, tmp_path,
                                                                                             browser):
    positions = session.meta["positions"]
    rng = np.random.default_rng(2)
    orders = {"bob": _orders(rng, positions, 3), "carol": _orders(rng, positions, 2)}
    port = _free_port()
    links = {r: _link(session, r, port) for r in orders}
    key = rating.key_file(session.dir)
    with rate_server(session.dir, port, tmp_path / "server.log"):
        # the key (and every session file) through the app's file handler, by absolute and relative paths; no
        # kernel list either, where a visitor could find another rater's page
        tries = [f"/voila/files/{key}", f"/voila/files/../{key.parent.name}/key.sqlite",
                 f"/voila/files/%2e%2e/{key.parent.name}/key.sqlite", f"/{key}", f"/..{key}",
                 f"/voila/files/{session.dir}/answers.sqlite", f"/files/{key}", f"/api/contents/{key}",
                 f"/voila/files/{next(session.dir.glob('images/*.png'))}", "/voila/files/key.sqlite",
                 "/api/kernels", "/api/sessions"]
        for path in tries:
            first, body, final = _get(port, path)
            assert final in (400, 403, 404, 405), (path, first, final)
            assert b"SQLite format 3" not in body and b"\x89PNG" not in body and b'"id"' not in body, path
        status, headers, page = _request(port, _path(links["bob"]))
        assert status == 200 and b"Blinded rating" in page and b"open_rater_page" not in page  # no code shown
        assert headers["Referrer-Policy"] == "no-referrer"  # the page's address, with its secret, goes nowhere
        # the page's kernel takes widget messages only: code sent to it is not run, while the connection works
        seen = _kernel_runs_sent_code(port, page, key, tmp_path / "stolen-key.txt")
        assert seen.get("kernel_info_reply") == 1 and "execute_reply" not in seen and "execute_input" not in seen
        assert not (tmp_path / "stolen-key.txt").exists()

        # two raters at the same time, in two browser sessions, each with their own link: bob clicks, carol types
        bob, carol = browser, _browser(tmp_path / "carol")
        try:
            bob.get(links["bob"])
            carol.get(links["carol"])
            for d in (bob, carol):
                _wait_text(d, ".rate-header", "Query 1 of 6", 90)
            for q in range(3):
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys

                _rank_by_clicks(bob, orders["bob"][q], save=False)
                if q < 2:
                    _rank_by_keyboard(carol, orders["carol"][q], save=False)
                # both saves leave within milliseconds: the two kernels write to answers.sqlite together
                bob.find_element(By.CSS_SELECTOR, "button.rate-save").click()
                if q < 2:
                    carol.find_element(By.CSS_SELECTOR, f".order-{CRITERIA[-1]} input").send_keys(Keys.ENTER)
                _wait_text(bob, ".rate-header", f"Query {q + 2} of 6", 30)
                _wait_text(carol, ".rate-header", f"Query {min(q, 1) + 2} of 6", 30)
            # each page shows its own rater's progress, not the other's
            _wait_text(bob, ".rate-header", "rater bob: 3 of 6 queries answered", 30)
            _wait_text(carol, ".rate-header", "rater carol: 2 of 6 queries answered", 30)
            assert "carol" not in _text(bob, "body") and "bob" not in _text(carol, "body")
        finally:
            bob.get("about:blank")
            carol.quit()
    for rater in ("bob", "carol"):
        assert _stored(session, rater) == _expected(orders[rater]), rater
    assert session.raters() == ["bob", "carol"]
    # chapter 06 reads the answers of registered raters only: one written past the app under another code is left out
    session.record_query("mallory", 0, {c: positions for c in CRITERIA})
    ranks, _, notes = rating.analysis_ranks(session.dir, CRITERIA)
    assert set(ranks["rater_id"]) == {"bob", "carol"} and len(ranks) == (3 + 2) * len(CRITERIA) * len(positions)
    assert any("not registered in this session, left out: mallory" in n for n in notes)


def test_pages_without_their_raters_active_link_are_refused_and_leave_no_trace(session, tmp_path, browser):
    port, log = _free_port(), tmp_path / "server.log"
    secrets = {r: rating.add_rater(session, r) for r in ("dave", "erin", "frank")}
    rating.revoke_rater(session, "frank")
    link = {r: f"/?rater={r}&key={k}" for r, k in secrets.items()}
    with rate_server(session.dir, port, log, "--verbose"):
        refused = {"no link": "/", "no secret": "/?rater=dave", "a wrong secret": "/?rater=dave&key=" + "x" * 43,
                   "another rater's secret": f"/?rater=dave&key={secrets['erin']}", "a revoked link": link["frank"],
                   "an unregistered code": f"/?rater=zed&key={secrets['dave']}"}
        for case, path in refused.items():
            status, _, body = _request(port, path)
            # the plain refusal page, answered before any kernel starts: no kernel, so no widget that could write
            assert status == 403 and b"This link does not open the rating session." in body, case
            assert b"kernelId" not in body and b"jupyter-widgets" not in body, case
        # three refusals for dave from this address: now even dave's own link waits, and says for how long
        status, headers, body = _request(port, link["dave"])
        assert status == 429 and int(headers["Retry-After"]) >= 1 and b"Too many refused links" in body
        waited_from = time.time()

        # in the browser: a refused link shows the refusal and nothing of the app
        erin = browser
        try:
            erin.get(f"http://127.0.0.1:{port}/?rater=erin&key={secrets['dave']}")
            _wait_text(erin, "body", "This link does not open the rating session.", 30)
            assert not erin.find_elements("css selector", ".rater-app, .rate-save")
            # erin's own link opens her page; the coordinator revokes it while it is open: nothing more is saved
            erin.get(f"http://127.0.0.1:{port}{link['erin']}")
            _wait_text(erin, ".rate-header", "Query 1 of 6", 90)
            orders = _orders(np.random.default_rng(3), session.meta["positions"], 2)
            _rank_by_clicks(erin, orders[0])
            _wait_text(erin, ".rate-header", "Query 2 of 6", 30)
            rating.revoke_rater(session, "erin")
            _rank_by_clicks(erin, orders[1])
            _wait_text(erin, ".rate-message", "no longer opens the rating session", 30)
            erin.get(f"http://127.0.0.1:{port}{link['erin']}")
            _wait_text(erin, "body", "This link does not open the rating session.", 30)
        finally:
            erin.get("about:blank")
        time.sleep(max(0.0, int(headers["Retry-After"]) - (time.time() - waited_from)))
        status, _, body = _request(port, link["dave"])
        assert status == 200 and b"kernelId" in body  # after the wait, dave's own link opens his page
    # no trace: erin's one query saved before the revocation, nothing else from anyone
    assert _stored(session, "erin") == _expected(orders[:1]) and session.raters() == ["erin"]
    # the log shows each refusal, never a secret
    text = log.read_text()
    assert not [k for k in (*secrets.values(), "x" * 43) if k in text]
    assert "403 GET /?rater=dave&key=[secret]" in text and "429 GET /?rater=dave&key=[secret]" in text


def test_rate_refuses_a_session_with_its_key_inside(session, capsys):
    from synth7t.cli import main

    rating.add_rater(session, "ab")
    rating.key_file(session.dir).replace(session.dir / "key.sqlite")
    assert main(["rate", str(session.dir), "--port", str(_free_port())]) == 1
    assert "the key is inside the session folder" in capsys.readouterr().err
    assert main(["rating-session", "move-key", str(session.dir)]) == 0
    assert rating.check_servable(session.dir).n_queries == 6
    assert main(["rate", str(session.dir), "--rater", "not valid!"]) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["rate", str(session.dir), "--port", str(busy.getsockname()[1])]) == 1
    assert "not free" in capsys.readouterr().err


def screenshot_app(session_dir, out, *, rater="rater1", answer=2, seed=0, width=1280, height=1250):
    """Serve ``session_dir`` locally for ``rater`` (registered first when needed), answer ``answer`` queries by
    clicking (random orders), rank one letter of the next query and save a screenshot of the page to ``out`` (the
    book's ``book/images/rater_app.png``)."""
    import tempfile

    store = rating.RatingStore(session_dir)
    if rater not in set(rating.registered_raters(store)["rater_id"]):
        rating.add_rater(store, rater)
    orders = _orders(np.random.default_rng(seed), store.meta["positions"], answer)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="synth7t-shot-") as tmp:
        driver = _browser(Path(tmp) / "chromium")
        try:
            with rate_server(session_dir, port, Path(tmp) / "server.log", "--rater", rater):
                driver.get(f"http://127.0.0.1:{port}/")
                _wait_text(driver, ".rate-header", "Query", 90)
                for by_crit in orders:
                    before = _text(driver, ".rate-header")
                    _rank_by_clicks(driver, by_crit)
                    _wait(driver, lambda d: _text(d, ".rate-header") != before, 30, "the next query")
                _click(driver, f"button.rank-{CRITERIA[0]}-{store.meta['positions'][-1]}")
                _wait_text(driver, f".summary-{CRITERIA[0]}", "still to rank", 30)
                driver.set_window_size(width, height)
                time.sleep(0.5)
                driver.save_screenshot(str(out))
        finally:
            driver.quit()
    return Path(out)
