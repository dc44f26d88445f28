"""Whole journeys through the app, driven by keys with Pilot, against the real Session and the seeded simulator.

Each test starts from a copy of the synced demo world (seed 1, clock frozen at T0) and checks both what the screen
says and what the cache holds afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SIZE, Notes, flat, frozen, screen_text, see, settle, wait_until
from textual.widgets import Input, Select

from linkdesk.core.model import ClientLinkStatus as S, LinkKey, LinkType, Role
from linkdesk.tui.app import LinkdeskApp
from linkdesk.tui.screens.bulk import BulkInviteScreen
from linkdesk.tui.screens.confirm import ConfirmationModal
from linkdesk.tui.screens.invite import InvitationScreen

pytestmark = pytest.mark.slow

AGENCY = 251000001
WIDE_WORLD_EU = LinkKey(149000015, AGENCY, LinkType.AccountLink)  # LinkCanceled: may be invited again
TAILSPIN_ONLINE = LinkKey(149000010, AGENCY, LinkType.AccountLink)  # LinkPending
A1 = LinkKey(149000001, AGENCY, LinkType.AccountLink)  # Active
MARGIES_FLIGHTS = LinkKey(149000018, AGENCY, LinkType.AccountLink)  # LinkPending, 23 days left


def status(session, key: LinkKey):
    return session.cache().link(key).status


async def show_link(pilot, app, text: str) -> None:
    """Inbox, stage All, filter by ``text``: the link is the highlighted row."""
    await pilot.press("2")
    inbox = app.main.inbox
    for _ in range(6):
        if inbox.query_state.stage is None:
            break
        await pilot.press("left_square_bracket")
    assert inbox.query_state.stage is None
    await pilot.press("slash")
    inbox.query_one("#inbox-filter", Input).value = text
    await pilot.press("enter")
    await wait_until(pilot, lambda: inbox.settled and inbox.query_state.text == text and
                     inbox.link_list.row_count >= 1, what=f"a row matching {text!r}")


async def act_as(pilot, app, session, user_id: int) -> None:
    """Pick an identity in the 'Act as' dialog with the keyboard, then wait for the sync that follows."""
    await pilot.press("i")
    index = [i.user_id for i in session.identities()].index(user_id)
    current = [i.user_id for i in session.identities()].index(app.identity.user_id)
    step = "down" if index > current else "up"
    for _ in range(abs(index - current)):
        await pilot.press(step)
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.identity.user_id == user_id and not app._syncing, what="the switch")
    await settle(pilot, app)


async def advance(pilot, app, choice: str) -> None:
    """'+' then 1 (+6h), 2 (+1d) or 3 (+31d); waits for the sync that follows."""
    calls = len([m for m in app._test_notes.items if m[0] == "Simulator clock"])
    await pilot.press("plus", choice)
    await wait_until(pilot, lambda: len([m for m in app._test_notes.items if m[0] == "Simulator clock"]) > calls,
                     what="the clock to move")
    await wait_until(pilot, lambda: not app._syncing and app.status.phase is None, what="the sync after the clock")
    await settle(pilot, app)


async def confirm(pilot, app) -> None:
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the confirmation")
    await pilot.press("y")


def new_app(session) -> tuple[LinkdeskApp, Notes]:
    app = LinkdeskApp(session=session, clock=frozen, sync_on_start=False)
    notes = Notes(app)
    app._test_notes = notes
    return app, notes


async def test_invite_then_client_accepts_after_cooldown_and_link_becomes_active(demo_session):
    session = demo_session
    app, notes = new_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, InvitationScreen), what="the form")
        form = app.screen
        await pilot.press(*"149000015")
        form.query_one("#invite-bill-to", Select).value = "client"
        await pilot.pause()
        assert "Ready to send" in screen_text(app)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the summary")
        summary = flat(screen_text(app))
        assert "149000015" in summary and "keeps paying" in summary
        await pilot.press("y")
        await wait_until(pilot, lambda: not isinstance(app.screen, InvitationScreen), what="the form to close")
        assert status(session, WIDE_WORLD_EU) == S.LinkPending
        assert "Invitation sent" in notes.text()

        # The client (Wide World's Super Admin) cannot accept within 6 hours: the refusal says why and when.
        client = session.client_identity(WIDE_WORLD_EU)
        assert client is not None and client.role == Role.SuperAdmin
        await act_as(pilot, app, session, client.user_id)
        await show_link(pilot, app, "Wide World Imports EU")
        await pilot.press("a")
        await pilot.pause()
        assert "6 hours" in notes.text()
        assert status(session, WIDE_WORLD_EU) == S.LinkPending

        await advance(pilot, app, "1")  # +6 hours
        await show_link(pilot, app, "Wide World Imports EU")
        await pilot.press("a")
        await confirm(pilot, app)
        await wait_until(pilot, lambda: status(session, WIDE_WORLD_EU) != S.LinkPending, what="the acceptance")
        assert status(session, WIDE_WORLD_EU) in (S.LinkAccepted, S.LinkInProgress)

        await advance(pilot, app, "2")  # +1 day: the service completes the link
        assert status(session, WIDE_WORLD_EU) == S.Active
        await act_as(pilot, app, session, session.identities()[0].user_id)
        await show_link(pilot, app, "Wide World Imports EU")
        assert "Active" in screen_text(app)


async def test_cancel_a_pending_invitation(demo_session):
    app, notes = new_app(demo_session)
    async with app.run_test(size=SIZE) as pilot:
        await show_link(pilot, app, "Tailspin Online")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the confirmation")
        await see(pilot, app, "the client can no longer accept it")
        await pilot.press("y")
        await wait_until(pilot, lambda: status(demo_session, TAILSPIN_ONLINE) == S.LinkCanceled, what="the cancel")
        await settle(pilot, app)
        # The row moved to Ended; the timeline shows the change made by our own action.
        inbox = app.main.inbox
        assert inbox.link_list.highlighted.row.status == S.LinkCanceled
        await pilot.press("enter")
        await see(pilot, app, "Link detail")
        await pilot.press("end")
        text = await see(pilot, app, "Timeline")
        assert "LinkPending → LinkCanceled" in text


async def test_unlink_then_the_link_becomes_inactive(demo_session):
    app, notes = new_app(demo_session)
    async with app.run_test(size=SIZE) as pilot:
        await show_link(pilot, app, "A1")
        row = app.main.inbox.link_list.highlighted
        assert row.key == A1, row
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the confirmation")
        await see(pilot, app, "billing does not change")  # A1: the client pays already
        await pilot.press("y")
        await wait_until(pilot, lambda: status(demo_session, A1) != S.Active, what="the unlink request")
        assert status(demo_session, A1) in (S.UnlinkRequested, S.UnlinkPending, S.UnlinkInProgress)
        await advance(pilot, app, "2")
        assert status(demo_session, A1) == S.Inactive
        await show_link(pilot, app, "A1")
        assert app.main.inbox.link_list.highlighted.row.status == S.Inactive


async def test_pending_invitation_expires_after_31_days_and_is_reinvited(demo_session):
    app, notes = new_app(demo_session)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, "3")  # +31 days
        assert status(demo_session, MARGIES_FLIGHTS) == S.LinkExpired
        await show_link(pilot, app, "Margie's Flights")
        assert "LinkExpired" in screen_text(app)
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the confirmation")
        await see(pilot, app, "30 days")
        await pilot.press("y")
        await wait_until(pilot, lambda: status(demo_session, MARGIES_FLIGHTS) == S.LinkPending, what="re-invite")
        assert any("sent" in m.lower() for _, m, _ in notes.items)


async def test_a_viewer_is_told_why_an_action_is_refused(demo_session):
    app, notes = new_app(demo_session)
    viewer = next(i for i in demo_session.identities() if i.side == "agency" and i.role == Role.Viewer)
    async with app.run_test(size=SIZE) as pilot:
        await act_as(pilot, app, demo_session, viewer.user_id)
        await show_link(pilot, app, "Tailspin Online")
        await pilot.press("c")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmationModal)
        assert "Only a Super Admin or Standard User" in notes.text() and "Viewer" in notes.text()
        assert status(demo_session, TAILSPIN_ONLINE) == S.LinkPending
        # The detail screen says it too, next to the action.
        await pilot.press("enter")
        await pilot.pause(0.2)
        await see(pilot, app, "you are a Viewer")


async def test_bulk_csv_with_mixed_rows(demo_session, tmp_path: Path):
    csv = tmp_path / "invitations.csv"
    csv.write_text(
        "type,client_account_id,bill_to,name\n"
        "account,149000016,client,Wide World US again\n"  # expired before: ready
        "account,149000005,client,Northwind Retail\n"  # pending already: 1410, named
        "account,abc,client,Not an id\n"  # not a number
        "account,149000023,agency,Adventure Climbing\n",  # inactive before: ready, agency pays
        encoding="utf-8",
    )
    app, notes = new_app(demo_session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BulkInviteScreen), what="bulk mode")
        app.screen.query_one("#bulk-path", Input).value = str(csv)
        await pilot.press("enter")
        await pilot.pause(0.2)
        lines = app.screen._lines
        assert [line.state for line in lines] == ["ready", "problem", "problem", "ready"]
        assert "LinkPending" in lines[1].row.verdict
        assert "whole number" in lines[2].row.verdict or "not valid" in lines[2].row.verdict
        await see(pilot, app, "2 ready, 2 with problems")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmationModal), what="the confirmation")
        await see(pilot, app, "takes over billing")
        await pilot.press("y")
        await wait_until(pilot, lambda: all(line.result is not None for line in app.screen._lines
                                            if line.state in ("sent", "refused", "ready")) and
                         any(line.result is not None for line in app.screen._lines), what="per-row results")
        states = [line.state for line in app.screen._lines]
        assert states == ["sent", "problem", "problem", "sent"]
        assert status(demo_session, LinkKey(149000016, AGENCY)) == S.LinkPending
        assert status(demo_session, LinkKey(149000023, AGENCY)) == S.LinkPending
        await see(pilot, app, "Sent 2, refused 0")


async def test_start_offline_when_the_simulator_cannot_be_reached(demo_home):
    """The cache is drawn and labelled with its age; actions say they need the service; no traceback."""
    from linkdesk.core.session import SessionError

    def unreachable():
        raise SessionError("The built-in simulator could not start: address 127.0.0.1 refused the connection.")

    app = LinkdeskApp(unreachable, clock=frozen, home=demo_home, profile="demo", is_demo=True)
    notes = Notes(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.status.online is False, what="the offline state")
        text = screen_text(app)
        assert "offline — showing cache from 3 Nov 14:05" in text
        assert app.main.inbox.link_list.row_count > 0  # the cache is shown
        await show_link(pilot, app, "Tailspin Online")
        await pilot.press("c")
        await pilot.pause(0.2)
        assert "offline" in notes.text().lower()
        assert "Traceback" not in text
