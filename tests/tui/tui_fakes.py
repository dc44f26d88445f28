"""A small stand-in for ``linkdesk.core.session.Session`` over a real ``Cache``, for fast widget and screen tests.

The "service" is a dict of links moved by ``core.rules`` (the same rules the simulator enforces); ``sync`` writes it
into the cache with a real snapshot, so every read the screens make goes through the real cache queries. Journey
tests use the real Session and simulator; this fake keeps the many small screen tests fast and deterministic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from linkdesk.core import rules
from linkdesk.core.cache import Cache
from linkdesk.core.model import (
    Account,
    Actor,
    ClientLink,
    ClientLinkStatus as S,
    Customer,
    CustomerRole,
    LinkKey,
    LinkType,
    Role,
    User,
)

T0 = datetime(2025, 11, 3, 14, 5, tzinfo=timezone.utc)

AGENCY = 1000
CLIENT_A = 2000
CLIENT_B = 3000
OTHER = 4000


@dataclass(frozen=True)
class FakeIdentity:
    user_id: int
    user_name: str
    customer_id: int
    customer_name: str
    side: str
    role: Role

    def actor(self) -> Actor:
        return Actor(self.user_id, self.customer_id, self.role, self.customer_name, self.user_name)


@dataclass(frozen=True)
class FakeProgress:
    phase: str
    done: int
    total: int | None
    message: str


@dataclass(frozen=True)
class FakeSyncResult:
    ok: bool
    cancelled: bool
    links: int
    changed: int
    message: str
    error: Any = None


@dataclass(frozen=True)
class FakeActionResult:
    ok: bool
    key: LinkKey | None
    message: str
    violations: list = field(default_factory=list)
    link: ClientLink | None = None


class ServiceUnavailable(Exception):
    """Stands in for core.api.ServiceUnavailable (the app recognises it by name, as it does the real one)."""

    user_message = "Microsoft Advertising is not reachable right now; check your connection and try again later."


class Clock:
    """A frozen clock that tests move by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def world(markup_names: bool = False) -> tuple[list[Customer], list[Account], list[User]]:
    """The seed figure: an agency with users A (Super Admin, reaches A1), B (Standard), C (Campaign Manager),
    V (Viewer); Client A with A1, A2; Client B with B1, B2 and a prepaid B3."""
    a_name = "[bold red]x[/]" if markup_names else "Client A"
    b_name = "[link=https://e.com]y" if markup_names else "Client B"
    customers = [
        Customer(AGENCY, "Contoso Agency", "C1000"),
        Customer(CLIENT_A, a_name, "C2000"),
        Customer(CLIENT_B, b_name, "C3000"),
        Customer(OTHER, "Other Agency", "C4000"),
    ]
    accounts = [
        Account(2001, "A1 Shoes", "F2001", CLIENT_A),
        Account(2002, "A2 Boots" if not markup_names else "A2 \x1b[31mred\x1b[0m", "F2002", CLIENT_A),
        Account(3001, "B1 Hats", "F3001", CLIENT_B),
        Account(3002, "B2 Caps", "F3002", CLIENT_B),
        Account(3003, "B3 Prepaid", "F3003", CLIENT_B, prepaid=True),
    ]
    users = [
        User(11, "ana", AGENCY, "Ana", "Admin", roles=(CustomerRole(AGENCY, Role.SuperAdmin),)),
        User(12, "ben", AGENCY, "Ben", "Standard",
             roles=(CustomerRole(AGENCY, Role.Standard, account_ids=(2002, 3001, 3002)),)),
        User(13, "cam", AGENCY, "Cam", "Manager",
             roles=(CustomerRole(AGENCY, Role.AdvertiserCampaignManager, account_ids=(2001,)),)),
        User(14, "vic", AGENCY, "Vic", "Viewer", roles=(CustomerRole(AGENCY, Role.Viewer, account_ids=(2001,)),)),
        User(21, "alice", CLIENT_A, "Alice", "Client", roles=(CustomerRole(CLIENT_A, Role.SuperAdmin),)),
        User(31, "bob", CLIENT_B, "Bob", "Client", roles=(CustomerRole(CLIENT_B, Role.SuperAdmin),)),
    ]
    return customers, accounts, users


