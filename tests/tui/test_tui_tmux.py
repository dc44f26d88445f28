"""`linkdesk demo` in a real terminal: tmux runs it, we send keys and read the pane like a person would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TMUX = shutil.which("tmux")


class Pane:
    """One tmux session on a private server socket (so nothing else's tmux is touched)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        out = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        return out.stdout

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def send(self, *keys: str) -> None:
        for key in keys:  # one at a time: ESC followed by a key would read as alt+key
            self.tmux("send-keys", "-t", "t", key)
            time.sleep(0.3)

    def press_until(self, key: str, *texts: str, gone: str | None = None, tries: int = 5) -> str:
        """Press ``key`` until ``texts`` show (and ``gone`` is gone): a terminal may drop a key sent while the
        app is busy redrawing, as a person would just press it again."""
        for _ in range(tries):
            self.send(key)
            try:
                screen = self.wait_for(*texts, timeout=3.0)
            except AssertionError:
                continue
            if gone is None or gone not in screen:
                return screen
        return self.wait_for(*texts, timeout=1.0)

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.text()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts!r} did not appear; the pane shows:\n{screen}")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed; this test needs a real terminal multiplexer")
def test_linkdesk_demo_in_a_real_terminal(demo_home: Path, tmp_path: Path):
    linkdesk = Path(sys.executable).parent / "linkdesk"
    assert linkdesk.exists(), "the linkdesk console script is not installed next to this Python"
    socket = f"linkdesk-test-{tmp_path.name}"
    pane = Pane(socket)
    # COLUMNS/LINES from the test runner would override the real terminal size: drop them.
    command = (f"env -u COLUMNS -u LINES LINKDESK_HOME={demo_home} TERM=xterm-256color {linkdesk} demo; "
               "echo EXIT=$?; sleep 30")
    # A detached session is 80x24 unless the window size is fixed before the app starts.
    subprocess.run([TMUX, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "36",
                    "sleep 60"], check=True, timeout=20)
    try:
        pane.tmux("set-option", "-s", "escape-time", "0")  # else tmux turns "Escape, q" into alt+q
        pane.tmux("set-option", "-t", "t", "window-size", "manual")
        pane.tmux("resize-window", "-t", "t", "-x", "120", "-y", "36")
        pane.tmux("respawn-pane", "-k", "-t", "t", command)
        # First frame from the cache, then the background sync; the status line says how fresh the cache is.
        screen = pane.wait_for("Needs action", "DEMO", "admin@contoso.example", "synced just now")
        assert "All 26" in screen and "Last change" in screen  # 120 columns wide: every column is there

        pane.press_until("1", "Contoso Agency", "Client customers")
        pane.wait_for("[bold red]Markup[/] & Co")  # client text shown literally, once the page has loaded

        pane.press_until("2", "Last change")
        pane.press_until("[", "All 26", "Account / customer")  # stage: All
        pane.press_until("/", "Filter by client")
        pane.send(*"Tailspin")
        screen = pane.wait_for("Tailspin Online", "Tailspin Stores")
        assert "Tailspin" in screen.splitlines()[3]  # the filter line shows what was typed
        assert "Northwind" not in screen
        pane.press_until("Enter", "Tailspin Online")
        pane.press_until("Enter", "Link detail", "What you can do now", "Who pays")

        pane.press_until("Escape", "Last change", gone="Link detail")
        pane.press_until("?", "Help — Link inbox", "Keys")
        pane.press_until("Escape", "Last change", gone="Help — Link inbox")
        pane.send("q")
        screen = pane.wait_for("EXIT=0")
        assert "Traceback" not in screen
    finally:
        pane.tmux("kill-server")
