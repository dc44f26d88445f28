"""The inbox's stage bar: one widget that draws what Textual's ``Tabs`` draws for it.

Textual's tabs are nine widgets for six stages (a Tab each, their scroll container, list and column, and the
underline), each styled, laid out and drawn on its own before the first frame, and a relabelled tab lays the bar out
again. This one draws the same two lines itself: each label with a column of padding either side (dim, the active
one in the full foreground colour, as is the one under the mouse), and beneath them Textual's underline bar
(``╸━━━╺``) with the active label's columns highlighted. A click on a label, or on the bar beneath it, selects it
and posts ``StageBar.Selected``; setting ``active`` from code posts nothing. There is no animation (the app had it
off).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

BAR, HALF_LEFT, HALF_RIGHT = "━", "╺", "╸"  # textual.renderables.bar.Bar's
_NONE: Any = object()  # no label (None is a key: the inbox's "All")


def underline(width: int, start: int, end: int, highlight: Style, background: Style) -> Text:
    """Textual's ``Bar`` for whole-cell ranges: columns ``start``..``end`` (exclusive) highlighted, half bars either
    side of them, the rest in the background style; all of it in the background style when the range is empty."""
    start, end = max(start, 0), min(end, width)
    if start == end == 0 or end < 0 or start > end:
        return Text(BAR * width, style=background, end="")
    text = Text(end="")  # in the pieces Bar draws, so that the segments (and pictures of them) are the same
    if start > 0:
        text.append(BAR * (start - 1), background)
        text.append(HALF_RIGHT, background)
    text.append(BAR * (end - start), highlight)
    if end < width:
        text.append(HALF_LEFT, background)
        text.append(BAR * (width - end - 1), background)
    return text


class StageBar(Widget, can_focus=False):
    """A row of labels, one of them active, underlined as by ``textual.widgets.Tabs``."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"stage-bar--label", "stage-bar--active", "stage-bar--underline"}
    DEFAULT_CSS = """
    StageBar {
        width: 1fr;
        height: 2;
        pointer: pointer;
        & > .stage-bar--label {
            color: $foreground 50%;
        }
        & > .stage-bar--active {
            color: $foreground;
        }
        & > .stage-bar--underline {
            color: $block-cursor-background;
            background: $foreground 10%;
        }
        &:ansi {
            & > .stage-bar--label {
                text-style: dim;
            }
            & > .stage-bar--active {
                text-style: not dim bold;
            }
            & > .stage-bar--underline {
                color: $block-cursor-background;
                background: $border-blurred;
            }
        }
    }
    """

    class Selected(Message):
        """A label was clicked: ``key`` is the one selected (posted only when it was not the active one)."""

        def __init__(self, bar: StageBar, key: Hashable) -> None:
            super().__init__()
            self.bar = bar
            self.key = key

        @property
        def control(self) -> StageBar:
            return self.bar

    def __init__(self, labels: Iterable[tuple[Hashable, Text | str]], *, active: Hashable = _NONE,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self._labels: dict[Hashable, Text] = {key: Text(label) if isinstance(label, str) else label
                                              for key, label in labels}
        self._active: Hashable = active if active is not _NONE else next(iter(self._labels), _NONE)
        self._hover: Hashable = _NONE
        self._scroll = 0  # columns scrolled off the left when the labels are wider than the bar
        self._spans: list[tuple[int, int, Hashable]] = []  # each label's columns as drawn, padding included

    # -- state --------------------------------------------------------------------------------------------------

    @property
    def keys(self) -> list[Hashable]:
        return list(self._labels)

    @property
    def active(self) -> Hashable:
        return self._active

    @active.setter
    def active(self, key: Hashable) -> None:
        if key not in self._labels:
            raise KeyError(key)
        if key != self._active:
            self._active = key
            self.refresh()

    def label(self, key: Hashable) -> Text:
        return self._labels[key]

    def set_label(self, key: Hashable, label: Text | str) -> None:
        """Relabel one entry; redraws (never lays out: the bar's size does not depend on its labels)."""
        text = Text(label) if isinstance(label, str) else label
        if text != self._labels[key]:
            self._labels[key] = text
            self.refresh()

    # -- drawing ------------------------------------------------------------------------------------------------

    def _layout(self) -> list[tuple[int, int, Hashable]]:
        """Each label's columns, padding included, before scrolling."""
        spans, x = [], 0
        for key, label in self._labels.items():
            spans.append((x, x + label.cell_len + 2, key))
            x += label.cell_len + 2
        return spans

    def render_line(self, y: int) -> Strip:
        """Drawn line by line (Textual's line API), every cell's style set here: the padding and the rest of the
        line in the background only, as the tabs' padding and container were, each label a run of its own (as
        each Tab was), the underline in its colours; so that the screen has the same runs of cells as before."""
        if y > 1:
            return Strip.blank(self.size.width)
        text = self.lines()[y]
        return Strip(text.render(self.app.console, end=""), self.size.width)

    def lines(self) -> tuple[Text, Text]:
        """The labels' line and the underline, as drawn at the bar's width."""
        width = self.size.width
        spans = self._layout()
        total = spans[-1][1] if spans else 0
        active = next(((start, end) for start, end, key in spans if key == self._active), None)
        # Wider than the bar: keep the active label in view, scrolling as little as possible (as Tabs scrolls it).
        if total <= width:
            self._scroll = 0
        elif active is not None:
            self._scroll = min(max(self._scroll, active[1] - width), active[0], total - width)
        scroll = self._scroll
        label_style = self.get_component_rich_style("stage-bar--label")
        active_style = self.get_component_rich_style("stage-bar--active")
        blank = Style(bgcolor=label_style.bgcolor)
        line = Text(end="", style=blank)
        for n, (key, label) in enumerate(self._labels.items()):
            style = active_style if key == self._active or key == self._hover else label_style
            line.append(" ", blank)
            line.append_text(self._styled(label, style + Style(meta={"stage-bar-label": n})))
            line.append(" ", blank)
        bar_style = self.get_component_rich_style("stage-bar--underline")
        start, end = (active[0] + 1, active[1] - 1) if active is not None else (0, 0)
        bar = underline(max(width, total), start, end, Style(color=bar_style.color, bgcolor=blank.bgcolor),
                        Style(color=bar_style.bgcolor, bgcolor=blank.bgcolor))
        line = line[scroll:scroll + width]
        bar = bar[scroll:scroll + width]
        line.append(" " * (width - line.cell_len), blank)
        self._spans = [(s - scroll, e - scroll, key) for s, e, key in spans]
        return line, bar

    @staticmethod
    def _styled(label: Text, style: Style) -> Text:
        text = label.copy()
        text.end = ""
        text.stylize_before(style)
        return text

    # -- mouse --------------------------------------------------------------------------------------------------

    def _key_at(self, x: int) -> Hashable:
        return next((key for start, end, key in self._spans if start <= x < end), _NONE)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        key = self._key_at(event.x) if event.y == 0 else _NONE
        if key != self._hover:
            self._hover = key
            self.refresh()

    def on_leave(self, event: events.Leave) -> None:
        if self._hover is not _NONE:
            self._hover = _NONE
            self.refresh()

    def on_click(self, event: events.Click) -> None:
        """A click on a label or on the bar beneath it (as Tabs takes both) selects it."""
        event.stop()
        key = self._key_at(event.x)
        if key is not _NONE and key != self._active:
            self._active = key
            self.refresh()
            self.post_message(self.Selected(self, key))
