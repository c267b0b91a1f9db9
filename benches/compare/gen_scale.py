#!/usr/bin/env python3
"""Deterministic datasets for the scale benchmarks (scale.sh).

A tree of many small files:

    gen_scale.py files DIR [--count 1000000] [--seed 1] [--jobs N]

One big file:

    gen_scale.py bigfile PATH [--gib 10] [--seed 1] [--jobs N]

Only the standard library is used (Python >= 3.11). The same arguments
always give byte-identical contents and the same tree (file times are not
fixed); the work is split into tasks with their own seeds, so the result does
not depend on --jobs.

The small-file tree: --count files in leaf directories three levels deep
(`dNN/dNN/dNNN`, 50-550 files each, about 300 on average, 500 leaves under
each top directory), plus 5-40 files in every 25th intermediate directory. Sizes are log-uniform between 64 B and
16 KiB (mean about 2.9 KiB) with 3 % empty files. 70 % of the files are text
(lines of words, compress about 3x), 30 % random bytes (incompressible); each
file starts with its own path, so no two non-empty files are identical.

The big file: 1 MiB blocks, each one of: random bytes (40 %, incompressible),
random bytes over a 16-character alphabet (50 %, zstd about 2x), zeros (10 %).
No two non-zero blocks are alike, so content-defined chunking finds no
duplicates but the zero runs.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

FILES_PER_DIR_MIN = 50
FILES_PER_DIR_MAX = 550
MIN_SIZE = 64
MAX_SIZE = 16 * KIB
EMPTY_SHARE = 0.03
TEXT_SHARE = 0.70

WORDS = [
    "alpha", "bravo", "config", "delta", "error", "fetch", "gamma", "host",
    "index", "json", "kernel", "local", "mount", "node", "open", "proxy",
    "query", "route", "server", "token", "user", "value", "worker", "xattr",
    "yield", "zone", "true", "false", "null", "=", "{", "}", "#", "--",
    "0", "1", "42", "1024", "8080", "/var/lib", "/etc", "127.0.0.1",
]


def text_corpus(seed: int, size: int = 4 * MIB) -> bytes:
    """A few MiB of word lines; files take slices of it."""
    rng = random.Random(f"corpus-{seed}")
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def layout(count: int, seed: int) -> list[tuple[str, int]]:
    """(directory, number of files) for every directory, summing to count."""
    rng = random.Random(f"layout-{seed}")
    dirs = []
    left = count
    index = 0
    while left > 0:
        # Every 20th directory is an intermediate one (a few files next to
        # subdirectories); the others are leaves three levels deep.
        if index % 25 == 24:
            name = f"d{index // 500:02d}/d{index // 25 % 20:02d}"
            n = min(left, rng.randint(5, 40))
        else:
            name = f"d{index // 500:02d}/d{index // 25 % 20:02d}/d{index % 25:03d}"
            n = min(left, rng.randint(FILES_PER_DIR_MIN, FILES_PER_DIR_MAX))
        dirs.append((name, n))
        left -= n
        index += 1
    return dirs


_CORPUS: bytes = b""


def _init_corpus(seed: int) -> None:
    global _CORPUS
    _CORPUS = text_corpus(seed)


def write_dirs(root: str, seed: int, dirs: list[tuple[str, int]]) -> tuple[int, int]:
    """Write the files of some directories; returns (files, bytes)."""
    files = 0
    total = 0
    corpus = _CORPUS
    for name, n in dirs:
        rng = random.Random(f"dir-{seed}-{name}")
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        for i in range(n):
            rel = f"{name}/f{i:03d}"
            if rng.random() < EMPTY_SHARE:
                data = b""
                fname = f"f{i:03d}.empty"
            else:
                size = int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))
                header = f"# {rel}\n".encode()
                if rng.random() < TEXT_SHARE:
                    off = rng.randrange(len(corpus) - MAX_SIZE)
                    data = (header + corpus[off:off + size])[:size]
                    fname = f"f{i:03d}.txt"
                else:
                    data = (header + rng.randbytes(size))[:size]
                    fname = f"f{i:03d}.bin"
            fd = os.open(os.path.join(path, fname), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            files += 1
            total += len(data)
    return files, total


def gen_files(root: str, count: int, seed: int, jobs: int) -> None:
    if os.path.exists(root) and os.listdir(root):
        sys.exit(f"gen_scale.py: {root} exists and is not empty")
    os.makedirs(root, exist_ok=True)
    start = time.monotonic()
    dirs = layout(count, seed)
    batches = [dirs[i:i + 50] for i in range(0, len(dirs), 50)]
    files = total = 0
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_corpus,
                             initargs=(seed,)) as pool:
        for f, b in pool.map(write_dirs, [root] * len(batches), [seed] * len(batches), batches):
            files += f
            total += b
    print(f"gen_scale.py: {files} files in {len(dirs)} directories, "
          f"{total / MIB:.0f} MiB, {time.monotonic() - start:.0f} s", file=sys.stderr)


ALPHABET16 = bytes.maketrans(bytes(range(256)), b"etaoinsrhdlu \n,."[:16] * 16)


def big_block(seed: int, index: int) -> bytes:
    rng = random.Random(f"block-{seed}-{index}")
    kind = rng.random()
    if kind < 0.10:
        return bytes(MIB)
    data = rng.randbytes(MIB)
    if kind < 0.60:
        return data.translate(ALPHABET16)
    return data


def write_blocks(path: str, seed: int, first: int, last: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(first, last):
            os.pwrite(fd, big_block(seed, index), index * MIB)
    finally:
        os.close(fd)


def gen_bigfile(path: str, gib: float, seed: int, jobs: int) -> None:
    start = time.monotonic()
    blocks = int(gib * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)
    step = 256
    ranges = [(i, min(i + step, blocks)) for i in range(0, blocks, step)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(write_blocks, [path] * len(ranges), [seed] * len(ranges),
                      [r[0] for r in ranges], [r[1] for r in ranges]))
    os.truncate(path, blocks * MIB)
    print(f"gen_scale.py: {path}: {blocks} MiB, {time.monotonic() - start:.0f} s",
          file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("files", help="a tree of many small files")
    f.add_argument("dir")
    f.add_argument("--count", type=int, default=1_000_000)
    b = sub.add_parser("bigfile", help="one big file")
    b.add_argument("path")
    b.add_argument("--gib", type=float, default=10)
    for p in (f, b):
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.what == "files":
        gen_files(args.dir, args.count, args.seed, args.jobs)
    else:
        gen_bigfile(args.path, args.gib, args.seed, args.jobs)


if __name__ == "__main__":
    main()
