//! Where a repository password comes from.

use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A source of the repository password, in the order command-line tools try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Read from a file; one trailing newline (`\n` or `\r\n`) is removed.
    File(String),
    /// Run through `sh -c`; its standard output, less one trailing newline, is the password. A
    /// non-zero exit is an error.
    Command(String),
    /// Given directly (e.g. from `CAIRN_PASSWORD`).
    Literal(String),
}

impl PasswordSource {
    /// The source command-line tools use: the password file when given, else the password
    /// command, else the `CAIRN_PASSWORD` environment variable. `None` when none is set (the
    /// caller may then prompt on a terminal, or fail).
    pub fn from_options(file: Option<&str>, command: Option<&str>) -> Option<Self> {
        Self::first_of(file, command, std::env::var("CAIRN_PASSWORD").ok())
    }

    /// [`Self::from_options`] with the environment variable's value passed in.
    fn first_of(file: Option<&str>, command: Option<&str>, env: Option<String>) -> Option<Self> {
        if let Some(f) = file {
            Some(Self::File(f.to_owned()))
        } else if let Some(c) = command {
            Some(Self::Command(c.to_owned()))
        } else {
            env.map(Self::Literal)
        }
    }

    /// Reads the password.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut raw = Zeroizing::new(match self {
            Self::File(path) => std::fs::read(path).map_err(|e| Error::io(path, e))?,
            Self::Command(cmd) => {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit())
                    .output()
                    .map_err(|e| Error::io(cmd, e))?;
                if !out.status.success() {
                    return Err(Error::Invalid(format!(
                        "password command {cmd:?} failed: {}",
                        out.status
                    )));
                }
                out.stdout
            }
            Self::Literal(s) => s.as_bytes().to_vec(),
        });
        if raw.last() == Some(&b'\n') {
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
        }
        if raw.is_empty() {
            return Err(Error::Invalid("the password is empty".into()));
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "secret\n").unwrap();
        assert_eq!(
            &*PasswordSource::File(f.display().to_string())
                .read()
                .unwrap(),
            b"secret"
        );
        assert_eq!(
            &*PasswordSource::Command("printf 'a b\\r\\n'".into())
                .read()
                .unwrap(),
            b"a b"
        );
        assert!(matches!(
            PasswordSource::Command("exit 3".into()).read(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            PasswordSource::Literal(String::new()).read(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            PasswordSource::File("/nonexistent/pw".into()).read(),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn file_then_command_then_environment() {
        let env = || Some("lit".to_owned());
        assert_eq!(
            PasswordSource::first_of(Some("f"), Some("c"), env()),
            Some(PasswordSource::File("f".into()))
        );
        assert_eq!(
            PasswordSource::first_of(None, Some("c"), env()),
            Some(PasswordSource::Command("c".into()))
        );
        assert_eq!(
            PasswordSource::first_of(None, None, env()),
            Some(PasswordSource::Literal("lit".into()))
        );
        assert_eq!(PasswordSource::first_of(None, None, None), None);
        // The public entry point reads `CAIRN_PASSWORD` only when neither option is given.
        assert_eq!(
            PasswordSource::from_options(Some("f"), None),
            Some(PasswordSource::File("f".into()))
        );
        assert_eq!(
            PasswordSource::from_options(None, Some("c")),
            Some(PasswordSource::Command("c".into()))
        );
        assert_eq!(
            PasswordSource::from_options(None, None),
            std::env::var("CAIRN_PASSWORD")
                .ok()
                .map(PasswordSource::Literal)
        );
    }
}
