"""Registered raters and their secret links (synth7t.studies.rating.raters), without a browser: what the session stores, who
the server admits, how long a client that keeps trying wrong links waits (across a restart), the app kernel's own
check, the check inside every answer's transaction, the analysis reading registered raters only, and the commands.
The same refusals through a real server and Chromium are in test_rating_app.py."""

import hashlib
import sqlite3
import subprocess
import sys

import pytest

from synth7t.studies import rating
from synth7t.cli import main
from synth7t.studies.rating import app as rater_app
from synth7t.studies.rating import raters

ORDER = {"looks_best": list("ABC"), "most_detailed": list("CBA")}


@pytest.fixture
def session(tmp_path):
    from test_rating import phantom_variants

    vols = {v: {"sub-0": a} for v, a in list(phantom_variants(shape=(32, 32, 24)).items())[:3]}
    return rating.build_session(tmp_path / "session", vols, n_queries=4, seed=0)


@pytest.fixture
def links(session):
    """ab and cd with active links, ef registered and then revoked: ``{code: secret}``."""
    secrets = {r: rating.add_rater(session, r) for r in ("ab", "cd", "ef")}
    assert rating.revoke_rater(session, "ef")
    return secrets


def test_a_link_opens_for_its_own_rater_only_and_the_session_keeps_its_hash_only(session, links):
    ab, cd, ef = links["ab"], links["cd"], links["ef"]
    assert len({ab, cd, ef}) == 3 and all(len(s) >= 43 for s in (ab, cd, ef))  # 32 random bytes each
    stored = (session.dir / "answers.sqlite").read_bytes()
    assert not any(s.encode() in stored for s in (ab, cd, ef))
    with sqlite3.connect(session.db) as conn:
        digests = dict(conn.execute("SELECT rater_id, secret_sha256 FROM raters"))
    assert digests["ab"] == hashlib.sha256(ab.encode()).hexdigest()
    assert rating.link_opens(session, "ab", ab) and rating.link_opens(session, "cd", cd)
    assert not rating.link_opens(session, "ab", cd)  # another rater's secret with this rater's code
    assert not rating.link_opens(session, "cd", ab)
    assert not rating.link_opens(session, "ab", ab[:-1] + ("A" if ab[-1] != "A" else "B"))
    for secret in (None, ""):
        assert not rating.link_opens(session, "ab", secret)
    assert not rating.link_opens(session, "ef", ef)  # revoked
    assert not rating.link_opens(session, "zz", ab) and not rating.link_opens(session, "bad code!", ab)
    table = rating.registered_raters(session)
    assert table[["rater_id", "active"]].values.tolist() == [["ab", True], ["cd", True], ["ef", False]]

    with pytest.raises(ValueError, match="ab already has an active link.*revoke"):
        rating.add_rater(session, "ab")
    with pytest.raises(ValueError, match="rater_id must be"):
        rating.add_rater(session, "a b")
    with pytest.raises(ValueError, match="'zz' is not registered.*registered: ab, cd, ef"):
        rating.revoke_rater(session, "zz")
    assert rating.revoke_rater(session, "ab") and not rating.revoke_rater(session, "ab")
    assert not rating.link_opens(session, "ab", ab)
    renewed = rating.add_rater(session, "ab")  # a revoked rater gets a new link; the old one stays dead
    assert renewed != ab and rating.link_opens(session, "ab", renewed) and not rating.link_opens(session, "ab", ab)

    link = rating.rater_link("http://rating.lab:8866", "ab", renewed)
    assert link == f"http://rating.lab:8866/?rater=ab&key={renewed}"
    assert rater_app.link_from_query(link.split("?", 1)[1]) == ("ab", renewed)


