"""The deterministic demo world of the simulator (design.md §7).

The fixed part is the seed figure of the design: the agency **Contoso Agency** with four users (a Super Admin, a
Standard User, **User A**, an Advertiser Campaign Manager reaching A1, and **User B**, a Viewer reaching A2, B1 and B2);
**Client A** with accounts A1 and A2; **Client B** with B1 and B2, all four linked and Active. Around it, more clients
make every status the service emits appear (all but UnlinkRequested, which the service replaces with UnlinkPending at
once, and UnlinkCanceled, which it never emits — decision 2; LinkAccepted, UnlinkPending and UnlinkInProgress only for
minutes, as in the real service), both link types, both billing choices, a prepaid account (1471), an account managed
by another agency (**Fabrikam Agency**, 1424), invitations 1 to 6 days from expiry, link and unlink failures, an
invitation still inside its 6-hour acceptance cooldown, invitations *received* by Contoso (from Fabrikam), and names
and notes with markup-like text and non-ASCII characters. Every customer has a Super Admin user.

``--scale N`` adds N generated clients (1–4 accounts each) with a realistic mix of statuses and link ages; all
randomness comes from ``random.Random(seed)``, and all times are relative to the clock's ``now`` at seeding, so the
same seed, scale and ``now`` give the same world.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from ..model import ClientLinkStatus as S, CustomerLinkPermission, LinkType, Role
from .service import next_service_step
from .state import AccountRow, CustomerRow, NewLink, RoleRow, State, Tx, UserRow, to_db

WORLD_VERSION = 1

# -- ids of the seed figure (stable across seeds and scales) --------------------------------------------------------
AGENCY_ID = 251000001  # Contoso Agency
OTHER_AGENCY_ID = 251000002  # Fabrikam Agency
CLIENT_A_ID = 251000101
CLIENT_B_ID = 251000102
A1, A2, B1, B2 = 149000001, 149000002, 149000003, 149000004
AGENCY_HOUSE_ACCOUNT = 149000901
OTHER_AGENCY_ACCOUNT = 149000902

AGENCY_SUPER_ADMIN = 301000001
AGENCY_STANDARD = 301000002
USER_A = 301000003  # Advertiser Campaign Manager, reaches A1
USER_B = 301000004  # Viewer, reaches A2, B1, B2
OTHER_AGENCY_SUPER_ADMIN = 301000011
CLIENT_A_ADMIN = 301000101
CLIENT_B_ADMIN = 301000102

#: Accounts of the fixed world with a role in demos and tests.
PREPAID_ACCOUNT = 149000014
MANAGED_BY_OTHER_AGENCY = 149000024
UNINVITED_ACCOUNT = 149000008
COOLDOWN_INVITATION = 149000010  # LinkPending, invited 2 hours before seeding
FAILING_LINK_INVITATION = 149000018  # LinkPending on an account seeded with a billing problem
FAILING_UNLINK_ACTIVE = 149000020  # Active on an account seeded to fail its unlink
CUSTOMER_LINKED_CLIENT = 251000109  # Litware: CustomerLink Active (Administrative)

GENERATED_CUSTOMER_BASE = 252000000
GENERATED_ACCOUNT_BASE = 150000000
GENERATED_USER_BASE = 302000000


def customer_number(customer_id: int) -> str:
    """A stable, opaque customer number (letters and digits, like the service's)."""
    return f"C{customer_id:X}"


def account_number(account_id: int) -> str:
    return f"F{account_id:X}"


@dataclass(frozen=True)
class WorldSummary:
    seed: int
    scale: int
    customers: int
    accounts: int
    users: int
    links: int
    latest_links: int
    seconds: float = 0.0


class _Builder:
    """Collects rows, then writes them in one transaction with executemany."""

    def __init__(self, now: datetime):
        self.now = now
        self.customers: list[CustomerRow] = []
        self.accounts: list[AccountRow] = []
        self.users: list[UserRow] = []
        self.roles: list[RoleRow] = []
        self.links: list[NewLink] = []
        self._customer_numbers: dict[int, str] = {}
        self._account_parent: dict[int, int] = {}
        self._account_flags: dict[int, tuple[bool, bool]] = {}
        self._ts = 2000
        self._emails: dict[int, str | None] = {}
        self._names: dict[int, str] = {}

    # -- entities -------------------------------------------------------------------------------------------------

    def customer(self, cid: int, name: str, side: str, *, industry: str | None = None, age_days: float = 900,
                 country: str = "US") -> int:
        self.customers.append(CustomerRow(cid, customer_number(cid), name, side, industry=industry,
                                          market_country=country, created_at=self.now - timedelta(days=age_days)))
        self._customer_numbers[cid] = customer_number(cid)
        self._names[cid] = name
        return cid

    def account(self, aid: int, name: str, parent: int, *, prepaid: bool = False, fail_link: bool = False,
                fail_unlink: bool = False, primary_user: int | None = None, age_days: float = 800,
                currency: str = "USD") -> int:
        self.accounts.append(AccountRow(aid, account_number(aid), name, parent, primary_user, prepaid, fail_link,
                                        fail_unlink, currency_code=currency,
                                        created_at=self.now - timedelta(days=age_days)))
        self._account_parent[aid] = parent
        self._account_flags[aid] = (fail_link, fail_unlink)
        return aid

    def user(self, uid: int, username: str, customer_id: int, first: str, last: str, role: Role, *,
             accounts: Iterable[int] | None = None, phone: str | None = None, title: str | None = None) -> int:
        self.users.append(UserRow(uid, username, customer_id, first, last, username, phone, title,
                                  created_at=self.now - timedelta(days=700)))
        self._emails[uid] = username
        ids = tuple(accounts) if accounts is not None else ()
        self.roles.append(RoleRow(uid, customer_id, int(role), accounts is None, ids))
        return uid

    # -- links ----------------------------------------------------------------------------------------------------

    def link(self, entity: int, manager: int, status: S, *, invited_days_ago: float, entered_days_ago: float | None = None,
             link_type: LinkType = LinkType.AccountLink, bill_to_client: bool | None = True, by: int,
             name: str | None = None, note: str | None = None, start_in_days: float | None = None,
             permission: CustomerLinkPermission | None = None, latest: bool = True, entity_name: str = "") -> None:
        """One link: invited ``invited_days_ago``, in ``status`` since ``entered_days_ago`` (default: invitation)."""
        created = self.now - timedelta(days=invited_days_ago)
        entered = self.now - timedelta(days=entered_days_ago if entered_days_ago is not None else invited_days_ago)
        start = created + timedelta(days=start_in_days) if start_in_days is not None else created
        if link_type == LinkType.AccountLink:
            client_customer = self._account_parent[entity]
            fail_link, fail_unlink = self._account_flags[entity]
        else:
            client_customer, fail_link, fail_unlink = entity, False, False
            bill_to_client = None
        due = next_service_step(status, entered, created_at=created, start_date=start, fail_link=fail_link,
                                fail_unlink=fail_unlink) if latest else None
        self._ts += 1
        self.links.append(NewLink(
            type=link_type.value, client_entity_id=entity, client_customer_id=client_customer,
            managing_customer_id=manager, managing_customer_number=self._customer_numbers[manager],
            status=status.value, created_at=created, created_by=by, last_modified_at=entered, last_modified_by=by,
            timestamp=self._ts, note=note, name=(name or entity_name)[:40] or None,
            inviter_email=self._emails.get(by), inviter_name=self._names.get(manager),
            is_bill_to_client=bill_to_client, start_date=start, permission=permission.value if permission else None,
            due_at=due[0] if due else None, due_status=due[1].value if due else None, is_latest=latest,
        ))

    def write(self, tx: Tx) -> None:
        tx.insert_customers(self.customers)
        tx.insert_accounts(self.accounts)
        tx.insert_users(self.users)
        tx.insert_roles(self.roles)
        tx.insert_links(self.links)
        tx.set_meta("ts_counter", self._ts)


# ----------------------------------------------------------------------------------------------------- fixed world


def _fixed_world(b: _Builder) -> None:
    minute = 1 / (24 * 60)
    hour = 1 / 24
    agency = b.customer(AGENCY_ID, "Contoso Agency", "agency", industry="AgencySalesHouse", age_days=2000)
    other = b.customer(OTHER_AGENCY_ID, "Fabrikam Agency", "other-agency", industry="AgencySalesHouse", age_days=1800)
    b.account(AGENCY_HOUSE_ACCOUNT, "Contoso House Account", agency, primary_user=AGENCY_SUPER_ADMIN)
    b.account(OTHER_AGENCY_ACCOUNT, "Fabrikam Media", other, primary_user=OTHER_AGENCY_SUPER_ADMIN)

    clients = [
        (CLIENT_A_ID, "Client A", "Retail"),
        (CLIENT_B_ID, "Client B", "Travel"),
        (251000103, "Northwind Traders", "Retail"),
        (251000104, "Tailspin Toys", "Retail"),
        (251000105, "Wide World Importers", "Retail"),
        (251000106, "Margie's Travel", "Travel"),
        (251000107, "Adventure Works", "Sports"),
        (251000108, "[bold red]Markup[/] & Co", "Entertainment"),
        (CUSTOMER_LINKED_CLIENT, "Litware, Inc.", "Technology"),
        (251000110, "Proseware Ünïcødé GmbH", "Technology"),
    ]
    for cid, name, industry in clients:
        b.customer(cid, name, "client", industry=_INDUSTRY.get(industry), age_days=1500,
                   country="DE" if "GmbH" in name else "US")

    acct = [  # id, name, owner, flags
        (A1, "A1", CLIENT_A_ID, {}), (A2, "A2", CLIENT_A_ID, {}),
        (B1, "B1", CLIENT_B_ID, {}), (B2, "B2", CLIENT_B_ID, {}),
        (149000005, "Northwind Retail", 251000103, {}), (149000006, "Northwind Outlet", 251000103, {}),
        (149000007, "Northwind Café Ünïcødé", 251000103, {}), (UNINVITED_ACCOUNT, "Northwind Wholesale", 251000103, {}),
        (149000009, "Northwind Seasonal", 251000103, {}),
        (COOLDOWN_INVITATION, "Tailspin Online", 251000104, {}), (149000011, "Tailspin Stores", 251000104, {}),
        (149000012, "Tailspin Kids", 251000104, {}), (149000013, "Tailspin Outlet", 251000104, {}),
        (PREPAID_ACCOUNT, "Wide World Prepaid", 251000105, {"prepaid": True}),
        (149000015, "Wide World Imports EU", 251000105, {}), (149000016, "Wide World Imports US", 251000105, {}),
        (149000017, "Margie's Cruises", 251000106, {"fail_link": True}),
        (FAILING_LINK_INVITATION, "Margie's Flights", 251000106, {"fail_link": True}),
        (149000019, "Margie's Hotels", 251000106, {"fail_unlink": True}),
        (FAILING_UNLINK_ACTIVE, "Margie's Tours", 251000106, {"fail_unlink": True}),
        (149000021, "Adventure Works Bikes", 251000107, {}), (149000022, "Adventure Works Camping", 251000107, {}),
        (149000023, "Adventure Works Climbing", 251000107, {}),
        (MANAGED_BY_OTHER_AGENCY, "Adventure Works Hiking", 251000107, {}),
        (149000025, "[link=https://example.com]Click me[/link]", 251000108, {}),
        (149000026, "Café Łódź 東京 ☕", 251000108, {}),
        (149000027, "Litware Search", CUSTOMER_LINKED_CLIENT, {}), (149000028, "Litware Shopping", CUSTOMER_LINKED_CLIENT, {}),
        (149000029, "Proseware Anzeigen", 251000110, {"currency": "EUR"}),
    ]
    for aid, name, owner, flags in acct:
        b.account(aid, name, owner, primary_user=301000000 + owner - 251000000, **flags)

    # Users: the agency's four roles (the seed figure), Fabrikam's admin, and one Super Admin per client.
    b.user(AGENCY_SUPER_ADMIN, "admin@contoso.example", agency, "Ada", "Admin", Role.SuperAdmin,
           phone="+1 425 555 0100", title="Head of Client Services")
    b.user(AGENCY_STANDARD, "standard@contoso.example", agency, "Sam", "Standard", Role.Standard,
           title="Account Manager")
    b.user(USER_A, "user.a@contoso.example", agency, "User", "A", Role.AdvertiserCampaignManager, accounts=[A1],
           title="Campaign Manager")
    b.user(USER_B, "user.b@contoso.example", agency, "User", "B", Role.Viewer, accounts=[A2, B1, B2],
           title="Analyst")
    b.user(OTHER_AGENCY_SUPER_ADMIN, "admin@fabrikam.example", other, "Fran", "Fabrikam", Role.SuperAdmin,
           phone="+1 206 555 0111")
    slugs = {CLIENT_A_ID: "client-a", CLIENT_B_ID: "client-b", 251000103: "northwind", 251000104: "tailspin",
             251000105: "wideworld", 251000106: "margies", 251000107: "adventure-works", 251000108: "markup",
             CUSTOMER_LINKED_CLIENT: "litware", 251000110: "proseware"}
    first_names = {251000108: "Zoë", 251000110: "Jürgen"}
    for cid, _name, _industry in clients:
        b.user(301000000 + cid - 251000000, f"admin@{slugs[cid]}.example", cid, first_names.get(cid, "Client"),
               "Admin", Role.SuperAdmin)

    # Links managed by Contoso. The seed figure first: A1, A2, B1, B2 Active, both billing choices.
    sa, std = AGENCY_SUPER_ADMIN, AGENCY_STANDARD
    b.link(A1, agency, S.Active, invited_days_ago=400, entered_days_ago=399, by=sa, entity_name="A1")
    b.link(A2, agency, S.Active, invited_days_ago=380, entered_days_ago=379, by=sa, bill_to_client=False,
           entity_name="A2", note="Agency pays; invoice monthly.")
    b.link(B1, agency, S.LinkExpired, invited_days_ago=300, entered_days_ago=270, by=std, latest=False,
           entity_name="B1")
    b.link(B1, agency, S.Active, invited_days_ago=250, entered_days_ago=249, by=std, entity_name="B1")
    b.link(B2, agency, S.Active, invited_days_ago=240, entered_days_ago=239, by=std, bill_to_client=False,
           entity_name="B2")
    # Invitations waiting for the client, some close to expiry (days left 20, 3, 1, 6).
    b.link(149000005, agency, S.LinkPending, invited_days_ago=10, by=std, entity_name="Northwind Retail")
    b.link(149000006, agency, S.LinkPending, invited_days_ago=26.5, by=std, entity_name="Northwind Outlet")
    b.link(149000007, agency, S.LinkPending, invited_days_ago=28.5, by=sa, entity_name="Northwind Café Ünïcødé",
           note="Bitte bis Freitag bestätigen — merci!")
    b.link(149000009, agency, S.LinkPending, invited_days_ago=23.5, by=sa, entity_name="Northwind Seasonal",
           bill_to_client=False)
    # Tailspin: inside the 6-hour cooldown, accepted a minute ago, in progress until a later start date, declined.
    b.link(COOLDOWN_INVITATION, agency, S.LinkPending, invited_days_ago=2 * hour, by=std, entity_name="Tailspin Online")
    b.link(149000011, agency, S.LinkAccepted, invited_days_ago=2, entered_days_ago=1 * minute, by=std,
           entity_name="Tailspin Stores")
    b.link(149000012, agency, S.LinkInProgress, invited_days_ago=1, entered_days_ago=20 * hour, by=sa,
           start_in_days=4, entity_name="Tailspin Kids", note="Starts with the spring campaign.")
    b.link(149000013, agency, S.LinkDeclined, invited_days_ago=12, entered_days_ago=5, by=std,
           entity_name="Tailspin Outlet")
    # Wide World: a prepaid account (no link; inviting it gives 1471), a canceled and an expired invitation.
    b.link(149000015, agency, S.LinkCanceled, invited_days_ago=9, entered_days_ago=8, by=sa,
           entity_name="Wide World Imports EU")
    b.link(149000016, agency, S.LinkExpired, invited_days_ago=40, entered_days_ago=10, by=std,
           entity_name="Wide World Imports US")
    # Margie's: link failure, a pending invitation that will fail, unlink failure, an Active link whose unlink fails.
    b.link(149000017, agency, S.LinkFailed, invited_days_ago=6, entered_days_ago=3, by=sa,
           entity_name="Margie's Cruises", note="Billing transition failed; the client is checking its card.")
    b.link(FAILING_LINK_INVITATION, agency, S.LinkPending, invited_days_ago=7, by=sa, entity_name="Margie's Flights")
    b.link(149000019, agency, S.UnlinkFailed, invited_days_ago=500, entered_days_ago=2, by=sa,
           entity_name="Margie's Hotels")
    b.link(FAILING_UNLINK_ACTIVE, agency, S.Active, invited_days_ago=450, entered_days_ago=449, by=sa,
           entity_name="Margie's Tours")
    # Adventure Works: an unlink under way, one unlinked, one managed by Fabrikam.
    b.link(149000021, agency, S.UnlinkPending, invited_days_ago=600, entered_days_ago=1 * minute, by=sa,
           entity_name="Adventure Works Bikes")
    b.link(149000022, agency, S.UnlinkInProgress, invited_days_ago=610, entered_days_ago=3 * minute, by=sa,
           entity_name="Adventure Works Camping")
    b.link(149000023, agency, S.Inactive, invited_days_ago=700, entered_days_ago=20, by=sa,
           entity_name="Adventure Works Climbing")
    b.link(MANAGED_BY_OTHER_AGENCY, other, S.Active, invited_days_ago=320, entered_days_ago=319,
           by=OTHER_AGENCY_SUPER_ADMIN, entity_name="Adventure Works Hiking")
    b.link(MANAGED_BY_OTHER_AGENCY, agency, S.LinkDeclined, invited_days_ago=100, entered_days_ago=99, by=std,
           entity_name="Adventure Works Hiking", note="Client prefers to stay with Fabrikam.")
    # Markup-like and non-ASCII text, shown literally by every screen.
    b.link(149000025, agency, S.LinkPending, invited_days_ago=15, by=sa, name="[bold red]x[/] invitation",
           note="[bold red]x[/] please accept — [link=https://example.com]details[/link]")
    b.link(149000026, agency, S.Active, invited_days_ago=60, entered_days_ago=59, by=sa, name="Café Łódź 東京 ☕",
           note="Ünïcødé: «guillemets», emoji ☕, <angle> & ampersand")
    # Customer links: Litware managed as a whole (Administrative), Proseware invited (Standard).
    b.link(CUSTOMER_LINKED_CLIENT, agency, S.Active, invited_days_ago=90, entered_days_ago=89, by=sa,
           link_type=LinkType.CustomerLink, permission=CustomerLinkPermission.Administrative,
           entity_name="Litware, Inc.")
    b.link(251000110, agency, S.LinkPending, invited_days_ago=4, by=sa, link_type=LinkType.CustomerLink,
           permission=CustomerLinkPermission.Standard, entity_name="Proseware Ünïcødé GmbH")
    # Received by Contoso: Fabrikam invites Contoso's house account and Contoso as a customer.
    fab = OTHER_AGENCY_SUPER_ADMIN
    b.link(AGENCY_HOUSE_ACCOUNT, other, S.LinkPending, invited_days_ago=2, by=fab, entity_name="Contoso House Account",
           note="Fabrikam would like to run your brand campaigns.")
    b.link(AGENCY_ID, other, S.LinkPending, invited_days_ago=12, by=fab, link_type=LinkType.CustomerLink,
           permission=CustomerLinkPermission.Standard, entity_name="Contoso Agency")
    # Fabrikam once tried A2 (history visible through ManagingCustomerId searches).
    b.link(A2, other, S.LinkCanceled, invited_days_ago=200, entered_days_ago=199, by=fab, entity_name="A2")


_INDUSTRY = {"Retail": "Retail", "Travel": "TravelHospitality", "Sports": "Entertainment",
             "Entertainment": "Entertainment", "Technology": "Technology"}


# ------------------------------------------------------------------------------------------------ generated clients

_ADJ = ("Blue", "Bright", "Coastal", "Golden", "Green", "Happy", "Iron", "Lucky", "Maple", "Noble", "Northern", "Open",
        "Prime", "Quiet", "Rapid", "Red", "Silver", "Smart", "Summit", "True", "Urban", "Vivid", "Wild", "Young")
_NOUN = ("Bakery", "Bikes", "Books", "Coffee", "Dental", "Designs", "Farms", "Fitness", "Foods", "Garden", "Health",
         "Homes", "Labs", "Logistics", "Motors", "Optics", "Pets", "Shoes", "Studio", "Tools", "Travel", "Wines")
_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "S.A.", "& Sons", "Group", "Co.", "AG", "Oy", "AB", "SARL")
_ACCOUNT_KIND = ("Search", "Shopping", "Brand", "Display", "Local", "EU", "US", "Mobile")
#: The latest Contoso link of a generated account: (status or None for no link, weight).
_MIX: tuple[tuple[S | None, int], ...] = (
    (S.Active, 55), (S.LinkPending, 12), (S.Inactive, 8), (None, 6), (S.LinkExpired, 5), (S.LinkDeclined, 4),
    (S.LinkCanceled, 3), (S.LinkFailed, 2), (S.UnlinkFailed, 2), (S.LinkInProgress, 1), ("fabrikam", 2),  # type: ignore[misc]
)


