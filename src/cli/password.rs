//! Where passwords come from, at the command line's edge: the flags and the environment are
//! read here into a [`CredentialSource`], whose order is the library's
//! ([`lifeboat::repo::open`]): the file (or recovery kit) given, `LIFEBOAT_PASSWORD_FILE`,
//! `LIFEBOAT_PASSWORD`, the systemd credential `lifeboat-password`, then a prompt when there is
//! a terminal. Never from a command-line argument (it would show in `ps`), never logged.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use lifeboat::repo::open::{Password, Prompt};
use lifeboat::repo::{CredentialSource, PasswordEnv};
use lifeboat::{Error, Result};

/// What to set when no source gave a password.
const HINT: &str = "use --password-file, LIFEBOAT_PASSWORD_FILE, LIFEBOAT_PASSWORD, a systemd \
                    credential named lifeboat-password, or run on a terminal to be asked";

fn ask(text: &str) -> Result<Password> {
    let p = rpassword::prompt_password(text)
        .map_err(|e| Error::io("read password from", "/dev/tty", e))?;
    Ok(Password::new(p.into_bytes()))
}

/// A prompt for `what`, on a terminal only; `twice` asks again to confirm (a new password).
fn prompt(what: String, twice: bool) -> Option<Prompt> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    Some(Arc::new(move || {
        let a = ask(&format!("{what}: "))?;
        if twice && !a.is_empty() {
            let b = ask(&format!("{what} again: "))?;
            if a != b {
                return Err(Error::Invalid("the passwords do not match".into()));
            }
        }
        Ok(a)
    }))
}

/// The password (or recovery kit) of the repository at `location`, as the flags and the
/// environment give it.
pub fn existing(
    recovery_kit: Option<PathBuf>,
    password_file: Option<PathBuf>,
    location: &str,
) -> CredentialSource {
    CredentialSource {
        recovery_kit,
        password_file,
        credential: None,
        env: PasswordEnv::from_process(),
        prompt: prompt(format!("password for {location}"), false),
        hint: HINT.into(),
    }
}

/// The password (or recovery kit) of the repository a command reads from (`init
/// --copy-params-from`, copy's `--from`): the flags given for it, `LIFEBOAT_FROM_PASSWORD_FILE`,
/// `LIFEBOAT_FROM_PASSWORD`, or a prompt on a terminal; never the other repository's password.
pub fn source(
    recovery_kit: Option<PathBuf>,
    password_file: Option<PathBuf>,
    location: &str,
) -> CredentialSource {
    CredentialSource {
        env: PasswordEnv::from_process_for_source(),
        hint: "use --from-password-file, --from-recovery-kit, LIFEBOAT_FROM_PASSWORD_FILE, \
               LIFEBOAT_FROM_PASSWORD, or run on a terminal to be asked"
            .into(),
        ..existing(recovery_kit, password_file, location)
    }
}

/// The password of a new repository (`init`): the sources of [`existing`], asked twice on a
/// terminal.
pub fn new_repository(password_file: Option<PathBuf>, location: &str) -> Result<Password> {
    CredentialSource {
        prompt: prompt("new repository password".into(), true),
        ..existing(None, password_file, location)
    }
    .password(location)
}

/// A new key's password (`key add`, `key passwd`): from `file`, `LIFEBOAT_NEW_PASSWORD`, or
/// asked twice on a terminal.
pub fn new_key(file: Option<PathBuf>, location: &str) -> Result<Password> {
    CredentialSource {
        recovery_kit: None,
        password_file: file,
        credential: None,
        env: PasswordEnv::variable("LIFEBOAT_NEW_PASSWORD"),
        prompt: prompt("new password".into(), true),
        hint: "use --new-password-file, LIFEBOAT_NEW_PASSWORD, or run on a terminal to be asked"
            .into(),
    }
    .password(location)
}
