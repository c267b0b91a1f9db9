#!/usr/bin/env python3
"""Deterministic mixed "server" dataset for the Lifeboat comparison benchmark.

Generate a dataset (default 2 GiB) into an empty or missing directory:

    gen_dataset.py DIR [--size-mib 2048] [--seed 1] [--jobs N]

Apply "a day of changes" to an existing dataset, in place:

    gen_dataset.py --mutate DIR [--seed 1] [--day 1]

Only the standard library is used (Python >= 3.11). The same seed and size
always give byte-identical file contents and the same tree (file times are
not fixed). The work is split into per-file tasks, each with its own seed
derived from the dataset seed, so the result does not depend on --jobs.

Composition of a generated dataset (shares of --size-mib):

    etc/...                    2%  many small text configs (200 B - 8 KiB),
                                   nested dirs, a few symlinks
    var/log/...               30%  text logs with timestamps, 2-16 MiB each
    var/backups/db/*.sql      28%  one SQL dump, one INSERT statement a line
    srv/data/blobs/...        30%  random binary blobs (incompressible)
    srv/mirror/, home/...     10%  exact copies of some of the files above
    (plus a few empty dirs)

--mutate makes the changes of one day, about 25 MiB for a 2 GiB dataset
(the amounts scale with the dataset's size): ~10 MiB of new log lines
appended to the current logs, ~5 MiB of scattered edits in the middle of the
SQL dump (rows overwritten in place and new rows inserted, which shifts the
rest of the file), new and edited small configs, one new ~10 MiB binary file,
and a few deleted files. --day N gives a different set of changes for day N;
applying a day twice applies its changes twice.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor

MIB = 1 << 20
KIB = 1 << 10
# The mutation amounts are defined for a dataset of this size; they scale
# linearly with the real size of the dataset being mutated.
REFERENCE_BYTES = 2048 * MIB
# Shares of the total size per kind of content.
SHARE_CONFIG = 0.02
SHARE_LOG = 0.30
SHARE_SQL = 0.28
SHARE_BLOB = 0.30
SHARE_DUP = 0.10
# Bytes generated per write() call for large files.
WRITE_CHUNK = 8 * MIB
# 2024-01-01T00:00:00Z: logs of generation day start here; mutation day N
# continues N days later.
EPOCH = 1704067200

SQL_NAME = "var/backups/db/appdb-dump.sql"

SERVICES = [
    "nginx", "postgresql", "redis", "ssh", "systemd", "cron", "rsyslog",
    "logrotate", "haproxy", "grafana", "prometheus", "docker", "app",
    "mail", "ldap", "sudoers.d", "security", "network", "ssl", "apt",
]
SUBDIRS = ["conf.d", "sites-available", "modules", "rules.d", "templates",
           "includes", "profiles", "env"]
LOG_APPS = ["nginx", "app", "postgresql", "haproxy", "auth", "syslog",
            "worker", "scheduler", "redis", "mail"]
LEVELS = ["INFO"] * 9 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
SQL_TABLES = ["users", "orders", "events", "invoices"]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pa",
             "qu", "ber", "dan", "fol", "gri", "hal", "jor", "kel", "mor",
             "nis", "pol", "rak", "sim", "tor", "ul", "ven", "wex", "yar"]


# --------------------------------------------------------------------------
# Vocabulary and pools shared by the text generators
# --------------------------------------------------------------------------

class Pools:
    """Word and message pools derived from the dataset seed.

    Log lines and SQL rows pick from these pools (realistic repetition, so
    the text compresses like real text) and add per-line random fields
    (so that no two lines, and no two chunks of a file, are identical).
    """

    def __init__(self, seed: int):
        rng = random.Random(f"pools-{seed}")
        words = set()
        while len(words) < 3000:
            words.add("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))))
        self.words = sorted(words)
        w = self.words
        templates = [
            lambda: f"GET /api/v1/{rng.choice(w)}/{rng.choice(w)} HTTP/1.1 200",
            lambda: f"POST /api/v2/{rng.choice(w)} HTTP/1.1 201",
            lambda: f"connection from 10.{rng.randint(0, 9)}.{rng.randint(0, 255)}."
                    f"{rng.randint(1, 254)} closed by peer",
            lambda: f"job {rng.choice(w)}_{rng.choice(w)} finished in queue {rng.choice(w)}",
            lambda: f"cache miss for key {rng.choice(w)}:{rng.choice(w)}:{rng.randint(0, 999)}",
            lambda: f"user {rng.choice(w)}{rng.randint(1, 99)} logged in via {rng.choice(['ssh', 'web', 'api'])}",
            lambda: " ".join(rng.choices(w, k=rng.randint(4, 14))),
            lambda: f"slow query on table {rng.choice(SQL_TABLES)}: SELECT * FROM "
                    f"{rng.choice(SQL_TABLES)} WHERE {rng.choice(w)} = ?",
        ]
        self.messages = [rng.choice(templates)() for _ in range(4096)]
        self.domains = [f"{rng.choice(w)}.{rng.choice(['com', 'org', 'net', 'io'])}"
                        for _ in range(64)]
        self.statuses = ["new", "paid", "shipped", "delivered", "cancelled",
                         "refunded", "pending"]


_POOLS: dict[int, Pools] = {}


def pools(seed: int) -> Pools:
    if seed not in _POOLS:
        _POOLS[seed] = Pools(seed)
    return _POOLS[seed]


def rand64(rng: random.Random, n: int) -> memoryview:
    """n random 64-bit integers, fast (one randbytes call)."""
    return memoryview(rng.randbytes(8 * n)).cast("Q")


# --------------------------------------------------------------------------
# Content generators
# --------------------------------------------------------------------------

class LogWriter:
    """Syslog-like lines with increasing millisecond timestamps."""

    def __init__(self, seed: int, rng: random.Random, app: str, start: int):
        p = pools(seed)
        self.rng = rng
        self.messages = p.messages
        self.app = app
        self.host = f"srv-{p.words[rng.randrange(len(p.words))]}"
        self.pids = [rng.randint(100, 65000) for _ in range(8)]
        self.ts_ms = start * 1000
        self.req = rng.randint(1, 10**6)
        self._sec = -1
        self._prefix = ""

    def lines(self, target: int) -> bytes:
        """About `target` bytes of whole lines."""
        out: list[str] = []
        size = 0
        msgs, levels, pids = self.messages, LEVELS, self.pids
        app, host = self.app, self.host
        while size < target:
            for x in rand64(self.rng, 4096):
                self.ts_ms += x & 0x1FF
                sec = self.ts_ms // 1000
                if sec != self._sec:
                    self._sec = sec
                    self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
                self.req += 1
                line = (f"{self._prefix}.{self.ts_ms % 1000:03d}Z {host} {app}"
                        f"[{pids[(x >> 9) & 7]}]: {levels[(x >> 12) & 15]} "
                        f"{msgs[(x >> 16) & 4095]} req={self.req} "
                        f"dur={(x >> 28) & 0xFFFF}us\n")
                out.append(line)
                size += len(line)
                if size >= target:
                    break
        return "".join(out).encode()


def sql_row(p: Pools, table: str, row_id: int, x: int, y: int) -> str:
    """One INSERT line for `table`, its values drawn from the 64-bit x, y."""
    w = p.words
    nw = len(w)
    day = EPOCH + (x & 0x1FFFFFF)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(day))
    if table == "users":
        name = f"{w[x % nw]} {w[(x >> 12) % nw]}"
        return (f"INSERT INTO users VALUES ({row_id},'{w[y % nw]}.{w[(y >> 12) % nw]}"
                f"{(y >> 24) & 0xFFF}@{p.domains[(y >> 40) & 63]}','{name}','{stamp}',"
                f"'{p.statuses[(y >> 46) % 7]}',{(y >> 50) & 0x3FFF}.{(x >> 50) % 100:02d});\n")
    if table == "orders":
        return (f"INSERT INTO orders VALUES ({row_id},{(y & 0xFFFFF) + 1},'SKU-{(y >> 20) & 0xFFFF:05d}',"
                f"{(y >> 36) % 9 + 1},{(y >> 40) & 0xFFF}.{(x >> 50) % 100:02d},'{stamp}',"
                f"'{p.statuses[(y >> 52) % 7]}','{w[(x >> 26) % nw]} {w[(x >> 38) % nw]}');\n")
    if table == "events":
        return (f"INSERT INTO events VALUES ({row_id},'{stamp}','{w[y % nw]}.{w[(y >> 12) % nw]}',"
                f"'{{\"user\":{(y >> 24) & 0xFFFFF},\"ip\":\"10.{(x >> 26) & 7}.{(x >> 30) & 255}."
                f"{(x >> 38) & 255}\",\"ok\":{'true' if (y >> 45) & 1 else 'false'}}}');\n")
    return (f"INSERT INTO invoices VALUES ({row_id},{(y & 0xFFFFF) + 1},'INV-{y >> 20 & 0xFFFFFF:08d}',"
            f"'{stamp}',{(y >> 44) & 0xFFFF}.{(x >> 50) % 100:02d},'EUR',"
            f"'{w[(x >> 26) % nw]}');\n")


SQL_SCHEMA = {
    "users": "id bigint PRIMARY KEY, email text, name text, created_at timestamp, "
             "status text, balance numeric(12,2)",
    "orders": "id bigint PRIMARY KEY, user_id bigint, sku text, qty int, "
              "price numeric(12,2), created_at timestamp, status text, note text",
    "events": "id bigint PRIMARY KEY, ts timestamp, kind text, payload jsonb",
    "invoices": "id bigint PRIMARY KEY, user_id bigint, number text, issued_at timestamp, "
                "amount numeric(12,2), currency text, memo text",
}


def sql_rows(p: Pools, rng: random.Random, table: str, first_id: int, target: int
             ) -> tuple[bytes, int]:
    """About `target` bytes of rows for `table`; returns (text, next id)."""
    out: list[str] = []
    size = 0
    row_id = first_id
    while size < target:
        r = rand64(rng, 8192)
        for i in range(0, 8192, 2):
            line = sql_row(p, table, row_id, r[i], r[i + 1])
            row_id += 1
            out.append(line)
            size += len(line)
            if size >= target:
                break
    return "".join(out).encode(), row_id


def config_text(p: Pools, rng: random.Random, target: int, style: int) -> bytes:
    """A small config file of about `target` bytes in one of a few styles."""
    w = p.words
    out = [f"# {rng.choice(w)} configuration - managed by {rng.choice(['ansible', 'puppet', 'hand'])}\n",
           f"# generated {rng.randint(2019, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}\n\n"]
    size = sum(len(s) for s in out)
    section = 0
    while size < target:
        if style == 0:  # ini
            if rng.random() < 0.12:
                section += 1
                line = f"\n[{rng.choice(w)}_{section}]\n"
            else:
                line = f"{rng.choice(w)}_{rng.choice(w)} = {rng.choice(w)}{rng.randint(0, 9999)}\n"
        elif style == 1:  # yaml
            indent = "  " * rng.randint(0, 3)
            line = f"{indent}{rng.choice(w)}: {rng.choice([rng.choice(w), str(rng.randint(0, 65535)), 'true', 'false'])}\n"
        elif style == 2:  # nginx-like
            line = f"    {rng.choice(['listen', 'server_name', 'root', 'proxy_pass', 'include', 'location'])} " \
                   f"{rng.choice(w)}.{rng.choice(w)}:{rng.randint(1024, 65535)};\n"
        else:  # shell env
            line = f"export {rng.choice(w).upper()}_{rng.choice(w).upper()}=\"{rng.choice(w)}/{rng.choice(w)}\"\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()


def random_blob(rng: random.Random, f, size: int) -> None:
    """Write `size` incompressible bytes to file object `f`."""
    left = size
    while left > 0:
        n = min(left, WRITE_CHUNK)
        f.write(rng.randbytes(n))
        left -= n


# --------------------------------------------------------------------------
# Generation: a plan of tasks, run in a process pool
# --------------------------------------------------------------------------

def log_uniform(rng: random.Random, lo: float, hi: float) -> int:
    """A size between lo and hi, small sizes more likely (log-uniform)."""
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_plan(seed: int, total: int) -> tuple[list[tuple], list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """Decide every file, its size and its seed.

    Returns (tasks, duplicates, empty_dirs, symlinks); tasks are tuples
    (kind, relpath, size, task_seed[, extra]) and duplicates are
    (source relpath, copy relpath).
    """
    rng = random.Random(f"plan-{seed}-{total}")
    tasks: list[tuple] = []
    sizes: dict[str, tuple[str, int]] = {}

    def task_seed() -> int:
        return rng.getrandbits(63)

    # Small configs in nested dirs, grouped into batches (one task a batch).
    budget = int(total * SHARE_CONFIG)
    batch: list[tuple[str, int, int]] = []
    n = 0
    while budget > 0:
        svc = rng.choice(SERVICES)
        parts = ["etc", svc]
        for _ in range(rng.choice([0, 1, 1, 2])):
            parts.append(rng.choice(SUBDIRS))
        ext = rng.choice([".conf", ".conf", ".yaml", ".ini", ".env", ".rules"])
        name = f"{pools(seed).words[rng.randrange(3000)]}-{n}{ext}"
        size = log_uniform(rng, 200, 8 * KIB)
        rel = "/".join(parts + [name])
        batch.append((rel, size, rng.randrange(4)))
        sizes[rel] = ("config", size)
        budget -= size
        n += 1
        if len(batch) == 500:
            tasks.append(("configs", batch, sum(s for _, s, _ in batch), task_seed()))
            batch = []
    if batch:
        tasks.append(("configs", batch, sum(s for _, s, _ in batch), task_seed()))

    # Logs: the current file and rotated ones per app.
    budget = int(total * SHARE_LOG)
    gen = 0
    while budget > 0:
        for app in LOG_APPS:
            if budget <= 0:
                break
            size = min(budget, log_uniform(rng, 2 * MIB, 16 * MIB))
            name = f"var/log/{app}/{app}.log" + ("" if gen == 0 else f".{gen}")
            # Older generations hold older days.
            tasks.append(("log", name, size, task_seed(), app, EPOCH - 86400 * 7 * (gen + 1)))
            sizes[name] = ("log", size)
            budget -= size
        gen += 1

    # One big SQL dump.
    size = int(total * SHARE_SQL)
    tasks.append(("sql", SQL_NAME, size, task_seed()))

    # Random binary blobs.
    budget = int(total * SHARE_BLOB)
    n = 0
    while budget > 0:
        size = min(budget, log_uniform(rng, 256 * KIB, 64 * MIB))
        name = f"srv/data/blobs/{n % 7:02x}/{n:04x}-{rng.getrandbits(32):08x}.bin"
        tasks.append(("blob", name, size, task_seed()))
        sizes[name] = ("blob", size)
        budget -= size
        n += 1

    # Duplicates: exact copies of existing files (not of the SQL dump):
    # about half of the bytes from blobs, 40% from logs, 5% from configs
    # (a quarter of them), then whatever logs or blobs still fit.
    dups: list[tuple[str, str]] = []
    dup_budget = int(total * SHARE_DUP)
    left = dup_budget
    names = sorted(sizes)
    rng.shuffle(names)
    copied: set[str] = set()
    for kinds, share in ((("blob",), 0.55), (("log",), 0.40), (("config",), 0.05),
                         (("blob", "log"), 1.0)):
        budget = min(left, int(dup_budget * share))
        for name in names:
            k, size = sizes[name]
            if k not in kinds or size > budget or name in copied:
                continue
            if k == "config":
                copy = "home/admin/etc-backup/" + name[len("etc/"):]
            else:
                copy = "srv/mirror/" + name
            dups.append((name, copy))
            copied.add(name)
            budget -= size
            left -= size
            if budget < 64 * KIB:
                break

    empty_dirs = ["var/spool/cron/crontabs", "var/lib/app/tmp", "srv/data/incoming",
                  "home/admin/.cache"]
    # Relative symlinks, like sites-enabled -> sites-available.
    configs = sorted(n for n, (k, _) in sizes.items() if k == "config")
    symlinks = []
    for i, target in enumerate(rng.sample(configs, min(12, len(configs)))):
        link = f"etc/{target.split('/')[1]}/enabled/link-{i}-{target.rsplit('/', 1)[1]}"
        depth = link.count("/")
        symlinks.append((link, "../" * depth + target))
    return tasks, dups, empty_dirs, symlinks


def run_task(root: str, seed: int, task: tuple) -> int:
    """Write the file(s) of one task; returns the bytes written."""
    kind = task[0]
    p = pools(seed)
    if kind == "configs":
        rng = random.Random(task[3])
        for rel, size, style in task[1]:
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = config_text(p, rng, size, style)[:size]
            with open(path, "wb") as f:
                f.write(data)
        return task[2]
    _, rel, size, tseed = task[:4]
    rng = random.Random(tseed)
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if kind == "blob":
            random_blob(rng, f, size)
        elif kind == "log":
            lw = LogWriter(seed, rng, task[4], task[5])
            written = 0
            while written < size:
                data = lw.lines(min(WRITE_CHUNK, size - written))
                f.write(data)
                written += len(data)
        elif kind == "sql":
            write_sql_dump(p, rng, f, size)
        else:
            raise ValueError(kind)
    return size


def write_sql_dump(p: Pools, rng: random.Random, f, size: int) -> None:
    header = ["-- PostgreSQL database dump (lifeboat benchmark dataset)\n",
              "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n"]
    for table, cols in SQL_SCHEMA.items():
        header.append(f"CREATE TABLE {table} ({cols});\n")
    f.write("".join(header).encode())
    written = sum(len(h) for h in header)
    # Tables take shares of the dump; each is written in large chunks.
    shares = {"users": 0.15, "orders": 0.40, "events": 0.30, "invoices": 0.15}
    rows_total = size - written
    for table, share in shares.items():
        part = int(rows_total * share)
        f.write(f"\n-- Data for table {table}\nBEGIN;\n".encode())
        row_id = 1
        done = 0
        while done < part:
            data, row_id = sql_rows(p, rng, table, row_id, min(WRITE_CHUNK, part - done))
            f.write(data)
            done += len(data)
        f.write(b"COMMIT;\n")


def generate(root: str, size_mib: int, seed: int, jobs: int) -> None:
    if os.path.exists(root) and os.listdir(root):
        sys.exit(f"gen_dataset: {root} exists and is not empty")
    os.makedirs(root, exist_ok=True)
    total = size_mib * MIB
    tasks, dups, empty_dirs, symlinks = make_plan(seed, total)
    # Largest first, so the big SQL dump does not end up last on one core.
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i][2])
    t0 = time.monotonic()
    written = 0
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_task, root, seed, tasks[i]) for i in order]
            for fut in futures:
                written += fut.result()
    else:
        for i in order:
            written += run_task(root, seed, tasks[i])
    for src, dst in dups:
        path = os.path.join(root, dst)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(os.path.join(root, src), path)
        written += os.path.getsize(path)
    for d in empty_dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for link, target in symlinks:
        path = os.path.join(root, link)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    print(f"gen_dataset: wrote {written / MIB:.0f} MiB in {tree_count(root)} files and links "
          f"({len(dups)} duplicates) to {root} in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)


def tree_count(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


# --------------------------------------------------------------------------
# Mutation: one day of changes
# --------------------------------------------------------------------------

def tree_files(root: str) -> list[str]:
    """Sorted relative paths of the regular files under root (no symlinks)."""
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(os.path.relpath(path, root))
    return sorted(out)


def copy_n(src, dst, n: int) -> None:
    while n > 0:
        data = src.read(min(n, WRITE_CHUNK))
        if not data:
            break
        dst.write(data)
        n -= len(data)


def mutate_sql(root: str, p: Pools, rng: random.Random, budget: int, day: int) -> int:
    """Overwrite rows in place and insert new rows at scattered places in the
    middle of the dump. Returns the bytes of new content."""
    path = os.path.join(root, SQL_NAME)
    if not os.path.exists(path):
        return 0
    size = os.path.getsize(path)
    places = 8
    offsets = sorted(rng.randrange(int(size * 0.2), int(size * 0.8)) for _ in range(places))
    per_place = budget // places
    new_bytes = 0
    next_id = 10**9 + day * 10**7
    tmp = path + ".mutate.tmp"
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for off in offsets:
            here = src.tell()
            if off > here:
                copy_n(src, dst, off - here)
            dst.write(src.readline())  # the rest of the current line, unchanged
            # Overwrite ~70% of this place's budget worth of rows in place.
            changed = 0
            table = None
            while changed < per_place * 0.7:
                line = src.readline()
                if not line:
                    break
                if not line.startswith(b"INSERT INTO "):
                    dst.write(line)
                    continue
                table = line[12:line.index(b" ", 12)].decode()
                row_id = int(line[line.index(b"(") + 1:line.index(b",")])
                x, y = rand64(rng, 2)
                new = sql_row(p, table, row_id, x, y).encode()
                dst.write(new)
                changed += len(new)
            # Then insert ~30% worth of new rows of the same table.
            if table is not None:
                rows, next_id = sql_rows(p, rng, table, next_id, int(per_place * 0.3))
                dst.write(rows)
                changed += len(rows)
            new_bytes += changed
        shutil.copyfileobj(src, dst, WRITE_CHUNK)
    os.replace(tmp, path)
    return new_bytes


def mutate(root: str, seed: int, day: int) -> None:
    if not os.path.isdir(root):
        sys.exit(f"gen_dataset: {root} is not a directory")
    t0 = time.monotonic()
    files = tree_files(root)
    total = sum(os.path.getsize(os.path.join(root, f)) for f in files)
    scale = total / REFERENCE_BYTES
    rng = random.Random(f"mutate-{seed}-{day}")
    p = pools(seed)
    summary: dict[str, int] = {}

    # 1. Append new lines to the current (not rotated) logs: ~10 MiB.
    logs = [f for f in files if f.startswith("var/log/") and f.endswith(".log")]
    budget = int(10 * MIB * scale)
    appended = 0
    for i, rel in enumerate(logs):
        share = budget // len(logs) if i < len(logs) - 1 else budget - appended
        app = rel.rsplit("/", 1)[1][:-len(".log")]
        lw = LogWriter(seed, random.Random(rng.getrandbits(63)), app, EPOCH + 86400 * day)
        data = lw.lines(share)
        with open(os.path.join(root, rel), "ab") as f:
            f.write(data)
        appended += len(data)
    summary["log bytes appended"] = appended

    # 2. Scattered edits in the middle of the SQL dump: ~5 MiB.
    summary["sql bytes changed"] = mutate_sql(root, p, rng, int(5 * MIB * scale), day)

    # 3. Configs: delete a few, edit a few, add new ones.
    configs = [f for f in files if f.startswith("etc/")]
    deleted = rng.sample(configs, min(len(configs), max(3, round(8 * scale))))
    for rel in deleted:
        os.remove(os.path.join(root, rel))
    copies = [f for f in files if f.startswith("srv/mirror/")]
    if copies:  # and one duplicate copy
        rel = rng.choice(copies)
        os.remove(os.path.join(root, rel))
        deleted.append(rel)
    summary["files deleted"] = len(deleted)
    remaining = sorted(set(configs) - set(deleted))
    edited = rng.sample(remaining, min(len(remaining), max(3, round(10 * scale))))
    for rel in edited:
        with open(os.path.join(root, rel), "ab") as f:
            f.write(f"# changed on day {day}\n{rng.choice(p.words)} = {rng.randint(0, 10**6)}\n".encode())
    summary["configs edited"] = len(edited)
    dirs = sorted({os.path.dirname(f) for f in configs}) or ["etc"]
    new_configs = max(5, round(60 * scale))
    new_bytes = 0
    for i in range(new_configs):
        rel = f"{rng.choice(dirs)}/day{day}-{i}-{rng.choice(p.words)}.conf"
        data = config_text(p, rng, log_uniform(rng, 200, 8 * KIB), rng.randrange(4))
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        new_bytes += len(data)
    summary["configs added"] = new_configs
    summary["config bytes added"] = new_bytes

    # 4. One new binary file: ~10 MiB.
    size = int(10 * MIB * scale)
    path = os.path.join(root, f"srv/data/blobs/incoming/day{day}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        random_blob(rng, f, size)
    summary["binary bytes added"] = size

    new_total = (summary["log bytes appended"] + summary["sql bytes changed"]
                 + summary["config bytes added"] + size)
    details = ", ".join(f"{k}: {v}" for k, v in summary.items())
    print(f"gen_dataset: day {day} applied to {root} in {time.monotonic() - t0:.1f} s: "
          f"{new_total / MIB:.1f} MiB of new content ({details})", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="dataset directory")
    ap.add_argument("--size-mib", type=int, default=2048,
                    help="dataset size in MiB (default 2048)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="worker processes for generation (default: all cores)")
    ap.add_argument("--mutate", action="store_true",
                    help="apply one day of changes to an existing dataset in DIR")
    ap.add_argument("--day", type=int, default=1,
                    help="which day of changes --mutate applies (default 1)")
    args = ap.parse_args()
    if args.mutate:
        mutate(args.dir, args.seed, args.day)
    else:
        if args.size_mib < 16:
            ap.error("--size-mib must be at least 16")
        generate(args.dir, args.size_mib, args.seed, max(1, args.jobs))


if __name__ == "__main__":
    main()