def test_the_server_admits_a_registered_rater_with_their_own_active_link_only(session, links):
    ab, cd, ef = links["ab"], links["cd"], links["ef"]
    refused = {"no code": (None, ab), "no secret": ("ab", None), "empty secret": ("ab", ""), "wrong": ("ab", "x" * 43),
               "another rater's": ("ab", cd), "revoked": ("ef", ef), "unregistered": ("zz", ab),
               "malformed code": ("<b>", ab)}
    for i, (case, (code, secret)) in enumerate(refused.items()):
        got = rating.admit(session, code, secret, client=f"10.0.0.{i}")  # one client each: no waiting
        assert got.status == 403 and not got.admitted and got.rater is None, case
    assert rating.admit(session, "ab", ab, client="10.0.1.1") == raters.Admission(200, rater="ab")
    # a server for one rater (synth7t rate --rater cd) admits no other, even with a valid link
    assert rating.admit(session, "ab", ab, client="10.0.1.2", only_rater="cd").status == 403
    assert rating.admit(session, "cd", cd, client="10.0.1.2", only_rater="cd").admitted
    # a local server for one rater: no secret needed, but no other rater, and not a revoked one
    assert rating.admit(session, None, None, client="127.0.0.1", only_rater="ab", local=True).rater == "ab"
    assert rating.admit(session, "ab", None, client="127.0.0.1", only_rater="ab", local=True).admitted
    assert rating.admit(session, "cd", cd, client="127.0.0.1", only_rater="ab", local=True).status == 403
    assert rating.admit(session, None, None, client="127.0.0.1", only_rater="ef", local=True).status == 403
    assert session.answers().empty  # refusals leave no trace in the answers


def test_repeated_wrong_links_wait_longer_each_time_even_after_a_restart(session, links):
    ab, cd = links["ab"], links["cd"]
    assert [raters.wait_after(n) for n in range(7)] == [0, 0, 0, 2, 4, 8, 16]
    assert raters.wait_after(100) == raters.MAX_WAIT_S
    t = 1000.0
    for k in range(raters.FREE_REFUSALS):
        assert rating.admit(session, "ab", f"guess{k}", "10.9.9.9", now=t + k * 0.1).status == 403
    last = t + 0.2
    # now even ab's own link waits from this address (a guess would not be looked at either)...
    waiting = rating.admit(session, "ab", ab, "10.9.9.9", now=last + 0.5)
    assert waiting.status == 429 and waiting.retry_after == pytest.approx(2 - 0.5)
    # ...and still after a restart: a new process on the same session (the count is in answers.sqlite)
    code = ("import sys; from synth7t.studies import rating; "
            "print(rating.admit(sys.argv[1], 'ab', sys.argv[2], '10.9.9.9', now=float(sys.argv[3])).status)")
    restarted = subprocess.run([sys.executable, "-c", code, str(session.dir), ab, str(last + 1.9)],
                               capture_output=True, text=True, check=True)
    assert restarted.stdout.strip() == "429"
    # ...but not another address, nor another rater's link from this address
    assert rating.admit(session, "ab", ab, "10.9.9.8", now=last + 0.5).admitted
    assert rating.admit(session, "cd", cd, "10.9.9.9", now=last + 0.5).admitted
    # after the wait a wrong link is looked at again and doubles the wait
    assert rating.admit(session, "ab", "guess3", "10.9.9.9", now=last + 2.1).status == 403
    assert rating.admit(session, "ab", ab, "10.9.9.9", now=last + 2.1 + 3.9).status == 429
    assert rating.admit(session, "ab", ab, "10.9.9.9", now=last + 2.1 + 4.1).admitted
    # an admission clears the count: the next wrong link is refused, not made to wait
    assert rating.admit(session, "ab", "guess4", "10.9.9.9", now=last + 7).status == 403
    assert rating.admit(session, "ab", ab, "10.9.9.9", now=last + 7.1).admitted
    # codes that name no rater share one count per address: trying many codes does not buy more tries
    for k, code in enumerate(("x1", "x2", "x3")):
        assert rating.admit(session, code, ab, "10.7.7.7", now=t + k).status == 403
    assert rating.admit(session, "x4", ab, "10.7.7.7", now=t + 3).status == 429
    assert session.answers().empty


def test_answers_are_written_only_through_the_raters_own_active_link(session, links):
    ab, cd = links["ab"], links["cd"]
    for secret in (cd, "", "wrong"):
        with pytest.raises(PermissionError, match="link of rater ab"):
            rating.RaterApp(session.dir, "ab", secret=secret)
    with pytest.raises(PermissionError):
        rating.RaterApp(session.dir, "ef", secret=links["ef"])  # revoked
    with pytest.raises(PermissionError):
        rating.RaterApp(session.dir, "zz", registered_only=True)  # a local server's rater must be registered
    page = rating.RaterApp(session.dir, "ab", secret=ab)
    page.answer(ORDER)
    assert page.current == 1 and len(session.answers("ab")) == 2
    local = rating.RaterApp(session.dir, "cd", registered_only=True)
    local.answer(ORDER)
    assert len(session.answers("cd")) == 2
    # the coordinator revokes both while their pages are open: the next save writes nothing and says why
    rating.revoke_rater(session, "ab")
    rating.revoke_rater(session, "cd")
    for app in (page, local):
        app.answer(ORDER)
        assert "no longer opens the rating session" in app.message.value and app.save_button.disabled
        assert app.current is None
    assert len(session.answers("ab")) == 2 and len(session.answers("cd")) == 2
    # the guard runs inside the answer's transaction: a refusal there writes nothing of the query
    with pytest.raises(PermissionError):
        session.record_query("cd", 3, ORDER, guard=lambda conn: raters.verify_link(conn, "cd", cd))
    assert 3 not in set(session.answers()["query_index"])


