//! Where passwords come from. Never from a command-line argument (it would show in `ps`), never
//! logged.
//!
//! Order: `--password-file` / `LIFEBOAT_PASSWORD_FILE`, then `LIFEBOAT_PASSWORD`, then a systemd
//! credential `$CREDENTIALS_DIRECTORY/lifeboat-password` (`LoadCredential=`), then a prompt when
//! there is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use lifeboat::{Error, Result};
use zeroize::Zeroizing;

/// Name of the systemd credential holding the password.
pub const CREDENTIAL_NAME: &str = "lifeboat-password";

fn from_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    lifeboat::repo::key::read_password_file(path)
}

fn from_environment(
    file: Option<&Path>,
    var: &str,
    credential: bool,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if let Some(f) = file {
        return from_file(f).map(Some);
    }
    if let Some(p) = std::env::var_os(var) {
        use std::os::unix::ffi::OsStrExt;
        if p.is_empty() {
            return Err(Error::Invalid(format!("{var} is set but empty")));
        }
        return Ok(Some(Zeroizing::new(p.as_bytes().to_vec())));
    }
    if credential {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let f = Path::new(&dir).join(CREDENTIAL_NAME);
            if f.exists() {
                return from_file(&f).map(Some);
            }
        }
    }
    Ok(None)
}

fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>> {
    let p = rpassword::prompt_password(text)
        .map_err(|e| Error::io("read password from", "/dev/tty", e))?;
    Ok(Zeroizing::new(p.into_bytes()))
}

fn no_password() -> Error {
    Error::Invalid(
        "the repository is encrypted and no password was given: use --password-file, LIFEBOAT_PASSWORD_FILE, \
         LIFEBOAT_PASSWORD, a systemd credential named lifeboat-password, or run on a terminal to be asked"
            .into(),
    )
}

/// The password of an existing repository.
pub fn existing(file: Option<&Path>, location: &str) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = from_environment(file, "LIFEBOAT_PASSWORD", true)? {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("password for {location}: "));
    }
    Err(no_password())
}

/// A new password: from `file`, the variable `var` (and the systemd credential when
/// `credential`), or asked twice on a terminal.
pub fn new(
    file: Option<&Path>,
    var: &str,
    credential: bool,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = from_environment(file, var, credential)? {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let a = prompt(&format!("{what}: "))?;
        if a.is_empty() {
            return Err(Error::Invalid("empty password".into()));
        }
        let b = prompt(&format!("{what} again: "))?;
        if a != b {
            return Err(Error::Invalid("the passwords do not match".into()));
        }
        return Ok(a);
    }
    Err(no_password())
}
