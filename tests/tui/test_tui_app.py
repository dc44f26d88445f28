"""The app's conventions, on a small fake world over the real cache: keys, help, palette, errors, untrusted text,
sync progress and cancel, keymaps, and the invitation form's live validation."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from conftest import SIZE, Notes, flat, screen_text, see, wait_until
from textual.binding import Binding
from textual.widgets import Input, Select

import linkdesk.tui
from linkdesk.core import paths
from linkdesk.core.model import ClientLinkStatus as S
from linkdesk.tui.app import LinkdeskApp, SessionReady
from linkdesk.tui.screens.confirm import ConfirmationModal
from linkdesk.tui.screens.error import ErrorModal
from linkdesk.tui.screens.help import HelpScreen
from linkdesk.tui.screens.invite import InvitationScreen


def _tui_classes():
    for info in pkgutil.walk_packages(linkdesk.tui.__path__, prefix="linkdesk.tui."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "BINDINGS" in cls.__dict__:
                yield cls


def test_every_binding_has_an_id_and_a_description():
    classes = list(_tui_classes())
    assert len(classes) >= 10
    for cls in classes:
        for binding in cls.__dict__["BINDINGS"]:
            assert isinstance(binding, Binding), f"{cls.__name__}: {binding!r} is not a Binding"
            assert binding.id, f"{cls.__name__}: the binding for {binding.key!r} has no id"
            assert binding.description, f"{cls.__name__}: the binding {binding.id} has no description"


def test_design_keys_are_bound():
    from linkdesk.tui.screens.inbox import InboxView

    keys = {key for b in LinkdeskApp.BINDINGS + InboxView.BINDINGS for key in b.key.split(",")}
    for key in ("1", "2", "n", "slash", "s", "question_mark", "f1", "q", "c", "u", "r", "a", "x"):
        assert key in keys, key


async def test_help_lists_the_keys_of_the_current_screen(fake_session):
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = await see(pilot, app, "Help — Link inbox")
        for words in ("Filter", "Next stage", "Sort", "Cancel invitation", "Request unlink", "Sync", "Quit",
                      "grouped by lifecycle stage"):
            assert words in text, words
        await pilot.press("escape")
        await pilot.press("1", "f1")
        await see(pilot, app, "Help — Clients tree")


async def test_the_palette_offers_only_what_the_user_may_do_now(fake_session):
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.main.inbox.link_list.row_count > 0, what="the inbox")
        titles = [c.title for c in app.palette_commands(app.screen)]
        assert any(t.startswith("Cancel invitation: account Account 3001") for t in titles)
        assert not any(t.startswith(("Accept", "Decline", "Request unlink")) for t in titles)
        assert any(t.startswith("Act as vic") for t in titles) and "Advance the simulator clock +31 days" in titles
        commands = {c.title: c for c in app.palette_commands(app.screen)}
        assert "Filter the inbox" in commands and "Sort the inbox by status" in commands
        commands["Inbox: All stages"].callback()
        await wait_until(pilot, lambda: app.main.inbox.settled and app.main.inbox.link_list.row_count == 4,
                         what="all stages")

        app.switch_identity(14)  # the Viewer: may look, not act
        await wait_until(pilot, lambda: app.identity.user_id == 14, what="the switch")
        titles = [c.title for c in app.palette_commands(app.screen)]
        assert not any(t.startswith("Cancel invitation") for t in titles)

        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        assert "Show link inbox" in flat(screen_text(app))


async def test_a_failing_worker_shows_a_sentence_never_a_traceback(tmp_path):
    from tui_fakes import FakeSession

    session = FakeSession(tmp_path, fail_sync=RuntimeError("boom [bold]x[/]"))
    session.write_cache()
    app = LinkdeskApp(session=session, clock=session.clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="the error dialog")
        text = await see(pilot, app, "Sync failed")
        assert "Something went wrong (RuntimeError: boom [bold]x[/])" in text
        assert "Traceback" not in text and "File \"" not in text
        await pilot.press("enter")
        assert not isinstance(app.screen, ErrorModal)
        assert app._syncing is False and app.status.phase is None


async def test_client_text_is_literal_on_every_screen(tmp_path):
    from tui_fakes import FakeSession

    session = FakeSession(tmp_path, markup_names=True)
    session.write_cache()
    app = LinkdeskApp(session=session, clock=session.clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.main.inbox.link_list.row_count > 0, what="the inbox")
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")  # Active
        text = await see(pilot, app, "[bold red]x[/]")  # Client A's name, in the Client column
        await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket", "left_square_bracket")
        await see(pilot, app, "[link=https://e.com]y")  # Client B, All stage
        await pilot.press("enter")  # detail
        await see(pilot, app, "Link detail")
        await pilot.press("c")  # confirmation names the client literally
        text = await see(pilot, app, "Cancel invitation?")
        assert "[link=https://e.com]y" in text or "[bold red]x[/]" in text
        await pilot.press("n", "escape", "1")
        clients = app.main.clients.tree.root.children[1]
        await wait_until(pilot, lambda: not app.main.clients.tree.reading and len(clients.children) >= 2,
                         what="client customers")
        text = flat(screen_text(app))
        assert "[bold red]x[/]" in text and "[link=https://e.com]y" in text
        assert "\x1b" not in screen_text(app)


async def test_sync_progress_shows_and_esc_stops_it(tmp_path):
    from tui_fakes import FakeSession

    session = FakeSession(tmp_path, sync_delay=30)
    session.write_cache()
    app = LinkdeskApp(session=session, clock=session.clock)
    notes = Notes(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.status.phase is not None, what="the sync to start")
        text = await see(pilot, app, "esc stops")
        assert "Reading links" in text and "Stop sync" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.status.phase is None, what="the sync to stop")
        assert "Sync stopped" in notes.text()


async def test_keys_can_be_remapped_by_binding_id(fake_session):
    paths.write_config({"keymap": {"app.sync": "ctrl+r"}})
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause(0.2)
        assert fake_session.calls == []
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: fake_session.calls == [("sync",)], what="a sync")


async def test_invitation_form_checks_live_in_the_rules_words(fake_session):
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    notes = Notes(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, InvitationScreen), what="the form")
        form = app.screen
        text = await see(pilot, app, "Give the client account id or its number.")
        await pilot.press(*"3001")  # Client B's B1 has a pending invitation: named, with its status and date
        text = await see(pilot, app, "already has a link")
        assert "LinkPending" in text and "Oct 2025" in text
        form.query_one("#invite-client-id", Input).value = "3002"  # expired: may be invited again
        form.query_one("#invite-client-number", Input).value = "F3002"
        await see(pilot, app, "not both")
        form.query_one("#invite-client-number", Input).value = ""
        form.query_one("#invite-name", Input).value = "n" * 41
        text = await see(pilot, app, "at most 40 characters")
        assert "41/40" in text
        form.query_one("#invite-name", Input).value = "Contoso for B2"
        form.query_one("#invite-type", Select).value = "CustomerLink"
        await pilot.pause()
        assert not form.query_one("#invite-bill-row").display and form.query_one("#invite-permission-row").display
        form.query_one("#invite-type", Select).value = "AccountLink"
        form.query_one("#invite-bill-to", Select).value = "agency"
        text = await see(pilot, app, "Ready to send.")
        assert "takes over billing" in text
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the summary")
        await see(pilot, app, "Send this invitation?")
        await pilot.press("y")
        await wait_until(pilot, lambda: not isinstance(app.screen, (InvitationScreen, ConfirmationModal)),
                         what="the form to close")
        assert fake_session.links[next(k for k in fake_session.links if k.client_entity_id == 3002)].status \
            == S.LinkPending
        assert "Invitation sent" in notes.text()


@pytest.mark.parametrize("role_user", [13, 14])
async def test_read_only_roles_see_why_they_cannot_invite(fake_session, role_user):
    fake_session.switch_identity(role_user)
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, InvitationScreen), what="the form")
        text = await see(pilot, app, "Only a Super Admin or Standard User of Contoso Agency")
        assert "you are a" in text


async def test_a_sync_that_cannot_reach_the_service_says_offline_and_keeps_the_cache(tmp_path):
    from tui_fakes import FakeSession, ServiceUnavailable

    session = FakeSession(tmp_path)
    session.write_cache()  # the previous sync, at T0
    session.sync_error = ServiceUnavailable()
    app = LinkdeskApp(session=session, clock=session.clock)
    notes = Notes(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.status.online is False, what="the offline state")
        text = await see(pilot, app, "offline — showing cache from 3 Nov 14:05")
        assert "Needs action 1" in text  # the cache is still shown
        assert "not reachable" in notes.text()
        assert not isinstance(app.screen, ErrorModal)  # a failed sync is a notification, not a dialog


def test_run_without_a_profile_says_how_to_sign_in_or_start_the_demo(capsys):
    from linkdesk.tui.app import run

    assert run(None) == 1
    err = capsys.readouterr().err
    assert "linkdesk auth login" in err and "linkdesk demo" in err


async def test_start_up_draws_the_cached_inbox_before_creating_the_session_and_reports_its_timings(
        fake_session, tmp_path, monkeypatch):
    """The first frame already shows the inbox's first page from the cache; the session (simulator, SDK) is created
    only once it is on screen, and the clients tree only when it is first shown (1); $LINKDESK_TIMINGS receives
    each start-up milestone once, in order."""
    import json

    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv("LINKDESK_TIMINGS", str(timings))
    seen: dict[str, object] = {}
    cache = fake_session.cache()
    cache.meta_set("acting_user_id", str(fake_session.identity().user_id))  # as after a first run

    def factory():
        seen["rows_when_created"] = app.main.inbox.link_list.row_count
        seen["clients_when_created"] = app.main.clients_built
        return fake_session

    app = LinkdeskApp(factory, clock=fake_session.clock, home=fake_session.home, profile="demo", is_demo=True,
                      sync_on_start=False)
    emit = app.timings.emit

    def rows_at(event: str, **data: object) -> None:  # the rows the inbox holds when each milestone is reported
        if app.main is not None:
            seen.setdefault(f"rows_at_{event}", app.main.inbox.link_list.row_count)
        emit(event, **data)

    app.timings.emit = rows_at
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.session is fake_session and app.identity is not None
                         and "session_ready" in app.timings.seen, what="the session")
        assert seen["rows_at_first_frame"] > 0  # read before the first frame, not in a second one
        assert seen["rows_when_created"] > 0
        assert seen["clients_when_created"] is False  # not needed for the first frame
        assert not app.main.clients_built
        await see(pilot, app, "Account 3001")
        await pilot.press("1")
        await see(pilot, app, "Client customers")  # built and read from the cache when first shown
        assert app.main.clients_built
    events = [json.loads(line) for line in timings.read_text().splitlines()]
    assert [e["event"] for e in events] == ["app_init", "first_frame", "inbox_rows", "session_ready"], events
    times = [e["monotonic"] for e in events]
    assert times == sorted(times)
    rows = next(e for e in events if e["event"] == "inbox_rows")
    assert rows["rows"] > 0 and rows["cpu_s"] > 0


async def test_without_timings_variable_nothing_is_written(fake_session, tmp_path, monkeypatch):
    monkeypatch.delenv("LINKDESK_TIMINGS", raising=False)
    monkeypatch.chdir(tmp_path)
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "inbox_rows" in app.timings.seen, what="the inbox's first rows")
    assert not app.timings
    written = [p for p in tmp_path.rglob("*") if p.is_file() and b'"inbox_rows"' in p.read_bytes()]
    assert written == []


async def test_the_garbage_collector_is_frozen_once_when_the_session_is_ready(fake_session, monkeypatch):
    """What start-up built is moved out of the collector's reach once (tui/app.py, FREEZE_GC), not on every
    session-ready (an identity switch, say)."""
    import gc

    frozen: list[int] = []
    monkeypatch.setattr(LinkdeskApp, "FREEZE_GC", True)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "session_ready" in app.timings.seen, what="the session")
        app.post_message(SessionReady(fake_session))  # as after an identity switch's new session
        await pilot.pause()
    assert frozen == [1]


async def test_the_garbage_collector_paused_for_start_up_runs_again_once_the_rows_are_shown(fake_session):
    """``linkdesk`` and ``linkdesk demo`` pause the collector until the first frame with rows (see _pause_gc)."""
    import gc

    from linkdesk.tui.app import _pause_gc

    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    try:
        app._resume_gc = _pause_gc()
        assert not gc.isenabled()
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: "session_ready" in app.timings.seen, what="the session")
            assert gc.isenabled()
            assert not app._resume_gc
    finally:
        gc.enable()


async def test_the_progress_bar_is_built_when_a_sync_first_runs(fake_session):
    """Hidden until a sync runs, the status line's progress bar is not in the first frame's widgets; it is built and
    shown while one runs, hidden after, and shown again for the next."""
    from textual.widgets import ProgressBar

    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.main.inbox.link_list.row_count > 0, what="the inbox")
        status = app.screen.query_one("#status")
        assert not status.query(ProgressBar)
        app.status = app.status.with_(phase="accounts", done=3, total=10, message="Reading accounts")
        await wait_until(pilot, lambda: bool(status.query(ProgressBar)), what="the progress bar")
        await pilot.pause()
        bar = status.query_one(ProgressBar)
        assert bar.display and bar.progress == 3 and bar.total == 10
        assert [c.id for c in status.children] == ["status-parts", "status-progress", "status-message"]  # as before
        app.status = app.status.with_(phase=None, done=0, total=None, message="")
        await pilot.pause()
        assert not bar.display
        app.status = app.status.with_(phase="links", done=0, total=None, message="Reading links")
        await pilot.pause()
        assert status.query_one(ProgressBar) is bar and bar.display and bar.total is None


async def test_the_filter_field_is_built_when_the_filter_is_first_opened(fake_session):
    """Hidden at start, the filter's field is not in the first frame's widgets; / builds and focuses it, esc closes
    it (and escape goes on to the app again), / opens the same field again."""
    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.main.inbox.link_list.row_count > 0, what="the inbox")
        inbox = app.main.inbox
        assert not inbox.query("#inbox-filter")
        assert not inbox.check_action("close_filter", ())
        await pilot.press("slash")
        field = inbox.query_one("#inbox-filter", Input)
        assert field.display and field.has_focus
        assert inbox.check_action("close_filter", ())
        await pilot.press("escape")
        assert not field.display and inbox.link_list.has_focus
        assert not inbox.check_action("close_filter", ())
        await pilot.press("slash")
        assert inbox.query_one("#inbox-filter", Input) is field and field.display and field.has_focus


async def test_the_footer_draws_the_screens_keys_and_redraws_only_when_they_change(fake_session):
    """One widget for all the keys: redrawn when the shown keys change (the tree's keys), not on every refresh of
    the bindings; a click on a key presses it."""
    from linkdesk.tui.widgets.footer import Footer

    app = LinkdeskApp(session=fake_session, clock=fake_session.clock, sync_on_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.main.inbox.link_list.row_count > 0, what="the inbox")
        await pilot.pause()
        footer = app.screen.query_one(Footer)
        assert not footer.children
        keys, palette = footer.keys()
        assert [k.display for k in keys][:4] == ["⏎", "/", "]", "o"] and palette is not None
        assert "⏎ Open / Filter ] Next stage o Sort" in screen_text(app).splitlines()[-1]
        drawn = []
        footer.refresh = lambda *a, **k: drawn.append(1)  # type: ignore[method-assign]
        for _ in range(3):
            app.screen.refresh_bindings()
            await pilot.pause()
        assert drawn == []  # the same keys: nothing redrawn
        del footer.refresh
        await pilot.hover(Footer, offset=(3, 0))  # over "Open": that key is highlighted, its tooltip shown
        assert footer._hover is not None and footer._hover.description == "Open"
        assert footer.tooltip == "Open the selected link"
        await pilot.hover(Footer, offset=(6, 0))  # the space after "Open" (a margin, not a key): none
        assert footer._hover is None and footer.tooltip is None
        await pilot.click(Footer, offset=(0, 0))  # ⏎ Open
        await wait_until(pilot, lambda: app.screen is not app.main, what="the link's detail")
        await pilot.press("escape")
        await pilot.press("1")  # other keys (the tree's): redrawn
        await wait_until(pilot, lambda: "Link detail" in flat(screen_text(app)), what="the tree's keys")


