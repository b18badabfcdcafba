"""``synth7t rate SESSION_DIR``: serve the blinded rating widget to raters as a Voilà web app."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Check the session, say who can open which address, and serve until Ctrl-C."""
    from ..studies.rating.app import check_port_free, check_servable, is_local, serve, session_summary
    from ..studies.rating.session import check_rater_id

    rater = check_rater_id(args.rater) if args.rater is not None else None
    local = is_local(args.ip, rater, args.require_link)
    store = check_servable(args.session_dir, rater, local=local)
    check_port_free(args.port, args.ip)
    host = "localhost" if args.ip in ("127.0.0.1", "localhost") else args.ip
    url = f"http://{host}:{args.port}/"
    print(session_summary(store))
    if local:
        print(f"local: rater {rater} rates at {url} without a secret link, from this machine only "
              f"(--require-link asks for their link)")
    else:
        who = f"rater {rater} opens" if rater else "each registered rater opens"
        print(f"{who} their own link ({url}?rater=CODE&key=SECRET, printed once by synth7t rating-session "
              f"add-rater); any other page is refused")
    print("Ctrl-C stops the app; every saved answer is kept and raters continue where they stopped.", flush=True)
    serve(store.dir, rater, port=args.port, ip=args.ip, quiet=not args.verbose, require_link=args.require_link)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``rate``."""
    p = subparsers.add_parser(
        "rate", help="serve the blinded rating widget to raters (a Voila web app)",
        description="Serve the rater widget of a session (synth7t rating-session builds one) as a web page: no "
                    "code, the anonymised images only, answers saved one query at a time; a rater who comes back "
                    "continues where they stopped. A page opens only with a registered rater's own link "
                    "(synth7t rating-session add-rater); --rater CODE on 127.0.0.1 serves that one rater without "
                    "a secret. The key (<session>-key/) is never served.")
    p.add_argument("session_dir", help="the session folder (session.json, images/, answers.sqlite)")
    p.add_argument("--rater", default=None,
                   help="serve this registered rater only; on 127.0.0.1 without their secret (default: every "
                        "registered rater, each by their own link)")
    p.add_argument("--require-link", action="store_true",
                   help="with --rater on 127.0.0.1, still ask for the rater's link (e.g. raters reach this "
                        "machine through an SSH tunnel)")
    p.add_argument("--port", type=int, default=8866, help="port (default 8866)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine; 0.0.0.0: every interface, pages "
                        "open only with a rater's link)")
    p.add_argument("--verbose", action="store_true", help="Voila's info log (default: warnings only)")
    p.set_defaults(func=run)
    return p
