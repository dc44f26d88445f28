"""Actions on client links: invite (one or many), cancel, unlink, accept, decline, re-invite.

Every action follows the same path, so nothing invalid is ever sent and nothing is lost:

1. **Check** with ``core.rules`` (the single source of truth), using what the cache knows (existing links of the same
   client, prepaid accounts, the invitation time). A refused action returns its violations in the rules' words.
2. **Record the intent** in the cache's ``link_events`` before sending (kind ``intent``), so an interrupted run can be
   reconciled with the service afterwards instead of sending twice.
3. **Send** through the API adapter: invitations in batches of 10, each per-link error mapped back to its input;
   updates send the whole link back as it was read, with the new Status (full-update semantics, Timestamp verbatim).
4. **Re-sync** the touched links (source ``action:<name>``), so every status change lands in the timeline, and
   **record the outcome** (kind ``outcome``).

On 209 (the link changed since it was read) the link is read again and the result says what changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from . import rules
from .model import Actor, ClientLink, LinkKey, LinkType
from .rules import Action, Violation

if TYPE_CHECKING:
    from .api import ApiError, CustomerManagementApi, OperationError
    from .cache import Cache

#: Links per AddClientLinks call (design decision 6).
BATCH = rules.BATCH_MAX

_PAST = {
    Action.CANCEL: "Invitation canceled",
    Action.UNLINK: "Unlink requested",
    Action.ACCEPT: "Invitation accepted",
    Action.DECLINE: "Invitation declined",
    Action.REINVITE: "Invitation sent again",
}


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one action (or of one invitation of a batch).

    ``ok``: the service accepted it. ``key``: the link's identity when known. ``message``: one or two sentences for
    people. ``violations``: the rules (or the service) refusing it, each with its field and code. ``link``: the link as
    read back from the service afterwards (None when it could not be read).
    """

    ok: bool
    key: LinkKey | None
    message: str
    violations: list[Violation] = field(default_factory=list)
    link: ClientLink | None = None


InviteProgress = Callable[[int, int], None]  # (links handled so far, total)


@dataclass
class ActionContext:
    """What an action needs: the API client to send with, the cache, who acts, and the clock."""

    api: "CustomerManagementApi"
    cache: "Cache"
    actor: Actor
    clock: Callable[[], datetime]


# --------------------------------------------------------------------------------------------------------------------
# Looking links up in the cache
# --------------------------------------------------------------------------------------------------------------------


def with_defaults(draft: ClientLink, actor: Actor) -> ClientLink:
    """The draft as it will be sent: the managing customer defaults to the actor's customer."""
    if draft.managing_customer_id is None and draft.managing_customer_number is None:
        draft = draft.replace(managing_customer_id=actor.customer_id)
    if draft.type is None:
        draft = draft.replace(type=LinkType.AccountLink)
    return draft


def links_by_number(cache: "Cache", customer_id: int, number: str, now: datetime,
                    link_type: LinkType | None = None) -> list[ClientLink]:
    """Cached links whose client entity has this number (exact, case-insensitive), seen from ``customer_id``."""
    wanted = number.strip().lower()
    out = []
    for row in cache.inbox_page(customer_id=customer_id, text=number.strip(), limit=500, now=now):
        if (row.client_entity_number or "").lower() == wanted and (link_type is None or row.type == link_type):
            link = cache.link(row.key)
            if link is not None:
                out.append(link)
    return out


def transport_problems(draft: ClientLink) -> list[Violation]:
    """Text the SOAP envelope cannot carry (control characters such as a pasted terminal escape).

    Kept for callers of earlier versions: ``rules.check_new_invitation`` and ``rules.check_update`` now refuse such
    names and notes themselves (and client numbers must be letters and digits)."""
    out = []
    for attr, wire, what in (("name", "Name", "link name"), ("note", "Note", "note"),
                             ("client_entity_number", "ClientEntityNumber", "client number")):
        found = rules.text_violation(wire, getattr(draft, attr), what)
        if found is not None and isinstance(getattr(draft, attr), str):
            out.append(found)
    return out


