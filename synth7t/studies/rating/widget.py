"""What a rater sees: the ranking widget over a session's store, and a static figure of one query.

The widget is what ``synth7t rate`` serves as a Voilà web app (:mod:`synth7t.studies.rating.app`) and what chapter 05
displays in JupyterLab. For each criterion the rater puts the letters in order of preference, best first, either
by **clicking** the letter buttons in that order or with the **keyboard**, typing the letters into the criterion's
field (``CAB``: C first, then A, then B; Backspace takes the last one back, Tab moves to the next criterion and
Enter saves). "Save and next" is enabled only when every criterion ranks every letter.
"""

from __future__ import annotations

import html
import sqlite3
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .raters import is_active, link_opens, verify_active, verify_link
from .session import RatingStore, check_rater_id

PathLike = Union[str, Path]

# ------------------------------------------------------------------------------------------------- widget


def _ordinal(n: int) -> str:
    return f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}"


class CriterionRanker:
    """One criterion's ranking: a button per letter clicked in order of preference, a field to type the same
    order, a "Clear" button, and a line showing the ranking so far.

    Args:
        name: the criterion (its DOM class names are ``rank-<name>-<letter>``, ``order-<name>`` and
            ``clear-<name>``, for browser tests).
        instruction: the sentence the rater reads.
        positions: the query's letters.
        on_change: called after every change of the order.
        on_submit: called when the rater presses Enter in the field.
    """

    def __init__(self, name: str, instruction: str, positions: Sequence[str], on_change: Callable[[], None],
                 on_submit: Callable[[], None]):
        import ipywidgets as w

        self.name = name
        self.positions = list(positions)
        self.order: list[str] = []
        self._on_change = on_change
        self._syncing = False
        self.buttons = {}
        for p in self.positions:
            b = w.Button(description=p, tooltip=f"rank {p} next", layout=w.Layout(width="84px"))
            b.add_class(f"rank-{name}-{p}")
            b.on_click(lambda _b, p=p: self.add(p))
            self.buttons[p] = b
        self.field = w.Text(value="", placeholder="or type the letters, best first", continuous_update=True,
                            layout=w.Layout(width="230px"))
        self.field.add_class(f"order-{name}")
        self.field.observe(self._typed, names="value")
        self.field.on_msg(lambda _w, content, _buffers: on_submit() if content.get("event") == "submit" else None)
        self.clear_button = w.Button(description="Clear", icon="undo", layout=w.Layout(width="90px"))
        self.clear_button.add_class(f"clear-{name}")
        self.clear_button.on_click(lambda _b: self.set_order([]))
        self.summary = w.HTML()
        self.summary.add_class(f"summary-{name}")
        self.widget = w.VBox([w.HTML(f"<b>{instruction}</b>"),
                              w.HBox([*self.buttons.values(), self.field, self.clear_button]), self.summary])
        self._refresh()

    @property
    def complete(self) -> bool:
        return len(self.order) == len(self.positions)

    def add(self, position: str) -> None:
        """The next rank goes to ``position`` (a click on its button); a letter already ranked is ignored."""
        if position in self.positions and position not in self.order:
            self.set_order([*self.order, position])

    def set_order(self, order: Sequence[str], *, show_in_field: bool = True) -> None:
        """Letters best first: unknown letters are dropped, repeats keep their first place."""
        valid = [p for p in dict.fromkeys(str(x).upper() for x in order) if p in self.positions]
        self.order = valid
        self._refresh(show_in_field)
        self._on_change()

    def _typed(self, change) -> None:
        # what is typed stays as typed: rewriting the field while the rater types would race with the next key
        if not self._syncing:
            self.set_order([c for c in change["new"] if not c.isspace()], show_in_field=False)

    def _refresh(self, show_in_field: bool = True) -> None:
        if show_in_field:  # after a click or a reset the field shows the order as it stands
            self._syncing = True
            try:
                self.field.value = "".join(self.order)
            finally:
                self._syncing = False
        for p, b in self.buttons.items():
            ranked = p in self.order
            b.description = f"{p} · {_ordinal(self.order.index(p) + 1)}" if ranked else p
            b.disabled = ranked
            b.button_style = "info" if ranked else ""
        left = [p for p in self.positions if p not in self.order]
        shown = " › ".join(f"<b>{p}</b>" for p in self.order) or "nothing ranked yet"
        self.summary.value = (f"<span>{shown}</span>" + (f" <span style='color:#777'>(still to rank: "
                                                           f"{', '.join(left)})</span>" if left else " ✓"))


