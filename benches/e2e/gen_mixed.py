#!/usr/bin/env python3
"""Writes the deterministic "mixed" data set of the end-to-end benchmark.

Usage: gen_mixed.py OUT_DIR TOTAL_MIB [SEED]

Same arguments (and Python version) give the same bytes. Composition (fractions of TOTAL_MIB):

  big/app.log        25.0 %  text-like log lines (compresses ~3-4x with zstd -3)
  big/metrics.csv    12.5 %  text-like CSV of numbers
  big/media.bin      25.0 %  random (incompressible, like photos/video)
  big/archive.zst    18.75%  random (like already-compressed archives)
  big/db.img         ~9.4 %  64 KiB segments alternating text and random (like a database file)
  small/             ~10  %  a few thousand files of 200 B .. 96 KiB in nested dirs,
                             60 % text-like, 40 % random

Every file gets a fixed mtime. A manifest (bytes per kind) is printed as JSON on stdout.
"""

import json
import math
import os
import random
import sys

MIB = 1 << 20
MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z


def vocab(rng, n=4000):
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    out = []
    for _ in range(n):
        k = rng.choice((2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 11))
        out.append("".join(rng.choices(letters, weights, k=k)))
    return out


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.words = vocab(self.rng)
        self.levels = ["INFO"] * 6 + ["DEBUG"] * 3 + ["WARN", "ERROR"]
        self.comps = ["api", "db", "cache", "auth", "sched", "worker", "http", "pack", "index"]
        self.t = 1_700_000_000

    def random_bytes(self, n):
        return self.rng.randbytes(n)

    def log_text(self, n):
        """About n bytes (exactly n) of log lines."""
        rng, parts, size = self.rng, [], 0
        while size < n:
            self.t += rng.randrange(0, 3)
            words = " ".join(rng.choices(self.words, k=rng.randrange(4, 14)))
            line = (
                f"2023-11-{14 + self.t % 14:02d}T{self.t % 86400 // 3600:02d}:"
                f"{self.t % 3600 // 60:02d}:{self.t % 60:02d}.{rng.randrange(1000):03d}Z "
                f"{rng.choice(self.levels)} [{rng.choice(self.comps)}] {words} "
                f"id={rng.randrange(1 << 32):08x} dur={rng.randrange(100000)}us\n"
            )
            parts.append(line)
            size += len(line)
        return "".join(parts).encode()[:n]

    def csv_text(self, n):
        rng, parts, size = self.rng, [], 0
        while size < n:
            self.t += 1
            line = "%d,%s,%.3f,%.3f,%d,%s\n" % (
                self.t,
                rng.choice(self.comps),
                rng.gauss(50, 12),
                rng.random() * 1000,
                rng.randrange(100000),
                rng.choice(self.words),
            )
            parts.append(line)
            size += len(line)
        return "".join(parts).encode()[:n]


def write(path, chunks):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for c in chunks:
            f.write(c)
    os.utime(path, (MTIME, MTIME))


def big(gen, n, kind, stats):
    """Yields n bytes of one kind in <= 4 MiB pieces and accounts them."""
    left = n
    while left > 0:
        k = min(left, 4 * MIB)
        if kind == "log":
            piece = gen.log_text(k)
        elif kind == "csv":
            piece = gen.csv_text(k)
        elif kind == "random":
            piece = gen.random_bytes(k)
        else:  # db: alternating 64 KiB segments
            out = []
            for off in range(0, k, 64 << 10):
                m = min(64 << 10, k - off)
                if (off // (64 << 10)) % 2 == 0:
                    out.append(gen.log_text(m))
                    stats["text"] += m
                else:
                    out.append(gen.random_bytes(m))
                    stats["random"] += m
            piece = b"".join(out)
        if kind in ("log", "csv"):
            stats["text"] += k
        elif kind == "random":
            stats["random"] += k
        left -= k
        yield piece


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, total_mib = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20241121
    total = total_mib * MIB
    gen = Gen(seed)
    stats = {"text": 0, "random": 0, "files": 0}
    plan = [
        ("big/app.log", 0.25, "log"),
        ("big/metrics.csv", 0.125, "csv"),
        ("big/media.bin", 0.25, "random"),
        ("big/archive.zst", 0.1875, "random"),
        ("big/db.img", 0.09375, "db"),
    ]
    for name, frac, kind in plan:
        n = int(total * frac) // 4096 * 4096
        write(os.path.join(out, name), big(gen, n, kind, stats))
        stats["files"] += 1
    # Small files: log-uniform sizes 200 B .. 96 KiB (mean ~16 KB), ~10 % of the total.
    budget = total // 10
    lo, hi = math.log(200), math.log(96 << 10)
    i = 0
    while budget > 0:
        size = min(budget, int(math.exp(gen.rng.uniform(lo, hi))))
        d = os.path.join(out, "small", f"d{i % 40:02d}", f"s{(i // 40) % 8}")
        if gen.rng.random() < 0.6:
            data, ext = gen.log_text(size), "txt"
            stats["text"] += size
        else:
            data, ext = gen.random_bytes(size), "bin"
            stats["random"] += size
        write(os.path.join(d, f"f{i:05d}.{ext}"), [data])
        budget -= size
        stats["files"] += 1
        i += 1
    for root, dirs, _ in os.walk(out, topdown=False):
        for d in dirs:
            os.utime(os.path.join(root, d), (MTIME, MTIME))
    os.utime(out, (MTIME, MTIME))
    stats["bytes"] = stats["text"] + stats["random"]
    stats["compressible_share"] = round(stats["text"] / stats["bytes"], 4)
    stats["seed"] = seed
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