def check_invitation(cache: "Cache", actor: Actor, draft: ClientLink, now: datetime) -> list[Violation]:
    """Every rule a new invitation breaks, with the cache's context (no network)."""
    draft = with_defaults(draft, actor)
    link_type = draft.link_type if isinstance(draft.type, LinkType) or draft.type is None else None
    existing: list[ClientLink] = []
    client_account = None
    if rules.valid_id(draft.client_entity_id):  # anything else is refused by the rules; no lookup with it
        existing = cache.links_for_entity(draft.client_entity_id, link_type)
        if link_type == LinkType.AccountLink:
            client_account = cache.account(draft.client_entity_id)
    elif rules.valid_number(draft.client_entity_number.strip() if isinstance(draft.client_entity_number, str)
                            else None):
        existing = links_by_number(cache, actor.customer_id, draft.client_entity_number, now, link_type)
    return rules.check_new_invitation(draft, actor=actor, now=now, existing=existing, client_account=client_account)


def _resolve_number(cache: "Cache", actor: Actor, draft: ClientLink, now: datetime) -> ClientLink:
    """A draft given by number whose entity id the cache knows is sent by id (so it can be re-read afterwards)."""
    if draft.client_entity_id is not None or not rules.valid_number(draft.client_entity_number):
        return draft
    found = links_by_number(cache, actor.customer_id, draft.client_entity_number, now, draft.link_type)
    ids = {l.client_entity_id for l in found}
    if len(ids) == 1:
        return draft.replace(client_entity_id=ids.pop(), client_entity_number=None)
    return draft


def _key_of(draft: ClientLink) -> LinkKey | None:
    try:
        return draft.key
    except (ValueError, TypeError):
        return None


def _violations_from(errors: Sequence["OperationError"]) -> list[Violation]:
    out = []
    for e in errors:
        message = (e.message or "").strip()
        if not message or not message[-1] in ".!?":
            message = e.user_message
        out.append(Violation(None, e.code if e.code is not None else -1, message))
    return out


def _first_sentence(violations: Sequence[Violation]) -> str:
    if not violations:
        return "Refused."
    text = violations[0].message
    if len(violations) > 1:
        text += f" ({len(violations) - 1} more problem{'s' if len(violations) > 2 else ''})"
    return text


# --------------------------------------------------------------------------------------------------------------------
# Reconciling interrupted runs
# --------------------------------------------------------------------------------------------------------------------


def unanswered_intents(cache: "Cache", limit: int = 1000) -> list[LinkKey]:
    """Links with an intent recorded after their last outcome: the process stopped between sending and hearing."""
    last_outcome: dict[LinkKey, int] = {}
    for e in cache.events(kind="outcome", limit=limit * 4):
        last_outcome.setdefault(e.key, e.id)
    keys: dict[LinkKey, None] = {}
    for e in cache.events(kind="intent", limit=limit):
        if e.id > last_outcome.get(e.key, -1):
            keys[e.key] = None
    return list(keys)


def reconcile(ctx: ActionContext) -> int:
    """Re-read the links of unanswered intents from the service and record what was found. Returns how many.

    Raises ApiError when the service cannot be read (the intents stay unanswered for next time)."""
    from .sync import read_links

    keys = unanswered_intents(ctx.cache)
    if not keys:
        return 0
    now = ctx.clock()
    links = read_links(ctx.api, keys)
    if links:
        ctx.cache.upsert_links(links, now, "reconcile", ctx.actor.user_id)
    found = {l.key: l for l in links if _key_of(l) is not None}
    for key in keys:
        link = found.get(key)
        ctx.cache.record_event(
            key, at=now, source="reconcile", kind="outcome", to_status=link.status if link else None,
            actor_user_id=ctx.actor.user_id,
            detail=(f"after an interrupted action the service shows {link.status}" if link
                    else "after an interrupted action the service shows no link"))
    return len(keys)


# --------------------------------------------------------------------------------------------------------------------
# Invite
# --------------------------------------------------------------------------------------------------------------------


