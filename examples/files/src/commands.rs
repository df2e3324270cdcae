//! The commands over snapshots: each calls the library once and prints what it returns.

use std::path::Path;
use std::sync::Arc;

use cairn::format::{NodeKind, Snapshot, SnapshotId};
use cairn::{
    BackupOptions, BackupSource, ChangeKind, Entry, Error, FindOptions, ParentChoice, Repository,
    RestoreOptions, StatsMode,
};
use serde_json::{Value, json};

use crate::progress::Reporter;
use crate::text::{bytes, iso_utc, kind_name, mode_string};
use crate::{BackupArgs, EXIT_CORRUPTION, EXIT_PARTIAL_BACKUP};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn paths_of(s: &Snapshot) -> Vec<String> {
    s.paths.iter().map(|p| lossy(p)).collect()
}

fn print_held(reporter: &Reporter) {
    for w in reporter.held_warnings() {
        eprintln!("warning: {w}");
    }
}

pub(crate) async fn backup(repo: &Repository, a: &BackupArgs, json: bool) -> cairn::Result<u8> {
    let stream = a.stdin || a.stdin_from_command;
    if stream && !a.paths.is_empty() {
        return Err(Error::Invalid(
            "give either paths or --stdin / --stdin-from-command, not both".into(),
        ));
    }
    if !a.stdin_from_command && !a.command.is_empty() {
        return Err(Error::Invalid(
            "a command after `--` needs --stdin-from-command".into(),
        ));
    }
    let source = if a.stdin_from_command {
        if a.command.is_empty() {
            return Err(Error::Invalid(
                "--stdin-from-command needs the command after `--` (e.g. -- pg_dump mydb)".into(),
            ));
        }
        BackupSource::Command {
            name: a.stdin_filename.clone(),
            argv: a.command.clone(),
        }
    } else if a.stdin {
        BackupSource::Reader {
            name: a.stdin_filename.clone(),
            reader: Box::new(std::io::stdin()),
        }
    } else if a.paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give paths, --stdin or --stdin-from-command".into(),
        ));
    } else {
        BackupSource::Paths(a.paths.clone())
    };
    let mut o = BackupOptions::default();
    o.host = a.host.clone();
    o.tags = a.tag.clone();
    o.parent = match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(p), false) => ParentChoice::Id(repo.find_snapshot(p).await?.0),
        (None, false) => ParentChoice::Auto,
    };
    o.exclude = a.exclude.clone();
    o.exclude_files = a.exclude_file.clone();
    o.exclude_if_present = a.exclude_if_present.clone();
    o.exclude_larger_than = a.exclude_larger_than;
    o.one_file_system = a.one_file_system;
    o.threads = a.threads;
    let reporter = Arc::new(Reporter::new(json));
    let out = cairn::backup(repo, source, &o, reporter.clone()).await?;
    let s = &out.snapshot;
    let m = &s.summary;
    let secs = m.duration_nanos as f64 / 1e9;
    let code = if out.warnings.is_empty() {
        0
    } else {
        EXIT_PARTIAL_BACKUP
    };
    if json {
        println!(
            "{}",
            json!({
                "id": out.id.to_hex(),
                "short_id": out.id.short(),
                "time": iso_utc(s.time),
                "host": s.hostname,
                "paths": paths_of(s),
                "tags": s.tags,
                "parent": s.parent.map(|p| p.to_hex()),
                "files_new": m.files_new,
                "files_changed": m.files_changed,
                "files_unchanged": m.files_unchanged,
                "dirs_new": m.dirs_new,
                "dirs_changed": m.dirs_changed,
                "dirs_unchanged": m.dirs_unchanged,
                "bytes_read": m.bytes_read,
                "total_bytes": m.total_bytes,
                "blobs_added": m.blobs_added,
                "bytes_added_plain": m.bytes_added_plain,
                "bytes_added_stored": m.bytes_added_stored,
                "packs_written": out.packer.packs,
                "index_files_written": out.packer.index_files,
                "dedup_ratio": m.dedup_ratio(),
                "compression_ratio": m.compression_ratio(),
                "duration_secs": secs,
                "warnings": out.warnings,
                "exit_code": code,
            })
        );
    } else {
        print_held(&reporter);
        println!(
            "files:       {} new, {} changed, {} unchanged",
            m.files_new, m.files_changed, m.files_unchanged
        );
        println!(
            "dirs:        {} new, {} changed, {} unchanged",
            m.dirs_new, m.dirs_changed, m.dirs_unchanged
        );
        println!(
            "read:        {} of {} in the snapshot",
            bytes(m.bytes_read),
            bytes(m.total_bytes)
        );
        println!(
            "added:       {} plain, {} stored ({} blobs)",
            bytes(m.bytes_added_plain),
            bytes(m.bytes_added_stored),
            m.blobs_added
        );
        println!(
            "ratios:      dedup {:.2}x, compression {:.2}x",
            m.dedup_ratio(),
            m.compression_ratio()
        );
        println!("duration:    {secs:.2} s");
        println!("snapshot {} saved", out.id.short());
        if !out.warnings.is_empty() {
            eprintln!(
                "cairn-files: snapshot written but {} file(s) or folder(s) could not be read (exit code {code})",
                out.warnings.len()
            );
        }
    }
    Ok(code)
}

