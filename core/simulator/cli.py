"""``linkdesk simulator serve | users | advance | reset``: each a function taking argv and returning an exit code.

Exit codes: 0 success, 1 the command could not do its work (state file unusable, port taken, unknown user), 2 the
command line was wrong (argparse). Messages are full sentences on stderr; results go to stdout.

Without ``--state`` every command uses the demo profile's simulator state
(``linkdesk.core.paths.simulator_state_path()``, i.e. ``$LINKDESK_HOME/demo/simulator.sqlite``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence, TextIO

from .clock import DurationError, format_duration, parse_duration

PROG = "linkdesk simulator"


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="FILE", type=Path,
                   help="simulator state file (default: the demo profile's simulator.sqlite)")


def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return n


def _port(text: str) -> int:
    n = _nonneg_int(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0 to 65535; 0 picks a free one)")
    return n


def _duration(text: str):  # type: ignore[no-untyped-def]
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return int(exc.code or 0)


def _state_path(ns: argparse.Namespace) -> Path:
    if ns.state is not None:
        return ns.state
    from .app import default_state_path

    return default_state_path()


def _err(message: str, stderr: TextIO | None = None) -> None:
    print(message, file=stderr or sys.stderr)


# ---------------------------------------------------------------------------------------------------------- serve


def _faults(text: str):
    """argparse type for --faults: a FaultPlan, or a usage error that says what is allowed."""
    from .faultinject import FaultPlan, FaultPlanError

    try:
        return FaultPlan.parse(text)
    except FaultPlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        description="Serve the simulated Customer Management v13 SOAP service (and its OAuth token endpoint) on "
                    "127.0.0.1 until Ctrl+C. Point the bingads SDK at the printed URL with location=.",
    )
    p.add_argument("--port", type=_port, default=0, help="TCP port on 127.0.0.1 (default 0: a free port)")
    _state_arg(p)
    p.add_argument("--scale", type=_nonneg_int, default=None,
                   help="generated clients to add to the demo world (1-4 accounts each); reseeds when it differs "
                        "from the state's world")
    p.add_argument("--seed", type=int, default=None, help="seed of the generated world (default 1)")
    p.add_argument("--latency", type=float, default=0, metavar="MS", help="add MS milliseconds to every SOAP reply")
    p.add_argument("--faults", metavar="SPEC", type=_faults, default=None,
                   help="inject faults, e.g. 'rate=0.2,seed=3' or 'rate=1,kinds=http503'; kinds: http500 http503 "
                        "reset timeout malformed throttle expire internal slow (deterministic from the seed)")
    p.add_argument("--throttle", type=_nonneg_int, default=0, metavar="N",
                   help="refuse more than N calls per user per minute with 117 CallRateExceeded (default: off)")
    return p


def serve(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None,
          ready: Callable[[object], None] | None = None) -> int:
    """``linkdesk simulator serve``. ``ready(simulator)`` (tests) is called once it listens."""
    out = stdout or sys.stdout
    ns = _parse(serve_parser(), argv)
    if isinstance(ns, int):
        return ns
    if ns.latency < 0:
        _err("--latency must be 0 or more milliseconds.", stderr)
        return 2
    from .app import Simulator
    from .service import SANDBOX_DEVELOPER_TOKEN, ServiceOptions
    from .state import State, StateError

    path = _state_path(ns)
    reset = False
    try:
        with State(path) as st, st.read() as tx:
            stored_seed, stored_scale = tx.meta("seed"), tx.meta("scale")
    except StateError as exc:
        _err(str(exc), stderr)
        return 1
    seed = ns.seed if ns.seed is not None else int(stored_seed or 1)
    scale = ns.scale if ns.scale is not None else int(stored_scale or 0)
    if stored_seed is not None and (seed != int(stored_seed) or scale != int(stored_scale or 0)):
        reset = True
    sim = Simulator(path, port=ns.port, seed=seed, scale=scale, reset=reset, latency_ms=ns.latency,
                    faults=ns.faults, service_options=ServiceOptions(calls_per_minute=ns.throttle or None))
    try:
        sim.open()
    except StateError as exc:
        _err(str(exc), stderr)
        return 1
    except OSError as exc:
        _err(f"The simulator cannot listen on 127.0.0.1:{ns.port} ({exc.strerror or exc}). Choose another --port, "
             "or 0 for a free one.", stderr)
        return 1
    stopping = threading.Event()

    def _stop(*_args: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=sim.stop, daemon=True).start()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if sim.seeded is not None:
            w = sim.seeded
            print(f"Seeded the demo world (seed {w.seed}, scale {w.scale}): {w.customers} customers, {w.accounts} "
                  f"accounts, {w.users} users, {w.latest_links} client links ({w.links} with history) in "
                  f"{w.seconds:.1f} s.", file=out)
        print(f"Simulator endpoint: {sim.url}", file=out)
        print(f"Token endpoint:     {sim.token_url}", file=out)
        print(f"Developer token:    {SANDBOX_DEVELOPER_TOKEN}", file=out)
        print(f"State:              {path}", file=out)
        state_flag = f" --state {path}" if ns.state is not None else ""
        print(f"Demo users and access tokens: linkdesk simulator users{state_flag}", file=out)
        if ns.faults is not None:
            plan = ns.faults
            print(f"Injecting faults: rate {plan.rate:g}, kinds {' '.join(plan.kinds)}, seed {plan.seed}.", file=out)
        print("Press Ctrl+C to stop.", file=out, flush=True)
        if ready is not None:
            threading.Thread(target=ready, args=(sim,), daemon=True).start()
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if ns.faults is not None:
        print(f"Faults injected: {ns.faults.summary()}.", file=out)
    print("Simulator stopped.", file=out, flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------- users


def users_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} users",
        description="List every demo identity of the simulator with a fresh access token (valid for one simulated "
                    "hour; run again for fresh ones). These tokens only work against the simulator.",
    )
    _state_arg(p)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--side", choices=("agency", "client", "other-agency"), help="only users of this side")
    return p


def users(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``linkdesk simulator users``."""
    out = stdout or sys.stdout
    ns = _parse(users_parser(), argv)
    if isinstance(ns, int):
        return ns
    from .app import identities
    from .auth import issue_access_tokens
    from .state import State, StateError
    from .world import ensure_world

    try:
        with State(_state_path(ns)) as st:
            ensure_world(st)
            rows = [i for i in identities(st) if ns.side is None or i.side == ns.side]
            issued = list(zip(rows, issue_access_tokens(st, [i.user_id for i in rows])))
    except StateError as exc:
        _err(str(exc), stderr)
        return 1
    if ns.json:
        data = [{
            "user_id": i.user_id, "username": i.username, "name": i.name, "customer_id": i.customer_id,
            "customer_name": i.customer_name, "side": i.side, "role": i.role, "role_id": i.role_id,
            "access_token": t.access_token, "expires_at": t.expires_at.isoformat().replace("+00:00", "Z"),
        } for i, t in issued]
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    headers = ("USER ID", "USERNAME", "ROLE", "SIDE", "CUSTOMER", "ACCESS TOKEN")
    table = [(str(i.user_id), i.username, i.role, i.side, f"{i.customer_name} ({i.customer_id})", t.access_token)
             for i, t in issued]
    widths = [max(len(h), *(len(r[k]) for r in table)) if table else len(h) for k, h in enumerate(headers)]
    for row in (headers, *table):
        out.write("  ".join(c.ljust(widths[k]) for k, c in enumerate(row)).rstrip() + "\n")
    if issued:
        out.write(f"\nTokens are valid until {issued[0][1].expires_at:%Y-%m-%d %H:%M} UTC simulated time "
                  "(developer token BBD37VB98).\n")
    return 0


