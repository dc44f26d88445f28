"""The virtual link list and the lazy clients tree, on their own: what they read, what they draw, and when."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conftest import SIZE, flat, screen_text, wait_until
from textual.app import App, ComposeResult
from textual.reactive import var
from textual.widgets import Tree

from linkdesk.tui.text import clean
from linkdesk.tui.widgets.clients_tree import PAGE, ClientsTree
from linkdesk.tui.widgets.link_list import Column, LinkList, column_widths, fit
from linkdesk.tui.widgets.stage_bar import StageBar, underline
from linkdesk.tui.widgets.status_line import PROGRESS_INTERVAL, StatusInfo, StatusLine, StatusParts


@dataclass(frozen=True)
class Row:
    n: int
    name: str


class CountingSource:
    """100,000 rows that exist only when a page is asked for; records every page read."""

    def __init__(self, total: int = 100_000, name=lambda n: f"client {n:06d}") -> None:
        self.total = total
        self.name = name
        self.pages: list[tuple[int, int]] = []
        self.counts = 0

    def count(self) -> int:
        self.counts += 1
        return self.total

    def page(self, offset: int, limit: int):
        self.pages.append((offset, limit))
        return [Row(n, self.name(n)) for n in range(offset, min(self.total, offset + limit))]


COLUMNS = (Column("n", "N", 7, align="right"), Column("name", "Name", 10, flex=1))


def cells(row: Row):
    return ((str(row.n), "dim"), (row.name, ""))


class ListApp(App):
    def __init__(self, source) -> None:
        super().__init__()
        self.source = source
        self.selected: list[Row] = []

    def compose(self) -> ComposeResult:
        yield LinkList(COLUMNS, cells, id="list")

    def on_mount(self) -> None:
        self.query_one(LinkList).set_source(self.source)
        self.query_one(LinkList).focus()

    def on_link_list_selected(self, event: LinkList.Selected) -> None:
        self.selected.append(event.row)


def test_column_widths_share_the_spare_width_and_fit_pads_or_cuts():
    widths = column_widths([Column("a", "A", 5), Column("b", "B", 4, flex=1), Column("c", "C", 4, flex=3)], 40)
    assert widths[0] == 5 and sum(widths) + 2 == 40 and widths[2] > widths[1]
    assert fit("abcdef", 4) == "abc…" and fit("ab", 4) == "ab  " and fit("ab", 4, "right") == "  ab"
    assert fit("東京タワー", 5) == "東京…"  # wide characters count two cells


async def test_only_visible_pages_are_read_and_a_cursor_move_repaints_two_lines():
    source = CountingSource()
    app = ListApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        link_list = app.query_one(LinkList)
        assert link_list.row_count == 100_000
        assert source.pages == [(0, 100)]  # the first frame reads one page of 100, not 100,000 rows

        rendered: list[int] = []
        original = link_list._render_row

        def counting(index, width, is_cursor, base):
            rendered.append(index)
            return original(index, width, is_cursor, base)

        link_list._render_row = counting
        await pilot.press("j")
        await pilot.pause()
        assert link_list.cursor == 1
        assert sorted(rendered) == [0, 1]  # the old and the new cursor line, nothing else

        await pilot.press("G")  # the last row: one more page read, at the end
        await pilot.pause()
        assert link_list.cursor == 99_999
        assert source.pages[-1] == (99_900, 100) and len(source.pages) == 2
        assert "client 099999" in screen_text(app)

        await pilot.press("g", "pagedown", "pagedown")
        await pilot.pause()
        assert link_list.cursor > 40 and len(source.pages) == 2  # back within the first page: read from the LRU

        await pilot.press("enter")
        await pilot.pause()
        assert app.selected and app.selected[-1].n == link_list.cursor


class BackgroundListApp(ListApp):
    def compose(self) -> ComposeResult:
        yield LinkList(COLUMNS, cells, id="list", background=True)


async def test_pages_near_the_screen_are_read_ahead_in_the_background():
    source = CountingSource()
    app = BackgroundListApp(source)
    async with app.run_test(size=SIZE) as pilot:
        link_list = app.query_one(LinkList)
        await wait_until(pilot, lambda: link_list.highlighted is not None, what="the first page")
        assert source.pages == [(0, 100)]  # a screen away from row 100: nothing more is read
        height = link_list.scrollable_content_region.height
        while link_list.cursor + height < 99:  # until row 100 is within a screen below the visible lines
            await pilot.press("pagedown")
        # The next page is asked for while the cursor is still most of a screen above it.
        await wait_until(pilot, lambda: (100, 100) in source.pages, what="the next page read ahead")
        assert link_list.cursor < 100
        pages_before = len(source.pages)
        await pilot.press("pagedown", "pagedown")
        await pilot.pause()
        assert link_list.highlighted is not None and link_list.cursor >= 100  # no placeholder on the way
        assert all(offset <= 200 for offset, _ in source.pages[pages_before:])  # only neighbours, never a jump


async def test_a_new_count_moves_the_scroll_range_without_a_layout():
    source = CountingSource()
    app = ListApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        link_list = app.query_one(LinkList)
        layouts: list[bool] = []
        original = link_list.refresh

        def refresh(*regions, repaint=True, layout=False, recompose=False):
            layouts.append(layout)
            return original(*regions, repaint=repaint, layout=layout, recompose=recompose)

        link_list.refresh = refresh
        link_list.set_source(CountingSource(250))
        assert not any(layouts)  # the list's size does not depend on its row count: the screen stays laid out
        assert link_list.virtual_size.height == 250 and link_list.max_scroll_y == 250 - link_list.size.height
        await pilot.press("G")
        await pilot.pause()
        assert link_list.cursor == 249 and link_list.scroll_offset.y == link_list.max_scroll_y
        assert "client 000249" in screen_text(app)


async def test_client_text_in_rows_is_drawn_literally():
    names = {0: "[bold red]x[/]", 1: "[link=https://e.com]y", 2: "\x1b[31mred\x1b[0m"}
    from linkdesk.tui.text import clean

    source = CountingSource(3, name=lambda n: clean(names[n]))
    app = ListApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "[bold red]x[/]" in text and "[link=https://e.com]y" in text
        assert "red" in text and "\x1b" not in text


async def test_an_empty_list_says_so():
    app = ListApp(CountingSource(0))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "Nothing to show." in screen_text(app)
        await pilot.press("enter", "j")
        assert app.selected == []


class TreeApp(App):
    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        yield ClientsTree(self.session.clock, id="tree")

    def on_mount(self) -> None:
        tree = self.query_one(ClientsTree)
        tree.load(self.session.cache, 1000)
        tree.focus()


def _labels(node) -> list[str]:
    return [str(child.label) for child in node.children]


async def test_tree_children_load_when_opened_one_page_at_a_time(tmp_path):
    from tui_fakes import CLIENT_B, FakeSession

    session = FakeSession(tmp_path, extra_links=450)  # Client B: 3 own accounts + 450 linked ones
    session.write_cache()
    app = TreeApp(session)
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(ClientsTree)
        await wait_until(pilot, lambda: not tree.reading and len(tree.root.children[1].children) > 0,
                         what="the client customers")
        clients = tree.root.children[1]
        customers = {node.data.id: node for node in clients.children}
        client_b = customers[CLIENT_B]
        assert len(client_b.children) == 0  # nothing read before it is opened
        client_b.expand()
        await wait_until(pilot, lambda: not tree.reading and len(client_b.children) > 0, what="the first page")
        assert PAGE == 100 and len(client_b.children) == PAGE + 1
        more = client_b.children[-1]
        assert more.data.kind == "more" and str(more.label) == "… 353 more — enter shows 100 more"
        pages = 1
        while client_b.children[-1].data.kind == "more":
            shown = len(client_b.children) - 1
            tree.move_cursor(client_b.children[-1])
            await pilot.press("enter")
            await wait_until(pilot, lambda: not tree.reading and len(client_b.children) > shown + 1,
                             what=f"page {pages + 1}")
            pages += 1
            if shown + PAGE < 453:
                assert len(client_b.children) == shown + PAGE + 1
                assert str(client_b.children[-1].label).startswith(f"… {453 - shown - PAGE} more")
        assert pages == 5  # 100 + 100 + 100 + 100 + 53
        assert len(client_b.children) == 453
        assert len({n.data.id for n in client_b.children}) == 453  # no account twice


async def test_tree_expand_and_collapse_cost_one_redraw_and_no_relabelling(tmp_path, monkeypatch):
    from tui_fakes import CLIENT_B, FakeSession

    session = FakeSession(tmp_path, extra_links=450)
    session.write_cache()
    app = TreeApp(session)
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(ClientsTree)
        await wait_until(pilot, lambda: not tree.reading and len(tree.root.children[1].children) > 0,
                         what="the client customers")
        client_b = next(n for n in tree.root.children[1].children if n.data.id == CLIENT_B)
        clears: list[int] = []
        layouts: list[bool] = []
        original_clear, original_refresh = tree._clear_line_cache, tree.refresh
        monkeypatch.setattr(tree, "_clear_line_cache", lambda: clears.append(1) or original_clear())

        def refresh(*regions, repaint=True, layout=False, recompose=False):
            layouts.append(layout)
            return original_refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

        monkeypatch.setattr(tree, "refresh", refresh)
        client_b.expand()
        await wait_until(pilot, lambda: not tree.reading and len(client_b.children) == PAGE + 1, what="a page")
        # Opening the node and adding the page (a loading leaf out, 100 accounts and a "more" leaf in): three
        # redraws, not one per node added.
        assert len(clears) <= 3

        measured: list[object] = []
        original_width = Tree.get_label_width
        monkeypatch.setattr(Tree, "get_label_width", lambda self, node: measured.append(node)
                            or original_width(self, node))
        clears.clear()
        layouts.clear()
        for _ in range(2):
            client_b.collapse()
            await pilot.pause()
            client_b.expand()
            await pilot.pause()
        assert measured == []  # every label was measured once, when it was added
        assert len(clears) == 4
        # The screen is laid out only when the tree's scrollbar comes or goes, never for the change itself.
        assert sum(layouts) <= 4 and tree.virtual_size.height == len(tree._tree_lines)


def _in_tree(tree, node) -> bool:
    """Whether ``node`` belongs to the tree as it is now (not to the one a reload cleared)."""
    from textual.widgets.tree import UnknownNodeID

    if node is None:
        return False
    try:
        return tree.get_node_by_id(node.id) is node
    except UnknownNodeID:
        return False


async def test_tree_labels_are_literal_and_reopen_after_a_reload(tmp_path):
    from tui_fakes import CLIENT_A, FakeSession

    session = FakeSession(tmp_path, markup_names=True)
    session.write_cache()
    app = TreeApp(session)
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(ClientsTree)
        await wait_until(pilot, lambda: not tree.reading and len(tree.root.children[1].children) > 0,
                         what="the client customers")
        client_a = next(n for n in tree.root.children[1].children if n.data.id == CLIENT_A)
        client_a.expand()
        await wait_until(pilot, lambda: not tree.reading and len(client_a.children) == 2, what="Client A's accounts")
        tree.move_cursor(client_a.children[1])
        await pilot.pause()
        text = flat(screen_text(app))
        assert "[bold red]x[/]" in text and "[link=https://e.com]y" in text and "A2 red" in text

        tree.load(session.cache, 1000)  # as after a sync
        await wait_until(pilot, lambda: not tree.reading and _in_tree(tree, tree.cursor_node)
                         and tree.cursor_node.data.kind == "account", what="the cursor back on the account")
        assert tree.cursor_node.data.id == 2002
        assert tree.get_node_at_line(tree.cursor_line) is tree.cursor_node  # the line drawn as the cursor's
        assert isinstance(tree, Tree)


class InboxApp(App):
    CSS_PATH = str(Path(__file__).resolve().parents[2] / "tui" / "app.tcss")  # the inbox laid out as in the app

    def __init__(self, session, clock) -> None:
        super().__init__()
        self.session = session
        self.clock = clock

    def compose(self) -> ComposeResult:
        from linkdesk.tui.screens.inbox import InboxView

        yield InboxView(self.clock, id="inbox")

    def on_mount(self) -> None:
        from linkdesk.tui.screens.inbox import InboxView

        view = self.query_one(InboxView)
        view.load(self.session.cache, self.session.identity().actor())
        view.link_list.focus()


async def test_a_stage_switch_reuses_the_counts_and_lists_what_its_tab_says(tmp_path, monkeypatch):
    from tui_fakes import FakeSession

    import linkdesk.tui.screens.inbox as inbox_module

    session = FakeSession(tmp_path, extra_links=250)
    session.write_cache()
    counted: list[object] = []
    real_counts = inbox_module.stage_counts
    monkeypatch.setattr(inbox_module, "stage_counts", lambda *a, **k: counted.append(a) or real_counts(*a, **k))
    clock_calls = [0]

    def clock():
        clock_calls[0] += 1
        return session.clock()

    app = InboxApp(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(inbox_module.InboxView)
        await wait_until(pilot, lambda: view.settled and view.query_state is not None, what="the first query")
        assert len(counted) == 1
        bar = view.query_one("#inbox-stages", StageBar)
        assert bar.active == inbox_module.STAGE_ORDER[0]
        label = str(bar.label(bar.active))
        assert _underlined(bar) == label and label.startswith("Needs action ")  # its count included
        clock_calls[0] = 0
        seen = []
        for stage in inbox_module.STAGE_ORDER[1:] + inbox_module.STAGE_ORDER[:1]:
            await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda: view.settled, what="the stage's rows")
            assert bar.active == stage
            label = str(bar.label(stage))
            seen.append(label)
            # The underline is under the whole label, its count included, at once (no animation).
            assert _underlined(bar) == label
            assert view.link_list.row_count == int(label.rsplit(" ", 1)[1].replace(",", ""))
        assert any(label.startswith("All ") and not label.endswith(" 0") for label in seen)
        assert len(counted) == 1  # same side and filter, moments later: the counts are not read again
        # Lines are drawn for the time their rows were read for; the clock is read per key, not per line.
        assert clock_calls[0] <= 3 * len(inbox_module.STAGE_ORDER)

        view.reload()  # as after a sync or an action: the links changed, count them again
        await wait_until(pilot, lambda: view.settled, what="the reload")
        assert len(counted) == 2


class StatusApp(App):
    status = var(StatusInfo())  # what LinkdeskApp.status is to the status line: a value it watches

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield StatusLine(self.clock, id="status")


async def test_the_status_line_redraws_a_part_only_when_it_changes_and_lays_out_only_when_it_resizes():
    from textual.widgets import Static
    from tui_fakes import T0

    app = StatusApp(lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        info = StatusInfo(profile="demo", is_demo=True, user="ada", role="Super Admin", customer="Contoso",
                          last_sync=T0, phase="links", done=0, total=100, message="Reading links…")
        app.status = info
        await pilot.pause()
        updates: list[tuple[str, bool]] = []
        for static in app.query(Static):
            original = static.update

            def update(content="", *, layout=True, _id=static.id, _original=original):
                updates.append((_id, layout))
                return _original(content, layout=layout)

            static.update = update
        parts = app.query_one(StatusParts)  # profile, user and age: one widget, sized to its text
        original_refresh = parts.refresh

        def refresh(*regions, layout=False, **kwargs):
            updates.append(("status-parts", layout))
            return original_refresh(*regions, layout=layout, **kwargs)

        parts.refresh = refresh
        for done in range(1, 30):  # a sync's progress steps: only the bar moves
            app.status = info.with_(done=done)
            await pilot.pause(PROGRESS_INTERVAL / 4)
        await pilot.pause(PROGRESS_INTERVAL * 2)
        assert updates == []
        assert "Reading links…" in screen_text(app) and "ada · Super Admin · Contoso" in screen_text(app)

        app.status = info.with_(done=30, message="Saving links…")  # same width as before: no layout
        await pilot.pause(PROGRESS_INTERVAL * 2)
        assert updates == [("status-message", False)]
        updates.clear()
        app.status = info.with_(phase=None, message="", user="ada.lovelace@contoso.example")
        await pilot.pause(PROGRESS_INTERVAL * 2)
        assert ("status-parts", True) in updates  # wider: the line is laid out again
        assert all(not layout for part, layout in updates if part != "status-parts")
        assert "ada.lovelace@contoso.example · Super Admin" in screen_text(app)
        assert "Saving links" not in screen_text(app)
        updates.clear()
        app.status = app.status.with_(user="ada.lovelace@contoso.exampl3")  # another user, same width
        await pilot.pause(PROGRESS_INTERVAL * 2)
        assert updates == [("status-parts", False)]
        assert "ada.lovelace@contoso.exampl3 · Super Admin" in screen_text(app)


async def test_the_preview_follows_the_cursor_read_off_the_ui_thread(tmp_path, monkeypatch):
    import threading

    from textual.widgets import Static
    from tui_fakes import FakeSession

    import linkdesk.tui.screens.inbox as inbox_module

    session = FakeSession(tmp_path, extra_links=250)
    session.write_cache()
    threads: list[bool] = []
    real_context = inbox_module.link_context

    def context(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_context(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "link_context", context)
    app = InboxApp(session, session.clock)
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(inbox_module.InboxView)
        await wait_until(pilot, lambda: view.settled and view.query_state is not None, what="the first query")
        view.set_stage(None)  # every link
        await wait_until(pilot, lambda: view.settled and view.link_list.row_count > 200, what="all links")
        preview = view.query_one("#inbox-preview", Static)

        def shows_the_cursor_row() -> bool:
            row = view.link_list.highlighted
            return row is not None and clean(row.row.client_entity_name) in str(preview.render())

        await wait_until(pilot, shows_the_cursor_row, what="the preview of the first row")
        for _ in range(12):  # a held key: the preview catches up with the row the cursor stops on
            await pilot.press("j")
        await wait_until(pilot, lambda: view.link_list.cursor == 12 and shows_the_cursor_row(),
                         what="the preview of row 12")
        assert threads and not any(threads)  # never read on the UI thread
        assert len(threads) <= 14  # one read at a time: rows passed meanwhile are skipped, not queued


class ClientsApp(App):
    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        from linkdesk.tui.screens.clients import ClientsView

        yield ClientsView(self.session.clock, id="clients")

    def on_mount(self) -> None:
        from linkdesk.tui.screens.clients import ClientsView

        view = self.query_one(ClientsView)
        view.load(self.session.cache, self.session.identity().actor())
        view.tree.focus()


async def test_the_detail_pane_describes_the_node_as_reread_after_a_reload(tmp_path):
    from textual.widgets import Static
    from tui_fakes import AGENCY, FakeSession

    from linkdesk.core.model import CustomerRole, Role, User

    session = FakeSession(tmp_path)
    session.write_cache()
    app = ClientsApp(session)
    async with app.run_test(size=SIZE) as pilot:
        from linkdesk.tui.screens.clients import ClientsView

        view = app.query_one(ClientsView)
        detail = view.query_one("#clients-detail", Static)
        await wait_until(pilot, lambda: not view.tree.reading and view.selected is not None
                         and view.selected.kind == "agency", what="the cursor on the agency")
        await wait_until(pilot, lambda: "Users 4" in flat(screen_text(app)), what="the agency's 4 users")

        session.users.append(User(15, "dee", AGENCY, "Dee", "New", roles=(CustomerRole(AGENCY, Role.Viewer),)))
        session.write_cache()  # as a sync does
        view.reload()
        # The cursor stays on the agency's line; the pane follows the agency as the cache has it now.
        await wait_until(pilot, lambda: "Users 5" in flat(screen_text(app)), what="the agency's 5 users")
        assert view.tree.cursor_line == 0 and _in_tree(view.tree, view.tree.cursor_node)
        assert "5 users" in str(view.tree.cursor_node.label)


def test_stage_counts_stay_short_at_agency_scale():
    from linkdesk.tui.text import short_count

    cases = {0: "0", 7: "7", 2_994: "2,994", 9_999: "9,999", 10_000: "10.0k", 10_459: "10.5k", 61_837: "61.8k",
             99_949: "99.9k", 99_998: "100k", 618_000: "618k", 999_499: "999k", 999_999: "1.0M", 12_345_678: "12.3M"}
    assert {n: short_count(n) for n in cases} == cases
    assert max(len(short_count(n)) for n in range(0, 2_000_000, 997)) <= 6


# -- the inbox's stage bar ------------------------------------------------------------------------------------------


def _lines(bar: StageBar) -> tuple[str, str]:
    labels, under = bar.lines()
    return labels.plain, under.plain


def _underlined(bar: StageBar) -> str:
    """The text above the underline's highlighted columns (between its half bars ╸ and ╺)."""
    labels, under = _lines(bar)
    assert len(under) == len(labels) == bar.size.width
    start = under.find("╸") + 1  # 0 when the highlight starts at the first column
    end = under.find("╺") if "╺" in under else len(under)
    assert set(under[start:end]) == {"━"}
    return labels[start:end]