pub(crate) async fn restore(
    repo: &Repository,
    spec: &str,
    target: &Path,
    options: &RestoreOptions,
    json: bool,
) -> cairn::Result<u8> {
    let (id, snapshot) = repo.find_snapshot(spec).await?;
    let reporter = Arc::new(Reporter::new(json));
    let out = cairn::restore(repo, &snapshot, target, options, reporter.clone()).await?;
    let code = if out.errors.is_empty() {
        0
    } else {
        EXIT_CORRUPTION
    };
    if json {
        println!(
            "{}",
            json!({
                "snapshot": id.to_hex(),
                "target": target.display().to_string(),
                "files": out.files,
                "dirs": out.dirs,
                "symlinks": out.symlinks,
                "special": out.special,
                "hardlinks": out.hardlinks,
                "bytes": out.bytes,
                "direct_files": out.direct_files,
                "failed_files": out.failed_files,
                "errors": out.errors,
                "exit_code": code,
            })
        );
    } else {
        // Errors were reported as warnings too, while the restore ran: each once, as an error.
        let errors: std::collections::HashSet<&String> = out.errors.iter().collect();
        for w in reporter.held_warnings() {
            if !errors.contains(&w) {
                eprintln!("warning: {w}");
            }
        }
        for e in &out.errors {
            eprintln!("error: {e}");
        }
        let counts = format!(
            "{} files, {} dirs, {} symlinks, {} special, {} hard links, {}",
            out.files,
            out.dirs,
            out.symlinks,
            out.special,
            out.hardlinks,
            bytes(out.bytes)
        );
        if out.errors.is_empty() {
            println!(
                "restored snapshot {} to {}: {counts}",
                id.short(),
                target.display()
            );
        } else {
            println!(
                "restored snapshot {} to {} INCOMPLETELY: {counts}; NOT restored: {} files \
                 ({} entries listed on standard error)",
                id.short(),
                target.display(),
                out.failed_files,
                out.errors.len()
            );
            eprintln!(
                "cairn-files: {} entries could not be restored (listed above); none was left \
                 at its name half-written (exit code {code})",
                out.errors.len()
            );
        }
    }
    Ok(code)
}