def invite(
    ctx: ActionContext,
    drafts: Sequence[ClientLink],
    *,
    progress: InviteProgress | None = None,
    cancel: threading.Event | None = None,
    source: str = "action:invite",
) -> list[ActionResult]:
    """Send new invitations: one ActionResult per draft, in order. Never raises for API failures."""
    from .api import ApiError
    from .sync import read_links

    now = ctx.clock()
    actor = ctx.actor
    results: list[ActionResult | None] = [None] * len(drafts)
    try:
        reconcile(ctx)
    except ApiError:
        pass  # the check below still runs on what the cache knows; the service refuses duplicates itself (1410)

    ready: list[tuple[int, ClientLink]] = []
    seen: dict[tuple, int] = {}
    for i, raw in enumerate(drafts):
        draft = _resolve_number(ctx.cache, actor, with_defaults(raw, actor), now)
        problems = check_invitation(ctx.cache, actor, draft, now)
        ident = (draft.link_type, draft.client_entity_id, (draft.client_entity_number or "").lower() or None)
        if ident in seen:
            problems = problems + [Violation("ClientEntityId", rules.E_DUPLICATE_IN_REQUEST,
                                             f"The same client is already invitation {seen[ident] + 1} of this "
                                             "request; keep one.")]
        else:
            seen[ident] = i
        if problems:
            results[i] = ActionResult(False, _key_of(draft), _first_sentence(problems), problems)
        else:
            ready.append((i, draft))

    total, done = len(drafts), len(drafts) - len(ready)
    if progress is not None:
        progress(done, total)
    sent: list[tuple[int, ClientLink]] = []
    stop: str | None = None
    for start in range(0, len(ready), BATCH):
        batch = ready[start:start + BATCH]
        if stop is None and cancel is not None and cancel.is_set():
            stop = "Not sent: the invitations were cancelled before this one was sent."
        if stop is not None:
            for i, draft in batch:
                results[i] = ActionResult(False, _key_of(draft), stop)
            continue
        for i, draft in batch:
            key = _key_of(draft)
            if key is not None:
                ctx.cache.record_event(key, at=ctx.clock(), source=source, kind="intent",
                                       to_status=rules.S.LinkPending, actor_user_id=actor.user_id,
                                       detail="invitation about to be sent")
        try:
            outcome = ctx.api.add_client_links([d for _, d in batch])
        except ApiError as err:
            partial = {r.index: r for r in err.results_so_far}
            for n, (i, draft) in enumerate(batch):
                r = partial.get(n)
                if r is not None:
                    results[i] = _invite_result(r, draft)
                    if r.ok:
                        sent.append((i, draft))
                    continue
                msg = err.user_message
                if err.maybe_applied:
                    msg += " It may have been sent anyway; linkdesk checks with the service before sending again."
                results[i] = ActionResult(False, _key_of(draft), msg,
                                          [Violation(None, err.code if err.code is not None else -1, msg)])
                key = _key_of(draft)
                if key is not None and not err.maybe_applied:
                    ctx.cache.record_event(key, at=ctx.clock(), source=source, kind="outcome",
                                           actor_user_id=actor.user_id, detail=f"not sent: {err.user_message}")
            stop = f"Not sent: {err.user_message}"
            continue
        for r, (i, draft) in zip(outcome, batch):
            results[i] = _invite_result(r, draft)
            key = _key_of(draft)
            if r.ok:
                sent.append((i, draft))
            elif key is not None:
                ctx.cache.record_event(key, at=ctx.clock(), source=source, kind="outcome",
                                       actor_user_id=actor.user_id,
                                       detail=f"refused: {results[i].message}")  # type: ignore[union-attr]
        done += len(batch)
        if progress is not None:
            progress(done, total)

    # Re-read what was sent, record the outcome of each.
    keyed = [(i, d) for i, d in sent if _key_of(d) is not None]
    if keyed:
        try:
            links = read_links(ctx.api, [d.key for _, d in keyed])
        except ApiError as err:
            links = None
            for i, d in keyed:
                r = results[i]
                assert r is not None
                results[i] = ActionResult(True, r.key, r.message + f" It could not be read back yet ({err.user_message})")
        if links is not None:
            at = ctx.clock()
            ctx.cache.upsert_links(links, at, source, actor.user_id)
            by_key = {l.key: l for l in links if _key_of(l) is not None}
            for i, d in keyed:
                link = by_key.get(d.key)
                ctx.cache.record_event(d.key, at=at, source=source, kind="outcome",
                                       to_status=link.status if link else None, actor_user_id=actor.user_id,
                                       detail="invitation sent")
                r = results[i]
                assert r is not None
                message = r.message
                if link is not None:  # name the client as the service knows it
                    message = message.replace(rules.entity_label(d), rules.entity_label(link), 1)
                results[i] = ActionResult(True, d.key, message, [], link)
    return [r for r in results if r is not None]