def _generated(b: _Builder, rng: random.Random, scale: int) -> None:
    statuses = [s for s, _ in _MIX]
    cum_weights = list(itertools.accumulate(w for _, w in _MIX))
    account_id = GENERATED_ACCOUNT_BASE
    sa = AGENCY_SUPER_ADMIN
    for i in range(1, scale + 1):
        cid = GENERATED_CUSTOMER_BASE + i
        name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_SUFFIX)}"
        b.customer(cid, name, "client", age_days=rng.uniform(200, 3000))
        uid = GENERATED_USER_BASE + i
        b.user(uid, f"admin@client-{i:06d}.example", cid, "Client", f"Admin {i}", Role.SuperAdmin)
        n_accounts = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        kinds = rng.sample(_ACCOUNT_KIND, n_accounts)
        if rng.random() < 0.03:  # a few clients are managed as a whole
            status = rng.choice((S.Active, S.Active, S.LinkPending))
            invited = rng.uniform(1, 28) if status == S.LinkPending else rng.uniform(40, 1200)
            b.link(cid, AGENCY_ID, status, invited_days_ago=invited,
                   entered_days_ago=invited if status == S.LinkPending else invited - 1, by=sa,
                   link_type=LinkType.CustomerLink, entity_name=name,
                   permission=rng.choice((CustomerLinkPermission.Administrative, CustomerLinkPermission.Standard)))
        for kind in kinds:
            account_id += 1
            roll = rng.random()
            prepaid, fail_link, fail_unlink = roll < 0.01, 0.01 <= roll < 0.03, 0.03 <= roll < 0.05
            acct_name = f"{name} {kind}"
            b.account(account_id, acct_name, cid, prepaid=prepaid, fail_link=fail_link, fail_unlink=fail_unlink,
                      primary_user=uid, age_days=rng.uniform(100, 2500))
            if prepaid:
                continue
            choice = rng.choices(statuses, cum_weights=cum_weights)[0]
            if choice is None:
                continue
            if rng.random() < 0.15:  # an older, ended link first
                old = rng.uniform(400, 1500)
                b.link(account_id, AGENCY_ID, rng.choice((S.LinkExpired, S.LinkDeclined, S.Inactive)),
                       invited_days_ago=old, entered_days_ago=old - rng.uniform(1, 30), by=sa, latest=False,
                       entity_name=acct_name)
            if choice == "fabrikam":
                invited = rng.uniform(30, 900)
                b.link(account_id, OTHER_AGENCY_ID, S.Active, invited_days_ago=invited, entered_days_ago=invited - 1,
                       by=OTHER_AGENCY_SUPER_ADMIN, entity_name=acct_name)
                continue
            _generated_link(b, rng, account_id, acct_name, choice, fail_link, fail_unlink)