pub(crate) fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> Value {
    let m = &s.summary;
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": iso_utc(s.time),
        "time_unix": s.time.secs,
        "kind": format!("{:?}", s.kind),
        "host": s.hostname,
        "username": s.username,
        "paths": paths_of(s),
        "tags": s.tags,
        "parent": s.parent.map(|p| p.to_hex()),
        "tree": s.tree.to_hex(),
        "size": m.total_bytes,
        "summary": {
            "files_new": m.files_new,
            "files_changed": m.files_changed,
            "files_unchanged": m.files_unchanged,
            "dirs_new": m.dirs_new,
            "dirs_changed": m.dirs_changed,
            "dirs_unchanged": m.dirs_unchanged,
            "bytes_read": m.bytes_read,
            "total_bytes": m.total_bytes,
            "blobs_added": m.blobs_added,
            "bytes_added_plain": m.bytes_added_plain,
            "bytes_added_stored": m.bytes_added_stored,
            "duration_secs": m.duration_nanos as f64 / 1e9,
        },
    })
}

fn entry_json(e: &Entry) -> Value {
    let n = &e.node;
    let mut v = json!({
        "path": e.path,
        "type": kind_name(n.kind),
        "size": n.size,
        "mode": n.mode,
        "permissions": mode_string(n.kind, n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "mtime": iso_utc(n.mtime),
        "mtime_unix": n.mtime.secs,
        "inode": n.inode,
        "links": n.links,
    });
    if n.kind == NodeKind::Symlink {
        v["target"] = json!(lossy(&n.target));
    }
    v
}

fn entry_line(e: &Entry) -> String {
    let n = &e.node;
    let user = if n.user.is_empty() {
        n.uid.to_string()
    } else {
        n.user.clone()
    };
    let group = if n.group.is_empty() {
        n.gid.to_string()
    } else {
        n.group.clone()
    };
    let mut s = format!(
        "{} {user:<8} {group:<8} {:>12} {} {}",
        mode_string(n.kind, n.mode),
        n.size,
        iso_utc(n.mtime),
        e.path
    );
    if n.kind == NodeKind::Symlink {
        s.push_str(" -> ");
        s.push_str(&lossy(&n.target));
    }
    s
}

pub(crate) async fn ls(
    repo: &Repository,
    spec: &str,
    path: &str,
    recursive: bool,
    json: bool,
) -> cairn::Result<u8> {
    let (_, snapshot) = repo.find_snapshot(spec).await?;
    let entries = cairn::ls(repo, &snapshot, path, recursive).await?;
    if json {
        println!("{}", Value::Array(entries.iter().map(entry_json).collect()));
    } else {
        for e in &entries {
            println!("{}", entry_line(e));
        }
    }
    Ok(0)
}

pub(crate) async fn find(
    repo: &Repository,
    pattern: &str,
    specs: &[String],
    ignore_case: bool,
    json: bool,
) -> cairn::Result<u8> {
    let (snapshots, code) = if specs.is_empty() {
        crate::listing::readable_snapshots(repo, json).await?
    } else {
        let mut v = Vec::new();
        for s in specs {
            v.push(repo.find_snapshot(s).await?);
        }
        (v, 0)
    };
    let mut o = FindOptions::default();
    o.ignore_case = ignore_case;
    let found = cairn::find(repo, &snapshots, pattern, &o).await?;
    if json {
        let v: Vec<Value> = found
            .iter()
            .map(|(id, e)| {
                let mut v = entry_json(e);
                v["snapshot"] = json!(id.to_hex());
                v
            })
            .collect();
        println!("{}", Value::Array(v));
        return Ok(code);
    }
    let mut current = None;
    for (id, e) in &found {
        if current != Some(id) {
            current = Some(id);
            if let Some((_, s)) = snapshots.iter().find(|(i, _)| i == id) {
                println!(
                    "snapshot {} of [{}] at {}:",
                    id.short(),
                    paths_of(s).join(", "),
                    iso_utc(s.time)
                );
            }
        }
        println!("  {}", entry_line(e));
    }
    Ok(code)
}

pub(crate) async fn diff(repo: &Repository, a: &str, b: &str, json: bool) -> cairn::Result<u8> {
    let (ia, sa) = repo.find_snapshot(a).await?;
    let (ib, sb) = repo.find_snapshot(b).await?;
    let changes = cairn::diff(repo, &sa, &sb).await?;
    let count = |f: fn(&ChangeKind) -> bool| changes.iter().filter(|c| f(&c.kind)).count();
    let added = count(|k| *k == ChangeKind::Added);
    let removed = count(|k| *k == ChangeKind::Removed);
    let modified = count(|k| matches!(k, ChangeKind::Modified { .. }));
    let type_changed = count(|k| *k == ChangeKind::TypeChanged);
    if json {
        let v: Vec<Value> = changes
            .iter()
            .map(|c| {
                let (change, content, metadata) = match c.kind {
                    ChangeKind::Added => ("added", true, true),
                    ChangeKind::Removed => ("removed", true, true),
                    ChangeKind::Modified { content, metadata } => ("modified", content, metadata),
                    ChangeKind::TypeChanged => ("type_changed", true, true),
                };
                json!({"path": c.path, "change": change, "content": content, "metadata": metadata})
            })
            .collect();
        println!(
            "{}",
            json!({"a": ia.to_hex(), "b": ib.to_hex(), "changes": v, "added": added,
                   "removed": removed, "modified": modified, "type_changed": type_changed})
        );
        return Ok(0);
    }
    for c in &changes {
        let sign = match c.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified { content: true, .. } => 'M',
            ChangeKind::Modified { content: false, .. } => 'U',
            ChangeKind::TypeChanged => 'T',
        };
        println!("{sign}    {}", c.path);
    }
    println!(
        "{} -> {}: {added} added, {removed} removed, {modified} modified, {type_changed} type changed",
        ia.short(),
        ib.short()
    );
    Ok(0)
}