class RaterApp:
    """The rater's widget: one query at a time, a full ranking per criterion, saved on "Save and next".

    Without ``rater_id`` the rater first types their code and presses "Start"; the code cannot be changed after.
    A rater who comes back (a new page, a new kernel, a restarted server) starts at the first query they have not
    answered. Use ``app.display()`` (or ``display(app.widget)``); :meth:`answer` goes through the same buttons.

    The rater app's pages (:mod:`synth7t.studies.rating.app`) pass the rater's link: then the rater must be registered with
    that link (:mod:`synth7t.studies.rating.raters`) to start, and every answer checks it again in its own transaction, so a
    link revoked while the page is open saves nothing more.

    Args:
        session_dir: the session folder (``session.json``, ``images/``, ``answers.sqlite``; never the key).
        rater_id: the rater's code (:func:`~synth7t.studies.rating.session.check_rater_id`), or ``None`` to ask for it.
        image_width: display width of each image in pixels.
        secret: the secret of the rater's link (:func:`~synth7t.studies.rating.raters.add_rater`), or ``None``.
        registered_only: without a secret, still require a registered rater with an active link (a local server for
            one rater).
    """

    def __init__(self, session_dir: PathLike, rater_id: Optional[str] = None, *, image_width: int = 300,
                 secret: Optional[str] = None, registered_only: bool = False):
        import ipywidgets as w

        self.store = RatingStore(session_dir)
        self._secret = secret
        self._guarded = registered_only or secret is not None
        self.queries = self.store.queries()
        self.positions = self.store.meta["positions"]
        self.rater_id: Optional[str] = None
        self.current: Optional[int] = None
        n = len(self.positions)
        # sign-in: the rater's code, once
        self.rater_field = w.Text(placeholder="your rater code", description="Rater code")
        self.rater_field.add_class("rater-code")
        self.rater_field.on_msg(lambda _w, content, _b: self._sign_in() if content.get("event") == "submit" else None)
        self.start_button = w.Button(description="Start", button_style="primary")
        self.start_button.add_class("rater-start")
        self.start_button.on_click(lambda _b: self._sign_in())
        self.signin_message = w.HTML()
        self.signin_message.add_class("rater-message")
        self.rater_field.observe(self._typed_code, names="value")
        self.signin = w.VBox([w.HTML(f"<h3>Blinded rating: {self.store.n_queries} queries</h3><p>Type the rater "
                                     "code you were given and press Start. You can stop at any time: every saved "
                                     "answer is kept, and with the same code you continue where you stopped.</p>"),
                              w.HBox([self.rater_field, self.start_button]), self.signin_message])
        # the queries
        self.header = w.HTML()
        self.header.add_class("rate-header")
        self.progress = w.IntProgress(value=0, min=0, max=self.store.n_queries, layout=w.Layout(width="300px"))
        self.images = {p: w.Image(format="png", width=image_width) for p in self.positions}
        tiles = [w.VBox([w.HTML(f"<h3 style='margin:2px 0'>{p}</h3>"), self.images[p]]) for p in self.positions]
        self.grid = w.GridBox(tiles, layout=w.Layout(grid_template_columns=f"repeat({min(n, 3)}, auto)"))
        self.rankers = {c: CriterionRanker(c, text, self.positions, self._update_save, self._on_save)
                        for c, text in self.store.criteria.items()}
        self.message = w.HTML()
        self.message.add_class("rate-message")
        self.save_button = w.Button(description="Save and next", button_style="success", disabled=True,
                                    icon="check", layout=w.Layout(width="160px"))
        self.save_button.add_class("rate-save")
        self.save_button.on_click(lambda _b: self._on_save())
        self.help = w.HTML("<small>Click the letters in order of preference, best first, or type them "
                           "(Tab: next criterion, Enter: save). \"Save and next\" needs a full ranking on every "
                           "criterion.</small>")
        self.rating = w.VBox([self.header, self.progress, self.grid, *(r.widget for r in self.rankers.values()),
                              self.help, w.HBox([self.save_button]), self.message],
                             layout=w.Layout(display="none"))
        self.widget = w.VBox([self.signin, self.rating])
        self.widget.add_class("rater-app")
        if rater_id is not None:
            self.start(rater_id)

    def display(self):
        """Show the widget (in a notebook or the Voilà app); returns it."""
        from IPython.display import display

        display(self.widget)
        return self.widget

    # --------------------------------------------------------------------------------------- rater id
    def _typed_code(self, change) -> None:
        """Echo the code as the app has received it, so the rater sees what "Start" will use."""
        try:
            code = check_rater_id(change["new"])
        except ValueError:
            self.signin_message.value = ("<p style='color:#777'>letters, digits, '.', '_' or '-' (at most 40)</p>"
                                         if str(change["new"]).strip() else "")
            return
        self.signin_message.value = f"<p>You will rate as <b>{code}</b>.</p>"

    def _sign_in(self) -> None:
        try:
            self.start(self.rater_field.value)
        except (ValueError, PermissionError) as err:
            self.signin_message.value = f"<p style='color:#b00'>{html.escape(str(err))}</p>"

    def start(self, rater_id: str) -> None:
        """Fix the rater (once) and open their first unanswered query.

        Raises:
            ValueError: a bad code, or a rater already chosen.
            PermissionError: the app checks links and this rater's does not open the session.
        """
        if self.rater_id is not None:
            raise ValueError(f"this page rates as {self.rater_id}; open a new page for another rater")
        code = check_rater_id(rater_id)
        if self._guarded and not (link_opens(self.store, code, self._secret) if self._secret is not None
                                  else is_active(self.store, code)):
            raise PermissionError(f"the link of rater {code} does not open this session")
        self.rater_id = code
        self.signin.layout.display = "none"
        self.rating.layout.display = None
        self._go(self.store.next_unanswered(self.rater_id))

    # --------------------------------------------------------------------------------------- queries
    def _go(self, qi: Optional[int]) -> None:
        self.current = qi
        done, total = self.store.progress(self.rater_id)
        self.progress.value = done
        for r in self.rankers.values():
            r.set_order([])
        if qi is None:
            self.header.value = (f"<h3>All {total} queries answered. Thank you, {self.rater_id}.</h3>"
                                 "<p>Your answers are saved; you may close this page.</p>")
            for part in (self.grid, self.help, *(r.widget for r in self.rankers.values())):
                part.layout.display = "none"
            self.save_button.disabled = True
            self.save_button.layout.display = "none"
            return
        q = self.queries[qi]
        self.header.value = (f"<h3>Query {qi + 1} of {total}</h3><p>rater <b>{self.rater_id}</b>: {done} of "
                             f"{total} queries answered</p>")
        for p in self.positions:
            self.images[p].value = q.images[p].read_bytes()

    def _update_save(self) -> None:
        self.save_button.disabled = self.current is None or not all(r.complete for r in self.rankers.values())

    def _on_save(self) -> None:
        if self.current is None or self.rater_id is None:
            return
        missing = [c for c, r in self.rankers.items() if not r.complete]
        if missing:
            self.message.value = (f"<span style='color:#b00'>Rank every letter ({', '.join(self.positions)}) on "
                                  f"each criterion before saving; not complete: {', '.join(missing)}.</span>")
            return
        guard = None
        if self._guarded:
            rater, secret = self.rater_id, self._secret
            guard = ((lambda conn: verify_link(conn, rater, secret)) if secret is not None
                     else (lambda conn: verify_active(conn, rater)))
        try:
            self.store.record_query(self.rater_id, self.current, {c: r.order for c, r in self.rankers.items()},
                                    guard=guard)
        except PermissionError:  # revoked while the page was open: nothing was written, and nothing will be
            self.message.value = ("<span style='color:#b00'>Not saved: this link no longer opens the rating "
                                  "session. Ask the study coordinator.</span>")
            self.save_button.disabled = True
            self.current = None
            return
        except sqlite3.Error as err:  # e.g. a disk that went away: say so, keep the ranking on screen to retry
            self.message.value = (f"<span style='color:#b00'>Not saved ({html.escape(str(err))}); press \"Save and "
                                  "next\" again, or tell the study coordinator.</span>")
            return
        self.message.value = f"Saved query {self.current + 1}."
        self._go(self.store.next_unanswered(self.rater_id))

    def answer(self, rankings: Mapping[str, Sequence[str]]) -> None:
        """Click the letters of ``{criterion: positions best first}`` in order, then "Save and next"."""
        for crit, order in rankings.items():
            ranker = self.rankers[crit]
            ranker.set_order([])
            for pos in order:
                ranker.buttons[pos].click()
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
