"""Run every benchmark, save the results, and refresh the table in bench/README.md.

Run:  .venv/bin/python bench/run_all.py [--quick] [--runs N] [--only world,sync,tui,cache [--merge]] [--no-readme]

Each script runs in its own process (clean memory and imports) and writes JSON; the merged result goes to
``bench/results/<UTC time>.json`` and ``bench/results/latest.json`` (``--quick`` runs go to ``bench/results/quick/``
and leave the README alone: their scales are too small to compare). The README's table is rebuilt from
``latest.json`` between its ``results:begin`` / ``results:end`` markers, with the machine's description. ``--only``
runs a subset and leaves the README alone; with ``--merge`` its results replace those scripts' in ``latest.json``
(the others are kept, with their own dates) and the README is rewritten.

Figure 8 (growth) is derived here from the per-size figures of the other scripts: for each interactive figure, the
100k value divided by the 1k value. Nothing on the interactive path may grow linearly with the number of links (that
would be ×100); the table marks a factor of 3 or more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

SCRIPTS = {
    "world": "bench_world.py",
    "sync": "bench_sync.py",
    "tui": "bench_tui.py",
    "cache": "bench_cache.py",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
#: Figures whose growth with the number of links is judged (per-size ids without the size suffix).
INTERACTIVE = ("1.frame", "2.cursor", "2.filter", "2.page", "2.stage", "4.rss", "4.rss_ready", "7.tree_expand",
               "7.tree_collapse", "7.tree_reexpand")
GROWTH_LIMIT = 3.0


def run_script(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any] | None:
    cmd = [C.PY, str(C.BENCH / SCRIPTS[name]), "--json", str(out)]
    if name == "cache":  # the cache helper's script has its own options
        if args.quick:
            cmd += ["--links", "1000", "--accounts", "200", "--runs", "2"]
        elif args.runs:
            cmd += ["--runs", str(args.runs)]
    else:
        if args.quick:
            cmd.append("--quick")
        if args.runs:
            cmd += ["--runs", str(args.runs)]
    print(f"== {SCRIPTS[name]}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=C.ROOT)
    print(f"== {SCRIPTS[name]}: exit {done.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
    if done.returncode != 0 or not out.exists():
        return {"script": name, "error": f"exit code {done.returncode}", "figures": []}
    data = json.loads(out.read_text())
    if name == "cache":
        data = cache_figures(data)
    return data


def cache_figures(data: dict[str, Any]) -> dict[str, Any]:
    """bench_cache.py's rows as figures (median / worst of its runs per query)."""
    figures = []
    for i, row in enumerate(data.get("results", []), 1):
        figures.append({"id": f"C.{i}", "title": f"cache: {row['query']}", "unit": "ms", "value": row["median_ms"],
                        "median": row["median_ms"], "min": None, "max": row["worst_ms"], "runs": data.get("runs"),
                        "target": None, "ok": None, "note": row.get("note", "")})
    return {"script": "bench_cache", "args": {"links": data.get("links"), "accounts": data.get("accounts")},
            "machine": {"load": data.get("load")}, "figures": figures}