# -------------------------------------------------------------------------------------------------------- advance


def advance_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} advance",
        description="Move the simulator's clock forward and apply every service transition that came due "
                    "(acceptances complete, unlinks finish, invitations expire, access tokens expire).",
    )
    _state_arg(p)
    p.add_argument("duration", type=_duration, metavar="DURATION", help="how far: 30m, 6h, 31d, 1d12h, 2w")
    return p


def advance(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``linkdesk simulator advance DURATION``."""
    out = stdout or sys.stdout
    ns = _parse(advance_parser(), argv)
    if isinstance(ns, int):
        return ns
    from .service import advance as do_advance
    from .state import State, StateError
    from .world import ensure_world

    try:
        with State(_state_path(ns)) as st:
            ensure_world(st)
            now, applied = do_advance(st, ns.duration)
            offset = st.clock().offset
    except StateError as exc:
        _err(str(exc), stderr)
        return 1
    out.write(f"Moved the simulator's clock {format_duration(ns.duration)} forward: it is now "
              f"{now:%Y-%m-%d %H:%M} UTC ({format_duration(offset)} ahead of real time); "
              f"{applied} service transition{'s' if applied != 1 else ''} applied.\n")
    return 0


# ---------------------------------------------------------------------------------------------------------- reset


def reset_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} reset",
        description="Replace the simulator's world with a freshly seeded demo world and set its clock back to "
                    "real time. Every invitation and change made in the simulator is lost.",
    )
    _state_arg(p)
    p.add_argument("--seed", type=int, default=None, help="seed (default: the current world's, else 1)")
    p.add_argument("--scale", type=_nonneg_int, default=None,
                   help="generated clients (default: the current world's, else 0)")
    return p


def reset(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``linkdesk simulator reset``."""
    out = stdout or sys.stdout
    ns = _parse(reset_parser(), argv)
    if isinstance(ns, int):
        return ns
    from .clock import VirtualClock
    from .state import State, StateError
    from .world import seed_world

    path = _state_path(ns)
    try:
        with State(path) as st:
            with st.write() as tx:
                seed = ns.seed if ns.seed is not None else int(tx.meta("seed") or 1)
                scale = ns.scale if ns.scale is not None else int(tx.meta("scale") or 0)
                tx.save_clock(VirtualClock())
            w = seed_world(st, seed=seed, scale=scale)
    except StateError as exc:
        _err(str(exc), stderr)
        return 1
    out.write(f"Reset {path}: seed {w.seed}, scale {w.scale}; {w.customers} customers, {w.accounts} accounts, "
              f"{w.users} users, {w.latest_links} client links. The clock follows real time again.\n")
    return 0


# ----------------------------------------------------------------------------------------------------------- main

COMMANDS: dict[str, Callable[..., int]] = {"serve": serve, "users": users, "advance": advance, "reset": reset}


def main(argv: Sequence[str] | None = None) -> int:
    """``linkdesk simulator COMMAND ...`` (for wiring into the main CLI, or ``python -m``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {PROG} {{serve,users,advance,reset}} ...\n\n"
              "Run the built-in simulator of the Microsoft Advertising Customer Management service.\n\n"
              "commands:\n"
              "  serve     serve the SOAP service and its token endpoint on 127.0.0.1 until Ctrl+C\n"
              "  users     list the demo users with fresh access tokens\n"
              "  advance   move the simulated clock forward (30m, 6h, 31d)\n"
              "  reset     replace the world with a freshly seeded one\n\n"
              f"Run `{PROG} COMMAND --help` for a command's options.")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        _err(f"{PROG}: unknown command {args[0]!r}; use serve, users, advance or reset.")
        return 2
    try:
        return command(args[1:])
    except KeyboardInterrupt:
        _err("Interrupted before the command finished; run it again.")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
