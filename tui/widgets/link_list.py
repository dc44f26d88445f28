"""A virtualised list of rows over a paged data source, drawn with the Line API.

Only the visible lines are rendered. Rows are read from the source one page at a time (a page LRU), rendered lines
are kept in a strip LRU, and a cursor move repaints exactly two lines (``refresh_line``). So 100,000 links cost the
same as 100 to show, move through and filter: nothing here grows with the number of rows except the scrollbar.

With ``background=True`` a page that is not in the LRU is read by a thread worker while its lines show as
placeholders, so no keystroke ever waits for the database; the source must then be safe to call from another
thread (the inbox's reads open one cache connection per thread).

The list knows nothing about links: a screen gives it a ``RowSource`` (count and pages) and a cell function
(the cells of one row, for the columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

Row = TypeVar("Row")

PAGE_SIZE = 100


class RowSource(Protocol[Row]):
    """Where the rows come from (a cache query with its filter and sort fixed)."""

    def count(self) -> int: ...

    def page(self, offset: int, limit: int) -> Sequence[Row]: ...


@dataclass(frozen=True)
class Column:
    """One column: ``width`` is fixed, or the minimum when ``flex`` shares out the remaining width."""

    key: str
    title: str
    width: int
    flex: int = 0
    align: str = "left"  # "left" or "right"


#: One cell: its text (already safe: cleaned client text or our own words) and a style class suffix ("" = plain).
Cell = tuple[str, str]


def column_widths(columns: Sequence[Column], width: int, gap: int = 1) -> list[int]:
    """Widths for ``columns`` in ``width`` cells: fixed ones as given, flex ones share what is left."""
    fixed = sum(c.width for c in columns) + gap * max(0, len(columns) - 1)
    spare = max(0, width - fixed)
    flex_total = sum(c.flex for c in columns)
    widths = []
    given = 0
    flex_seen = 0
    for c in columns:
        if c.flex and flex_total:
            flex_seen += c.flex
            # cumulative rounding so the flex columns add up exactly to the spare width
            share = spare * flex_seen // flex_total - given
            given += share
            widths.append(c.width + share)
        else:
            widths.append(c.width)
    return widths


def fit(text: str, width: int, align: str = "left") -> str:
    """``text`` cut (with an ellipsis) or padded to exactly ``width`` cells."""
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else "…"
    if align == "right":
        return " " * (width - length) + text
    return text + " " * (width - length)


class ColumnHeader(Widget):
    """The column titles above a ``LinkList``, with the sort column marked."""

    DEFAULT_CSS = """
    ColumnHeader {
        height: 1;
        background: $panel;
        color: $text-muted;
        text-style: bold;
    }
    """

    def __init__(self, columns: Sequence[Column], *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._columns = list(columns)
        self._sort: str | None = None
        self._descending = False

    def set_title(self, key: str, title: str) -> None:
        """Rename one column (e.g. 'Client' / 'Agency' by perspective)."""
        self._columns = [Column(c.key, title, c.width, c.flex, c.align) if c.key == key else c for c in self._columns]
        self.refresh()

    def set_sort(self, key: str | None, descending: bool) -> None:
        self._sort, self._descending = key, descending
        self.refresh()

    def render(self) -> Text:
        # The list below has a vertical scrollbar; leave room so the titles line up with the cells.
        widths = column_widths(self._columns, max(0, self.size.width - 1))
        out = Text(no_wrap=True, overflow="crop")
        for i, (col, w) in enumerate(zip(self._columns, widths)):
            title = col.title
            if col.key == self._sort:
                title += " ▼" if self._descending else " ▲"
            out.append(fit(title, w, col.align))
            if i < len(self._columns) - 1:
                out.append(" ")
        return out


class LinkList(ScrollView, Generic[Row], can_focus=True):
    """A cursor list over a ``RowSource``. Posts ``Highlighted`` on cursor moves and ``Selected`` on enter."""

    DEFAULT_CSS = """
    LinkList {
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        background: $surface;
        & > .link-list--cursor {
            background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
        }
        &:blur > .link-list--cursor { background: $block-cursor-blurred-background; text-style: none; }
        & > .link-list--empty { color: $text-muted; text-style: italic; }
        & > .link-list--dim { color: $text-muted; }
        & > .link-list--needs_action { color: $text-warning; text-style: bold; }
        & > .link-list--pending { color: $foreground; }
        & > .link-list--in_progress { color: $text-primary; }
        & > .link-list--active { color: $text-success; }
        & > .link-list--ended { color: $text-muted; }
        & > .link-list--urgent { color: $text-error; text-style: bold; }
    }
    """

    COMPONENT_CLASSES = {
        "link-list--cursor",
        "link-list--empty",
        "link-list--dim",
        "link-list--needs_action",
        "link-list--pending",
        "link-list--in_progress",
        "link-list--active",
        "link-list--ended",
        "link-list--urgent",
    }

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False, id="list.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="list.down"),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False, id="list.page_up"),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False, id="list.page_down"),
        Binding("home,g", "first", "First", show=False, id="list.first"),
        Binding("end,G", "last", "Last", show=False, id="list.last"),
        Binding("enter", "select", "Open", id="list.open", tooltip="Open the selected link"),
    ]

    cursor: reactive[int] = reactive(0, repaint=False, always_update=False, init=False)

    class Highlighted(Message):
        """The cursor moved to another row (``row`` is None when the list is empty)."""

        def __init__(self, link_list: "LinkList[Any]", row: Any | None, index: int) -> None:
            super().__init__()
            self.link_list = link_list
            self.row = row
            self.index = index

        @property
        def control(self) -> "LinkList[Any]":
            return self.link_list

    class PageLoaded(Message):
        """A page read in the background arrived (internal)."""

        def __init__(self, generation: int, number: int, rows: Sequence[Any]) -> None:
            super().__init__()
            self.generation = generation
            self.number = number
            self.rows = rows

    class Selected(Message):
        """Enter (or a second click) on a row."""

        def __init__(self, link_list: "LinkList[Any]", row: Any, index: int) -> None:
            super().__init__()
            self.link_list = link_list
            self.row = row
            self.index = index

        @property
        def control(self) -> "LinkList[Any]":
            return self.link_list

    def __init__(
        self,
        columns: Sequence[Column],
        cells: Callable[[Row], Sequence[Cell]],
        *,
        empty_text: str = "Nothing to show.",
        page_size: int = PAGE_SIZE,
        background: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._columns = list(columns)
        self._cells = cells
        self._source: RowSource[Row] | None = None
        self._count = 0
        self._page_size = page_size
        self._pages: LRUCache[int, Sequence[Row]] = LRUCache(32)
        self._strips: LRUCache[tuple[int, int, bool], Strip] = LRUCache(1024)
        self._styles: dict[str, Style] = {}
        self._background = background
        self._generation = 0
        self._requested: set[int] = set()
        self._frame: tuple[int, int, Style] | None = None  # set while the widget repaints (render_lines)
        self.empty_text = empty_text

    # -- data ---------------------------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return self._count

    def set_source(self, source: RowSource[Row] | None, *, keep_cursor: bool = False, count: int | None = None,
                   pages: dict[int, Sequence[Row]] | None = None) -> None:
        """Show another query (filter, stage or sort changed), or the same one re-read after a sync.

        ``count`` and ``pages`` (page number -> rows) may come already read (by a worker); otherwise the count is
        asked for now. With ``keep_cursor`` the cursor stays at its position (clamped), so a refresh after a sync
        does not jump.
        """
        self._generation += 1
        self._source = source
        self._pages.clear()
        self._strips.clear()
        self._requested.clear()
        for number, rows in (pages or {}).items():
            self._pages[number] = list(rows)
        if count is None:
            count = source.count() if source is not None else 0
        self._count = count
        self._set_virtual_height(count)
        target = min(self.cursor, self._count - 1) if keep_cursor else 0
        target = max(0, target)
        if not keep_cursor:
            self.scroll_to(y=0, animate=False, immediate=True)
        if target == self.cursor:
            self._cursor_changed(target)
        else:
            self.cursor = target
        self.refresh()

    def _set_virtual_height(self, count: int) -> None:
        """The scrollable height is the row count. Set without a layout of the screen (the reactive's default):
        the list's own size never depends on it (its scrollbar is always shown), only the scrollbar and the
        scroll range do, and those are updated here."""
        size = Size(0, count)
        if size == self.virtual_size:
            return
        self.set_reactive(LinkList.virtual_size, size)
        self._scroll_update(size)

    def row_at(self, index: int) -> Row | None:
        """The row at ``index`` from its page; None while a page read in the background has not arrived."""
        if self._source is None or not 0 <= index < self._count:
            return None
        number, within = divmod(index, self._page_size)
        rows = self._pages.get(number)
        if rows is None:
            if self._background:
                self._request(number)
                return None
            rows = list(self._source.page(number * self._page_size, self._page_size))
            self._pages[number] = rows
        return rows[within] if within < len(rows) else None

    def _request(self, number: int) -> None:
        if number in self._requested or self._source is None:
            return
        self._requested.add(number)
        source, generation, size = self._source, self._generation, self._page_size

        def read() -> None:
            rows = list(source.page(number * size, size))
            self.post_message(self.PageLoaded(generation, number, rows))

        self.run_worker(read, thread=True, group="link-list-pages", exit_on_error=False, name="read a page")

    def on_link_list_page_loaded(self, event: "LinkList.PageLoaded") -> None:
        event.stop()
        if event.generation != self._generation:
            return  # a page of a query that is no longer shown
        self._pages[event.number] = event.rows
        self._requested.discard(event.number)
        first = event.number * self._page_size
        top = self.scroll_offset.y
        if first < top + self.scrollable_content_region.height and top < first + len(event.rows):
            self.refresh()  # its lines on screen were placeholders, which are never cached
        if first <= self.cursor < first + len(event.rows):
            self.post_message(self.Highlighted(self, self.row_at(self.cursor), self.cursor))

    @property
    def highlighted(self) -> Row | None:
        return self.row_at(self.cursor)

    # -- cursor -------------------------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old)
        self._cursor_changed(new)

    def _cursor_changed(self, index: int) -> None:
        self.refresh_line(index)
        self._scroll_cursor_visible()
        self.post_message(self.Highlighted(self, self.row_at(index), index))
        self._prefetch()

    def _prefetch(self) -> None:
        """Read ahead (in the background) the pages within a screen above and below the visible lines, so that
        paging and scrolling across a page boundary find rows, not placeholders."""
        if not self._background or self._source is None or not self._count:
            return
        height = max(1, self.scrollable_content_region.height)
        top = self.scroll_offset.y
        first = max(0, top - height) // self._page_size
        last = min(self._count - 1, top + 2 * height) // self._page_size
        for number in range(first, last + 1):
            if number not in self._pages:
                self._request(number)

    def _scroll_cursor_visible(self) -> None:
        top = self.scroll_offset.y
        height = self.scrollable_content_region.height
        if height <= 0:
            return
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def _move(self, index: int) -> None:
        if self._count:
            self.cursor = max(0, min(self._count - 1, index))

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor - max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        self._move(self.cursor + max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(self._count - 1)

    def action_select(self) -> None:
        row = self.highlighted
        if row is not None:
            self.post_message(self.Selected(self, row, self.cursor))

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < self._count:
            if index == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = index

    # -- rendering ----------------------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _on_focus(self, event: events.Focus) -> None:
        self._strips.clear()
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        self._strips.clear()
        self.refresh()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.get_component_rich_style(f"link-list--{name}", partial=True)
            self._styles[name] = style
        return style

    def on_resize(self, event: events.Resize) -> None:
        self._strips.clear()
        self._scroll_cursor_visible()

    def render_lines(self, crop: Region) -> list[Strip]:
        # What every line needs, worked out once per repaint rather than once per line (the base style walks the
        # ancestors' backgrounds).
        self._frame = (self.scrollable_content_region.width, self.scroll_offset.y, self.rich_style)
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        width, top, base = self._frame or (self.scrollable_content_region.width, self.scroll_offset.y,
                                           self.rich_style)
        index = top + y
        if self._count == 0:
            if y == 1:
                return Strip([Segment(fit("  " + self.empty_text, width), base + self._style("empty"))], width)
            return Strip.blank(width, base)
        if index >= self._count:
            return Strip.blank(width, base)
        is_cursor = index == self.cursor
        key = (index, width, is_cursor)
        strip = self._strips.get(key)
        if strip is None:
            number = index // self._page_size
            loaded = number in self._pages
            strip = self._render_row(index, width, is_cursor, base)
            if loaded:
                self._strips[key] = strip
        return strip

    def _render_row(self, index: int, width: int, is_cursor: bool, base: Style) -> Strip | None:
        row = self.row_at(index)
        cursor = self._style("cursor") if is_cursor else None
        if row is None:  # its page is on its way: a placeholder, not cached
            style = base + self._style("dim") + cursor if cursor else base + self._style("dim")
            return Strip([Segment(fit("  …", width), style)], width)
        widths = column_widths(self._columns, width)
        segments: list[Segment] = []
        gap = Segment(" ", base + cursor if cursor else base)
        for i, (col, w, (text, klass)) in enumerate(zip(self._columns, widths, self._cells(row))):
            style = base + self._style(klass) if klass else base
            if cursor is not None:
                style = style + cursor
            segments.append(Segment(fit(text, w, col.align), style))
            if i < len(self._columns) - 1:
                segments.append(gap)
        strip = Strip(segments)
        return strip.adjust_cell_length(width, base + cursor if cursor else base)