IDENTITIES = [
    FakeIdentity(11, "ana", AGENCY, "Contoso Agency", "agency", Role.SuperAdmin),
    FakeIdentity(12, "ben", AGENCY, "Contoso Agency", "agency", Role.Standard),
    FakeIdentity(13, "cam", AGENCY, "Contoso Agency", "agency", Role.AdvertiserCampaignManager),
    FakeIdentity(14, "vic", AGENCY, "Contoso Agency", "agency", Role.Viewer),
    FakeIdentity(21, "alice", CLIENT_A, "Client A", "client", Role.SuperAdmin),
    FakeIdentity(31, "bob", CLIENT_B, "Client B", "client", Role.SuperAdmin),
]


def link(account: int, status: S, at: datetime, *, bill: bool = True, name: str | None = None,
         note: str | None = None, manager: int = AGENCY, manager_name: str = "Contoso Agency",
         entity_name: str | None = None) -> ClientLink:
    return ClientLink(type=LinkType.AccountLink, client_entity_id=account, client_entity_number=f"F{account}",
                      client_entity_name=entity_name or f"Account {account}", managing_customer_id=manager,
                      managing_customer_name=manager_name, is_bill_to_client=bill, status=status,
                      last_modified_date_time=at, name=name, note=note, timestamp="1")


