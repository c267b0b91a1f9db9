#!/usr/bin/env python3
"""Summarise the raw measurements of run.sh.

    report.py RESULTS_DIR

Reads RESULTS_DIR/raw.csv (one row per tool, run and phase) and
RESULTS_DIR/meta.tsv (settings and tool versions), prints one markdown table
per phase and writes RESULTS_DIR/summary.md, RESULTS_DIR/summary.csv (the
medians) and RESULTS_DIR/results.json (settings, raw rows and medians).

Each number in a table is the median over the successful runs of that tool,
taken per column. The ratio columns compare a tool with the best peer of the
same phase in the same invocation: the lowest value among the tools other
than lifeboat (so the best peer itself shows 1.00).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys

MIB = 1 << 20
PHASES = [
    ("full", "Full backup"),
    ("nochange", "Incremental backup, nothing changed"),
    ("changes", "Incremental backup after a day of changes"),
    ("restore", "Restore of the latest snapshot"),
]
PRIMARY = "lifeboat"
NUMERIC = ["wall_s", "user_s", "sys_s", "cpu_s", "max_rss_kib", "repo_bytes",
           "growth_bytes"]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, best: float | None) -> str:
    if value is None or best is None or best <= 0:
        return "n/a"
    return f"{value / best:.2f}"


def load_rows(path: str) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key in NUMERIC:
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            row["run"] = int(row["run"])
            rows.append(row)
    return rows


def load_meta(path: str) -> dict:
    """KEY<TAB>VALUE lines written by run.sh; `version.TOOL` and repeated
    `skipped` keys are collected into a dict and a list."""
    meta: dict = {"versions": {}, "skipped": []}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            if key.startswith("version."):
                meta["versions"][key[len("version."):]] = value
            elif key == "skipped":
                meta["skipped"].append(value)
            else:
                meta[key] = value
    meta["tools"] = [t for t in meta.get("tools", "").split(",") if t]
    for key in ("size_mib", "seed", "runs", "dataset_files", "dataset_bytes"):
        meta[key] = int(meta.get(key) or 0)
    return meta


def summarise(rows: list[dict], tools: list[str]) -> dict[str, dict[str, dict]]:
    """phase -> tool -> medians and counts."""
    out: dict[str, dict[str, dict]] = {}
    for phase, _ in PHASES:
        out[phase] = {}
        for tool in tools:
            mine = [r for r in rows if r["tool"] == tool and r["phase"] == phase]
            ok = [r for r in mine if r["status"] == "ok"]
            if not mine:
                continue
            med = {key: median([r[key] for r in ok if r[key] is not None]) for key in NUMERIC}
            med["runs_ok"] = len(ok)
            med["runs"] = len(mine)
            med["verified"] = sum(1 for r in ok if r.get("verified") == "ok")
            out[phase][tool] = med
    return out


def table(phase: str, medians: dict[str, dict]) -> list[str]:
    # lifeboat-plain (an unencrypted lifeboat repository) is lifeboat too, not a peer.
    peers = {t: m for t, m in medians.items() if not t.startswith(PRIMARY)}
    best_wall = min((m["wall_s"] for m in peers.values() if m["wall_s"] is not None), default=None)
    best_rss = min((m["max_rss_kib"] for m in peers.values() if m["max_rss_kib"] is not None),
                   default=None)
    if phase == "restore":
        head = "| tool | runs ok | wall s | CPU s | peak RSS MiB | verified | wall / best peer | RSS / best peer |"
        rule = "|---|---:|---:|---:|---:|---|---:|---:|"
    else:
        head = ("| tool | runs ok | wall s | CPU s | peak RSS MiB | repo MiB | growth MiB "
                "| wall / best peer | RSS / best peer |")
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, rule]
    for tool, m in medians.items():
        rss = m["max_rss_kib"] / 1024 if m["max_rss_kib"] is not None else None
        cells = [tool, f"{m['runs_ok']}/{m['runs']}", fmt(m["wall_s"]), fmt(m["cpu_s"]), fmt(rss, 1)]
        if phase == "restore":
            cells.append(f"{m['verified']}/{m['runs_ok']}" if m["runs_ok"] else "n/a")
        else:
            repo = m["repo_bytes"] / MIB if m["repo_bytes"] is not None else None
            grown = m["growth_bytes"] / MIB if m["growth_bytes"] is not None else None
            cells += [fmt(repo, 1), fmt(grown, 2)]
        cells += [ratio(m["wall_s"], best_wall), ratio(m["max_rss_kib"], best_rss)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    results = sys.argv[1]
    rows = load_rows(os.path.join(results, "raw.csv"))
    meta = load_meta(os.path.join(results, "meta.tsv"))
    tools = meta["tools"]
    medians = summarise(rows, tools)

    md = [f"# Lifeboat comparison benchmark ({meta['started']})", "",
          f"Dataset: {meta['size_mib']} MiB (seed {meta['seed']}, {meta['dataset_files']} files, "
          f"{meta['dataset_bytes'] / MIB:.0f} MiB); a day of changes: "
          f"{meta['mutation']}; runs: {meta['runs']} (median); machine: {meta['machine']}.", ""]
    md += ["Versions: " + "; ".join(f"{t}: {v}" for t, v in meta["versions"].items()), ""]
    if meta.get("skipped"):
        md += ["Skipped: " + "; ".join(meta["skipped"]), ""]
    md += ["Ratios compare with the best peer (the lowest value among the tools other "
           "than lifeboat) of the same phase: below 1.00 means lifeboat does better.", ""]
    for phase, title in PHASES:
        if not medians[phase]:
            continue
        md += [f"## {title}", ""] + table(phase, medians[phase]) + [""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        md += ["## Failures", ""]
        md += [f"- {r['tool']} run {r['run']} {r['phase']}: {r['status']}" for r in failed]
        md.append("")
    unverified = [r for r in rows if r["phase"] == "restore" and r["status"] == "ok"
                  and r.get("verified") != "ok"]
    if unverified:
        md += ["## Restores that did not match the source", ""]
        md += [f"- {r['tool']} run {r['run']}: {r['verified']}" for r in unverified]
        md.append("")
    text = "\n".join(md)
    print(text)
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write(text)

    with open(os.path.join(results, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "tool", "runs_ok", "runs"] + NUMERIC + ["verified"])
        for phase, _ in PHASES:
            for tool, m in medians[phase].items():
                w.writerow([phase, tool, m["runs_ok"], m["runs"]]
                           + ["" if m[k] is None else m[k] for k in NUMERIC] + [m["verified"]])
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump({"meta": meta, "raw": rows, "median": medians}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
