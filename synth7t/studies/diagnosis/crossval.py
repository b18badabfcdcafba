"""Repeated stratified k-fold random forests (paper §2.8.4): per-repeat and per-fold scores, importances.

:func:`cross_validated_scores` runs the repeats (in parallel, reproducibly from one seed) and returns a
:class:`CVResult`; :func:`cached_cross_validated_scores` saves it and reuses it while data and settings are
unchanged (:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

PathLike = Union[str, Path]

#: the scores of every repeat and fold
METRICS = ("accuracy", "balanced_accuracy")

@dataclass
class CVResult:
    """The outcome of :func:`cross_validated_scores`.

    Attributes:
        scores: one row per repeat: ``repeat``, ``accuracy``, ``balanced_accuracy`` (each on the pooled
            out-of-fold predictions of all subjects, so every subject is predicted once per repeat).
        fold_scores: one row per repeat and fold: ``repeat``, ``fold``, ``n_train``, ``n_test``, ``accuracy``,
            ``balanced_accuracy`` (used by the corrected test of :func:`compare_image_types`).
        importances: one row per repeat, one column per feature: the forests' mean decrease in impurity
            averaged over the repeat's folds (each forest's importances sum to 1).
        permutation_importances: same shape, the drop in held-out balanced accuracy when a feature is permuted,
            averaged over folds; None unless asked for.
        classes: class labels in order.
        n_splits: folds actually used (reduced for tiny classes).
        split_digests: one digest per repeat of its fold assignment (the pairing check).
        settings: the arguments that produced the result.
    """

    scores: pd.DataFrame
    fold_scores: pd.DataFrame
    importances: pd.DataFrame
    permutation_importances: Optional[pd.DataFrame]
    classes: list
    n_splits: int
    split_digests: list[str]
    settings: dict

    @property
    def n_repeats(self) -> int:
        return len(self.scores)

    def mean_importances(self, kind: str = "impurity") -> pd.Series:
        """Mean importance per feature over repeats (``kind``: ``"impurity"`` or ``"permutation"``)."""
        return self.importance_table(kind).mean(axis=0)

    def importance_table(self, kind: str = "impurity") -> pd.DataFrame:
        """Per-repeat importances (repeats x features): ``kind`` ``"impurity"`` or ``"permutation"``."""
        if kind == "impurity":
            return self.importances
        if kind == "permutation":
            if self.permutation_importances is None:
                raise ValueError("no permutation importances: run cross_validated_scores(..., permutation=True)")
            return self.permutation_importances
        raise ValueError(f"kind must be 'impurity' or 'permutation', got {kind!r}")

    def summary(self) -> dict:
        """Mean, SD and 2.5/97.5 percentiles of each metric over repeats."""
        out = {"n_repeats": self.n_repeats, "n_splits": self.n_splits}
        for m in METRICS:
            v = self.scores[m].to_numpy(float)
            out.update({f"{m}_mean": v.mean(), f"{m}_sd": v.std(ddof=1) if len(v) > 1 else float("nan"),
                        f"{m}_q025": np.quantile(v, 0.025), f"{m}_q975": np.quantile(v, 0.975)})
        return out

    def save(self, folder: PathLike) -> Path:
        """Write the tables (TSV) and the metadata (JSON) to ``folder``; :meth:`load` reads them back."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        self.scores.to_csv(d / "scores.tsv", sep="\t", index=False)
        self.fold_scores.to_csv(d / "fold_scores.tsv", sep="\t", index=False)
        self.importances.to_csv(d / "importances.tsv", sep="\t", index_label="repeat")
        if self.permutation_importances is not None:
            self.permutation_importances.to_csv(d / "permutation_importances.tsv", sep="\t", index_label="repeat")
        meta = {"classes": [str(c) for c in self.classes], "n_splits": self.n_splits,
                "split_digests": self.split_digests, "settings": self.settings}
        (d / "cv.json").write_text(json.dumps(meta, indent=1))  # written last: marks a complete result
        return d

    @classmethod
    def load(cls, folder: PathLike) -> "CVResult":
        d = Path(folder)
        meta = json.loads((d / "cv.json").read_text())
        perm = d / "permutation_importances.tsv"
        return cls(scores=pd.read_csv(d / "scores.tsv", sep="\t"),
                   fold_scores=pd.read_csv(d / "fold_scores.tsv", sep="\t"),
                   importances=pd.read_csv(d / "importances.tsv", sep="\t", index_col="repeat"),
                   permutation_importances=(pd.read_csv(perm, sep="\t", index_col="repeat")
                                            if perm.is_file() else None),
                   classes=meta["classes"], n_splits=meta["n_splits"], split_digests=meta["split_digests"],
                   settings=meta["settings"])