def _generated_link(b: _Builder, rng: random.Random, account_id: int, name: str, status: S, fail_link: bool,
                    fail_unlink: bool) -> None:
    sa, std = AGENCY_SUPER_ADMIN, AGENCY_STANDARD
    by = rng.choice((sa, std))
    bill_to_client = rng.random() < 0.7
    start_in = None
    if status == S.LinkPending:
        invited = rng.uniform(0.05, 29.9)
        entered = invited
    elif status in (S.LinkExpired,):
        invited = rng.uniform(31, 400)
        entered = invited - 30
    elif status == S.LinkInProgress:
        invited, entered, start_in = rng.uniform(1, 5), 0.5, rng.uniform(6, 20)
    elif status in (S.LinkDeclined, S.LinkCanceled, S.LinkFailed):
        invited = rng.uniform(2, 400)
        entered = invited - rng.uniform(0.3, min(invited, 29))
    elif status in (S.Inactive, S.UnlinkFailed):
        invited = rng.uniform(100, 1500)
        entered = rng.uniform(1, invited - 30)
    else:  # Active
        invited = rng.uniform(1, 1500)
        entered = max(invited - rng.uniform(0.3, 5), 0.2)
    b.link(account_id, AGENCY_ID, status, invited_days_ago=invited, entered_days_ago=entered, by=by,
           bill_to_client=bill_to_client, entity_name=name, start_in_days=start_in)