def test_the_underline_is_textuals_bar():
    """The same characters, styles and segments as Textual's Bar for a whole-cell highlight (what Tabs draws)."""
    from rich.console import Console
    from rich.style import Style
    from textual.renderables.bar import Bar

    console = Console(width=40, color_system="truecolor")
    high, back = Style(color="#0178d4"), Style(color="#262626")
    for width in (1, 2, 10, 40):
        for start in range(0, width + 1):
            for end in range(start, width + 1):
                theirs = list(console.render(Bar((start, end), high, back, width=width),
                                             console.options.update(width=width)))
                ours = list(console.render(underline(width, start, end, high, back),
                                           console.options.update(width=width)))
                assert [s for s in ours if s.text] == [s for s in theirs if s.text], (width, start, end)


class StageBarApp(App):
    def __init__(self, labels) -> None:
        super().__init__()
        self.labels = labels
        self.selected: list[object] = []

    def compose(self) -> ComposeResult:
        yield StageBar(self.labels, id="bar")

    def on_stage_bar_selected(self, event: StageBar.Selected) -> None:
        self.selected.append(event.key)


async def test_stage_bar_labels_active_stage_and_underline():
    from rich.text import Text

    app = StageBarApp([("a", "Needs action 3"), ("b", "Pending 5"), (None, "All 8")])
    async with app.run_test(size=(60, 4)) as pilot:
        bar = app.query_one(StageBar)
        labels, under = _lines(bar)
        # Each label with a column either side, the first active; its columns underlined.
        assert labels.rstrip() == " Needs action 3  Pending 5  All 8"
        assert bar.active == "a" and _underlined(bar) == "Needs action 3"
        assert under == "╸" + "━" * 14 + "╺" + "━" * 44
        # Active in the full foreground colour, the others dimmer (Tabs' $foreground and $foreground 50%).
        active_style = bar.get_component_rich_style("stage-bar--active")
        label_style = bar.get_component_rich_style("stage-bar--label")
        assert active_style.color != label_style.color
        text = bar.lines()[0]
        assert text.get_style_at_offset(app.console, 1).color == active_style.color
        assert text.get_style_at_offset(app.console, 17).color == label_style.color

        # Set from code (the inbox's keys and commands): redrawn, nothing posted. None is a key like any other.
        bar.active = None
        await pilot.pause()
        assert _underlined(bar) == "All 8" and app.selected == []
        # A new count: relabelled, the underline follows the label's new width.
        bar.set_label(None, "All 10,123")
        assert _underlined(bar) == "All 10,123"
        assert bar.label(None).plain == "All 10,123"
        # The same label again (the counts re-read, unchanged): not redrawn.
        redraws = []
        bar.refresh = lambda *a, **k: redraws.append(a)
        bar.set_label(None, "All 10,123")
        bar.set_label("a", Text("Needs action 3"))
        assert redraws == []
        bar.set_label("a", Text("Needs action 2"))
        assert len(redraws) == 1


