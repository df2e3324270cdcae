//! Health pings: tell a monitoring service that a run started, succeeded or failed.
//!
//! The convention is healthchecks.io's, also served by self-hosted servers (Healthchecks,
//! and others that copied its API): for a check URL `URL`,
//!
//! * `GET URL/start` when a run starts (the service then measures its duration),
//! * `GET URL` when it succeeds,
//! * `POST URL/fail` when it fails, with the last lines of the run's log as the body
//!   (capped by [`log_tail`]: at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes).
//!
//! A query string stays at the end (`URL?rid=x` pings `URL/start?rid=x`); a trailing `/` of
//! `URL` is dropped. HTTP and HTTPS both work (rustls with the platform's certificate store).
//!
//! # Guarantees
//!
//! A ping never fails the run and never holds it up for long: [`Pinger::start`],
//! [`Pinger::success`] and [`Pinger::fail`] return a [`PingOutcome`] (sent, or failed with the
//! reason), never an error, and each returns within [`PingOptions::timeout`] whatever the server
//! does (connection refused, no answer, an answer that never ends). Within that budget a ping is
//! tried up to [`PingOptions::attempts`] times: again after a connection failure, a timeout, a
//! 5xx, 408 or 429 status, not after other statuses (a 404 means a wrong URL; repeating it does
//! not help). [`PingedRun`] wraps a whole run: the start ping goes out alongside the run, and
//! the run's end (waiting for a start ping still under way, then the final ping) takes at most one
//! timeout.
//!
//! Outcomes name the URL without its user name and password.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Error, Result};

/// Most lines of a log sent with a failure ping.
pub const TAIL_LINES: usize = 100;
/// Most bytes of a log sent with a failure ping (10 KiB).
pub const TAIL_BYTES: usize = 10 * 1024;

/// Timeouts and retries of pings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PingOptions {
    /// The whole budget of one ping, every attempt and pause included. Default 10 s.
    pub timeout: Duration,
    /// The longest a single attempt may take (connecting, sending, reading the answer), cut
    /// short by what is left of [`timeout`](Self::timeout). Default 5 s.
    pub attempt_timeout: Duration,
    /// Attempts per ping, the first included. Default 3.
    pub attempts: u32,
    /// The pause after the first failed attempt, doubled after each further one. Default 500 ms.
    pub retry_delay: Duration,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            attempts: 3,
            retry_delay: Duration::from_millis(500),
        }
    }
}

impl PingOptions {
    /// The defaults with another total [`timeout`](Self::timeout); a single attempt then takes
    /// at most half of it (at most 5 s), so that a retry still fits.
    pub fn with_timeout(timeout: Duration) -> Self {
        PingOptions {
            timeout,
            attempt_timeout: (timeout / 2).min(Duration::from_secs(5)),
            ..Self::default()
        }
    }
}

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PingKind {
    /// `URL/start`: the run started.
    Start,
    /// `URL`: the run succeeded.
    Success,
    /// `URL/fail`: the run failed.
    Fail,
}

impl fmt::Display for PingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PingKind::Start => "start",
            PingKind::Success => "success",
            PingKind::Fail => "fail",
        })
    }
}

/// What became of a ping. Serialized with a `"result"` field, `"sent"` or `"failed"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PingOutcome {
    /// The server answered with a 2xx status.
    Sent {
        /// Which ping.
        kind: PingKind,
        /// The URL pinged (without user name and password).
        url: String,
        /// The HTTP status of the answer.
        status: u16,
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// The ping did not get through; the run goes on regardless.
    Failed {
        /// Which ping.
        kind: PingKind,
        /// The URL pinged (without user name and password).
        url: String,
        /// Attempts made (0: there was no time left to try).
        attempts: u32,
        /// Why, from the last attempt.
        reason: String,
    },
}

impl PingOutcome {
    /// True when the server took the ping.
    pub fn is_sent(&self) -> bool {
        matches!(self, PingOutcome::Sent { .. })
    }
}