def _invite_result(r: Any, draft: ClientLink) -> ActionResult:
    key = _key_of(draft)
    label = rules.entity_label(draft)
    if r.ok:
        note = "" if key is not None else " It appears in linkdesk after the next sync."
        return ActionResult(True, key, f"Invitation sent to {label}; the client has 30 days to accept it.{note}")
    violations = _violations_from(r.errors)
    return ActionResult(False, key, f"Not sent to {label}: {_first_sentence(violations)}", violations)


# --------------------------------------------------------------------------------------------------------------------
# Updates: cancel, unlink, accept, decline
# --------------------------------------------------------------------------------------------------------------------


def _read_one(api: "CustomerManagementApi", key: LinkKey) -> ClientLink | None:
    from .sync import read_links

    for link in read_links(api, [key]):
        if _key_of(link) == key:
            return link
    return None


def _client_customer_id(cache: "Cache", key: LinkKey, stored: Any, actor: Actor | None = None,
                        link: ClientLink | None = None) -> int | None:
    """The customer owning the link's client entity: from the cache, or, when the cache cannot tell (the account is
    not visible to the agency yet), the actor's own customer if its number is the link's ClientEntityCustomerNumber."""
    if stored is not None and stored.client_customer_id is not None:
        return stored.client_customer_id
    if key.type == LinkType.CustomerLink:
        return key.client_entity_id
    account = cache.account(key.client_entity_id)
    if account is not None:
        return account.parent_customer_id
    link = link or (stored.link if stored is not None else None)
    number = link.client_entity_customer_number if link is not None else None
    if actor is not None and number and actor.customer_number and number.lower() == actor.customer_number.lower():
        return actor.customer_id
    return None


def describe_changes(before: ClientLink, after: ClientLink) -> str:
    """What changed between two reads of a link, in words."""
    parts = []
    if before.status != after.status:
        parts.append(f"its status went from {before.status} to {after.status}")
    if (before.note or "") != (after.note or ""):
        parts.append("its note changed")
    if before.last_modified_by_user_id != after.last_modified_by_user_id and after.last_modified_by_user_id:
        parts.append(f"user {after.last_modified_by_user_id} changed it last")
    if not parts:
        parts.append("its version (Timestamp) changed")
    return "; ".join(parts)


