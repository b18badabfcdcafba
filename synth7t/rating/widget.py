"""What a rater sees: the ranking widget over a session's store, and a static figure of one query."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from .session import RatingStore

PathLike = Union[str, Path]

# ------------------------------------------------------------------------------------------------- widget


class RaterApp:
    """The rater's widget: one query at a time, a full ranking per criterion, saved on each "Save".

    Use ``display(app.widget)`` in JupyterLab. Programmatic use goes through the same path as the buttons:
    :meth:`answer` fills the rank menus and clicks "Save and next".
    """

    def __init__(self, session_dir: PathLike, rater_id: str, *, image_width: int = 220):
        import ipywidgets as w

        self.store = RatingStore(session_dir)
        self.rater_id = str(rater_id).strip()
        if not self.rater_id:
            raise ValueError("rater_id must be a non-empty string")
        self.queries = self.store.queries()
        self.positions = self.store.meta["positions"]
        n = len(self.positions)
        self.header = w.HTML()
        self.images = {p: w.Image(format="png", width=image_width) for p in self.positions}
        tiles = [w.VBox([w.HTML(f"<b>{p}</b>"), self.images[p]]) for p in self.positions]
        self.grid = w.GridBox(tiles, layout=w.Layout(grid_template_columns=f"repeat({min(n, 3)}, auto)"))
        self.menus: dict[str, dict[str, w.Dropdown]] = {}
        rows = []
        for crit, text in self.store.criteria.items():
            self.menus[crit] = {p: w.Dropdown(options=[("-", 0)] + [(str(r), r) for r in range(1, n + 1)],
                                              value=0, description=p, layout=w.Layout(width="110px"))
                                for p in self.positions}
            rows.append(w.HTML(f"<p>{text}</p>"))
            rows.append(w.HBox(list(self.menus[crit].values())))
        self.message = w.HTML()
        self.save_button = w.Button(description="Save and next", button_style="primary")
        self.save_button.on_click(self._on_save)
        self.widget = w.VBox([self.header, self.grid, *rows, w.HBox([self.save_button]), self.message])
        self.current: Optional[int] = None
        self._go(self.store.next_unanswered(self.rater_id))

    def _go(self, qi: Optional[int]) -> None:
        self.current = qi
        done, total = self.store.progress(self.rater_id)
        if qi is None:
            self.header.value = f"<h3>All {total} queries answered. Thank you, {self.rater_id}.</h3>"
            self.grid.layout.display = "none"
            self.save_button.disabled = True
            return
        q = self.queries[qi]
        self.header.value = f"<h3>Query {qi + 1} of {total}</h3><p>{done} answered so far, rater {self.rater_id}</p>"
        for p in self.positions:
            self.images[p].value = q.images[p].read_bytes()
        for crit in self.menus:
            for m in self.menus[crit].values():
                m.value = 0

    def _on_save(self, _button=None) -> None:
        if self.current is None:
            return
        rankings = {}
        for crit, menus in self.menus.items():
            ranks = {p: m.value for p, m in menus.items()}
            if sorted(ranks.values()) != list(range(1, len(self.positions) + 1)):
                self.message.value = (f"<span style='color:#b00'>Give each image a different rank from 1 to "
                                      f"{len(self.positions)} for every criterion.</span>")
                return
            rankings[crit] = sorted(ranks, key=ranks.get)
        for crit, ranking in rankings.items():
            self.store.record(self.rater_id, self.current, crit, ranking)
        self.message.value = f"Saved query {self.current + 1}."
        self._go(self.store.next_unanswered(self.rater_id))

    def answer(self, rankings: Mapping[str, Sequence[str]]) -> None:
        """Fill the menus with ``{criterion: positions best first}`` and press "Save and next"."""
        for crit, order in rankings.items():
            for rank, pos in enumerate(order, start=1):
                self.menus[crit][pos].value = rank
        self.save_button.click()

    def visible_text(self) -> list[str]:
        """Every string the widget tree shows or carries (for checking that nothing names a variant)."""
        out: list[str] = []

        def walk(wd):
            for attr in ("value", "description", "placeholder", "tooltip"):
                v = getattr(wd, attr, None)
                if isinstance(v, str):
                    out.append(v)
            opts = getattr(wd, "options", None)
            if opts:
                out.extend(str(o) for o in opts)
            for child in getattr(wd, "children", ()) or ():
                walk(child)

        walk(self.widget)
        return out


def plot_query(store: RatingStore, index: int, *, axes=None):
    """A query as the rater sees it (a static figure of the widget): its anonymous images under their letters,
    3 across; ``index`` is 0-based, ``axes`` one matplotlib axis per position at least. Returns the figure."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if not 0 <= int(index) < store.n_queries:
        raise ValueError(f"index must be in [0, {store.n_queries - 1}], got {index}")
    query = store.queries()[int(index)]
    n = len(query.positions)
    ncol = min(n, 3)
    if axes is None:
        nrow = -(-n // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 3.2 * nrow), squeeze=False)
    axes = np.ravel(axes)
    fig = axes[0].figure
    for ax in axes:
        ax.set_axis_off()
    for ax, pos in zip(axes, query.positions):
        ax.imshow(np.asarray(Image.open(query.images[pos])), cmap="gray", vmin=0, vmax=255)
        ax.set_title(pos, fontweight="bold")
    fig.suptitle(f"query {index + 1} of {store.n_queries}: rank A-{query.positions[-1]} on each criterion")
    fig.tight_layout()
    return fig