class FakeSession:
    """Enough of Session for the screens: identities, sync into a real cache, rules-checked actions, a clock."""

    is_demo = True
    profile = "demo"

    def __init__(self, home: Path, clock: Clock | None = None, *, markup_names: bool = False,
                 links: list[ClientLink] | None = None, extra_links: int = 0, sync_delay: float = 0.0,
                 fail_sync: BaseException | None = None, sync_error: Exception | None = None) -> None:
        self.home = Path(home)
        self.clock = clock or Clock()
        self.customers, self.accounts, self.users = world(markup_names)
        self.identity_ = IDENTITIES[0]
        now = self.clock()
        self.links: dict[LinkKey, ClientLink] = {}
        for lk in (links if links is not None else [
            link(2001, S.Active, now - timedelta(days=40), name="A1 link"),
            link(2002, S.LinkPending, now - timedelta(days=2), bill=False, note="Please accept"),
            link(3001, S.LinkPending, now - timedelta(days=26)),
            link(3002, S.LinkExpired, now - timedelta(days=3)),
        ]):
            self.links[lk.key] = lk
        for i in range(extra_links):
            acc = 100000 + i
            self.accounts.append(Account(acc, f"Bulk {i:06d}", f"G{acc}", CLIENT_B))
            self.links[LinkKey(acc, AGENCY)] = link(acc, S.Active, now - timedelta(days=i % 90 + 1),
                                                    entity_name=f"Bulk {i:06d}")
        self.sync_delay = sync_delay
        self.fail_sync = fail_sync
        self.sync_error = sync_error
        self.calls: list[tuple] = []
        self._caches: dict[int, Cache] = {}
        self.cache_path = self.home / "demo" / "cache.sqlite"

    # -- Session surface ------------------------------------------------------------------------------------------

    def cache(self) -> Cache:
        tid = threading.get_ident()
        if tid not in self._caches:
            self._caches[tid] = Cache.open(self.cache_path)
        return self._caches[tid]

    def identity(self) -> FakeIdentity:
        return self.identity_

    def identities(self, limit: int | None = None) -> list[FakeIdentity]:
        return list(IDENTITIES)[:limit]

    def switch_identity(self, user_id: int) -> FakeIdentity:
        self.identity_ = next(i for i in IDENTITIES if i.user_id == user_id)
        return self.identity_

    def online(self) -> bool:
        return True

    def sync(self, progress: Callable | None = None, cancel: threading.Event | None = None) -> FakeSyncResult:
        self.calls.append(("sync",))
        if self.fail_sync is not None:
            raise self.fail_sync
        if self.sync_error is not None:  # as Session.sync reports a failure: a result, not an exception
            return FakeSyncResult(False, False, len(self.links), 0,
                                  f"{self.sync_error.user_message} The cache still holds the previous sync.",
                                  self.sync_error)
        if progress:
            progress(FakeProgress("links", 0, len(self.links), "Reading links…"))
        if self.sync_delay:
            if cancel is not None and cancel.wait(self.sync_delay):
                return FakeSyncResult(False, True, 0, 0, "Sync stopped.")
        self.write_cache()
        if progress:
            progress(FakeProgress("links", len(self.links), len(self.links), "Saving…"))
        return FakeSyncResult(True, False, len(self.links), 0, "Synced.")

    def write_cache(self) -> None:
        cache = Cache.open(self.cache_path)
        try:
            snap = cache.begin_snapshot(self.clock())
            snap.add_customers(self.customers)
            snap.add_accounts(self.accounts)
            snap.add_users(self.users)
            snap.add_links(self._effective(l) for l in self.links.values())
            snap.commit(self.clock())
        finally:
            cache.close()

    def _effective(self, lk: ClientLink) -> ClientLink:
        status = rules.effective_status(lk, self.clock())
        return lk if status == lk.status else lk.replace(status=status)

    def check_invitation(self, draft: ClientLink) -> list:
        existing = list(self.links.values())
        account = next((a for a in self.accounts if a.id == draft.client_entity_id), None)
        return rules.check_new_invitation(draft, actor=self.identity_.actor(), now=self.clock(), existing=existing,
                                          client_account=account)

    def _client_of(self, lk: ClientLink) -> int | None:
        account = next((a for a in self.accounts if a.id == lk.client_entity_id), None)
        return account.parent_customer_id if account else None

    def invite(self, drafts: list[ClientLink], progress=None, cancel=None) -> list[FakeActionResult]:
        self.calls.append(("invite", len(drafts)))
        out = []
        for i, d in enumerate(drafts):
            if d.managing_customer_id is None:
                d = d.replace(managing_customer_id=self.identity_.customer_id)
            problems = self.check_invitation(d)
            if problems:
                out.append(FakeActionResult(False, None, problems[0].message, problems))
            else:
                account = next((a for a in self.accounts if a.id == d.client_entity_id), None)
                new = d.replace(status=S.LinkPending, last_modified_date_time=self.clock(), timestamp="1",
                                client_entity_name=account.name if account else None,
                                client_entity_number=account.number if account else None,
                                managing_customer_name="Contoso Agency")
                self.links[new.key] = new
                out.append(FakeActionResult(True, new.key, f"Invitation sent: {rules.entity_label(new)} is "
                                                            "LinkPending.", [], new))
            if progress:
                progress(i + 1, len(drafts))
        self.write_cache()
        return out

    def act(self, action: rules.Action, key: LinkKey, note: str | None = None) -> FakeActionResult:
        self.calls.append(("act", action, key))
        lk = self.links[key]
        actor = self.identity_.actor()
        party = rules.party_of(actor, lk, self._client_of(lk))
        if action == rules.Action.REINVITE:
            return self.invite([rules.reinvite_draft(lk)])[0]
        requested = lk.replace(status=action.target)
        problems = rules.check_update(lk, requested, actor=actor, party=party, now=self.clock())
        if problems:
            return FakeActionResult(False, key, problems[0].message, problems)
        nxt = {S.LinkAccepted: S.LinkInProgress, S.UnlinkRequested: S.UnlinkPending}.get(action.target, action.target)
        self.links[key] = lk.replace(status=nxt, last_modified_date_time=self.clock())
        self.write_cache()
        return FakeActionResult(True, key, f"{action.label}: {rules.entity_label(lk)} is now {nxt}.", [],
                                self.links[key])

    def advance(self, duration: str) -> str:
        amount, unit = int(duration[:-1]), duration[-1]
        self.clock.now += timedelta(hours=amount) if unit == "h" else timedelta(days=amount)
        moved = 0
        for key, lk in list(self.links.items()):
            nxt = {S.LinkInProgress: S.Active, S.UnlinkPending: S.Inactive}.get(lk.status)
            status = rules.effective_status(lk, self.clock())
            if nxt is None and status != lk.status:
                nxt = status
            if nxt is not None:
                self.links[key] = lk.replace(status=nxt, last_modified_date_time=self.clock())
                moved += 1
        return f"The simulator clock moved {duration}; {moved} links changed."

    def close(self) -> None:
        for c in self._caches.values():
            try:
                c.close()
            except Exception:  # a connection of a worker thread closes with its thread
                pass
        self._caches.clear()
