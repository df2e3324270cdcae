#!/usr/bin/env python3
"""Summaries for the end-to-end benchmark (called by run.sh).

  summarize.py share DIR              compressible share of DIR's bytes (JSON on stdout)
  summarize.py stages CRITERION_DIR   per-stage single-core throughput from criterion (JSON lines)
  summarize.py report RESULTS.jsonl   markdown report (stdout)

The compressible share is the fraction of bytes in 64 KiB blocks that zlib level 1 shrinks below
90 %: a cheap stand-in for "zstd -3 finds something to compress here".
"""

import json
import os
import statistics
import sys
import zlib

MB = 1e6
MIB = 1 << 20

# criterion ids of the stages of the backup and restore pipelines (benches/benches/format.rs)
STAGES = [
    ("chunk", "chunker/fastcdc2020_keyed/random_16MiB", "keyed FastCDC chunking"),
    ("hash", "id/keyed_blake3/1048576", "keyed BLAKE3 id (1 MiB)"),
    # zstd level 2: the default of new repositories.
    ("seal_text", "envelope/seal/zstd2/text", "seal zstd-2 + XChaCha20-Poly1305, text"),
    ("seal_random", "envelope/seal/zstd2/random", "seal zstd-2 + XChaCha20-Poly1305, random"),
    ("open_text", "envelope/open/zstd2/text", "open (decrypt + unzstd), text"),
    ("open_random", "envelope/open/zstd2/random", "open (decrypt + unzstd), random"),
    ("seal_raw", "envelope/seal/raw/random", "seal, no compression (reference)"),
    ("hash_4k", "id/keyed_blake3/4096", "keyed BLAKE3 id (4 KiB, small files)"),
]

TARGETS = {
    "backup": ("first backup throughput, cairn/restic", 3.0, "higher"),
    "rebackup": ("unchanged re-backup speed-up (restic time / cairn time)", 5.0, "higher"),
    "restore": ("restore throughput, cairn/restic", 2.0, "higher"),
    "rss": ("peak RSS, cairn/restic", 1.0, "lower"),
}


def share(path):
    total = comp = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                while True:
                    b = fh.read(64 << 10)
                    if not b:
                        break
                    total += len(b)
                    if len(zlib.compress(b, 1)) < 0.9 * len(b):
                        comp += len(b)
    return {"bytes": total, "compressible_share": round(comp / total, 4) if total else 0.0}


def stages(crit_dir, run=0):
    """Yields one record per criterion benchmark found (median time per iteration)."""
    for root, _, files in os.walk(crit_dir):
        if os.path.basename(root) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            e = json.load(f)
        tp = (b.get("throughput") or {}).get("Bytes")
        if not tp or b["full_id"] not in {cid for _, cid, _ in STAGES}:
            continue
        ns = e["median"]["point_estimate"]
        yield {
            "kind": "stage",
            "run": run,
            "id": b["full_id"],
            "bytes": tp,
            "median_ns": ns,
            "mb_s": tp / (ns / 1e9) / MB,
            "ns_per_byte": ns / tp,
        }


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}" if abs(x) >= 1 else f"{x:.{max(nd, 2)}f}"