# ---------------------------------------------------------------------------------------------------------- seeding


def seed_world(state: State, *, seed: int = 1, scale: int = 0, now: datetime | None = None) -> WorldSummary:
    """Replace the state's world with the demo world (fixed part + ``scale`` generated clients), in one transaction.

    Times are relative to ``now`` (default: the state's clock). Tokens are dropped; the clock is kept.
    """
    import time

    if scale < 0:
        raise ValueError("The scale must be 0 or more (how many generated clients to add).")
    t0 = time.perf_counter()
    with state.write() as tx:
        at = now or tx.clock().now()
        b = _Builder(at)
        _fixed_world(b)
        _generated(b, random.Random(seed), scale)
        tx.clear_world()
        b.write(tx)
        tx.set_meta("seed", seed)
        tx.set_meta("scale", scale)
        tx.set_meta("world_version", WORLD_VERSION)
        tx.set_meta("seeded_at", to_db(at))
        counts = tx.counts()
    tx_time = time.perf_counter() - t0
    with state.write() as tx:
        tx.c.execute("ANALYZE")
    return WorldSummary(seed, scale, counts["customers"], counts["accounts"], counts["users"], counts["client_links"],
                        counts["latest_links"], round(tx_time, 3))


def ensure_world(state: State, *, seed: int = 1, scale: int = 0, now: datetime | None = None) -> WorldSummary | None:
    """Seed the world when the state has none; returns the summary when it seeded, None when a world was there."""
    if state.is_seeded():
        return None
    return seed_world(state, seed=seed, scale=scale, now=now)
