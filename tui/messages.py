"""Messages the views post up to the app (intents), so no widget reaches across the app."""

from __future__ import annotations

from textual.message import Message

from linkdesk.core.model import ClientLink, LinkKey
from linkdesk.core.rules import Action


class LinkActionRequested(Message):
    """The user asked for an action (cancel, unlink, re-invite, accept, decline) on a link."""

    def __init__(self, action: Action, key: LinkKey) -> None:
        super().__init__()
        self.action = action
        self.key = key


class OpenLink(Message):
    """Show the detail screen of a link."""

    def __init__(self, key: LinkKey) -> None:
        super().__init__()
        self.key = key


class InviteRequested(Message):
    """Open the invitation form, optionally filled in (an account chosen in the tree)."""

    def __init__(self, draft: ClientLink | None = None) -> None:
        super().__init__()
        self.draft = draft
