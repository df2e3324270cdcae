//! `--ping-url`: health pings around the commands worth monitoring (backup, forget, prune,
//! check, repair), through `cairn::ops::ping`. A ping that fails is a warning on stderr; it
//! never changes the exit code.
//!
//! The failure ping carries the end of the run's log: the warnings and errors this CLI printed
//! about files and objects (noted here as they are printed), then the final error or the exit
//! code with its meaning.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use cairn::ops::ping::{PingOptions, Pinger, TAIL_LINES};
use clap::Args;
use serde_json::json;

use crate::{Cli, Command};

/// The ping options (global).
#[derive(Args, Debug)]
pub(crate) struct PingArgs {
    /// Health pings for backup, forget, prune, check and repair (healthchecks.io convention):
    /// URL/start when the command starts, URL on success, URL/fail with the end of the log on
    /// failure (any exit code but 0). A ping that fails is only a warning.
    #[arg(long, env = "CAIRN_PING_URL", global = true, value_name = "URL")]
    ping_url: Option<String>,
    /// Time budget of each ping in seconds, up to 3 attempts included.
    #[arg(
        long,
        env = "CAIRN_PING_TIMEOUT",
        global = true,
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    ping_timeout: f64,
}

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
        .ping
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
            | Command::Drill { .. }
    );
    if !pinged {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(cli.global.ping.ping_timeout)
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

/// Runs `command` between the start ping and the success or failure ping (when `pinger` is
/// given); reports pings that failed as warnings (with `--json`: every ping as a JSON line on
/// stderr). The result is the command's, whatever the pings did.
pub(crate) async fn around(
    pinger: Option<Pinger>,
    json: bool,
    command: impl Future<Output = cairn::Result<u8>>,
) -> cairn::Result<u8> {
    let Some(pinger) = pinger else {
        return command.await;
    };
    let run = pinger.begin();
    let result = command.await;
    let failure = match &result {
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
    result
}

fn meaning(code: u8) -> &'static str {
    match code {
        5 => "corruption found, or not everything could be restored",
        8 => "snapshot written but some files could not be read",
        _ => "failure",
    }
}
