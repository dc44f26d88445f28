"""Untrusted text made safe, and the small formatting helpers (pure functions, no app)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rich.console import Console

from linkdesk.tui.text import action_billing, ago, clean, days_left_text, literal, short_date, short_span

NOW = datetime(2025, 11, 3, 14, 5, tzinfo=timezone.utc)


def render(text) -> str:
    console = Console(width=200, color_system=None, file=open("/dev/null", "w"), record=True)
    console.print(text)
    return console.export_text().rstrip("\n")


def test_markup_is_shown_verbatim():
    for value in ("[bold red]x[/]", "[link=https://e.com]y", "[/]", "[@click=app.quit]q[/]"):
        assert render(literal(value)) == value


def test_escape_sequences_and_controls_are_removed():
    assert clean("A2 \x1b[31mred\x1b[0m") == "A2 red"
    assert clean("title\x1b]0;pwned\x07 ok") == "title ok"  # OSC with BEL
    assert clean("link\x1b]8;;https://e.com\x1b\\here\x1b]8;;\x1b\\") == "linkhere"  # OSC 8 hyperlink
    assert clean("bell\x07 nul\x00 del\x7f c1\x9b31m") == "bell nul del c1"
    assert clean("tab\tand\nnewline") == "tab and newline"


def test_bidi_overrides_and_invisible_characters_are_removed():
    assert clean("abc\u202edcba\u202c") == "abcdcba"
    assert clean("zero\u200bwidth\ufeff") == "zerowidth"
    assert clean("iso\u2066late\u2069") == "isolate"


def test_lone_surrogates_and_carriage_returns_cannot_break_the_terminal():
    shown = clean("Acme\ud800 Ltd\rline")
    assert shown == "Acme\ufffd Ltd line"
    shown.encode("utf-8")  # a lone surrogate would raise here, and in the terminal driver


def test_long_text_is_cut_with_an_ellipsis():
    out = clean("x" * 5000, max_chars=100)
    assert len(out) == 100 and out.endswith("…")


def test_newlines_kept_only_when_asked():
    assert clean("a\nb", keep_newlines=True) == "a\nb"
    assert clean("a\r\nb\x1b[2J", keep_newlines=True) == "a\nb"


def test_times_for_people():
    assert ago(NOW - timedelta(minutes=3), NOW) == "3 min ago"
    assert ago(NOW - timedelta(seconds=5), NOW) == "just now"
    assert ago(NOW - timedelta(days=1, hours=2), NOW) == "1 day ago"
    assert ago(NOW - timedelta(days=40), NOW) == "on 24 Sep 2025"
    assert ago(None, NOW) == "never"
    assert short_date(datetime(2025, 11, 2, 14, 5, tzinfo=timezone.utc), NOW) == "2 Nov 14:05"
    assert short_date(datetime(2024, 11, 2, 14, 5, tzinfo=timezone.utc), NOW) == "2 Nov 2024"
    assert short_span(timedelta(days=3, hours=5)) == "3d"
    assert days_left_text(0) == "today" and days_left_text(-1) == "expired" and days_left_text(12) == "12d"
    assert days_left_text(None) == ""


def test_billing_sentences_depend_on_who_pays_and_the_action():
    assert "does not change" in action_billing("unlink", True)
    assert "paused for up to 3 hours" in action_billing("unlink", False)
    assert "takes over billing" in action_billing("accept", False, agency="Contoso Agency")
    assert "You keep paying" in action_billing("accept", True)
    assert action_billing("cancel", True) == ""
    assert action_billing("unlink", None) == ""
