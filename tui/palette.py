"""Rich styles from the current Textual theme, for labels built as ``Text`` (tree nodes, detail fields)."""

from __future__ import annotations

from rich.style import Style
from textual.app import App

from linkdesk.core import rules
from linkdesk.core.model import ClientLinkStatus, Stage

_cache: dict[tuple[int, str], dict[str, Style]] = {}

_VARIABLES = {
    Stage.NEEDS_ACTION.value: ("text-warning", True),
    Stage.PENDING.value: ("foreground", False),
    Stage.IN_PROGRESS.value: ("text-primary", False),
    Stage.ACTIVE.value: ("text-success", False),
    Stage.ENDED.value: ("", False),
    "urgent": ("text-error", True),
    "muted": ("", False),
    "badge": ("text-accent", True),
}


def styles(app: App) -> dict[str, Style]:
    """Styles by stage value and a few names ('urgent', 'muted', 'badge'), for the app's current theme."""
    key = (id(app), app.theme)
    found = _cache.get(key)
    if found is None:
        variables = app.get_css_variables()
        found = {}
        for name, (variable, bold) in _VARIABLES.items():
            color = variables.get(variable, "") if variable else ""
            if color.startswith("#"):
                found[name] = Style(color=color[:7], bold=bold)
            else:  # no variable, or one that is not a plain colour ("auto 60%"): dim text
                found[name] = Style(dim=True, bold=bold)
        _cache[key] = found
    return found


def status_stage(status: ClientLinkStatus | str | None) -> str:
    """The stage class of a status as a tree or a detail field colours it (an agency's view, ignoring time)."""
    if status is None:
        return "muted"
    if status in rules.ENDED:
        return Stage.ENDED.value
    if status in rules.ACTIVE_LIKE:
        return Stage.ACTIVE.value
    if status == ClientLinkStatus.LinkPending:
        return Stage.PENDING.value
    return Stage.IN_PROGRESS.value
