"""Analysing a session (chapter 06): the order of the variants and the unblinded ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd

from .raters import registered_raters
from .session import RatingStore, ranks_table, read_key

PathLike = Union[str, Path]

# ------------------------------------------------------------------------------ analysing a session (chapter 06)


def variant_order(shown: Sequence[str], preferred: Sequence[str] = ()) -> list[str]:
    """The order of the image types in tables and figures: 3T, the models alphabetically, 7T (those shown), or
    ``preferred`` (those shown) followed by any other shown type in that default order."""
    shown = list(dict.fromkeys(shown))
    default = [v for v in ["3T", *sorted(v for v in shown if v not in ("3T", "7T")), "7T"] if v in shown]
    order = [v for v in preferred if v in shown]
    return order + [v for v in default if v not in order]


def is_simulated_rater(rater_id: str) -> bool:
    """Whether a rater code is one of chapter 05's simulated raters (``sim1``, ``sim2``, ...)."""
    import re

    return re.fullmatch(r"sim\d+", str(rater_id)) is not None


def analysis_ranks(session_dir: PathLike, criteria: Sequence[str], *, preferred_order: Sequence[str] = (),
                   raters: Sequence[str] = (), key_dir: Optional[PathLike] = None
                   ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The unblinded ranks of a session, ready for the analysis: chosen criteria and raters, display names.

    Only answers attributed to raters registered in the session (:mod:`~synth7t.studies.rating.raters`: active or revoked
    since) are analysed; answers under any other code, which no rater's link could have written, are left out and
    named in the notes.

    Args:
        session_dir: the session.
        criteria: criteria to analyse, in order (each must be one of the session's).
        preferred_order: image types in table order (:func:`variant_order`); empty: 3T, models, 7T.
        raters: rater ids to keep; empty: every rater with an answer.
        key_dir: the folder of the session's key (default ``<session_dir>-key``).

    Returns:
        ``(ranks, order, notes)``: the tidy ranks (:func:`ranks_table` with ``image_type``, the run's name, and
        ``variant``, its display name; rows by criterion), the display names in table order, and notes (criteria
        left out, variants never shown, answers of unregistered codes left out, revoked links, raters without
        answers, simulated raters, a single rater).

    Raises:
        ValueError: a criterion is not one of the session's.
    """
    from ...data.names import display_name

    store = RatingStore(session_dir)
    unknown = [c for c in criteria if c not in store.criteria]
    if unknown or not criteria:
        raise ValueError(f"criteria must be among this session's {list(store.criteria)}, got {list(criteria)}")
    notes = []
    skipped = [c for c in store.criteria if c not in criteria]
    if skipped:
        notes.append(f"criteria of the session not analysed (not in `criteria`): {', '.join(skipped)}")
    shown = list(dict.fromkeys(read_key(session_dir, key_dir)["variant"]))
    never = [v for v in preferred_order if v not in shown]
    if never:
        notes.append(f"never shown in this session, left out: {', '.join(never)} "
                     f"(the session shows {', '.join(sorted(shown))})")
    order = [display_name(v) for v in variant_order(shown, preferred_order)]
    ranks = ranks_table(session_dir, key_dir)
    reg = registered_raters(store)
    unregistered = sorted(set(ranks["rater_id"]) - set(reg["rater_id"]))
    if unregistered:
        counts = ranks[ranks["rater_id"].isin(unregistered)].groupby("rater_id")["query_index"].nunique()
        notes.append("answers under codes not registered in this session, left out: "
                     + ", ".join(f"{r} ({counts[r]} quer{'y' if counts[r] == 1 else 'ies'})" for r in unregistered)
                     + " (synth7t rating-session raters lists the registered raters)")
        ranks = ranks[ranks["rater_id"].isin(set(reg["rater_id"]))]
    revoked = sorted(set(reg.loc[~reg["active"], "rater_id"]) & set(ranks["rater_id"]))
    if revoked:
        notes.append(f"links revoked since, answers kept: {', '.join(revoked)} (pass `raters` to leave them out)")
    absent = [r for r in raters if r not in set(ranks["rater_id"])]
    if absent:
        notes.append(f"no answer from: {', '.join(absent)}")
    if raters:
        ranks = ranks[ranks["rater_id"].isin(raters)]
    ranks = pd.concat([ranks[ranks["criterion"] == c] for c in criteria], ignore_index=True)
    ranks.insert(3, "image_type", ranks["variant"])
    ranks["variant"] = ranks["image_type"].map(display_name)
    answering = sorted(ranks["rater_id"].unique())
    if not answering:
        notes.append("No answers yet: nothing to analyse. Run this notebook again once raters have answered.")
    elif len(answering) == 1:
        notes.append(f"Only one rater ({answering[0]}): the ANOVA over raters and the Bonferroni tests on raters' "
                     "means need at least 2; the query-level tests stand in for them.")
    simulated = [r for r in answering if is_simulated_rater(r)]
    if simulated:
        notes.append(f"{', '.join(simulated)}: simulated raters (chapter 05's model observer), not expert opinions")
    return ranks, order, notes
