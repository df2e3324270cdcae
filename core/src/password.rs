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
}
