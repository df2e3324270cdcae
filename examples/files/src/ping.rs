//! `--ping-url`: health pings around the commands worth monitoring (backup, forget, prune,
//! check, repair), through `cairn::ops::ping`. A ping that fails is a warning on stderr; it
//! never changes the exit code.
//!
//! The failure ping carries the end of the run's log: the warnings and errors this CLI printed
//! about files and objects (noted here as they are printed), then the final error or the exit
//! code with its meaning.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use cairn::ops::ping::{PingOptions, PingedRun, Pinger, TAIL_LINES};
use serde_json::json;

use crate::{Cli, Command};

/// The last lines of the run's log, for the failure ping.
static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Keeps `line` (a warning or error already printed) for the failure ping.
pub(crate) fn note(line: String) {
    if let Ok(mut log) = LOG.lock() {
        if log.len() == TAIL_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// The pinger for this run: `None` without `--ping-url`, for commands that are not pinged, or
/// when the URL is unusable (then with a warning: the command runs, unmonitored).
pub(crate) fn pinger(cli: &Cli) -> Option<Pinger> {
    let url = cli
        .global
        .ping_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())?;
    let pinged = matches!(
        cli.command,
        Command::Backup(_)
            | Command::Forget { .. }
            | Command::Prune { .. }
            | Command::Check { .. }
            | Command::Repair(_)
    );
    if !pinged {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(cli.global.ping_timeout)
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(100));
    match Pinger::new(url, PingOptions::with_timeout(timeout)) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("cairn-files: warning: no health pings: {e}");
            None
        }
    }
}

/// Ends the pinged run with the command's result (exit code, or the error and its exit code);
/// reports pings that failed as warnings (with `--json`: every ping as a JSON line on stderr).
pub(crate) async fn finish(run: PingedRun, result: &cairn::Result<u8>, json: bool) {
    let failure = match result {
        Ok(0) => None,
        Ok(c) => Some(format!("exit code {c}: {}", meaning(*c))),
        Err(e) => Some(format!("{e} (exit code {})", e.exit_code())),
    };
    let log = failure.map(|last| {
        let mut lines: Vec<String> = LOG
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        lines.push(format!("cairn-files: {last}"));
        lines.join("\n")
    });
    let report = run.finish(log.as_deref()).await;
    if json {
        for o in [&report.start, &report.end] {
            let mut line = serde_json::to_value(o).unwrap_or_default();
            line["event"] = json!("ping");
            eprintln!("{line}");
        }
    } else {
        for o in report.failed() {
            eprintln!("cairn-files: warning: {o} (the run's result is unchanged)");
        }
    }
}

fn meaning(code: u8) -> &'static str {
    match code {
        5 => "corruption found, or not everything could be restored",
        8 => "snapshot written but some files could not be read",
        _ => "failure",
    }
}