async def test_stage_bar_click_selects_a_label_or_the_bar_beneath_it():
    app = StageBarApp([("a", "Needs action 3"), ("b", "Pending 5"), (None, "All 8")])
    async with app.run_test(size=(60, 4)) as pilot:
        bar = app.query_one(StageBar)
        await pilot.click(StageBar, offset=(20, 0))  # on "Pending 5"
        await pilot.pause()
        assert bar.active == "b" and app.selected == ["b"] and _underlined(bar) == "Pending 5"
        await pilot.click(StageBar, offset=(29, 1))  # on the underline beneath "All 8"
        await pilot.pause()
        assert bar.active is None and app.selected == ["b", None]
        await pilot.click(StageBar, offset=(29, 0))  # the active one again: nothing new
        await pilot.click(StageBar, offset=(50, 0))  # beyond the labels: nothing
        await pilot.pause()
        assert bar.active is None and app.selected == ["b", None]


async def test_stage_bar_hover_brightens_a_label():
    app = StageBarApp([("a", "Needs action 3"), ("b", "Pending 5")])
    async with app.run_test(size=(60, 4)) as pilot:
        bar = app.query_one(StageBar)
        active_style = bar.get_component_rich_style("stage-bar--active")
        label_style = bar.get_component_rich_style("stage-bar--label")
        assert bar.lines()[0].get_style_at_offset(app.console, 20).color == label_style.color
        await pilot.hover(StageBar, offset=(20, 0))
        await pilot.pause()
        assert bar.lines()[0].get_style_at_offset(app.console, 20).color == active_style.color
        await pilot.hover(StageBar, offset=(20, 1))  # the underline is not a label
        await pilot.pause()
        assert bar.lines()[0].get_style_at_offset(app.console, 20).color == label_style.color