def act(ctx: ActionContext, action: Action | str, key: LinkKey, note: str | None = None) -> ActionResult:
    """Cancel, unlink, accept, decline or re-invite the link ``key``. Never raises for API failures."""
    from .api import ApiError
    from .sync import resync_links

    action = Action(action)
    if action == Action.REINVITE:
        return reinvite(ctx, key, note)
    actor = ctx.actor
    source = f"action:{action.value}"
    stored = ctx.cache.stored_link(key)
    if stored is not None:
        # Refusals that no fresher read can change (the role, an ended link) are said without the network.
        cached = stored.link
        party = rules.party_of(actor, cached, _client_customer_id(ctx.cache, key, stored, actor))
        lasting = [v for v in rules.check_update(cached, cached.replace(status=action.target), actor=actor,
                                                  party=party, now=ctx.clock(), invited_at=stored.invited_at)
                   if (v.code == rules.E_NOT_AUTHORIZED and party is not None)
                   or (v.code == rules.E_LINK_ENDED and cached.status in rules.ENDED)]
        if lasting:
            return ActionResult(False, key, _first_sentence(lasting), lasting, cached)
    try:
        link = _read_one(ctx.api, key)
    except ApiError as err:
        return ActionResult(False, key, f"The link could not be read from the service: {err.user_message}",
                            [], stored.link if stored else None)
    now = ctx.clock()
    if link is None:
        label = rules.entity_label(stored.link) if stored else f"client {key.client_entity_id}"
        return ActionResult(False, key, f"The service no longer shows a link to {label} for you; run a sync to "
                                        "refresh the cache.", [], None)
    if stored is None or stored.link != link:
        ctx.cache.upsert_links([link], now, "sync", None)
        stored = ctx.cache.stored_link(key)
    party = rules.party_of(actor, link, _client_customer_id(ctx.cache, key, stored, actor, link))
    requested = link.replace(status=action.target)
    if note is not None and note.strip():
        requested = requested.replace(note=note)
    invited = stored.invited_at if stored is not None else None
    problems = rules.check_update(link, requested, actor=actor, party=party, now=now, invited_at=invited)
    if problems:
        return ActionResult(False, key, _first_sentence(problems), problems, link)

    ctx.cache.record_event(key, at=now, source=source, kind="intent", from_status=link.status,
                           to_status=action.target, actor_user_id=actor.user_id, detail=action.label)
    try:
        (result,) = ctx.api.update_client_links([requested])
    except ApiError as err:
        msg = err.user_message
        if err.maybe_applied:
            msg += " The change may have been applied; linkdesk checks with the service next time."
        else:
            ctx.cache.record_event(key, at=ctx.clock(), source=source, kind="outcome", actor_user_id=actor.user_id,
                                   detail=f"not sent: {err.user_message}")
        return ActionResult(False, key, msg, [Violation(None, err.code if err.code is not None else -1, msg)],
                            link)
    if not result.ok:
        violations = _violations_from(result.errors)
        message = _first_sentence(violations)
        latest = link
        if any(v.code == rules.E_TIMESTAMP for v in violations):
            try:
                latest = _read_one(ctx.api, key) or link
            except ApiError:
                latest = link
            message = (f"Someone changed this link since it was read: {describe_changes(link, latest)}. "
                       "Check it and try again.")
            if latest is not link:
                ctx.cache.upsert_links([latest], ctx.clock(), "sync", None)
        ctx.cache.record_event(key, at=ctx.clock(), source=source, kind="outcome", actor_user_id=actor.user_id,
                               detail=f"refused: {message}")
        return ActionResult(False, key, message, violations, latest)

    at = ctx.clock()
    try:
        links = resync_links(ctx.api, ctx.cache, [key], now=at, source=source, actor_user_id=actor.user_id)
    except ApiError as err:
        ctx.cache.record_event(key, at=at, source=source, kind="outcome", to_status=action.target,
                               actor_user_id=actor.user_id, detail="accepted by the service; not read back yet")
        return ActionResult(True, key, f"{_PAST[action]}; it could not be read back yet ({err.user_message})",
                            [], requested)
    after = next((l for l in links if _key_of(l) == key), None)
    status = after.status if after is not None else action.target
    ctx.cache.record_event(key, at=at, source=source, kind="outcome", to_status=status,
                           actor_user_id=actor.user_id, detail="accepted by the service")
    label = rules.entity_label(after or link)
    return ActionResult(True, key, f"{_PAST[action]} for {label}: now {status}. {rules.status_text(status)}",
                        [], after)


def reinvite(ctx: ActionContext, key: LinkKey, note: str | None = None) -> ActionResult:
    """A new invitation repeating an ended link's terms (rules.reinvite_draft)."""
    now = ctx.clock()
    stored = ctx.cache.stored_link(key)
    if stored is None:
        return ActionResult(False, key, "linkdesk does not know this link; run a sync first.", [], None)
    link = stored.link
    current = rules.effective_status(link, now, stored.invited_at)
    if current not in rules.ENDED:
        msg = (f"The link to {rules.entity_label(link)} is {current}; a new invitation is possible only after it "
               "has ended.")
        return ActionResult(False, key, msg, [Violation("Status", rules.E_DUPLICATE, msg)], link)
    draft = rules.reinvite_draft(link)
    if note is not None and note.strip():
        draft = draft.replace(note=note)
    (result,) = invite(ctx, [draft], source="action:reinvite")
    if result.ok:
        return ActionResult(True, key, result.message.replace("Invitation sent", "Invitation sent again", 1),
                            [], result.link)
    return result