def growth(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {f["id"]: f for f in figures}
    out = []
    for base in INTERACTIVE:
        small, big = by_id.get(f"{base}.1k"), by_id.get(f"{base}.100k")
        mid = by_id.get(f"{base}.10k")
        if not small or not big or not small.get("value") or big.get("value") is None:
            continue
        factor = big["value"] / small["value"]
        values = " / ".join(f"{f['value']}" if f else "–" for f in (small, mid, big))
        out.append({"id": f"8.{base}", "title": f"growth of {base} from 1k to 100k links ({values} {small['unit']} "
                    "at 1k / 10k / 100k)", "unit": "×", "value": round(factor, 2), "median": round(factor, 2),
                    "min": None, "max": None, "runs": min(small.get("runs") or 0, big.get("runs") or 0),
                    "target": f"< {GROWTH_LIMIT:g}× (linear: 100×)", "ok": factor < GROWTH_LIMIT, "note": ""})
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def table(merged: dict[str, Any]) -> str:
    m = merged["machine"]
    lines = [
        f"Latest run: {merged['started']} (git {m.get('git')}), {merged['seconds'] / 60:.0f} min in all"
        + (f" ({merged['merged']})." if merged.get("merged") else "."),
        "",
        f"Machine: {m.get('nproc')} × {m.get('cpu')}, {m.get('ram_gb')} GB RAM, {m.get('os')} "
        f"(kernel {m.get('kernel')}), Python {m.get('python')}, SQLite {m.get('sqlite')}, Textual {m.get('textual')}; "
        f"load average at the start {m.get('loadavg')}.",
        "",
        "| Figure | What | Result | Runs | Min – max | Target | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for script in merged["scripts"].values():
        if script.get("error"):
            lines.append(f"| {script['script']} | failed: {script['error']} | | | | | |")
            continue
        for f in script["figures"]:
            if f["id"].startswith("C."):
                continue
            met = {True: "yes", False: "**no**", None: ""}[f.get("ok")]
            rng = f"{fmt(f.get('min'))} – {fmt(f.get('max'))}" if f.get("min") is not None else (
                f"worst {fmt(f.get('max'))}" if f.get("max") is not None else "")
            what = f["title"] + (f" — {f['note']}" if f.get("note") else "")
            lines.append(f"| {f['id']} | {what.replace('|', '/')} | {fmt(f.get('value'))} {f['unit']} | "
                         f"{f.get('runs') or ''} | {rng} | {f.get('target') or ''} | {met} |")
    cache = merged["scripts"].get("cache")
    if cache and cache.get("figures"):
        a = cache.get("args", {})
        lines += ["", f"Cache queries (bench_cache.py, {fmt(a.get('links'))} links, {fmt(a.get('accounts'))} "
                      "accounts; median and worst of its runs, ms):", "",
                  "| Query | Median | Worst | Note |", "|---|---|---|---|"]
        for f in cache["figures"]:
            lines.append(f"| {f['title'].removeprefix('cache: ')} | {fmt(f['median'])} | {fmt(f['max'])} | "
                         f"{(f.get('note') or '').replace('|', '/')} |")
    return "\n".join(lines)


def update_readme(merged: dict[str, Any]) -> None:
    readme = C.BENCH / "README.md"
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table(merged)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scales, 2 runs: checks the scripts, not the targets")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default: each script's, 5)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SCRIPTS)}")
    ap.add_argument("--merge", action="store_true",
                    help="with --only: replace those scripts' results in results/latest.json, keep the others")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        ap.error(f"unknown script(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    merged: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
                              "machine": C.machine(), "scripts": {}}
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp:
        for name in names:
            merged["scripts"][name] = run_script(name, args, Path(tmp) / f"{name}.json")
    if args.merge and args.only and not args.quick and (C.RESULTS / "latest.json").exists():
        previous = json.loads((C.RESULTS / "latest.json").read_text())
        kept = {k: {**v, "merged_from": previous["started"]} for k, v in previous["scripts"].items()
                if k not in merged["scripts"] and k != "growth"}
        merged["scripts"] = {**kept, **merged["scripts"]}
        merged["merged"] = f"{', '.join(names)} from this run; the rest from {previous['started']}"
    figures = [f for s in merged["scripts"].values() for f in s.get("figures", [])]
    grown = growth(figures)
    if grown:
        merged["scripts"]["growth"] = {"script": "growth (derived)", "figures": grown}
    merged["seconds"] = round(time.perf_counter() - t0, 1)
    merged["machine"]["loadavg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]

    folder = C.RESULTS / "quick" if args.quick else C.RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    body = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    (folder / f"{stamp}.json").write_text(body)
    (folder / "latest.json").write_text(body)
    print(f"results: {folder / (stamp + '.json')}")
    if not args.quick and not args.no_readme and (not args.only or args.merge):
        update_readme(merged)
        print("bench/README.md updated")
    missed = [f["id"] for f in figures + grown if f.get("ok") is False]
    print(f"{len(figures) + len(grown)} figures; missed targets: {', '.join(missed) or 'none'}")
    return 0


if __name__ == "__main__":
    C.main_guard(main)