async def test_stage_bar_keeps_the_active_label_in_view_when_too_narrow():
    app = StageBarApp([(n, f"Stage number {n}") for n in range(6)])
    async with app.run_test(size=(30, 4)) as pilot:
        bar = app.query_one(StageBar)
        assert _underlined(bar) == "Stage number 0"
        bar.active = 5
        await pilot.pause()
        labels, _ = _lines(bar)
        assert labels.endswith(" Stage number 5 ") and _underlined(bar) == "Stage number 5"
        await pilot.click(StageBar, offset=(len(labels) - 3, 0))  # the label drawn there, scrolled
        await pilot.pause()
        assert app.selected == []  # it was already the active one
        bar.active = 0
        await pilot.pause()
        assert _lines(bar)[0].startswith(" Stage number 0 ") and _underlined(bar) == "Stage number 0"


async def test_a_click_on_a_stage_shows_it_and_focuses_the_list(tmp_path):
    from tui_fakes import FakeSession

    import linkdesk.tui.screens.inbox as inbox_module

    session = FakeSession(tmp_path, extra_links=20)
    session.write_cache()
    app = InboxApp(session, session.clock)
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(inbox_module.InboxView)
        await wait_until(pilot, lambda: view.settled and view.query_state is not None, what="the first query")
        bar = view.query_one("#inbox-stages", StageBar)
        labels, _ = _lines(bar)
        x = labels.index("All ")
        await pilot.click("#inbox-stages", offset=(x + 1, 0))
        await wait_until(pilot, lambda: view.settled and view.query_state.stage is None, what="every stage")
        assert bar.active is None and _underlined(bar).startswith("All ")
        assert view.link_list.has_focus
        assert view.link_list.row_count == int(_underlined(bar).rsplit(" ", 1)[1].replace(",", ""))


