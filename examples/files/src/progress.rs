//! Progress on standard error: bars on a terminal, JSON lines with `--json`, nothing otherwise
//! (warnings are then kept for the end).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// Minimum time between two JSON progress events.
const JSON_EVERY: Duration = Duration::from_millis(500);

enum Mode {
    Bars(Mutex<Option<ProgressBar>>),
    Json,
    Quiet,
}

/// Implements [`Progress`] for the command line.
pub(crate) struct Reporter {
    mode: Mode,
    started: Instant,
    phase: Mutex<String>,
    totals: Mutex<(Option<u64>, Option<u64>)>,
    items: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds since `started` before which no JSON progress event is due.
    next_ms: AtomicU64,
    warnings: Mutex<Vec<String>>,
}

impl Reporter {
    /// Bars when standard error is a terminal, JSON lines with `json`, quiet otherwise.
    pub(crate) fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(Mutex::new(None))
        } else {
            Mode::Quiet
        };
        Self {
            mode,
            started: Instant::now(),
            phase: Mutex::new(String::new()),
            totals: Mutex::new((None, None)),
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            next_ms: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Warnings not shown yet (quiet mode keeps them for the end).
    pub(crate) fn held_warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True (once per period) when an update is due.
    fn due(&self, every: Duration) -> bool {
        let now = self.elapsed_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + u64::try_from(every.as_millis()).unwrap_or(500),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn json_event(&self) {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        let (total_items, total_bytes) = self.totals.lock().map(|t| *t).unwrap_or_default();
        eprintln!(
            "{}",
            json!({
                "event": "progress",
                "phase": phase,
                "items": self.items.load(Ordering::Relaxed),
                "bytes": self.bytes.load(Ordering::Relaxed),
                "total_items": total_items,
                "total_bytes": total_bytes,
                "elapsed_secs": self.started.elapsed().as_secs_f64(),
            })
        );
    }

    fn tick(&self) {
        if matches!(self.mode, Mode::Json) && self.due(JSON_EVERY) {
            self.json_event();
        }
    }

    fn bar(&self) -> Option<ProgressBar> {
        match &self.mode {
            Mode::Bars(b) => b.lock().ok().and_then(|b| b.clone()),
            _ => None,
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// The last `max` characters of a path, for the bar's message.
fn tail(path: &Path, max: usize) -> String {
    let s = path.display().to_string();
    let n = s.chars().count();
    if n <= max {
        return s;
    }
    let rest: String = s.chars().skip(n - max + 1).collect();
    format!("…{rest}")
}

impl Progress for Reporter {
    fn start(&self, phase: &str, total_items: Option<u64>, total_bytes: Option<u64>) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_owned();
        }
        if let Ok(mut t) = self.totals.lock() {
            *t = (total_items, total_bytes);
        }
        self.items.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        match &self.mode {
            Mode::Json => eprintln!(
                "{}",
                json!({"event": "start", "phase": phase, "total_items": total_items, "total_bytes": total_bytes})
            ),
            Mode::Bars(slot) => {
                let bar = match total_bytes {
                    Some(total) => ProgressBar::with_draw_target(
                        Some(total),
                        ProgressDrawTarget::stderr(),
                    )
                    .with_style(
                        style("{spinner} {prefix} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}\n  {wide_msg}")
                            .progress_chars("=> "),
                    ),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                        .with_style(style(
                            "{spinner} {prefix} [{elapsed_precise}] {bytes} {binary_bytes_per_sec}\n  {wide_msg}",
                        )),
                };
                bar.set_prefix(phase.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                if let Ok(mut s) = slot.lock() {
                    if let Some(old) = s.replace(bar) {
                        old.finish_and_clear();
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    fn item(&self, path: &Path) {
        // indicatif redraws at most 20 times a second, whatever the updates.
        if let Some(bar) = self.bar() {
            bar.set_message(tail(path, 100));
        }
    }

    fn items_done(&self, n: u64) {
        self.items.fetch_add(n, Ordering::Relaxed);
        self.tick();
    }

    fn bytes_done(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = self.bar() {
            bar.inc(n);
        }
        self.tick();
    }

    fn warn(&self, path: &Path, message: &str) {
        let line = format!("{}: {message}", path.display());
        crate::ping::note(format!("warning: {line}"));
        match &self.mode {
            Mode::Json => eprintln!(
                "{}",
                json!({"event": "warning", "path": path.display().to_string(), "message": message})
            ),
            Mode::Bars(_) => match self.bar() {
                Some(bar) => bar.println(format!("warning: {line}")),
                None => eprintln!("warning: {line}"),
            },
            Mode::Quiet => {
                if let Ok(mut w) = self.warnings.lock() {
                    w.push(line);
                }
            }
        }
    }

    fn finish(&self, phase: &str) {
        match &self.mode {
            Mode::Json => {
                self.json_event();
                eprintln!("{}", json!({"event": "finish", "phase": phase}));
            }
            Mode::Bars(slot) => {
                if let Some(bar) = slot.lock().ok().and_then(|mut s| s.take()) {
                    bar.finish_and_clear();
                }
            }
            Mode::Quiet => {}
        }
    }
}
