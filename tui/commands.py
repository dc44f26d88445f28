"""The command palette (ctrl+p): every action that applies now, from one list the app builds.

Titles may name client text (an identity's user name), so they are passed as ``Text`` and help lines are escaped:
the palette parses plain strings as markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from .text import clean


@dataclass(frozen=True)
class PaletteCommand:
    """One palette entry: a title (what it does), a help line (when and why), and what to call."""

    title: str
    help: str
    callback: Callable[[], Any]


class LinkdeskCommands(Provider):
    """Offers ``app.palette_commands(screen)``: only what applies on the current screen, for the acting user."""

    def _commands(self) -> list[PaletteCommand]:
        provider = getattr(self.app, "palette_commands", None)
        return list(provider(self.screen)) if provider is not None else []

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(Text(clean(command.title)), command.callback, text=command.title,
                               help=escape(clean(command.help)))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            title = clean(command.title)
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, _highlight(matcher, title), command.callback, text=title,
                          help=escape(clean(command.help)))


def _highlight(matcher: Any, title: str) -> Text:
    """The title with the matched letters underlined (``Matcher.highlight`` would parse the title as markup)."""
    text = Text(title)
    _, offsets = matcher.fuzzy_search.match(matcher.query, title)
    for offset in offsets:
        if not title[offset].isspace():
            text.stylize("bold underline", offset, offset + 1)
    return text
