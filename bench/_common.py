"""What every benchmark script shares: the machine's description, medians, resident memory, generated worlds, a
simulator in its own process, and the report format (JSON in ``bench/results/``, a table for people).

Nothing here imports linkdesk, textual or the SDK at module level: the first-frame benchmark imports this module in
the process it times.

Work files (generated simulator worlds, synced caches) live in ``$LINKDESK_BENCH_DIR`` (default: a folder in the
system temp dir). They are keyed by a hash of the code that produced them, so a change to the simulator, the sync or
the cache rebuilds them; delete the folder to start from nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable

#: Links the agency sees per generated client of ``--scale`` (measured: seed 1, scale 48,000 -> 99,635 links).
LINKS_PER_CLIENT = 2.0757
SIZES: dict[str, int] = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
AGENCY_ADMIN = "admin@contoso.example"
DEVELOPER_TOKEN = "BBD37VB98"  # the sandbox's public developer token, which the simulator accepts

#: Sources whose content keys the generated worlds and the synced caches.
WORLD_SOURCES = ("core/simulator/world.py", "core/simulator/state.py", "core/simulator/service.py", "core/model.py",
                 "core/rules.py")
SYNC_SOURCES = WORLD_SOURCES + ("core/sync.py", "core/api.py", "core/cache.py", "core/session.py")


# ---------------------------------------------------------------------------------------------------------- machine


def _first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """The machine a result was measured on (nproc, CPU model, RAM, Python, OS) and how busy it was."""
    import sqlite3

    mem_kb = _first("/proc/meminfo", "MemTotal")
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        nproc = os.cpu_count() or 0
    try:
        from importlib.metadata import version

        textual = version("textual")
    except Exception:  # noqa: BLE001 - a description, not a requirement
        textual = None
    return {
        "nproc": nproc,
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "ram_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "python": platform.python_version(),
        "os": _first("/etc/os-release", "PRETTY_NAME") or platform.platform(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "textual": textual,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "git": git_revision(),
    }


# ------------------------------------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median / min / max / runs of a list of samples (rounded for the report)."""
    vals = list(values)
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {"median": _round(median(vals)), "min": _round(min(vals)), "max": _round(max(vals)), "runs": len(vals)}


def _round(x: float) -> float:
    if x != x:  # nan
        return x
    return round(x, 3 if abs(x) < 10 else 2 if abs(x) < 1000 else 1)


def timed(fn: Callable[[], Any], runs: int, *, warmup: int = 1) -> tuple[list[float], Any]:
    """``runs`` wall times of ``fn`` in milliseconds (after ``warmup`` untimed calls) and its last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out, result


# ----------------------------------------------------------------------------------------------------------- memory


def _status_kb(pid: int | str, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory now (VmRSS), in MB (10^6 bytes)."""
    kb = _status_kb(pid, "VmRSS")
    return round(kb * 1024 / 1e6, 1) if kb is not None else None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of the process so far (VmHWM), in MB."""
    kb = _status_kb(pid, "VmHWM")
    return round(kb * 1024 / 1e6, 1) if kb is not None else None


# ----------------------------------------------------------------------------------------------------------- report


@dataclass
class Figure:
    """One measured figure. ``values``: the samples (the headline is their median unless ``value`` is given)."""

    id: str
    title: str
    unit: str
    values: list[float]
    target: str | None = None
    ok: bool | None = None
    note: str = ""
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        s = summary(self.values)
        headline = self.value if self.value is not None else s["median"]
        return {"id": self.id, "title": self.title, "unit": self.unit, "value": _round(headline)
                if headline is not None else None, **s, "target": self.target, "ok": self.ok, "note": self.note,
                **({"extra": self.extra} if self.extra else {})}


def within(value: float | None, limit: float) -> bool | None:
    return None if value is None or value != value else value <= limit


class Report:
    """The figures of one script run, written as JSON and printed as a table."""

    def __init__(self, script: str, args: dict[str, Any]):
        self.script = script
        self.args = args
        self.started = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        self.machine = machine()
        self.figures: list[Figure] = []
        self.extra: dict[str, Any] = {}

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        d = fig.as_dict()
        verdict = {True: "ok", False: "MISSED", None: ""}[fig.ok]
        print(f"  {fig.id:<10} {fig.title}: {d['value']} {fig.unit} (median of {d['runs']}; min {d['min']}, max "
              f"{d['max']}) {('target ' + fig.target) if fig.target else ''} {verdict}".rstrip(), flush=True)
        return fig

    def as_dict(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._t0, 1),
            "args": self.args,
            "machine": {**self.machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
            "figures": [f.as_dict() for f in self.figures],
            "extra": self.extra,
        }

    def write(self, path: Path | None) -> dict[str, Any]:
        data = self.as_dict()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return data


def add_common_args(ap: Any) -> None:
    ap.add_argument("--quick", action="store_true", help="small scales and few runs: checks that the script works "
                                                          "(the smoke test uses it); figures are not comparable")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 5; --quick: 2)")
    ap.add_argument("--json", type=Path, help="write the results as JSON to this file")


def runs_of(args: Any) -> int:
    return args.runs if args.runs is not None else (2 if args.quick else 5)


# ----------------------------------------------------------------------------------------------------- work folder


def workdir() -> Path:
    base = os.environ.get("LINKDESK_BENCH_DIR") or os.path.join(tempfile.gettempdir(), f"linkdesk-bench-{os.getuid()}")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def code_hash(sources: Iterable[str], *extra: object) -> str:
    h = hashlib.sha1()
    for rel in sources:
        try:
            h.update((ROOT / rel).read_bytes())
        except OSError:
            h.update(rel.encode())
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:12]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark's child process: bytecode caching on, as in any installed linkdesk (a
    development shell may set PYTHONDONTWRITEBYTECODE, which makes every start compile the sources again), with the
    cached bytecode kept in the work folder rather than next to the sources."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir() / "pycache")
    env.update(extra)
    return env


def scale_for(links: int) -> int:
    """The simulator's ``--scale`` (generated clients) for about ``links`` client links seen by the agency."""
    return max(1, round(links / LINKS_PER_CLIENT))


