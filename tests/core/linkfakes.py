"""An in-memory stand-in for core.api.CustomerManagementApi, for fast unit tests of sync and actions.

It keeps a small world (customers, accounts, users, links) and applies core.rules on Add/Update like the service
would, so client-side logic (what is sent, how answers are mapped back, atomicity, cancellation) can be tested
deterministically and with injected failures. Integration tests use the real simulator through the real SDK.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from linkdesk.core import api as api_mod, rules
from linkdesk.core.api import AccountInfo, CustomerInfo, LinkResult, OperationError, UserInfo
from linkdesk.core.model import (
    Account,
    Actor,
    ClientLink,
    ClientLinkStatus as S,
    Customer,
    CustomerRole,
    LinkType,
    Party,
    Role,
    User,
)

T0 = datetime(2025, 11, 3, 12, 0, tzinfo=timezone.utc)

AGENCY, CLIENT_A, CLIENT_B = 100, 200, 300
ADMIN, STANDARD, VIEWER, CLIENT_A_ADMIN, CLIENT_B_ADMIN = 1, 2, 3, 21, 31
A1, A2, B1, B2 = 2001, 2002, 3001, 3002
AGENCY_OWN = 1001


class FakeClock:
    def __init__(self, now: datetime = T0):
        self.t = now

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: Any) -> None:
        self.t += timedelta(**kw)


@dataclass
class FakeWorld:
    clock: FakeClock = field(default_factory=FakeClock)
    customers: dict[int, Customer] = field(default_factory=dict)
    accounts: dict[int, Account] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    links: dict[tuple, ClientLink] = field(default_factory=dict)
    counter: Any = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def seeded(cls, clock: FakeClock | None = None) -> "FakeWorld":
        w = cls(clock=clock or FakeClock())
        w.customers = {
            AGENCY: Customer(AGENCY, "Contoso Agency", "C100AG"),
            CLIENT_A: Customer(CLIENT_A, "Client A", "C200AA"),
            CLIENT_B: Customer(CLIENT_B, "Client B <b>", "C300BB"),
        }
        w.accounts = {
            AGENCY_OWN: Account(AGENCY_OWN, "Agency house account", "F1001", AGENCY),
            A1: Account(A1, "A1 shoes", "F2001", CLIENT_A),
            A2: Account(A2, "A2 [bold]hats[/]", "F2002", CLIENT_A),
            B1: Account(B1, "B1 boats", "F3001", CLIENT_B, prepaid=True),
            B2: Account(B2, "B2 bikes", "F3002", CLIENT_B),
        }
        w.users = {
            ADMIN: User(ADMIN, "ann", AGENCY, roles=(CustomerRole(AGENCY, Role.SuperAdmin),)),
            STANDARD: User(STANDARD, "bob", AGENCY, roles=(CustomerRole(AGENCY, Role.Standard),)),
            VIEWER: User(VIEWER, "vic", AGENCY, roles=(CustomerRole(AGENCY, Role.Viewer, (A1,)),)),
            CLIENT_A_ADMIN: User(CLIENT_A_ADMIN, "ava", CLIENT_A, roles=(CustomerRole(CLIENT_A, Role.SuperAdmin),)),
            CLIENT_B_ADMIN: User(CLIENT_B_ADMIN, "ben", CLIENT_B, roles=(CustomerRole(CLIENT_B, Role.SuperAdmin),)),
        }
        return w

    def actor(self, user_id: int) -> Actor:
        u = self.users[user_id]
        return Actor(u.id, u.customer_id, u.role_at(u.customer_id), self.customers[u.customer_id].name, u.user_name)

    def add_link(self, account_id: int, status: S, *, bill_to_client: bool = True, at: datetime | None = None,
                 manager: int = AGENCY) -> ClientLink:
        acc = self.accounts[account_id]
        link = ClientLink(type=LinkType.AccountLink, client_entity_id=acc.id, client_entity_number=acc.number,
                          client_entity_name=acc.name, managing_customer_id=manager,
                          managing_customer_name=self.customers[manager].name, is_bill_to_client=bill_to_client,
                          status=status, last_modified_date_time=at or self.clock(), last_modified_by_user_id=ADMIN,
                          timestamp=f"ts{next(self.counter)}")
        self.links[(acc.id, manager, LinkType.AccountLink)] = link
        return link


class FakeApi:
    """Acts as one user of a FakeWorld. ``fail`` maps an operation name to an exception (or a callable returning
    one, given the call number) to raise instead of answering."""

    def __init__(self, world: FakeWorld, user_id: int):
        self.world = world
        self.user_id = user_id
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, Any] = {}
        self.on_call: Callable[[str], None] | None = None

    def _call(self, op: str, arg: Any = None) -> None:
        self.calls.append((op, arg))
        if self.on_call:
            self.on_call(op)
        f = self.fail.get(op)
        if f is not None:
            exc = f(len([c for c in self.calls if c[0] == op])) if callable(f) and not isinstance(f, type) else f
            if exc is not None:
                raise exc

    @property
    def me(self) -> User:
        return self.world.users[self.user_id]

    # hierarchy
    def get_user(self, user_id: int | None = None):
        self._call("GetUser", user_id)
        u = self.world.users[user_id if user_id is not None else self.user_id]
        return u, u.roles

    def get_users_info(self, customer_id: int, status_filter: str | None = None):
        self._call("GetUsersInfo", customer_id)
        return [UserInfo(u.id, u.user_name) for u in self.world.users.values() if u.customer_id == customer_id]

    def get_customer(self, customer_id: int) -> Customer:
        self._call("GetCustomer", customer_id)
        return self.world.customers[customer_id]

    def get_customers_info(self, name_filter: str = "", top_n: int = 1000):
        self._call("GetCustomersInfo")
        return [CustomerInfo(c.id, c.name) for c in self.world.customers.values() if c.id == self.me.customer_id]

    def _reachable(self) -> list[Account]:
        own = self.me.customer_id
        linked = {l.client_entity_id for l in self.world.links.values()
                  if l.managing_customer_id == own and l.status in rules.ACTIVE_LIKE | rules.MANAGED}
        return [a for a in self.world.accounts.values() if a.parent_customer_id == own or a.id in linked]

    def get_accounts_info(self, customer_id: int | None = None, only_parent_accounts: bool = False):
        self._call("GetAccountsInfo", customer_id)
        cid = customer_id or self.me.customer_id
        accs = [a for a in self._reachable() if a.parent_customer_id == cid or not only_parent_accounts]
        return [AccountInfo(a.id, a.name, a.number) for a in accs]

    def get_linked_accounts_and_customers_info(self, customer_id: int, only_parent_accounts: bool = False):
        self._call("GetLinkedAccountsAndCustomersInfo", customer_id)
        return [AccountInfo(a.id, a.name, a.number) for a in self._reachable()], []

    def search_accounts(self, predicates, *, ordering=None, index: int = 0, size: int = 1000,
                        return_additional_fields=None):
        self._call("SearchAccounts", list(predicates))
        accs = sorted(self._reachable(), key=lambda a: a.id)
        return accs[index * size:(index + 1) * size]

    # links
    def _visible(self, link: ClientLink) -> bool:
        cid = self.me.customer_id
        if link.managing_customer_id == cid:
            return True
        owner = link.client_entity_id if link.link_type == LinkType.CustomerLink else (
            self.world.accounts[link.client_entity_id].parent_customer_id)
        return owner == cid

    def search_client_links(self, predicates, ordering=None, index: int = 0, size: int = 100):
        self._call("SearchClientLinks", [tuple(p) for p in predicates])
        role = self.me.role_at(self.me.customer_id)
        if role not in (Role.SuperAdmin, Role.Standard):
            raise api_mod.AuthError(code=1001)
        out = []
        for (entity, manager, ltype), link in sorted(self.world.links.items(), key=lambda kv: kv[0][:2]):
            ok = True
            for p in predicates:
                field_, op, value = p
                ids = {int(v) for v in str(value).split(",")}
                if field_ == "DirectManagingCustomerId":
                    ok &= manager in ids
                elif field_ == "ClientAccountId":
                    ok &= ltype == LinkType.AccountLink and entity in ids
                elif field_ == "ClientCustomerId":
                    ok &= ltype == LinkType.CustomerLink and entity in ids
            if ok and self._visible(link):
                out.append(link)
        return out[index * size:(index + 1) * size]

    def iter_client_links(self, predicates, *, ordering=None, page_size: int = 100, concurrency: int = 4,
                          cancel: threading.Event | None = None, progress=None):
        index, n = 0, 0
        while True:
            if cancel is not None and cancel.is_set():
                raise api_mod.Cancelled("cancelled")
            page = self.search_client_links(predicates, ordering, index, page_size)
            for link in page:
                n += 1
                yield link
            if progress:
                progress(n)
            if len(page) < page_size:
                return
            index += 1

    def _party(self, actor: Actor, link: ClientLink):
        owner = self.world.accounts[link.client_entity_id].parent_customer_id
        return rules.party_of(actor, link, owner)

    def add_client_links(self, links):
        self._call("AddClientLinks", list(links))
        now = self.world.clock()
        actor = self.world.actor(self.user_id)
        out = []
        with self.world.lock:
            for i, draft in enumerate(links):
                acc = self.world.accounts.get(draft.client_entity_id)
                existing = [l for l in self.world.links.values() if l.client_entity_id == draft.client_entity_id]
                problems = rules.check_new_invitation(draft, actor=actor, now=now, existing=existing,
                                                      client_account=acc)
                if acc is None and not problems:
                    problems = [rules.Violation("ClientEntityId", 2108, "That account id is not valid.")]
                if problems:
                    out.append(LinkResult(i, draft, [OperationError(p.code, p.message) for p in problems]))
                    continue
                link = draft.replace(client_entity_number=acc.number, client_entity_name=acc.name,
                                     managing_customer_name=self.world.customers[draft.managing_customer_id].name,
                                     status=S.LinkPending, last_modified_date_time=now,
                                     last_modified_by_user_id=self.user_id,
                                     timestamp=f"ts{next(self.world.counter)}")
                self.world.links[(acc.id, draft.managing_customer_id, draft.link_type)] = link
                out.append(LinkResult(i, draft, []))
        return out

    def update_client_links(self, links):
        self._call("UpdateClientLinks", list(links))
        now = self.world.clock()
        actor = self.world.actor(self.user_id)
        out = []
        with self.world.lock:
            for i, req in enumerate(links):
                key = (req.client_entity_id, req.managing_customer_id, req.link_type)
                stored = self.world.links.get(key)
                if stored is None:
                    out.append(LinkResult(i, req, [OperationError(210, "The entity does not exist.")]))
                    continue
                problems = rules.check_update(stored, req, actor=actor, party=self._party(actor, stored), now=now)
                if problems:
                    out.append(LinkResult(i, req, [OperationError(p.code, p.message) for p in problems]))
                    continue
                status = req.status
                if status == S.UnlinkRequested:
                    status = S.UnlinkPending
                self.world.links[key] = stored.replace(status=status, note=req.note or stored.note,
                                                       last_modified_date_time=now,
                                                       last_modified_by_user_id=self.user_id,
                                                       timestamp=f"ts{next(self.world.counter)}")
                out.append(LinkResult(i, req, []))
        return out

    def close(self) -> None:
        pass