impl fmt::Display for PingOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingOutcome::Sent {
                kind, url, status, ..
            } => write!(f, "{kind} ping to {url} sent (HTTP {status})"),
            PingOutcome::Failed {
                kind,
                url,
                attempts,
                reason,
            } => write!(
                f,
                "{kind} ping to {url} failed after {attempts} attempt(s): {reason}"
            ),
        }
    }
}

/// The pings of one run (see [`PingedRun`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PingReport {
    /// The start ping.
    pub start: PingOutcome,
    /// The success or failure ping.
    pub end: PingOutcome,
}

impl PingReport {
    /// The pings that did not get through, for warnings.
    pub fn failed(&self) -> impl Iterator<Item = &PingOutcome> {
        [&self.start, &self.end]
            .into_iter()
            .filter(|o| !o.is_sent())
    }
}

/// Sends the pings of one check URL.
#[derive(Debug, Clone)]
pub struct Pinger {
    client: reqwest::Client,
    url: reqwest::Url,
    options: PingOptions,
}

impl Pinger {
    /// A pinger for the check URL `url` (`http://` or `https://`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a URL that does not parse or is not HTTP(S);
    /// [`Error::Failed`] when the HTTP client cannot be set up (no TLS configuration).
    pub fn new(url: &str, options: PingOptions) -> Result<Pinger> {
        let mut parsed = reqwest::Url::parse(url.trim())
            .map_err(|e| Error::Invalid(format!("ping URL {}: {e}", redact_text(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!(
                "ping URL {}: not an http:// or https:// URL",
                redact(&parsed)
            )));
        }
        if parsed.cannot_be_a_base() {
            return Err(Error::Invalid(format!(
                "ping URL {}: has no path",
                redact(&parsed)
            )));
        }
        if let Ok(mut segments) = parsed.path_segments_mut() {
            segments.pop_if_empty();
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.attempt_timeout)
            .build()
            .map_err(|e| Error::Failed(format!("cannot set up the HTTP client for pings: {e}")))?;
        Ok(Pinger {
            client,
            url: parsed,
            options,
        })
    }

    /// The options in use.
    pub fn options(&self) -> &PingOptions {
        &self.options
    }

    /// The URL of a ping, e.g. `URL/start`, without user name and password.
    pub fn ping_url(&self, kind: PingKind) -> String {
        redact(&self.url_of(kind))
    }

    /// Pings `URL/start`.
    pub async fn start(&self) -> PingOutcome {
        self.ping(PingKind::Start, "", Instant::now() + self.options.timeout)
            .await
    }

    /// Pings `URL`.
    pub async fn success(&self) -> PingOutcome {
        self.ping(PingKind::Success, "", Instant::now() + self.options.timeout)
            .await
    }

    /// Pings `URL/fail` with the end of `log` as the body (see [`log_tail`]).
    pub async fn fail(&self, log: &str) -> PingOutcome {
        self.ping(PingKind::Fail, log, Instant::now() + self.options.timeout)
            .await
    }

    /// Sends the start ping in the background (on the current tokio runtime) and returns the
    /// run, to be ended with [`PingedRun::finish`].
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn begin(self) -> PingedRun {
        let pinger = Arc::new(self);
        let p = pinger.clone();
        let start = tokio::spawn(async move { p.start().await });
        PingedRun { pinger, start }
    }

    fn url_of(&self, kind: PingKind) -> reqwest::Url {
        let mut url = self.url.clone();
        let suffix = match kind {
            PingKind::Start => "start",
            PingKind::Success => return url,
            PingKind::Fail => "fail",
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(suffix);
        }
        url
    }

    /// One ping with retries, finished by `deadline`.
    async fn ping(&self, kind: PingKind, log: &str, deadline: Instant) -> PingOutcome {
        let url = self.url_of(kind);
        let body = log_tail(log, TAIL_LINES, TAIL_BYTES);
        let mut attempts = 0;
        let mut delay = self.options.retry_delay;
        let mut reason = String::from("no time left to try");
        while attempts < self.options.attempts.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            attempts += 1;
            let request = match kind {
                PingKind::Fail => self.client.post(url.clone()).body(body.clone()),
                PingKind::Start | PingKind::Success => self.client.get(url.clone()),
            };
            let limit = left.min(self.options.attempt_timeout);
            let retry = match tokio::time::timeout(limit, request.timeout(limit).send()).await {
                Ok(Ok(answer)) => {
                    let status = answer.status().as_u16();
                    // Read the (short) answer so that the connection can be reused; what it
                    // says does not matter.
                    let _ = tokio::time::timeout_at(deadline, answer.bytes()).await;
                    if (200..300).contains(&status) {
                        return PingOutcome::Sent {
                            kind,
                            url: redact(&url),
                            status,
                            attempts,
                        };
                    }
                    reason = format!("HTTP status {status}");
                    matches!(status, 408 | 429 | 500..=599)
                }
                Ok(Err(e)) if !e.is_timeout() => {
                    reason = describe(e);
                    true
                }
                Ok(Err(_)) | Err(_) => {
                    reason = format!("no answer within {}", seconds(limit));
                    true
                }
            };
            if !retry || attempts >= self.options.attempts {
                break;
            }
            let pause = delay.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            delay = delay.saturating_mul(2);
        }
        PingOutcome::Failed {
            kind,
            url: redact(&url),
            attempts,
            reason,
        }
    }
}