pub(crate) async fn dump(repo: &Repository, spec: &str, path: &str) -> cairn::Result<u8> {
    let (_, snapshot) = repo.find_snapshot(spec).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    cairn::dump(repo, &snapshot, path, &mut out).await?;
    std::io::Write::flush(&mut out).map_err(|e| Error::io("<stdout>", e))?;
    Ok(0)
}

pub(crate) async fn stats(
    repo: &Repository,
    specs: &[String],
    mode: StatsMode,
    json: bool,
) -> cairn::Result<u8> {
    let (snapshots, code): (Vec<Snapshot>, u8) = if specs.is_empty() {
        let (all, code) = crate::listing::readable_snapshots(repo, json).await?;
        (all.into_iter().map(|(_, s)| s).collect(), code)
    } else {
        let mut v = Vec::new();
        for s in specs {
            v.push(repo.find_snapshot(s).await?.1);
        }
        (v, 0)
    };
    let s = cairn::stats(repo, &snapshots, mode).await?;
    let raw = mode == StatsMode::RawData;
    if json {
        let mut v = json!({
            "mode": if raw { "raw-data" } else { "restore-size" },
            "snapshots": s.snapshots,
            "files": s.files,
            "dirs": s.dirs,
            "others": s.others,
            "total_size": s.total_size,
        });
        if raw {
            v["blobs"] = json!(s.blobs());
            v["data_blobs"] = json!(s.data_blobs);
            v["tree_blobs"] = json!(s.tree_blobs);
            v["plain_bytes"] = json!(s.plain_bytes());
            v["data_plain_bytes"] = json!(s.data_plain_bytes);
            v["stored_bytes"] = json!(s.stored_bytes);
            v["missing_blobs"] = json!(s.missing_blobs);
            v["dedup_ratio"] = json!(s.dedup_ratio());
            v["compression_ratio"] = json!(s.compression_ratio());
        }
        println!("{v}");
        return Ok(code);
    }
    println!("snapshots          {}", s.snapshots);
    println!("files              {}", s.files);
    println!("directories        {}", s.dirs);
    println!("other entries      {}", s.others);
    println!(
        "total size         {} ({} bytes)",
        bytes(s.total_size),
        s.total_size
    );
    if raw {
        println!(
            "distinct blobs     {} ({} data, {} tree)",
            s.blobs(),
            s.data_blobs,
            s.tree_blobs
        );
        println!(
            "plain bytes        {} ({} of file data)",
            bytes(s.plain_bytes()),
            bytes(s.data_plain_bytes)
        );
        println!("stored bytes       {}", bytes(s.stored_bytes));
        println!("dedup ratio        {:.2}x", s.dedup_ratio());
        println!("compression ratio  {:.2}x", s.compression_ratio());
        if s.missing_blobs > 0 {
            eprintln!(
                "warning: {} referenced blob(s) are not in the index; run a check",
                s.missing_blobs
            );
        }
    }
    Ok(code)
}

