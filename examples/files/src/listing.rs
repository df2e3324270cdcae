//! The commands that list and forget snapshots. Snapshots that cannot be read are listed by
//! name (as warnings on stderr, as `"damaged": true` entries in `--json`) instead of stopping
//! the command.

use cairn::format::{Snapshot, SnapshotId};
use cairn::{DamageKind, Damaged, Error, Repository};
use serde_json::{Value, json};

use crate::EXIT_CORRUPTION;
use crate::commands::{paths_of, snapshot_json};
use crate::text::{bytes, iso_utc};

/// The exit code of a listing that found `damaged`: 5 when any is corrupt; 1 when any was written
/// by a newer Cairn and `unsupported_fails`; else 0.
pub(crate) fn exit_code(damaged: &[Damaged], unsupported_fails: bool) -> u8 {
    if damaged.iter().any(|d| d.kind == DamageKind::Corrupt) {
        EXIT_CORRUPTION
    } else if unsupported_fails && !damaged.is_empty() {
        1
    } else {
        0
    }
}

/// Prints one warning per damaged snapshot on stderr.
pub(crate) fn warn_damaged(damaged: &[Damaged]) {
    for d in damaged {
        eprintln!("warning: {}: cannot be read: {}", d.object, d.error);
    }
}

/// Every readable snapshot, for a command over all of them (`find`, `stats`): the ones that
/// cannot be read are skipped with a warning on stderr (a JSON line with `--json`, like the
/// progress events), and the exit code the command ends with is returned (5 when any was
/// skipped as corrupt).
pub(crate) async fn readable_snapshots(
    repo: &Repository,
    json: bool,
) -> cairn::Result<(Vec<(SnapshotId, Snapshot)>, u8)> {
    let (good, damaged) = repo.list_snapshots_checked().await?;
    for d in &damaged {
        if json {
            eprintln!(
                "{}",
                json!({"event": "warning", "object": d.object, "message": format!("skipped: {}", d.error)})
            );
        } else {
            eprintln!("warning: skipped {}: {}", d.object, d.error);
        }
    }
    Ok((good, exit_code(&damaged, true)))
}

fn damaged_json(d: &Damaged) -> Value {
    let id = d.snapshot_id();
    json!({
        "id": id.map(|i| i.to_hex()),
        "short_id": id.map(|i| i.short()),
        "damaged": true,
        "object": d.object,
        "kind": d.kind,
        "error": d.error,
    })
}

/// `snapshots`: the readable snapshots matching the filters, then the damaged ones (which no
/// filter can be applied to). Exit code 5 when any snapshot could not be read.
pub(crate) async fn snapshots(
    repo: &Repository,
    host: Option<&str>,
    tags: &[String],
    paths: &[String],
    json: bool,
) -> cairn::Result<u8> {
    let want_paths: Vec<Vec<Vec<u8>>> = paths
        .iter()
        .map(|p| {
            let mut forms = vec![p.as_bytes().to_vec()];
            if let Ok(abs) = std::path::absolute(p) {
                forms.push(abs.as_os_str().as_encoded_bytes().to_vec());
            }
            forms
        })
        .collect();
    let (listed, damaged) = repo.list_snapshots_checked().await?;
    let all: Vec<(SnapshotId, Snapshot)> = listed
        .into_iter()
        .filter(|(_, s)| host.is_none_or(|h| s.hostname == h))
        .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
        .filter(|(_, s)| {
            want_paths
                .iter()
                .all(|forms| forms.iter().any(|f| s.paths.contains(f)))
        })
        .collect();
    let code = exit_code(&damaged, true);
    if json {
        let v: Vec<Value> = all
            .iter()
            .map(|(id, s)| snapshot_json(id, s))
            .chain(damaged.iter().map(damaged_json))
            .collect();
        println!("{}", Value::Array(v));
        return Ok(code);
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|(id, s)| {
            [
                id.short(),
                iso_utc(s.time),
                s.hostname.clone(),
                s.tags.join(","),
                paths_of(s).join(", "),
                bytes(s.summary.total_bytes),
            ]
        })
        .collect();
    let header = ["ID", "Time (UTC)", "Host", "Tags", "Paths", "Size"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i == 5 {
                s.push_str(&format!("{c:>w$}"));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    println!("{}", line(&header));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 10));
    for r in &rows {
        println!("{}", line(r));
    }
    println!("{} snapshot(s)", rows.len());
    if !damaged.is_empty() {
        warn_damaged(&damaged);
        eprintln!(
            "cairn-files: {} snapshot(s) cannot be read (exit code {code}); `forget ID` removes one",
            damaged.len()
        );
    }
    Ok(code)
}

