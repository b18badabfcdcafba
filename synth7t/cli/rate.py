"""``synth7t rate SESSION_DIR``: serve the blinded rating widget to raters as a Voilà web app."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Check the session, print the addresses raters open, and serve until Ctrl-C."""
    from synth7t.rating.app import check_port_free, check_servable, serve, session_summary
    from synth7t.rating.session import check_rater_id

    store = check_servable(args.session_dir)
    rater = check_rater_id(args.rater) if args.rater is not None else None
    check_port_free(args.port, args.ip)
    host = "localhost" if args.ip in ("127.0.0.1", "localhost") else args.ip
    url = f"http://{host}:{args.port}/"
    print(session_summary(store))
    if rater:
        print(f"rater {rater}: open {url}")
    else:
        print(f"raters open {url}?rater=<their code> (or {url} and type the code on the page)")
    print("Ctrl-C stops the app; every saved answer is kept and raters continue where they stopped.", flush=True)
    serve(store.dir, rater, port=args.port, ip=args.ip, quiet=not args.verbose)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``rate``."""
    p = subparsers.add_parser(
        "rate", help="serve the blinded rating widget to raters (a Voila web app)",
        description="Serve the rater widget of a session (synth7t rating-session builds one) as a web page: no "
                    "code, the anonymised images only, answers saved one query at a time; a rater who comes back "
                    "continues where they stopped. The key (<session>-key/) is never served.")
    p.add_argument("session_dir", help="the session folder (session.json, images/, answers.sqlite)")
    p.add_argument("--rater", default=None,
                   help="rate as this rater on every page of this server (default: from ?rater= or the page)")
    p.add_argument("--port", type=int, default=8866, help="port (default 8866)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine; 0.0.0.0: every interface, only on "
                        "a trusted network, the app has no login)")
    p.add_argument("--verbose", action="store_true", help="Voila's info log (default: warnings only)")
    p.set_defaults(func=run)
    return p