/// `check`.
pub(crate) async fn check(
    repo: &Repository,
    all: bool,
    subset: Option<&str>,
    json: bool,
) -> cairn::Result<u8> {
    let mut o = cairn::CheckOptions::default();
    o.read_data = match (all, subset) {
        (true, _) => cairn::ReadData::All,
        (false, Some(s)) if s.ends_with('%') => {
            let p: f64 = s
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--read-data-subset {s:?}: a percentage is 0% to 100%"
                    ))
                })?;
            cairn::ReadData::Percent(p)
        }
        (false, Some(s)) if !s.contains('/') => {
            let n = crate::text::parse_size(s)
                .map_err(|e| Error::Invalid(format!("--read-data-subset {s:?}: {e}")))?;
            cairn::ReadData::Bytes(n)
        }
        (false, Some(s)) => {
            let (n, m) = s
                .split_once('/')
                .and_then(|(n, m)| Some((n.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
                .filter(|(n, m)| *n >= 1 && n <= m)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--read-data-subset {s:?}: use N/M with 1 <= N <= M"
                    ))
                })?;
            cairn::ReadData::Subset(n, m)
        }
        (false, None) => cairn::ReadData::None,
    };
    let report = cairn::check(repo, &o, std::sync::Arc::new(cairn::NoProgress)).await?;
    for p in &report.problems {
        crate::ping::note(format!("error: {}: {}", p.object, p.message));
    }
    if json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({"object": p.object, "message": p.message}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"ok": report.is_ok(), "snapshots": report.snapshots, "packs": report.packs,
                "packs_read": report.packs_read, "bytes_read": report.bytes_read, "blobs": report.blobs,
                "unindexed_packs": report.unindexed_packs.len(), "problems": problems,
                "unindexed_damaged": report.unindexed_damaged.iter()
                    .map(|p| serde_json::json!({"object": p.object, "message": p.message}))
                    .collect::<Vec<_>>(),
                "exit_code": if report.is_ok() { 0 } else { EXIT_CORRUPTION }})
        );
    } else {
        println!(
            "checked {} snapshots, {} packs ({} read in full, {} bytes), {} blobs",
            report.snapshots, report.packs, report.packs_read, report.bytes_read, report.blobs
        );
        if !report.unindexed_packs.is_empty() {
            println!(
                "{} packs are in no index (left by interrupted backups; prune removes them)",
                report.unindexed_packs.len()
            );
        }
        for p in &report.unindexed_damaged {
            println!(
                "note: {}: {} (in no index: nothing a snapshot uses; prune removes it)",
                p.object, p.message
            );
        }
        for p in &report.problems {
            eprintln!("error: {}: {}", p.object, p.message);
        }
        if report.is_ok() {
            println!("no errors were found");
        }
    }
    if report.is_ok() {
        return Ok(0);
    }
    if !json {
        eprintln!(
            "cairn-files: {}: check found {} problem(s) (exit code {EXIT_CORRUPTION})",
            repo.storage().location(),
            report.problems.len()
        );
    }
    Ok(EXIT_CORRUPTION)
}