def copy_db(src: Path, dst: Path) -> None:
    """Copy an SQLite file (with its WAL, if any) to ``dst``, replacing what was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        target = Path(str(dst) + suffix)
        if target.exists():
            target.unlink()
    shutil.copyfile(src, dst)
    wal = Path(str(src) + "-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(dst) + "-wal"))


def generate_world(path: Path, links: int, seed: int = 1) -> dict[str, Any]:
    """Seed a simulator state file with the demo world at the scale for ``links``; returns its summary and time."""
    from linkdesk.core.simulator.state import State
    from linkdesk.core.simulator.world import seed_world

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    t0 = time.perf_counter()
    state = State(path)
    try:
        w = seed_world(state, seed=seed, scale=scale_for(links))
    finally:
        state.close()
    seconds = time.perf_counter() - t0
    return {"scale": w.scale, "seed": w.seed, "customers": w.customers, "accounts": w.accounts, "links": w.links,
            "latest_links": w.latest_links, "seconds": round(seconds, 2), "seed_tx_seconds": w.seconds}


def _prune(keep: Path, pattern: str) -> None:
    """Delete older work files of the same kind (built by other versions of the code), keeping ``keep``."""
    for old in workdir().glob(pattern):
        if old == keep or old.name.startswith(keep.name) or ".tmp" in old.name:
            continue
        try:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        except OSError:
            pass


def world_state(links: int, seed: int = 1, *, log: Callable[[str], None] = print) -> Path:
    """A generated simulator state for ``links`` (cached in the work folder; copy it before serving it)."""
    path = workdir() / f"world-{links}-s{seed}-{code_hash(WORLD_SOURCES, links, seed)}.sqlite"
    if not path.exists():
        log(f"  generating the {links:,}-link world (scale {scale_for(links):,}) ...")
        tmp = path.with_suffix(f".{os.getpid()}.tmp.sqlite")  # another process may be generating the same world
        info = generate_world(tmp, links, seed)
        os.replace(tmp, path)
        log(f"  ... {info['latest_links']:,} links in {info['seconds']} s")
        _prune(path, f"world-{links}-s{seed}-*.sqlite*")
    return path


# ---------------------------------------------------------------------------------------------- simulator process


class SimulatorProcess:
    """``linkdesk simulator serve`` on a state file in a child process (its own interpreter and GIL, like a remote
    service). Use as a context manager; ``url`` is the SOAP endpoint, ``pid`` the child's process id."""

    def __init__(self, state: Path, *, latency_ms: float = 0, startup_timeout: float = 120):
        self.state = state
        self.latency_ms = latency_ms
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._tail: deque[str] = deque(maxlen=40)

    def __enter__(self) -> "SimulatorProcess":
        cmd = [PY, "-m", "linkdesk.core.simulator.cli", "serve", "--state", str(self.state), "--port", "0"]
        if self.latency_ms:
            cmd += ["--latency", str(self.latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env=child_env())
        found = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._tail.append(line.rstrip())
                if line.startswith("Simulator endpoint:"):
                    self.url = line.split(":", 1)[1].strip()
                    found.set()
            found.set()

        threading.Thread(target=reader, daemon=True).start()
        if not found.wait(self.startup_timeout) or not self.url:
            self.__exit__()
            raise RuntimeError("The simulator did not start:\n" + "\n".join(self._tail))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def api_for(url: str, user: str = AGENCY_ADMIN, **kwargs: Any) -> Any:
    """A ``CustomerManagementApi`` signed in to a running simulator as ``user`` (OAuth flow over HTTP)."""
    from linkdesk.core.api import CustomerManagementApi
    from linkdesk.core.simulator.auth import authorization_for

    return CustomerManagementApi(developer_token=DEVELOPER_TOKEN, authentication=authorization_for(url, user),
                                 location=url, **kwargs)


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU time a process has used so far (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class SyncRun:
    seconds: float
    ok: bool
    links: int
    message: str
    phases: dict[str, float]
    #: CPU seconds this process used per phase (all threads): the client's own work, whatever else the machine does.
    cpu_phases: dict[str, float] = field(default_factory=dict)


def run_sync(cache_path: Path, api: Any, *, concurrency: int = 4, fresh: bool = True) -> SyncRun:
    """One ``core.sync.full_sync`` into ``cache_path`` (emptied first when ``fresh``), timed, with phase times."""
    from linkdesk.core import sync
    from linkdesk.core.cache import Cache

    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(cache_path) + suffix).unlink(missing_ok=True)
    cache = Cache.open(cache_path)
    marks: list[tuple[str, float, float]] = []

    def progress(p: Any) -> None:
        if not marks or marks[-1][0] != p.phase:
            marks.append((p.phase, time.perf_counter(), time.process_time()))

    try:
        t0 = time.perf_counter()
        result = sync.full_sync(cache, api, clock=lambda: datetime.now(timezone.utc), progress=progress,
                                concurrency=concurrency)
        seconds = time.perf_counter() - t0
        cpu_end = time.process_time()
    finally:
        cache.close()
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for (name, start, c_start), nxt in zip(marks, [*marks[1:], ("end", t0 + seconds, cpu_end)]):
        phases[name] = round(phases.get(name, 0) + nxt[1] - start, 2)
        cpu[name] = round(cpu.get(name, 0) + nxt[2] - c_start, 2)
    return SyncRun(round(seconds, 2), result.ok, result.links, result.message, phases, cpu)


def synced_home(links: int, seed: int = 1, *, log: Callable[[str], None] = print) -> Path:
    """A ``LINKDESK_HOME`` holding the demo profile after a full sync of the ``links`` world and one start of the
    app (so that its config remembers the acting identity, as after any first run). Cached in the work folder;
    copy it with :func:`copy_home` before a run that may write to it."""
    home = workdir() / f"home-{links}-s{seed}-{code_hash(SYNC_SOURCES, links, seed)}"
    if (home / "ready").exists():
        return home
    log(f"  preparing a synced {links:,}-link demo home (one full sync over loopback SOAP) ...")
    state = world_state(links, seed, log=log)
    build = home.with_name(f"{home.name}.{os.getpid()}.tmp")  # built aside, then moved in place
    if build.exists():
        shutil.rmtree(build)
    t0 = time.perf_counter()
    copy_db(state, build / "demo" / "simulator.sqlite")
    with SimulatorProcess(build / "demo" / "simulator.sqlite") as sim:
        run = run_sync(build / "demo" / "cache.sqlite", api_for(sim.url))
    if not run.ok:
        raise RuntimeError(f"The preparing sync failed: {run.message}")
    # One headless start of the real app in a child process writes the config a returning user has.
    subprocess.run([PY, str(BENCH / "bench_tui.py"), "--child", "remember", "--home", str(build)], check=True,
                   cwd=ROOT, timeout=600, env=child_env())
    (build / "ready").write_text(json.dumps({"links": run.links, "sync_seconds": run.seconds}))
    if home.exists():
        shutil.rmtree(home)
    build.rename(home)
    log(f"  ... {run.links:,} links synced in {run.seconds} s; home ready in {time.perf_counter() - t0:.0f} s")
    _prune(home, f"home-{links}-s{seed}-*")
    return home


def copy_home(src: Path, dst: Path) -> Path:
    """A private copy of a prepared home (the app writes to its cache and config)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def main_guard(fn: Callable[[], int]) -> None:
    """Run a script's main and exit with its code (Ctrl+C ends it quietly)."""
    try:
        sys.exit(fn())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