async def test_the_status_parts_draw_profile_user_and_age_in_their_styles():
    from tui_fakes import T0

    app = StatusApp(lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        parts = app.query_one(StatusParts)
        app.status = StatusInfo(profile="demo", is_demo=True, user="ada", role="Viewer", customer="Contoso",
                                last_sync=T0, online=True)
        await pilot.pause()
        line = parts.line()
        assert line.plain == " DEMO  ada · Viewer · Contoso  synced just now "
        assert parts.size.width == len(line.plain)  # sized to its text
        demo = line.get_style_at_offset(app.console, 1)
        assert demo.bold and demo.bgcolor == parts.get_component_rich_style("status-parts--profile").bgcolor
        assert line.get_style_at_offset(app.console, 7).bold  # the user's name
        assert not line.get_style_at_offset(app.console, 11).bold  # the role
        age = line.get_style_at_offset(app.console, 32)
        assert not age.bold and age.color == parts.get_component_rich_style("status-parts--age").color

        app.status = StatusInfo(profile="prod", last_sync=T0, online=False)
        await pilot.pause()
        line = parts.line()
        assert line.plain.startswith(" PROD    offline — showing cache from ")
        live = line.get_style_at_offset(app.console, 1)
        assert live.bgcolor == parts.get_component_rich_style("status-parts--live").bgcolor != demo.bgcolor
        offline = line.get_style_at_offset(app.console, 10)
        assert offline.bold and offline.color == parts.get_component_rich_style("status-parts--offline").color
        assert parts.size.width == len(line.plain)