def report(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    ops = [r for r in recs if r.get("kind") == "op"]
    # Derived: re-backup minus the fixed cost of opening the repository, per run.
    opened = {(r["run"], r["dataset"], r["tool"]): r for r in ops if r["op"] == "open" and r["ok"]}
    for r in [r for r in ops if r["op"] == "rebackup" and r["ok"]]:
        o = opened.get((r["run"], r["dataset"], r["tool"]))
        if o:
            ops.append({**r, "op": "rebackup_net",
                        "wall_s": max(r["wall_s"] - o["wall_s"], 0.005)})
    # restic and rustic have no key file: their re-backup is the comparison for Cairn's
    # re-backup opened with a key file.
    for op in ("backup", "rebackup"):
        for r in [r for r in ops if r["op"] == op and r["tool"] != "cairn"]:
            ops.append({**r, "op": op + "_keyfile"})
    dsets = {r["dataset"]: r for r in recs if r.get("kind") == "dataset"}
    tools = {r["tool"]: r for r in recs if r.get("kind") == "tool"}
    machine = next((r for r in recs if r.get("kind") == "machine"), {})
    stage = {}
    for r in recs:
        if r.get("kind") == "stage":
            stage.setdefault(r["id"], []).append(r)
    # Median over runs of each stage's median time per byte.
    stage = {k: {"ns_per_byte": med([x["ns_per_byte"] for x in v]),
                 "mb_s": 1e3 / med([x["ns_per_byte"] for x in v]),
                 "spread": (min(x["mb_s"] for x in v), max(x["mb_s"] for x in v)), "n": len(v)}
             for k, v in stage.items()}
    out = []
    w = out.append
    w(f"## End-to-end results, {machine.get('date', '?')}")
    w("")
    w(
        f"Machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}), "
        f"{machine.get('mem_gib', '?')} GiB RAM, kernel {machine.get('kernel', '?')}, "
        f"shared and noisy (load average at start {machine.get('load_start', '?')}, "
        f"at end {machine.get('load_end', '?')}). Repositories and restores on the same local "
        f"disk as the data; page cache warm (a `tar` read of the source before each operation, "
        f"and of the repository before each restore), nothing dropped. Runs: {machine.get('runs', '?')}; medians; ratios are medians of "
        f"per-run ratios (both tools measured in the same run), [min-max] across runs. "
        f"\"cairn vs restic\": for throughput and time rows the speed-up of cairn (> 1: cairn "
        f"faster); for RSS, CPU and size rows cairn / restic (< 1: cairn smaller)."
    )
    w("")
    w("Tools: " + ", ".join(f"{t} `{r.get('version', '?')}`" for t, r in tools.items()))
    w("")
    names = sorted({r["tool"] for r in ops}, key=lambda t: ["cairn", "restic", "rustic"].index(t)
                   if t in ("cairn", "restic", "rustic") else 9)

    def get(ds, tool, op):
        return [r for r in ops if r["dataset"] == ds and r["tool"] == tool and r["op"] == op]

    def okvals(ds, tool, op, key):
        return [r[key] for r in get(ds, tool, op) if r["ok"]]

    def ratio(ds, op, fn):
        """Per-run ratios cairn vs restic (fn(cairn_rec, restic_rec))."""
        rs = []
        for c in get(ds, "cairn", op):
            for r in get(ds, "restic", op):
                if c["run"] == r["run"] and c["ok"] and r["ok"]:
                    rs.append(fn(c, r))
        return rs

    summary = []
    for ds, d in dsets.items():
        nbytes = d["bytes"]
        w(
            f"### Data set `{ds}`: {nbytes / MIB:,.0f} MiB, {d['files']:,} files, "
            f"{d['dirs']:,} dirs, {d['symlinks']:,} symlinks, compressible share "
            f"{d['compressible_share']:.0%}"
        )
        w("")
        w("| metric | " + " | ".join(names) + " | cairn vs restic | target | met |")
        w("|---|" + "---|" * len(names) + "---|---|---|")

        def row(label, op, key, conv, rfn, target_key=None):
            cells = []
            for t in names:
                vals = okvals(ds, t, op, key)
                n_all = len(get(ds, t, op))
                v = med([conv(x) for x in vals])
                cell = fmt(v)
                if n_all and len(vals) < n_all:
                    cell += f" ({n_all - len(vals)} failed)"
                cells.append(cell if n_all else "n/a")
            rs = ratio(ds, op, rfn) if rfn else []
            rtxt = f"{fmt(med(rs), 2)}x [{fmt(min(rs), 2)}-{fmt(max(rs), 2)}]" if rs else "n/a"
            tg = met = ""
            if target_key:
                _, goal, sense = TARGETS[target_key]
                tg = (">= " if sense == "higher" else "< ") + f"{goal:g}x"
                if rs:
                    m = med(rs)
                    ok = m >= goal if sense == "higher" else m < goal
                    met = "yes" if ok else "**no**"
                    summary.append((ds, label, m, goal, ok))
                else:
                    met = "n/a"
            w(f"| {label} | " + " | ".join(cells) + f" | {rtxt} | {tg} | {met} |")

        thr = lambda s: nbytes / s / MB  # noqa: E731
        speed = lambda c, r: r["wall_s"] / c["wall_s"]  # noqa: E731
        rss = lambda c, r: c["max_rss_kib"] / r["max_rss_kib"]  # noqa: E731
        row("first backup, MB/s", "backup", "wall_s", thr, speed, "backup")
        row("first backup, cairn with a key file, MB/s", "backup_keyfile", "wall_s", thr, speed,
            "backup")
        row("re-backup unchanged, s", "rebackup", "wall_s", lambda s: s, speed, "rebackup")
        row("re-backup unchanged, cairn with a key file, s", "rebackup_keyfile", "wall_s",
            lambda s: s, speed, "rebackup")
        row("(re-backup minus open), s", "rebackup_net", "wall_s", lambda s: s, speed)
        row("(open repository + list snapshots), s", "open", "wall_s", lambda s: s, speed)
        row("restore, MB/s", "restore", "wall_s", thr, speed, "restore")
        row("(restore into tmpfs), MB/s", "restore_tmpfs", "wall_s", thr, speed)
        row("init, s", "init", "wall_s", lambda s: s, speed)
        for op, label in [("init", "init"), ("backup", "first backup"),
                          ("rebackup", "re-backup"), ("restore", "restore")]:
            row(f"peak RSS {label}, MiB", op, "max_rss_kib", lambda k: k / 1024, rss, "rss")
        row("CPU (user+sys) first backup, s", "backup", "cpu_s", lambda s: s,
            lambda c, r: c["cpu_s"] / r["cpu_s"])
        row("CPU (user+sys) restore, s", "restore", "cpu_s", lambda s: s,
            lambda c, r: c["cpu_s"] / r["cpu_s"])
        row("CPU (user+sys) restore into tmpfs, s", "restore_tmpfs", "cpu_s", lambda s: s,
            lambda c, r: c["cpu_s"] / r["cpu_s"])
        row("repository size after first backup, MiB", "backup", "repo_bytes",
            lambda b: b / MIB, lambda c, r: c["repo_bytes"] / r["repo_bytes"])
        ver = []
        for t in names:
            rr = get(ds, t, "restore") + get(ds, t, "restore_tmpfs")
            ver.append(f"{sum(1 for r in rr if r['ok'])}/{len(rr)}" if rr else "n/a")
        w("| restore identical (diff -r), runs | " + " | ".join(ver) + " | | | |")
        meta = []
        for t in names:
            rr = [r for r in get(ds, t, "restore") + get(ds, t, "restore_tmpfs") if r["ok"]]
            meta.append(f"{sum(1 for r in rr if r.get('meta_diffs', 0) == 0)}/{len(rr)}"
                        if rr else "n/a")
        w("| metadata identical (mode, size, mtime, link), runs | " + " | ".join(meta)
          + " | | | |")
        w("")
    notes = [r for r in ops if not r["ok"]]
    if notes:
        w("Failures:")
        w("")
        seen = set()
        for r in notes:
            k = (r["dataset"], r["tool"], r["op"], r.get("note", ""))
            if k in seen:
                continue
            seen.add(k)
            w(f"- {r['dataset']} / {r['tool']} / {r['op']} (run {r['run']}): "
              f"{r.get('note', '')}")
        w("")

    # Per-stage table and the pipeline limit.
    if stage:
        w("### Cairn pipeline stages (criterion, single core, release build)")
        w("")
        w("| stage | criterion id | MB/s (1 core), median of runs | [min-max] | ns/byte |")
        w("|---|---|---|---|---|")
        for key, cid, label in STAGES:
            s = stage.get(cid)
            if s:
                lo, hi = s["spread"]
                w(f"| {label} | `{cid}` | {s['mb_s']:,.0f} | [{lo:,.0f}-{hi:,.0f}] | "
                  f"{s['ns_per_byte']:.3f} |")
        w("")

        def nspb(cid):
            s = stage.get(cid)
            return s["ns_per_byte"] if s else None

        need = [c for _, c, _ in STAGES[:6]]
        if all(nspb(c) is not None for c in need):
            w("Pipeline limit on 2 cores = 1 / (sum of per-stage CPU time per byte / 2), zstd "
              "stages weighted by the data set's compressible share; reading from page cache, "
              "pack writes, tree/index work and per-file costs are not in the model.")
            w("")
            w("| data set | share | backup CPU ns/B (model) | limit MB/s | cairn MB/s | "
              "% of limit | cairn CPU ns/B (measured) | restore limit MB/s | cairn restore MB/s "
              "| % of limit |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for ds, d in dsets.items():
                sh = d["compressible_share"]
                bk = (nspb(need[0]) + nspb(need[1]) + sh * nspb(need[2])
                      + (1 - sh) * nspb(need[3]))
                rs = nspb(need[1]) + sh * nspb(need[4]) + (1 - sh) * nspb(need[5])
                lim_b = 2 / bk * 1e9 / MB
                lim_r = 2 / rs * 1e9 / MB
                mb = med([d["bytes"] / s / MB for s in okvals(ds, "cairn", "backup", "wall_s")])
                cpu = med([c * 1e9 / d["bytes"] for c in okvals(ds, "cairn", "backup", "cpu_s")])
                mr = med([d["bytes"] / s / MB for s in okvals(ds, "cairn", "restore", "wall_s")])
                pct = f"{mb / lim_b:.0%}" if mb else "n/a"
                pr = f"{mr / lim_r:.0%}" if mr else "n/a"
                w(f"| {ds} | {sh:.0%} | {bk:.2f} | {lim_b:,.0f} | {fmt(mb)} | {pct} | "
                  f"{fmt(cpu, 2)} | {lim_r:,.0f} | {fmt(mr)} | {pr} |")
            w("")
            w("Restore model: keyed BLAKE3 (id check) + open, weighted the same way.")
            w("")
    if summary:
        w("Targets: " + "; ".join(
            f"{ds} {lbl}: {m:.2f}x vs {g:g}x {'met' if ok else 'NOT met'}"
            for ds, lbl, m, g, ok in summary))
        w("")
    return "\n".join(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, arg = sys.argv[1], sys.argv[2]
    if cmd == "share":
        print(json.dumps(share(arg)))
    elif cmd == "stages":
        for r in stages(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 0):
            print(json.dumps(r))
    elif cmd == "report":
        print(report(arg))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
