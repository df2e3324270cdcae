//! `verify`'s report, and health pings around `verify` (`--ping-url`).
//!
//! Only `verify` is pinged. `push` runs once per WAL segment (every few seconds on a busy server,
//! and again for each retry PostgreSQL makes): a ping per call would flood the monitoring service
//! and add a round trip to each archive_command call, and one failed push is no alarm (PostgreSQL
//! keeps the segment and retries). A `verify` on a schedule is the check that matters: it fails
//! when the archive has a gap, whatever the reason.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use cairn::ops::ping::{PingOptions, PingReport, Pinger, TAIL_LINES};
use cairn::pg::wal::VerifyReport;
use serde_json::json;

use crate::{Cli, Command};

/// The gaps and problems `verify` printed, for the failure ping.
static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

fn note(line: String) {
    if let Ok(mut log) = LOG.lock() {
        if log.len() == TAIL_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// The pinger for `verify` with `--ping-url`; an unusable URL is a warning (verify runs
/// unmonitored).
pub(crate) fn pinger(cli: &Cli) -> Option<Pinger> {
    let url = cli
        .global
        .ping_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())?;
    if !matches!(cli.command, Command::Verify { .. }) {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(cli.global.ping_timeout)
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(100));
    Pinger::new(url, PingOptions::with_timeout(timeout))
        .map_err(|e| eprintln!("cairn-wal: warning: no health pings: {e}"))
        .ok()
}

/// The failure ping's body for exit code `code` (`error`: the error, if the run ended in one).
pub(crate) fn failure_log(code: u8, error: Option<&str>) -> Option<String> {
    if code == 0 {
        return None;
    }
    let mut lines: Vec<String> = LOG
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    lines.push(match error {
        Some(e) => format!("cairn-wal: {e} (exit code {code})"),
        None => format!("cairn-wal: verify: WAL is missing (exit code {code})"),
    });
    Some(lines.join("\n"))
}

/// Pings that failed as warnings; with `--json`, every ping as a JSON line on stderr.
pub(crate) fn report_pings(report: &PingReport, json: bool) {
    if json {
        for o in [&report.start, &report.end] {
            let mut line = serde_json::to_value(o).unwrap_or_default();
            line["event"] = json!("ping");
            eprintln!("{line}");
        }
    } else {
        for o in report.failed() {
            eprintln!("cairn-wal: warning: {o} (the run's result is unchanged)");
        }
    }
}

/// Prints a verify report (text or JSON) and keeps its gaps and problems for the failure ping.
pub(crate) fn print_verify(sysid: u64, r: &VerifyReport, json_out: bool) {
    for t in &r.timelines {
        for g in &t.gaps {
            note(format!(
                "timeline {}: MISSING {} .. {} ({} segments)",
                t.timeline, g.first, g.last, g.count
            ));
        }
    }
    for p in &r.problems {
        note(format!("PROBLEM {p}"));
    }
    if json_out {
        let tls: Vec<_> = r
            .timelines
            .iter()
            .map(|t| {
                json!({
                    "timeline": t.timeline,
                    "branched_from": t.branched_from.map(|(p, lsn)| json!({"parent": p, "lsn": cairn::format::wal::format_lsn(lsn)})),
                    "on_newest_path": t.on_newest_path,
                    "first": t.first.map(|s| s.to_string()),
                    "last": t.last.map(|s| s.to_string()),
                    "segments": t.segments,
                    "partials": t.partials.iter().map(|s| format!("{s}.partial")).collect::<Vec<_>>(),
                    "gaps": t.gaps.iter().map(|g| json!({"first": g.first.to_string(), "last": g.last.to_string(), "count": g.count})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"system_id": format!("{sysid:016x}"), "ok": r.is_ok(), "segment_size": r.seg_size,
                   "timelines": tls, "problems": r.problems})
        );
        return;
    }
    println!("system identifier {sysid:016x}");
    if let Some(s) = r.seg_size {
        println!("segment size      {} MiB", s / (1024 * 1024));
    }
    for t in &r.timelines {
        let branch = t
            .branched_from
            .map(|(p, lsn)| {
                format!(
                    ", branched from {p} at {}",
                    cairn::format::wal::format_lsn(lsn)
                )
            })
            .unwrap_or_default();
        let range = match (t.first, t.last) {
            (Some(a), Some(b)) => format!("{a} .. {b}"),
            _ => "no segments".into(),
        };
        println!(
            "timeline {}: {range} ({} segments{branch})",
            t.timeline, t.segments
        );
        for g in &t.gaps {
            println!("  MISSING {} .. {} ({} segments)", g.first, g.last, g.count);
        }
    }
    for p in &r.problems {
        println!("PROBLEM {p}");
    }
    println!(
        "{}",
        if r.is_ok() {
            "ok: the archived WAL is continuous"
        } else {
            "NOT OK: WAL is missing"
        }
    );
}
