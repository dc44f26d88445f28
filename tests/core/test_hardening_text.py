"""Issue 7.6: untrusted text — names and notes holding Rich markup, ANSI/OSC escape sequences, C0/C1 controls, bidi
overrides, zero-width characters, formulas and very long strings — appear literally and safely in `linkdesk links`
(table, json, csv), `linkdesk history` and the CLI's messages. Hostile text arrives two ways: from the service (the
simulator's state, through SOAP and a sync) and written straight into the cache (as an older version or another tool
might have)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import unicodedata

import pytest

from linkdesk.core import cli

HOSTILE = {
    "markup": "[bold red]ALERT[/] [link=https://evil.example]pay here[/link]",
    "ansi": "\x1b[2J\x1b[31mred\x1b[0m",
    "osc8": "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "osc52": "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "c1": "\x9b31mC1 CSI \x9d0;title\x9c",
    "bidi": "invoice\u202egnp.exe\u2066x\u2069",
    "zero width": "pay\u200bpal\ufeff\u2060",
    "separators": "a\u2028b\u2029c\x85d",
    "long": "L" * 20_000,
    "formula": '=HYPERLINK("http://evil.example","x")',
    "plus": "+cmd|' /C calc'!A0",
    "minus": "-2+3+cmd|' /C calc'!A0",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
    "newline": "line one\nline two",
    "del": "a\x7fb\x00c",
}
FORMULAS = {"formula", "plus", "minus", "at", "tab", "cr"}
#: What a terminal would act on if it came through raw.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co"}


def unsafe_chars(text: str, allowed: str = "\n") -> set[str]:
    return {f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) in UNSAFE_CATEGORIES and ch not in allowed}


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """A demo home whose simulator serves hostile names and notes, synced; then hostile text straight in the cache."""
    import os

    home = tmp_path_factory.mktemp("hostile")
    old = os.environ.get("LINKDESK_HOME")
    os.environ["LINKDESK_HOME"] = str(home)
    try:
        assert cli.main(["sync", "--demo"]) == 0
        sim_db = home / "demo" / "simulator.sqlite"
        with sqlite3.connect(sim_db) as c:
            agency = c.execute("SELECT id FROM customers WHERE side = 'agency' ORDER BY id").fetchone()[0]
            links = c.execute("SELECT id, client_entity_id FROM client_links WHERE managing_customer_id = ? AND "
                              "type = 'AccountLink' ORDER BY id", (agency,)).fetchall()
            values = list(HOSTILE.values())
            for n, (row_id, account) in enumerate(links[:len(values)]):
                c.execute("UPDATE client_links SET name = ?, note = ? WHERE id = ?", (values[n], values[-1 - n],
                                                                                       row_id))
                c.execute("UPDATE accounts SET name = ? WHERE id = ?", (values[n], account))
        assert cli.main(["sync", "--demo"]) == 0  # through SOAP: what XML cannot carry arrives as U+FFFD
        with sqlite3.connect(home / "demo" / "cache.sqlite") as c:
            # raw, as if written by another tool, on links the service did not make hostile (so both copies stay)
            rows = c.execute(f"SELECT id FROM client_links WHERE coalesce(name, '') NOT IN "
                             f"({','.join('?' * len(values))}) ORDER BY id", values).fetchall()
            for n, (row_id,) in enumerate(rows):
                c.execute("UPDATE client_links SET client_entity_name = ?, managing_customer_name = ?, name = ?, "
                          "note = ? WHERE id = ?", (values[n % len(values)], values[-1 - n % len(values)],
                                                    values[n % len(values)], values[-1 - n % len(values)], row_id))
        yield home
    finally:
        if old is None:
            os.environ.pop("LINKDESK_HOME", None)
        else:
            os.environ["LINKDESK_HOME"] = old


@pytest.fixture
def shown(hostile_home, monkeypatch, capsys):
    monkeypatch.setenv("LINKDESK_HOME", str(hostile_home))

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert code == 0, err
        assert not unsafe_chars(err), unsafe_chars(err)
        return out

    return run


def test_the_table_shows_hostile_text_literally_on_one_line_each(shown):
    out = shown("links", "--demo")
    lines = out.splitlines()
    assert not unsafe_chars(out), unsafe_chars(out)
    assert "[bold red]ALERT[/]" in out and "\x1b" not in out and "\x9b" not in out
    data_rows = json.loads(shown("links", "--demo", "--format", "json"))["count"]
    assert len(lines) == data_rows + 1  # no name broke a line
    assert max(cli._width(l) for l in lines) < 220  # 20,000 characters were shortened with an ellipsis
    assert "LLLL…" in out


def test_json_keeps_every_string_exactly_and_escapes_what_a_terminal_would_act_on(shown):
    out = shown("links", "--demo", "--format", "json")
    assert not unsafe_chars(out), unsafe_chars(out)
    doc = json.loads(out)
    texts = {v for link in doc["links"] for v in (link["client_entity_name"], link["managing_customer_name"],
                                                  link["name"], link["note"]) if v}
    for name, value in HOSTILE.items():
        assert value in texts, name  # lossless: json.loads gives back the very characters
    assert any("\ufffd[2J" in t for t in texts)  # the copy that came through SOAP (ESC is not XML)
    assert any(t.startswith("\x9b31mC1") for t in texts) and HOSTILE["bidi"] in texts  # legal in XML: raw


def test_csv_neutralises_formulas_and_terminal_controls(shown):
    out = shown("links", "--demo", "--format", "csv")
    # CSV is data: zero-width characters and line separators stay (harmless), what a terminal or a spreadsheet would
    # act on does not: C0 controls but tab and line breaks, DEL, C1 controls, bidi embeddings/overrides/isolates.
    active = {f"U+{ord(ch):04X}" for ch in out if (ord(ch) < 0x20 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0
              or 0x202A <= ord(ch) <= 0x202E or 0x2066 <= ord(ch) <= 0x2069}
    assert not active, active
    rows = list(csv.reader(io.StringIO(out, newline="")))
    header, body = rows[0], rows[1:]
    assert header == list(cli.LINK_FIELDS)
    cells = [c for r in body for c in r]
    for c in cells:
        assert not c.startswith(("=", "+", "-", "@", "\t", "\r")), c  # never evaluated by a spreadsheet
    for name in FORMULAS:
        assert "'" + HOSTILE[name] in cells, name
    assert HOSTILE["markup"] in cells and HOSTILE["long"] in cells and HOSTILE["newline"] in cells
    assert any(c.startswith("invoice\ufffdgnp.exe") for c in cells)  # the override cannot reorder the cell
    for r in body:
        assert len(r) == len(header)


def test_history_and_messages_are_safe(shown, hostile_home):
    with sqlite3.connect(hostile_home / "demo" / "cache.sqlite") as c:
        entity = c.execute("SELECT client_entity_id FROM client_links WHERE client_entity_name = ?",
                           (HOSTILE["ansi"],)).fetchone()[0]
    out = shown("history", "--demo", str(entity))
    assert not unsafe_chars(out) and "[2J" in out and "\x1b" not in out
    out = shown("links", "--demo", "--text", "[bold red]ALERT")
    assert "[bold red]ALERT" in out and not unsafe_chars(out)


def test_error_messages_never_carry_raw_escapes(hostile_home, monkeypatch, capsys):
    monkeypatch.setenv("LINKDESK_HOME", str(hostile_home))
    code = cli.main(["history", "--demo", "\x1b]52;c;evil\x07nothing-like-this"])
    out, err = capsys.readouterr()
    assert code == 1 and "\x1b" not in err and "\x07" not in err and not unsafe_chars(err)


@pytest.mark.parametrize("value, cell", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("\x1b[31m=", "\ufffd[31m="), ("\x9b1m", "\ufffd1m"), ("a\u202eb", "a\ufffdb"), ("rtl \u200f mark", "rtl \u200f mark"),
    ("plain", "plain"), (5, 5), (None, None), ("é😀", "é😀"),
])
def test_csv_cell(value, cell):
    assert cli.csv_cell(value) == cell


def test_shortening_is_linear_even_for_huge_and_zalgo_text():
    import time

    # 200,000 characters: ~0.25 s when linear (the cost of the bound below is the machine's load, not the size);
    # the quadratic version took 35 s for 20,000 characters, so it would take about an hour here.
    t = time.perf_counter()
    assert cli.safe_text("L" * 200_000, 32) == "L" * 31 + "…"
    zalgo = cli.safe_text("Z" + "\u0301" * 100_000, 32)
    assert len(zalgo) == 128 and zalgo.endswith("…")
    assert time.perf_counter() - t < 5


def test_json_text_escapes_beyond_the_basic_plane_as_surrogate_pairs():
    doc = {"a": "\U000e0001 tag \U000f0000 private \ud800 lone \x7f del é 😀"}
    text = cli.json_text(doc)
    assert json.loads(text) == doc and not unsafe_chars(text) and "é 😀" in text