/// A run with pings: the start ping was sent by [`Pinger::begin`]; [`finish`](Self::finish)
/// sends the success or failure ping.
#[derive(Debug)]
pub struct PingedRun {
    pinger: Arc<Pinger>,
    start: JoinHandle<PingOutcome>,
}

impl PingedRun {
    /// Ends the run: `None` pings success, `Some(log)` pings failure with the end of `log`.
    ///
    /// Takes at most one [`PingOptions::timeout`]: a start ping still under way gets what is left
    /// of its own budget within it (and is abandoned, reported failed, when that runs out), the
    /// final ping the rest.
    pub async fn finish(self, failure: Option<&str>) -> PingReport {
        let deadline = Instant::now() + self.pinger.options.timeout;
        let abort = self.start.abort_handle();
        let start = match tokio::time::timeout_at(deadline, self.start).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => PingOutcome::Failed {
                kind: PingKind::Start,
                url: self.pinger.ping_url(PingKind::Start),
                attempts: 0,
                reason: format!("the ping task ended: {e}"),
            },
            Err(_) => {
                abort.abort();
                PingOutcome::Failed {
                    kind: PingKind::Start,
                    url: self.pinger.ping_url(PingKind::Start),
                    attempts: 0,
                    reason: "abandoned: no answer by the end of the run".into(),
                }
            }
        };
        let end = match failure {
            None => self.pinger.ping(PingKind::Success, "", deadline).await,
            Some(log) => self.pinger.ping(PingKind::Fail, log, deadline).await,
        };
        PingReport { start, end }
    }
}

/// The end of `log`: its last `max_lines` lines, and of those at most the last `max_bytes`
/// bytes (cut at a character boundary). Trailing line breaks do not count as a line.
pub fn log_tail(log: &str, max_lines: usize, max_bytes: usize) -> String {
    let trimmed = log.trim_end_matches(['\n', '\r']);
    let mut start = 0;
    if max_lines == 0 {
        start = trimmed.len();
    } else if let Some((i, _)) = trimmed.rmatch_indices('\n').nth(max_lines - 1) {
        start = i + 1;
    }
    let mut from = trimmed.len().saturating_sub(max_bytes).max(start);
    while !trimmed.is_char_boundary(from) {
        from += 1;
    }
    trimmed.get(from..).unwrap_or_default().to_owned()
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A reqwest error with its causes ("connection refused"), without the URL (which may hold a
/// password).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("");
        let _ = u.set_password(None);
    }
    u.to_string()
}

/// For a URL that did not parse: the text without anything between `://` and an `@`.
fn redact_text(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://{}", &url[..s], &url[a + 1..]),
        _ => url.to_owned(),
    }
}