def _effective_splits(y: np.ndarray, groups: Optional[np.ndarray], n_splits: int) -> int:
    if groups is None:
        counts = pd.Series(y).value_counts()
    else:
        counts = pd.DataFrame({"y": y, "g": groups}).drop_duplicates("g")["y"].value_counts()
    smallest = int(counts.min())
    unit = "participant" if groups is not None else "subject"
    if smallest < 2:
        raise ValueError(f"class {counts.idxmin()!r} has {smallest} {unit}; every class needs at least 2 for "
                         "cross-validation (drop it, or merge it into another with classes=)")
    if smallest < n_splits:
        warnings.warn(f"n_splits reduced from {n_splits} to {smallest}: the smallest class ({counts.idxmin()}) has "
                      f"only {smallest} {unit}s", stacklevel=3)
        return smallest
    return n_splits


def _one_repeat(X: np.ndarray, y: np.ndarray, groups: Optional[np.ndarray], n_splits: int, seeds: np.ndarray,
                forest: dict, permutation: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    split_seed, forest_seed = int(seeds[0]), int(seeds[1])
    if groups is None:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=split_seed)
        folds = list(cv.split(X, y))
    else:
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=split_seed)
        folds = list(cv.split(X, y, groups))
    pred = np.empty_like(y)
    fold_of = np.empty(len(y), dtype=np.int16)
    fold_rows, imps, perms = [], [], []
    for f, (tr, te) in enumerate(folds):
        rf = RandomForestClassifier(random_state=forest_seed + f, **forest).fit(X[tr], y[tr])
        p = rf.predict(X[te])
        pred[te], fold_of[te] = p, f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fold without some class (grouped folds) warns; the score stands
            fold_rows.append({"fold": f, "n_train": len(tr), "n_test": len(te), "accuracy": accuracy_score(y[te], p),
                              "balanced_accuracy": balanced_accuracy_score(y[te], p)})
        imps.append(rf.feature_importances_)
        if permutation:
            from sklearn.inspection import permutation_importance

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = permutation_importance(rf, X[te], y[te], scoring="balanced_accuracy", n_repeats=permutation,
                                           random_state=forest_seed + 7919 + f)
            perms.append(r.importances_mean)
    digest = hashlib.sha1(fold_of.tobytes()).hexdigest()[:16]
    return {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
            "folds": fold_rows, "importances": np.mean(imps, axis=0),
            "permutation": np.mean(perms, axis=0) if permutation else None, "digest": digest}


def _run_batch(X, y, groups, n_splits, seeds, forest, permutation, start):
    return [(start + i, _one_repeat(X, y, groups, n_splits, s, forest, permutation)) for i, s in enumerate(seeds)]


