//! Operations around a run rather than inside the repository: health pings to a monitoring
//! service ([`ping`]).

pub mod ping;

pub use ping::{PingKind, PingOptions, PingOutcome, PingReport, PingedRun, Pinger, log_tail};
