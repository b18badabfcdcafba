"""``synth7t book``: check the chapters, build the Jupyter Book, optionally look at it in headless Chromium."""

from __future__ import annotations

import argparse
import sys
import time


def run(args: argparse.Namespace) -> int:
    """Build the book of ``--root``, print its chapters and front page; exit status 1 when the browser check fails."""
    from ..workflow.book import book_root, build_book, chapter_status, check_in_browser, notebook_pages

    root = book_root(args.root, need=("_config.yml", "_toc.yml"))
    t0 = time.perf_counter()
    index = build_book(root, warnings_as_errors=not args.allow_warnings)
    print(chapter_status(root)[["entry", "notebook", "code_cells"]].to_string(index=False))
    print(f"book built in {time.perf_counter() - t0:.1f} s (warnings as errors: {not args.allow_warnings})")
    if args.browser:
        pages = ["index.html", *(args.pages or notebook_pages(root))]
        report = check_in_browser(index.parent, pages)
        print(report.to_string(index=False))
        if not report["ok"].all():
            print("synth7t book: browser check failed: " + ", ".join(report.loc[~report["ok"], "page"]),
                  file=sys.stderr)
            return 1
    print(f"front page: {index}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``book``."""
    p = subparsers.add_parser(
        "book", help="check the chapters, build the Jupyter Book (warnings are errors), "
                     "optionally check it in headless Chromium",
        description="Check that every chapter of _toc.yml exists and is executed without errors, build the HTML "
                    "book with warnings as errors (it never executes notebooks) and print the front page.")
    p.add_argument("--root", default=None,
                   help="folder with _config.yml and _toc.yml (default: the current folder, the repository root)")
    p.add_argument("--browser", action="store_true", help="open the front page and every chapter in Chromium")
    p.add_argument("--pages", nargs="*", help="pages for --browser, relative to _build/html (default: all chapters)")
    p.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")
    p.set_defaults(func=run)
    return p
