#!/usr/bin/env python3
"""Export SVG screenshots of every linkdesk screen and its main states, in demo mode, for the README.

Each scene starts from the same seeded demo world (simulator seed 1, clock frozen at 3 Nov 2025 14:05 UTC, synced
once), drives the app with keys through Pilot, and saves what the terminal shows. The same scenes are the snapshot
tests (tests/tui/test_tui_snapshots.py), so every picture here is also a reviewed baseline.

    python scripts/export_screenshots.py            # writes screenshots/*.svg
    python scripts/export_screenshots.py --out DIR  # elsewhere
    python scripts/export_screenshots.py --only inbox,detail
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 11, 3, 14, 5, tzinfo=timezone.utc)
SIZE = (120, 36)

AGENCY = 251000001


def frozen() -> datetime:
    return T0


# ------------------------------------------------------------------------------------------------------------------
# The demo world and the app
# ------------------------------------------------------------------------------------------------------------------


def make_template(home: Path) -> Path:
    """Seed the demo world at T0 into ``home`` and sync it once."""
    from linkdesk.core.session import Session

    session = Session.demo(home=home, fresh=True, clock=frozen)
    try:
        result = session.sync()
        if not result.ok:
            raise SystemExit(f"The demo world could not be synced: {result.message}")
    finally:
        session.close()
    return home


def make_app(home: Path) -> tuple[Any, Any]:
    """The app on a session over ``home`` (a copy of the template), with no sync on start: deterministic frames."""
    from linkdesk.core.session import Session
    from linkdesk.tui.app import LinkdeskApp

    session = Session.demo(home=home, clock=frozen)
    return LinkdeskApp(session=session, clock=frozen, sync_on_start=False), session


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the app did not reach the expected state in time")
        await pilot.pause(0.05)
    await pilot.pause()


async def settle(pilot: Any, *, keep_notifications: bool = False) -> None:
    """Let workers and animations finish; stop cursors blinking; drop toasts unless the scene is about one."""
    from textual.widgets import Input

    app = pilot.app
    await wait_until(pilot, lambda: not app._syncing and app.main.inbox.settled  # noqa: SLF001
                     and not (app.main.clients_built and app.main.clients.tree.reading)
                     and not any(w.is_running or w.state.name == "PENDING" for w in app.workers))
    for field in app.screen.query(Input):
        field.cursor_blink = False
    if not keep_notifications:
        app.clear_notifications()
    # The stage tabs' underline slides when the stage changes: a frame taken mid-slide differs from run to run.
    await pilot.wait_for_scheduled_animations()
    await app.animator.wait_until_complete()
    await pilot.pause(0.1)


async def inbox_filter(pilot: Any, text: str) -> None:
    from textual.widgets import Input

    app = pilot.app
    await pilot.press("2")
    for _ in range(6):
        if app.main.inbox.query_state.stage is None:
            break
        await pilot.press("left_square_bracket")
    await pilot.press("slash")
    app.main.inbox.query_one("#inbox-filter", Input).value = text
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.main.inbox.settled and app.main.inbox.query_state.text == text)


async def act_as(pilot: Any, user_name: str) -> None:
    app = pilot.app
    ids = [i.user_id for i in app.session.identities()]
    target = next(i.user_id for i in app.session.identities() if i.user_name == user_name)
    await pilot.press("i")
    await pilot.pause()
    steps = ids.index(target) - ids.index(app.identity.user_id)
    for _ in range(abs(steps)):
        await pilot.press("down" if steps > 0 else "up")
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.identity.user_id == target and not app._syncing)  # noqa: SLF001
    await wait_until(pilot, lambda: app.status.phase is None)


# ------------------------------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    name: str
    about: str
    drive: Callable[[Any], Awaitable[None]]

    async def run(self, pilot: Any) -> None:
        """Start from the settled first frame (inbox page loaded, list focused), then drive the scene. What a key
        does, and which keys the help screen lists as available, depend on focus and selection, so no scene may
        race the first page."""
        await settle(pilot)
        await self.drive(pilot)


async def _inbox(pilot: Any) -> None:
    await settle(pilot)


async def _inbox_all(pilot: Any) -> None:
    await pilot.press("left_square_bracket", "j", "j", "j")
    await settle(pilot)


async def _inbox_filtered(pilot: Any) -> None:
    await inbox_filter(pilot, "north")
    await pilot.press("j")
    await settle(pilot)


async def _inbox_received(pilot: Any) -> None:
    await act_as(pilot, "admin@northwind.example")
    await settle(pilot)


async def _clients(pilot: Any) -> None:
    app = pilot.app
    await pilot.press("1")
    tree = app.main.clients.tree
    await wait_until(pilot, lambda: len(tree.root.children) == 2 and len(tree.root.children[1].children) > 0
                     and not tree.reading)
    margies = next(n for n in tree.root.children[1].children if n.data.item.name == "Margie's Travel")
    margies.expand()
    await wait_until(pilot, lambda: len(margies.children) > 0 and not tree.reading)
    tree.move_cursor(margies.children[1])
    await settle(pilot)


async def _detail_pending(pilot: Any) -> None:
    await inbox_filter(pilot, "Northwind Seasonal")
    await pilot.press("enter")
    await settle(pilot)


async def _detail_waiting(pilot: Any) -> None:
    await inbox_filter(pilot, "Tailspin Kids")
    await pilot.press("enter")
    await settle(pilot)


async def _confirm_unlink(pilot: Any) -> None:
    await inbox_filter(pilot, "A2")
    await pilot.press("u")
    await settle(pilot)


async def _viewer_refused(pilot: Any) -> None:
    await act_as(pilot, "user.b@contoso.example")
    await inbox_filter(pilot, "Tailspin Online")
    pilot.app.clear_notifications()
    await pilot.press("c")
    await settle(pilot, keep_notifications=True)


async def _invite_duplicate(pilot: Any) -> None:
    from textual.widgets import Input

    await pilot.press("n")
    await pilot.pause()
    pilot.app.screen.query_one("#invite-client-id", Input).value = "149000005"
    pilot.app.screen.query_one("#invite-name", Input).value = "Northwind Retail, managed by Contoso Agency Ltd"
    await settle(pilot)


async def _invite_summary(pilot: Any) -> None:
    from textual.widgets import Input, Select

    await pilot.press("n")
    await pilot.pause()
    screen = pilot.app.screen
    screen.query_one("#invite-client-id", Input).value = "149000015"
    screen.query_one("#invite-bill-to", Select).value = "agency"
    screen.query_one("#invite-note", Input).value = "Welcome back: we take over billing from next month."
    await pilot.pause()
    await pilot.press("ctrl+s")
    await settle(pilot)


async def _bulk(pilot: Any) -> None:
    from textual.widgets import Input

    csv = Path(tempfile.gettempdir()) / "linkdesk-invitations.csv"
    csv.write_text("type,client_account_id,bill_to,name\n"
                   "account,149000016,client,Wide World US\n"
                   "account,149000005,client,Northwind Retail\n"
                   "account,abc,client,Not an id\n"
                   "account,149000023,agency,Adventure Works Climbing\n"
                   "customer,251000107,,Adventure Works (all accounts)\n", encoding="utf-8")
    await pilot.press("b")
    await pilot.pause()
    pilot.app.screen.query_one("#bulk-path", Input).value = str(csv)
    await pilot.press("enter")
    await pilot.press("j")
    await settle(pilot)


async def _help(pilot: Any) -> None:
    await pilot.press("question_mark")
    await settle(pilot)


async def _identity(pilot: Any) -> None:
    await pilot.press("i")
    await settle(pilot)


async def _palette(pilot: Any) -> None:
    await inbox_filter(pilot, "Margie's Hotels")
    await pilot.press("ctrl+p")
    await pilot.pause(0.3)
    for key in "unl":
        await pilot.press(key)
    await pilot.pause(0.3)
    await settle(pilot)


SCENES: tuple[Scene, ...] = (
    Scene("inbox", "Link inbox: the agency's invitations that need action (expiring within 7 days)", _inbox),
    Scene("inbox-all", "Link inbox: every stage, newest change first", _inbox_all),
    Scene("inbox-filter", "Link inbox: filtered by text", _inbox_filtered),
    Scene("inbox-received", "Link inbox as a client's Super Admin: received invitations", _inbox_received),
    Scene("clients", "Clients tree: users and their reach, client customers and their accounts' links", _clients),
    Scene("detail-pending", "Link detail: a pending invitation, what can be done and by whom", _detail_pending),
    Scene("detail-waiting", "Link detail: a link being set up, and why it waits", _detail_waiting),
    Scene("confirm-unlink", "Confirmation of an unlink, with its billing consequence", _confirm_unlink),
    Scene("viewer-refused", "A Viewer's refused action, explained", _viewer_refused),
    Scene("invite-duplicate", "Invitation form: live checks name the existing invitation", _invite_duplicate),
    Scene("invite-summary", "Invitation summary: who pays, then send", _invite_summary),
    Scene("bulk", "Bulk invitations: dry run with a verdict per row", _bulk),
    Scene("help", "Help: keys and what the screen shows", _help),
    Scene("identity", "Demo: act as any user of the simulated world", _identity),
    Scene("palette", "Command palette: the actions that apply now", _palette),
)


# ------------------------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------------------------


async def _shoot(scene: Scene, home: Path, out: Path) -> Path:
    app, session = make_app(home)
    target = out / f"{scene.name}.svg"
    try:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await pilot.pause()
            await scene.run(pilot)
            await pilot.wait_for_scheduled_animations()
            target.write_text(app.export_screenshot(title=f"linkdesk — {scene.about}"), encoding="utf-8")
    finally:
        session.close()
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the SVG files")
    parser.add_argument("--only", default="", help="comma-separated scene names (default: all)")
    args = parser.parse_args(argv)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {s.name for s in SCENES}
    if unknown:
        parser.error(f"unknown scene(s): {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in SCENES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="linkdesk-shots-") as tmp:
        os.environ["LINKDESK_HOME"] = str(Path(tmp) / "config-home")  # never the user's data, config or keymap
        template = make_template(Path(tmp) / "template")
        for scene in SCENES:
            if wanted and scene.name not in wanted:
                continue
            home = Path(tmp) / scene.name
            shutil.copytree(template, home)
            path = asyncio.run(_shoot(scene, home, args.out))
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {scene.about}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