/// `prune`.
pub(crate) async fn prune(
    repo: &Repository,
    o: &cairn::prune::PruneOptions,
    json: bool,
) -> cairn::Result<()> {
    let r = cairn::prune::prune(repo, o, std::sync::Arc::new(cairn::NoProgress)).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"dry_run": o.dry_run, "plans_executed": r.plans_executed, "packs_deleted": r.packs_deleted,
                "bytes_freed": r.bytes_freed, "packs_spared": r.packs_spared, "packs_condemned": r.packs_condemned,
                "bytes_to_free": r.bytes_to_free, "packs_repacked": r.packs_repacked, "bytes_repacked": r.bytes_repacked,
                "unused_blobs": r.unused_blobs, "new_plan": r.new_plan.map(|p| p.to_hex()),
                "index_files_replaced": r.index_files_replaced,
                "interrupted_writes_removed": r.interrupted_writes_removed,
                "damage_ignored": r.damage_ignored})
        );
    } else {
        let verb = if o.dry_run { "would" } else { "did" };
        println!(
            "executed {} due plan(s): deleted {} packs ({}), spared {} still needed",
            r.plans_executed,
            r.packs_deleted,
            bytes(r.bytes_freed),
            r.packs_spared
        );
        println!(
            "{verb} condemn {} packs ({} to free after the grace period), repacking {} packs ({} of used data); {} unused blobs",
            r.packs_condemned,
            bytes(r.bytes_to_free),
            r.packs_repacked,
            bytes(r.bytes_repacked),
            r.unused_blobs
        );
        if r.interrupted_writes_removed > 0 {
            println!(
                "removed {} file(s) left by interrupted writes",
                r.interrupted_writes_removed
            );
        }
        for d in &r.damage_ignored {
            eprintln!("warning: damage ignored (--ignore-damage): {d}");
        }
    }
    Ok(())
}

/// `repair index`.
pub(crate) async fn repair_index(repo: &Repository, json: bool) -> cairn::Result<()> {
    let r =
        cairn::check::repair::repair_index(repo, std::sync::Arc::new(cairn::NoProgress)).await?;
    if json {
        let bad: Vec<_> = r
            .unreadable
            .iter()
            .map(|(p, e)| serde_json::json!({"pack": p.to_hex(), "error": e}))
            .collect();
        let new: Vec<_> = r.new_packs.iter().map(|p| p.to_hex()).collect();
        println!(
            "{}",
            serde_json::json!({"packs": r.packs, "blobs": r.blobs, "replaced": r.replaced, "unreadable": bad,
                "salvage": r.salvage, "new_packs": new})
        );
    } else {
        println!(
            "indexed {} blobs from {} packs, replacing {} index files",
            r.blobs, r.packs, r.replaced
        );
        for (p, e) in &r.unreadable {
            eprintln!("error: pack {}: {e}", p.short());
        }
        for s in &r.salvage {
            eprintln!(
                "pack {}: salvaged {} of the {} blobs the index listed in it, {} lost{}",
                s.pack.short(),
                s.salvaged,
                s.listed,
                s.lost.len(),
                if s.listed > 0 {
                    "; the damaged pack is left in place, in no index (prune removes it)"
                } else {
                    " (no index listed its blobs)"
                }
            );
            for b in &s.lost {
                eprintln!("  lost blob {}", b.to_hex());
            }
        }
    }
    Ok(())
}

/// `30d`, `12h`, `2w`, `90m`, `1y` -> seconds.
pub(crate) fn parse_duration(s: &str) -> cairn::Result<i64> {
    let bad = || {
        Error::Invalid(format!(
            "duration {s:?}: use a number and one of s, m, h, d, w, y (e.g. 30d)"
        ))
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    Ok(n * unit)
}

/// `+01:00`, `-0530`, `Z` -> seconds east of UTC.
pub(crate) fn parse_offset(s: &str) -> cairn::Result<i32> {
    if s == "Z" || s == "UTC" {
        return Ok(0);
    }
    let bad = || Error::Invalid(format!("UTC offset {s:?}: use +HH:MM or -HH:MM"));
    let sign = match s.chars().next() {
        Some('+') => 1,
        Some('-') => -1,
        _ => return Err(bad()),
    };
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 {
        return Err(bad());
    }
    let h: i32 = digits[..2].parse().map_err(|_| bad())?;
    let m: i32 = digits[2..].parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}
