#!/usr/bin/env python3
"""Summarise the measurements of scale.sh.

    scale_report.py RESULTS_DIR

Reads RESULTS_DIR/raw.csv (one row per scenario, size, tool and phase) and
RESULTS_DIR/meta.tsv, prints markdown tables and writes them to
RESULTS_DIR/summary.md (and everything to RESULTS_DIR/results.json).

The ratio columns compare a tool with the best peer of the same scenario,
size and phase: the lowest value among the tools other than lifeboat (so the
best peer itself shows 1.00; below 1.00 lifeboat does better). For the big
file, a second table sets each tool's peak RSS at the big size beside the one
at the reference size.
"""

from __future__ import annotations

import csv
import json
import os
import sys

MIB = 1 << 20
PRIMARY = "lifeboat"
PHASES = [("full", "full backup"), ("nochange", "no-change incremental"),
          ("restore", "restore")]
NUMERIC = ["wall_s", "user_s", "sys_s", "cpu_s", "max_rss_kib", "repo_bytes"]


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
            row["size"] = int(row["size"])
            rows.append(row)
    return rows


def load_meta(path: str) -> dict:
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
    return meta


def best(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows
              if r["status"] == "ok" and r["tool"] != PRIMARY and r[key] is not None]
    return min(values, default=None)


def phase_table(rows: list[dict], with_size: bool) -> list[str]:
    """One table: a row per (size,) phase and tool."""
    head = ["tool"] + (["size GiB"] if with_size else []) + [
        "phase", "wall s", "CPU s", "peak RSS MiB"]
    head += ["MiB/s"] if with_size else []
    head += ["repo MiB", "restore check", "wall / best peer", "RSS / best peer"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if h in ("tool", "phase", "restore check") else "---:"
                            for h in head) + "|"]
    sizes = sorted({r["size"] for r in rows})
    for size in sizes:
        for phase, title in PHASES:
            group = [r for r in rows if r["size"] == size and r["phase"] == phase]
            if not group:
                continue
            best_wall, best_rss = best(group, "wall_s"), best(group, "max_rss_kib")
            for r in group:
                cells = [r["tool"]] + ([str(size)] if with_size else []) + [title]
                if r["status"] != "ok":
                    cells += [r["status"]] + ["n/a"] * (len(head) - len(cells) - 1)
                    lines.append("| " + " | ".join(cells) + " |")
                    continue
                rss = r["max_rss_kib"] / 1024 if r["max_rss_kib"] is not None else None
                cells += [fmt(r["wall_s"]), fmt(r["cpu_s"]), fmt(rss, 1)]
                if with_size:
                    speed = size * 1024 / r["wall_s"] if phase != "nochange" and r["wall_s"] else None
                    cells.append(fmt(speed, 0) if speed else "-")
                repo = r["repo_bytes"] / MIB if r["repo_bytes"] is not None else None
                cells += [fmt(repo, 1) if phase != "restore" else "-",
                          (r["verified"] or "-") if phase == "restore" else "-",
                          ratio(r["wall_s"], best_wall), ratio(r["max_rss_kib"], best_rss)]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def growth_table(rows: list[dict]) -> list[str]:
    """Peak RSS at the smallest size beside the one at the largest size."""
    sizes = sorted({r["size"] for r in rows})
    if len(sizes) < 2:
        return []
    small, big = sizes[0], sizes[-1]
    lines = [f"| tool | phase | peak RSS MiB at {small} GiB | peak RSS MiB at {big} GiB "
             f"| {big} GiB / {small} GiB |", "|---|---|---:|---:|---:|"]
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    for tool in tools:
        for phase, title in PHASES:
            pick = {r["size"]: r for r in rows
                    if r["tool"] == tool and r["phase"] == phase and r["status"] == "ok"}
            if small not in pick or big not in pick:
                continue
            a, b = pick[small]["max_rss_kib"], pick[big]["max_rss_kib"]
            lines.append(f"| {tool} | {title} | {a / 1024:.1f} | {b / 1024:.1f} | {b / a:.2f} |")
    return lines


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    results = sys.argv[1]
    rows = load_rows(os.path.join(results, "raw.csv"))
    meta = load_meta(os.path.join(results, "meta.tsv"))
    md = [f"# Lifeboat scale benchmarks ({meta.get('started', '?')})", "",
          f"Machine: {meta.get('machine', '?')}.", "",
          "Versions: " + "; ".join(f"{t}: {v}" for t, v in meta["versions"].items()), ""]
    if meta["skipped"]:
        md += ["Skipped: " + "; ".join(sorted(set(meta["skipped"]))), ""]
    md += ["Ratios compare with the best peer (the lowest value among the tools other "
           "than lifeboat) of the same phase: below 1.00 means lifeboat does better.", ""]
    files = [r for r in rows if r["scenario"] == "files"]
    if files:
        n = int(meta.get("files_entries") or 0)
        data = int(meta.get("files_bytes") or 0)
        disk = int(meta.get("files_disk_bytes") or 0)
        md += [f"## {meta.get('files')} small files", "",
               f"{n} files in {meta.get('files_dirs')} directories, {data / MIB:.0f} MiB of "
               f"data ({disk / MIB:.0f} MiB on disk); restore check: {meta.get('verify')}.", ""]
        md += phase_table(files, with_size=False) + [""]
    big = [r for r in rows if r["scenario"] == "bigfile"]
    if big:
        md += ["## One big file", ""]
        md += phase_table(big, with_size=True) + [""]
        growth = growth_table(big)
        if growth:
            md += ["Peak memory against the file's size:", ""] + growth + [""]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump({"meta": meta, "raw": rows}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