def test_the_app_kernel_opens_the_widget_for_the_link_of_its_page_only(session, links, monkeypatch):
    """open_rater_page runs in each page's kernel after the server's gate: its own check, with the page's query."""
    ab, cd = links["ab"], links["cd"]

    def page(query, rater=None, local=False):
        monkeypatch.setenv("QUERY_STRING", query)
        return rater_app.open_rater_page(session.dir, rater, local=local)

    for query in ("", "rater=ab", f"rater=ab&key={cd}", "rater=ab&key=", f"rater=ef&key={links['ef']}",
                  f"key={ab}", f"rater=zz&key={ab}"):
        assert page(query) is None, query
    assert page(f"rater=ab&key={ab}", rater="cd") is None  # a server for cd opens no page for ab
    opened = page(f"rater=ab&key={ab}")
    assert opened.rater_id == "ab" and opened.current == 0
    assert page("", rater="cd", local=True).rater_id == "cd"
    assert page(f"rater=ab&key={ab}", rater="cd", local=True) is None
    assert page("", rater="ef", local=True) is None
    assert session.answers().empty


def test_the_analysis_reads_answers_of_registered_raters_only(session, links):
    rating.simulate_raters(session.dir, 2, seed=0)  # registers sim1 and sim2
    session.record_query("mallory", 0, ORDER)  # written past the app (an old server without links, or by hand)
    rating.revoke_rater(session, "sim2")
    ranks, _, notes = rating.analysis_ranks(session.dir, list(rating.CRITERIA))
    assert set(ranks["rater_id"]) == {"sim1", "sim2"}
    text = " | ".join(notes)
    assert "codes not registered in this session, left out: mallory (1 query)" in text
    assert "links revoked since, answers kept: sim2" in text
    summary = rater_app.session_summary(session)
    assert "sim1: 4 of 4 queries answered (link active)" in summary and "ab: 0 of 4" in summary
    assert "not registered (left out of the analysis): mallory" in summary


def test_the_request_log_never_shows_a_secret():
    assert rater_app.scrub_uri("/?rater=ab&key=s3cr3t") == "/?rater=ab&key=[secret]"
    assert rater_app.scrub_uri("/?%6Bey=s3cr3t&KEY=x&keyboard=1") == "/?%6Bey=[secret]&KEY=[secret]&keyboard=1"
    assert rater_app.scrub_uri("/voila/static/x.js") == "/voila/static/x.js"


def test_the_coordinators_commands(session, capsys):
    d = str(session.dir)
    assert main(["rating-session", "raters", d]) == 0
    assert "no registered rater: synth7t rating-session add-rater" in capsys.readouterr().out
    assert main(["rate", d, "--port", "8799"]) == 1
    assert "no rater of" in capsys.readouterr().err  # nothing to serve yet: the error names add-rater
    assert main(["rating-session", "add-rater", d, "ab", "--url", "http://rating.lab:8866/"]) == 0
    out = capsys.readouterr().out
    link = out.split()[-1]
    assert out.startswith("rater ab registered") and link.startswith("http://rating.lab:8866/?rater=ab&key=")
    assert rating.link_opens(session, "ab", link.split("key=")[1])
    assert main(["rating-session", "add-rater", d, "ab"]) == 1
    assert "already has an active link" in capsys.readouterr().err
    assert main(["rating-session", "raters", d]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["ab", "active", "0", "4", "0"]
    assert main(["rate", d, "--rater", "cd", "--port", "8799"]) == 1
    assert "rater cd is not registered" in capsys.readouterr().err
    assert main(["rating-session", "revoke", d, "ab"]) == 0
    assert "link is revoked" in capsys.readouterr().out
    assert main(["rating-session", "raters", d]) == 0
    assert " revoked 20" in capsys.readouterr().out
    assert main(["rating-session", "revoke", d, "zz"]) == 1
    assert "'zz' is not registered" in capsys.readouterr().err