def cross_validated_scores(
    X,
    y,
    *,
    n_repeats: int = 1000,
    n_splits: int = 10,
    seed: int = 0,
    n_estimators: int = 100,
    max_features: Union[str, float, int, None] = "sqrt",
    class_weight: Optional[str] = None,
    groups=None,
    permutation: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
    desc: str = "CV repeats",
) -> CVResult:
    """Repeated stratified k-fold cross-validation of a random forest classifier (paper §2.8.4).

    Each repeat draws a new stratified partition into ``n_splits`` folds, trains one forest per fold on the
    other folds, predicts the held-out fold, and scores the pooled out-of-fold predictions: every subject is
    predicted exactly once per repeat. Scores per fold are kept too. The forest is scikit-learn's
    ``RandomForestClassifier``, unweighted by default as the paper describes it (§2.8.4 names no class weights).
    ``class_weight="balanced"`` is the named option that weights classes by inverse frequency: without weights a
    forest leans to the majority class (CN), which lowers balanced accuracy, the metric that matters with unequal
    classes.

    Seeds: one child of ``numpy.random.SeedSequence(seed)`` per repeat gives that repeat's partition seed and
    forest seeds, so the result is identical for a given seed whatever ``n_jobs``, and every image type
    cross-validated with the same subjects, labels and seed gets the same folds (paired comparisons).

    Cost: one forest per fold and repeat: 1000 repeats x 10 folds = 10 000 forests. Forests of 100 trees on
    ~60 subjects take about 0.3 s each on one core (scikit-learn's per-tree overhead dominates), on ~3000
    subjects x 90 features about 3 s: parallelise over repeats with ``n_jobs`` and keep forests small.

    Args:
        X: features ``(n_samples, n_features)`` (a DataFrame keeps the feature names).
        y: class labels ``(n_samples,)``.
        n_repeats: number of repetitions of the k-fold partition.
        n_splits: folds per repeat; reduced, with a warning, to the smallest class size when a class is smaller.
        seed: master seed.
        n_estimators, max_features: forest settings.
        class_weight: None (the paper: an unweighted forest) or ``"balanced"``.
        groups: optional participant id per sample; sessions of one participant then stay in one fold
            (``StratifiedGroupKFold``). Ignored when every group has one sample.
        permutation: when > 0, also compute permutation importances on each held-out fold (balanced accuracy
            drop, this many permutations per feature); multiplies the cost.
        n_jobs: worker processes over repeats (``-1``: all cores).
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        A :class:`CVResult`.
    """
    names = list(X.columns) if isinstance(X, pd.DataFrame) else [f"x{i}" for i in range(np.shape(X)[1])]
    Xa = np.asarray(X, dtype=float)
    ya = np.asarray(y)
    if Xa.ndim != 2 or len(Xa) != len(ya):
        raise ValueError(f"X must be (n_samples, n_features) with one label per sample; got X {Xa.shape}, "
                         f"y {ya.shape}")
    if not np.isfinite(Xa).all():
        raise ValueError("X holds NaN or infinite values; drop or impute them first")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    g = None if groups is None else np.asarray(groups)
    if g is not None and len(np.unique(g)) == len(g):
        g = None
    k = _effective_splits(ya, g, int(n_splits))
    seeds = np.array([c.generate_state(2) for c in np.random.SeedSequence(int(seed)).spawn(int(n_repeats))],
                     dtype=np.int64) % (2**31 - 10**6)  # room for per-fold forest seeds below 2**31
    forest = dict(n_estimators=int(n_estimators), max_features=max_features, class_weight=class_weight, n_jobs=1)
    from tqdm.auto import tqdm

    bar = tqdm(total=int(n_repeats), desc=desc, unit="repeat", disable=not progress)
    results: dict[int, dict] = {}
    workers = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if workers == 1 or n_repeats == 1:
        for i, s in enumerate(seeds):
            results[i] = _one_repeat(Xa, ya, g, k, s, forest, int(permutation))
            bar.update(1)
    else:
        from joblib import Parallel, delayed

        size = max(1, min(50, math.ceil(n_repeats / (workers * 4))))
        starts = range(0, int(n_repeats), size)
        par = Parallel(n_jobs=workers, return_as="generator_unordered")
        for batch in par(delayed(_run_batch)(Xa, ya, g, k, seeds[s:s + size], forest, int(permutation), s)
                         for s in starts):
            for i, r in batch:
                results[i] = r
            bar.update(len(batch))
    bar.close()
    order = range(int(n_repeats))
    scores = pd.DataFrame({"repeat": list(order), **{m: [results[i][m] for i in order] for m in METRICS}})
    fold_scores = pd.DataFrame([{"repeat": i, **row} for i in order for row in results[i]["folds"]])
    imps = pd.DataFrame([results[i]["importances"] for i in order], columns=names).rename_axis("repeat")
    perm = (pd.DataFrame([results[i]["permutation"] for i in order], columns=names).rename_axis("repeat")
            if permutation else None)
    settings = dict(n_repeats=int(n_repeats), n_splits_requested=int(n_splits), seed=int(seed),
                    n_estimators=int(n_estimators), max_features=max_features, class_weight=class_weight,
                    grouped=g is not None, permutation=int(permutation), n_samples=int(len(ya)),
                    features=names)
    return CVResult(scores=scores, fold_scores=fold_scores, importances=imps, permutation_importances=perm,
                    classes=sorted(pd.unique(ya).tolist()), n_splits=k,
                    split_digests=[results[i]["digest"] for i in order], settings=settings)


def fingerprint(X, y, **settings) -> str:
    """A digest of the data and settings of a cross-validation, to tell whether a saved result still holds."""
    h = hashlib.sha1()
    if isinstance(X, pd.DataFrame):
        h.update(json.dumps([list(map(str, X.columns)), list(map(str, X.index))]).encode())
    h.update(np.ascontiguousarray(np.asarray(X, dtype=float)).tobytes())
    h.update(json.dumps([str(v) for v in np.asarray(y)]).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def cached_cross_validated_scores(X, y, folder: PathLike, **kwargs) -> tuple[CVResult, bool]:
    """:func:`cross_validated_scores`, saved to ``folder`` and reused when data and settings are unchanged.

    Returns:
        ``(result, reused)``; ``reused`` is True when a complete earlier result with the same fingerprint
        (data, labels and every argument but ``n_jobs``/``progress``/``desc``) was loaded instead of computed.
    """
    d = Path(folder)
    key = {k: v for k, v in kwargs.items() if k not in ("n_jobs", "progress", "desc")}
    if key.get("groups") is not None:
        key["groups"] = [str(v) for v in np.asarray(key["groups"])]
    fp = fingerprint(X, y, **key)
    meta = d / "cv.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text())["settings"].get("fingerprint") == fp:
                return CVResult.load(d), True
        except (ValueError, KeyError, OSError):
            pass  # an unreadable earlier result is recomputed
    res = cross_validated_scores(X, y, **kwargs)
    res.settings["fingerprint"] = fp
    res.save(d)
    return res, False
