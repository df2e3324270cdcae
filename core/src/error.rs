//! The engine's error type.
//!
//! # Error policy
//!
//! * Every public function of this crate returns [`Error`](enum@Error). Module-private failures are mapped
//!   into it at the module boundary, adding the object (`data/3fa2...`), snapshot or path they
//!   concern; a bare [`cairn_format::FormatError`] never escapes without the name of the object
//!   it was found in.
//! * Variants are semantic, so that callers can branch: [`Error::NotFound`] (the object is not
//!   there), [`Error::Corrupt`] (it is there but damaged, tampered with, or not ours),
//!   [`Error::WrongPassword`], [`Error::AlreadyExists`], and [`Error::Storage`] split into
//!   transient (worth a retry: network, throttling) and permanent (permissions, bad
//!   configuration).
//! * Messages say what the user can do next where there is something to do.

use cairn_format::FormatError;
use thiserror::Error;

/// Anything that can go wrong in Cairn.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An object that should exist does not.
    #[error("{object}: not found in the repository")]
    NotFound {
        /// The object name.
        object: String,
    },
    /// An object exists but is damaged, tampered with, or belongs to another repository.
    #[error("{object}: corrupt: {source}")]
    Corrupt {
        /// The object name.
        object: String,
        /// What the format layer found.
        #[source]
        source: FormatError,
    },
    /// No key slot opens with the given password.
    #[error("wrong password: none of the repository's {slots} key(s) opens with it")]
    WrongPassword {
        /// How many key slots were tried.
        slots: usize,
    },
    /// Something exists where it must not (e.g. `init` on an existing repository).
    #[error("{object}: already exists{hint}")]
    AlreadyExists {
        /// The object or location.
        object: String,
        /// What to do about it (starts with "; " when present).
        hint: String,
    },
    /// The location holds no Cairn repository.
    #[error("{location}: no Cairn repository here (no `config` object); run `init` first")]
    NotARepository {
        /// The repository location.
        location: String,
    },
    /// The repository or an object was written by a newer Cairn.
    #[error("{0}")]
    Unsupported(FormatError),
    /// The storage failed.
    #[error("storage {op} {object}: {message}{}", if *.transient { " (transient; retry later)" } else { "" })]
    Storage {
        /// The operation (`get`, `put`, `list`, ...).
        op: &'static str,
        /// The object or prefix.
        object: String,
        /// True when retrying may succeed (network errors, throttling, 5xx).
        transient: bool,
        /// The store's message.
        message: String,
    },
    /// A caller error: bad URL, bad argument, bad option.
    #[error("{0}")]
    Invalid(String),
    /// The operation was stopped or refused for a reason that is not the caller's mistake nor
    /// damage: a backup that would depend on data prune deleted, a stream command that failed or
    /// could not run. Nothing it wrote is wrong; running it again may succeed.
    #[error("{0}")]
    Failed(String),
    /// The repository is damaged in a way that makes the operation unsafe (prune will not
    /// delete anything while snapshots need data that is missing or damaged). Exit code 5.
    #[error("{0}")]
    Damaged(String),
    /// A local file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a format error found in `object`, keeping the semantic distinctions.
    pub fn format(object: impl Into<String>, source: FormatError) -> Self {
        match source {
            FormatError::WrongPassphrase => Self::WrongPassword { slots: 1 },
            e @ FormatError::UnsupportedVersion { .. } => Self::Unsupported(e),
            source => Self::Corrupt {
                object: object.into(),
                source,
            },
        }
    }

    /// An I/O error on a local path.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// True for storage errors that a retry may cure.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Storage {
                transient: true,
                ..
            }
        )
    }

    /// A process exit code for command-line tools: 0 success, 1 generic failure, 2 usage, 3 not
    /// found / not a repository, 4 wrong password, 5 corruption found, 6 storage failure,
    /// 7 already exists ([`Error::Failed`] and the rest: 1).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Invalid(_) => 2,
            Self::NotFound { .. } | Self::NotARepository { .. } => 3,
            Self::WrongPassword { .. } => 4,
            Self::Corrupt { .. } | Self::Damaged(_) => 5,
            Self::Storage { .. } => 6,
            Self::AlreadyExists { .. } => 7,
            _ => 1,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