/// `forget` by policy. Snapshots that cannot be read are kept and reported.
pub(crate) async fn forget(
    repo: &Repository,
    policy: &cairn::forget::KeepPolicy,
    by: cairn::forget::GroupBy,
    dry_run: bool,
    json: bool,
) -> cairn::Result<()> {
    let plan = cairn::forget::plan(repo, policy, by).await?;
    let decisions = &plan.decisions;
    let removed = if dry_run {
        Vec::new()
    } else {
        cairn::forget::forget(repo, decisions).await?
    };
    if json {
        let v: Vec<_> = decisions
            .iter()
            .map(|d| json!({"id": d.id.to_hex(), "time": d.time, "group": d.group, "keep": d.keep, "reasons": d.reasons}))
            .collect();
        println!(
            "{}",
            json!({"dry_run": dry_run, "decisions": v, "removed": removed.len(), "damaged": plan.damaged})
        );
        return Ok(());
    }
    let mut group = None;
    for d in decisions {
        if group != Some(&d.group) {
            println!("{}", d.group);
            group = Some(&d.group);
        }
        let verdict = if d.keep {
            format!("keep ({})", d.reasons.join(", "))
        } else {
            "forget".into()
        };
        println!(
            "  {}  {}  {verdict}",
            d.id.short(),
            iso_utc(cairn::format::Timestamp {
                secs: d.time,
                nanos: 0
            })
        );
    }
    let n = decisions.iter().filter(|d| !d.keep).count();
    if dry_run {
        println!(
            "would forget {n} snapshot(s); run without --dry-run to do it, then prune to free space"
        );
    } else {
        println!(
            "forgot {} snapshot(s); run prune to free their data",
            removed.len()
        );
    }
    if !plan.damaged.is_empty() {
        warn_damaged(&plan.damaged);
        eprintln!(
            "cairn-files: kept {} snapshot(s) that cannot be read; `forget ID` removes one",
            plan.damaged.len()
        );
    }
    Ok(())
}

/// `forget ID...`: removes the named snapshots, readable or not.
pub(crate) async fn forget_ids(
    repo: &Repository,
    specs: &[String],
    dry_run: bool,
    json: bool,
) -> cairn::Result<()> {
    let mut ids = Vec::new();
    for s in specs {
        ids.push(repo.resolve_snapshot_id(s).await?);
    }
    let removed = if dry_run {
        ids.clone()
    } else {
        cairn::forget::forget_ids(repo, &ids).await?
    };
    if json {
        let v: Vec<String> = removed.iter().map(|i| i.to_hex()).collect();
        println!(
            "{}",
            json!({"dry_run": dry_run, "forgotten": v, "removed": if dry_run { 0 } else { removed.len() }})
        );
    } else {
        let verb = if dry_run { "would forget" } else { "forgot" };
        for id in &removed {
            println!("{verb} snapshot {}", id.short());
        }
        if !dry_run {
            println!(
                "forgot {} snapshot(s); run prune to free their data",
                removed.len()
            );
        }
    }
    Ok(())
}

/// Refuses `forget ID...` combined with keep rules.
pub(crate) fn ids_or_policy(
    ids: &[String],
    policy: &cairn::forget::KeepPolicy,
) -> cairn::Result<()> {
    if !ids.is_empty() && !policy.is_empty() {
        return Err(Error::Invalid(
            "give either snapshot ids or keep rules to forget, not both".into(),
        ));
    }
    Ok(())
}
