"""``synth7t rating-session``: build a blinded rating session of a run without a notebook, register its raters and
issue their links, see their progress, end a link, or move an old session's key out of its folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def _build(args: argparse.Namespace) -> int:
    from ..studies import rating
    from ..preprocess import derivatives_dir
    from ..studies.rating.app import session_summary

    run_dir = Path(args.runs_dir) / args.run_name
    session = Path(args.session_dir) if args.session_dir else run_dir / "05_rating_session" / "session"
    derivatives = Path(args.derivatives_dir) if args.derivatives_dir else Path(derivatives_dir(args.data_dir))
    images = rating.run_images(args.data_dir, derivatives, run_dir / "03_predict", args.subjects)
    volumes, dropped = rating.variant_volumes(images, args.image_types or ())
    if dropped:
        print(f"left out (a variant is missing): {', '.join(dropped)}")
    store, notes = rating.open_session(session, volumes, seed=args.seed, n_queries=args.n_queries,
                                       overwrite=args.overwrite)
    print("\n".join(notes))
    print(f"variants: {', '.join(volumes)}")
    print(session_summary(store))
    print(f"key (analyst only, never give it to raters): {rating.key_file(store.dir)}")
    print(f"register each rater (prints their link): synth7t rating-session add-rater {store.dir} CODE")
    print(f"serve it to raters: synth7t rate {store.dir} [--port 8866]")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..studies import rating

    store = rating.RatingStore(args.session_dir)
    print(rating.progress_table(store, args.raters or ()).to_string(index=False))
    return 0


def _move_key(args: argparse.Namespace) -> int:
    from ..studies import rating

    moved = rating.move_key_out(args.session_dir, args.key_dir)
    print(f"key moved to {moved}" if moved else f"{args.session_dir} holds no key: nothing to move")
    return 0


def _add_rater(args: argparse.Namespace) -> int:
    from ..studies.rating import check_rater_id, raters

    code = check_rater_id(args.rater)
    secret = raters.add_rater(args.session_dir, code)
    print(f"rater {code} registered; their link (give it to {code} only; it is shown once and only its hash is "
          f"stored):")
    print(f"  {raters.rater_link(args.url, code, secret)}")
    return 0


def _raters(args: argparse.Namespace) -> int:
    from ..studies.rating import raters

    table = raters.raters_table(args.session_dir)
    print(table.to_string(index=False) if len(table) else
          f"no registered rater: synth7t rating-session add-rater {args.session_dir} CODE registers one")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ..studies.rating import raters

    if raters.revoke_rater(args.session_dir, args.rater):
        print(f"rater {args.rater}'s link is revoked: it opens no page and an open page saves nothing more; "
              f"their answers are kept (a new link: synth7t rating-session add-rater {args.session_dir} "
              f"{args.rater})")
    else:
        print(f"rater {args.rater}'s link was already revoked")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen action: ``build``, ``add-rater``, ``raters``, ``revoke``, ``status`` or ``move-key``."""
    return {"build": _build, "add-rater": _add_rater, "raters": _raters, "revoke": _revoke, "status": _status,
            "move-key": _move_key}[args.action](args)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``rating-session`` with its actions ``build``, ``add-rater``, ``raters``, ``revoke``, ``status`` and
    ``move-key``."""
    p = subparsers.add_parser(
        "rating-session", help="build a blinded rating session of a run, register its raters, show its progress",
        description="The analyst's side of a rating study (paper §2.8.2), without a notebook: build a session "
                    "of a run's 3T, 7T and every model's predictions (as chapter 05 does; the key goes to "
                    "<session>-key/), register raters and print each one's secret link, list them with their "
                    "progress, revoke a link, or move an old session's key out of its folder.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build the session (or reuse the one there)",
                           description="Build a session of --n-queries queries from the run's held-out subjects: "
                                       "every variant (3T, 7T, each model of 03_predict) in every query, slices "
                                       "balanced over the three planes, the paper's two criteria. An existing "
                                       "session is reused (its answers kept) unless --overwrite.")
    b.add_argument("--data-dir", required=True, help="the dataset root (split.tsv names the held-out subjects)")
    b.add_argument("--run-name", required=True, help="the run: reads <runs-dir>/<run-name>/03_predict/")
    b.add_argument("--runs-dir", default="runs", help="root of the run outputs (default runs)")
    b.add_argument("--derivatives-dir", default="",
                   help="preprocessing outputs (default <data-dir>/derivatives/synth7t-preproc)")
    b.add_argument("--subjects", default="test", choices=("test", "all"), help="held-out subjects (default) or all")
    b.add_argument("--image-types", nargs="*", default=None,
                   help="variants to show, e.g. 3T 7T unet gan-unet (default: 3T, 7T and every model)")
    b.add_argument("--n-queries", type=int, default=None,
                   help="number of queries (the paper: 28; default: one per subject)")
    b.add_argument("--seed", type=int, default=0, help="draws of planes, slices and letters (default 0)")
    b.add_argument("--session-dir", default="",
                   help="where to build it (default <runs-dir>/<run-name>/05_rating_session/session, chapter 06's)")
    b.add_argument("--overwrite", action="store_true", help="move an existing session aside and build a new one")
    a = actions.add_parser("add-rater", help="register a rater and print their secret link (shown once)",
                           description="Register a rater (or issue a new link to a rater whose link was revoked) "
                                       "and print their link, http://host:port/?rater=CODE&key=SECRET; the session "
                                       "stores only the secret's hash. Give each rater their own link.")
    a.add_argument("session_dir")
    a.add_argument("rater", help="the rater's code: 1 to 40 letters, digits, '.', '_' or '-'")
    a.add_argument("--url", default="http://localhost:8866/",
                   help="the app's address as raters reach it (default http://localhost:8866/)")
    r = actions.add_parser("raters", help="the registered raters, their links' state and their progress")
    r.add_argument("session_dir")
    v = actions.add_parser("revoke", help="end a rater's link (their answers are kept)")
    v.add_argument("session_dir")
    v.add_argument("rater")
    s = actions.add_parser("status", help="each rater's progress")
    s.add_argument("session_dir")
    s.add_argument("--raters", nargs="*", help="raters to list even without an answer")
    m = actions.add_parser("move-key", help="move key.sqlite out of an old session's folder to <session>-key/")
    m.add_argument("session_dir")
    m.add_argument("--key-dir", default=None, help="default <session>-key")
    p.set_defaults(func=run)
    return p
