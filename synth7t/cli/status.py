"""``synth7t status OUTPUT_DIR``: done / skipped / failed / pending of the batches of an output folder.

For a batch submitted with ``--executor slurm --no-wait``, the status table is filled in from its jobs' chunk
results and states first (:func:`synth7t.runtime.cluster.refresh_batch`); the tables of ``--shard`` runs are merged into
the table a one-process run writes once every shard has written its own (:func:`synth7t.runtime.cluster.merge_shards`).
"""

from __future__ import annotations

import argparse
import time


def summary_lines(result: dict, max_failures: int) -> list[str]:
    """The report of :func:`synth7t.runtime.cluster.batch_status` as text lines."""
    lines = []
    for t in result["tables"]:
        line = (f"{t['table']}: {t['items']} items: {t['done']} done, {t['skipped']} skipped, {t['failed']} failed, "
                f"{t['pending']} pending")
        if t["jobs"]:
            line += "; jobs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(t["jobs"].items()))
        lines.append(line)
        for f in t["failures"][:max_failures]:
            name = next((str(v) for k, v in f.items() if k != "reason"), "")
            lines.append(f"  failed {name}: {f['reason']}")
        if len(t["failures"]) > max_failures:
            lines.append(f"  ... and {len(t['failures']) - max_failures} more failures (see {t['table']})")
    for s in result["shards"]:
        if s["missing"]:
            lines.append(f"{s['table']}: {s['shards'] - len(s['missing'])} of {s['shards']} shards have a table; "
                         f"waiting for shard(s) {', '.join(map(str, s['missing'][:20]))}")
        elif s["merged"]:
            lines.append(f"{s['table']}: merged from its {s['shards']} shards")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the state of every batch of the folder; exit status 1 when an item failed."""
    from tqdm.auto import tqdm

    from ..runtime.cluster import batch_status

    result = batch_status(args.output_dir)
    if args.wait:
        total = sum(t["items"] for t in result["tables"] if not t["shard"])
        bar = tqdm(total=total, desc="items", unit="item")
        try:
            while any(t["pending"] for t in result["tables"] if not t["shard"]):
                bar.n = sum(t["items"] - t["pending"] for t in result["tables"] if not t["shard"])
                bar.refresh()
                time.sleep(args.poll)
                result = batch_status(args.output_dir)
            bar.n = total
            bar.refresh()
        finally:
            bar.close()
    for line in summary_lines(result, args.failures):
        print(line)
    return 1 if any(t["failed"] for t in result["tables"]) else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``status``."""
    p = subparsers.add_parser("status", help="done / failed / pending items of the batches of an output folder",
                              description="Summarise the batches of an output folder (of preprocess: "
                                          "<data_dir>/derivatives/synth7t-preproc; of predict or segment: their "
                                          "--output-dir): items done, skipped, failed (with reasons) and pending, "
                                          "and the states of their SLURM jobs. Updates the status tables of "
                                          "batches submitted with --no-wait and merges the tables of --shard runs.")
    p.add_argument("output_dir", help="the batch's output folder")
    p.add_argument("--wait", action="store_true", help="wait until no item is pending")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between looks with --wait (default 30)")
    p.add_argument("--failures", type=int, default=20, help="failed items listed per table (default 20)")
    p.set_defaults(func=run)
    return p
