//! Opening a repository: one description of what to open ([`RepoSpec`]: location, storage
//! options and limits, metadata cache, lock timings, where the password comes from), which the
//! command line (`--repo` and its flags) and the daemon's `[repositories.NAME]` both build, and
//! one function that opens it ([`RepoSpec::open`]).
//!
//! Where the password comes from ([`CredentialSource`]), first found wins:
//!
//! 1. what is given for this repository: a recovery kit (`--recovery-kit`, `recovery_kit`),
//!    a password file (`--password-file`, `password_file`), a named systemd credential
//!    (`password_credential`);
//! 2. `LIFEBOAT_PASSWORD_FILE`;
//! 3. `LIFEBOAT_PASSWORD`;
//! 4. the systemd credential `lifeboat-password` (`$CREDENTIALS_DIRECTORY`, `LoadCredential=`);
//! 5. a prompt, when there is a terminal (the command line only).
//!
//! An empty password from any of them is refused, naming where it came from. The process
//! environment is read at the edges only (the command line, the daemon's start-up), into a
//! [`PasswordEnv`]: nothing below reads a variable while opening.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Credentials, KeyCache, LockSettings, Repository};
use crate::error::{Error, Result};
use crate::storage::StorageOptions;

/// Name of the systemd credential holding the password when none is named.
pub const CREDENTIAL_NAME: &str = "lifeboat-password";

/// A password: bytes wiped from memory when dropped.
pub type Password = Zeroizing<Vec<u8>>;

/// Asks for a password on a terminal (given by the command line; the daemon has none).
pub type Prompt = Arc<dyn Fn() -> Result<Password> + Send + Sync>;

/// The password sources of the process environment, read once at an edge.
#[derive(Clone, Default)]
pub struct PasswordEnv {
    /// The variable naming a password file (`LIFEBOAT_PASSWORD_FILE`), and its value.
    pub password_file: Option<(&'static str, PathBuf)>,
    /// The variable holding a password (`LIFEBOAT_PASSWORD`), and its value.
    pub password: Option<(&'static str, OsString)>,
    /// `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
    pub credentials_dir: Option<PathBuf>,
}

impl fmt::Debug for PasswordEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordEnv")
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|(v, _)| v))
            .field("credentials_dir", &self.credentials_dir)
            .finish()
    }
}

impl PasswordEnv {
    /// The repository password's sources in this process's environment: `LIFEBOAT_PASSWORD_FILE`,
    /// `LIFEBOAT_PASSWORD`, `$CREDENTIALS_DIRECTORY`. Called by the edges only (the command
    /// line, the daemon's start-up).
    pub fn from_process() -> Self {
        PasswordEnv {
            password_file: std::env::var_os("LIFEBOAT_PASSWORD_FILE")
                .filter(|v| !v.is_empty())
                .map(|v| ("LIFEBOAT_PASSWORD_FILE", PathBuf::from(v))),
            password: Self::variable("LIFEBOAT_PASSWORD").password,
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The sources of a second repository's password, the one a command reads from
    /// (`--copy-params-from`, copy's `--from`): `LIFEBOAT_FROM_PASSWORD_FILE`,
    /// `LIFEBOAT_FROM_PASSWORD`; never the first repository's.
    pub fn from_process_for_source() -> Self {
        PasswordEnv {
            password_file: std::env::var_os("LIFEBOAT_FROM_PASSWORD_FILE")
                .filter(|v| !v.is_empty())
                .map(|v| ("LIFEBOAT_FROM_PASSWORD_FILE", PathBuf::from(v))),
            password: Self::variable("LIFEBOAT_FROM_PASSWORD").password,
            credentials_dir: None,
        }
    }

    /// Only the password variable `var` (a new password: `LIFEBOAT_NEW_PASSWORD`).
    pub fn variable(var: &'static str) -> Self {
        PasswordEnv {
            password: std::env::var_os(var).map(|v| (var, v)),
            ..PasswordEnv::default()
        }
    }
}

/// Where the password (or recovery kit) of one repository comes from; see the module
/// documentation for the order.
#[derive(Clone, Default)]
pub struct CredentialSource {
    /// A recovery kit given for this repository: opens with the master key, no password.
    pub recovery_kit: Option<PathBuf>,
    /// A password file given for this repository.
    pub password_file: Option<PathBuf>,
    /// A systemd credential named for this repository.
    pub credential: Option<String>,
    /// The process's sources, read at the edge.
    pub env: PasswordEnv,
    /// Asks on a terminal, last.
    pub prompt: Option<Prompt>,
    /// What an operator can set when nothing gave a password (the end of the error).
    pub hint: String,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("recovery_kit", &self.recovery_kit)
            .field("password_file", &self.password_file)
            .field("credential", &self.credential)
            .field("env", &self.env)
            .field("prompt", &self.prompt.is_some())
            .finish()
    }
}

/// Refuses an empty password; `what` says where it came from ("X is empty").
fn not_empty(password: Password, what: &str) -> Result<Password> {
    if password.is_empty() {
        return Err(Error::Invalid(format!(
            "{what}: an empty password is refused"
        )));
    }
    Ok(password)
}

fn from_file(path: &Path) -> Result<Password> {
    super::key::read_password_file(path)
}

/// The credential `name` in `dir`, if it is there.
fn credential(dir: Option<&Path>, name: &str) -> Result<Option<Password>> {
    match dir.map(|d| d.join(name)) {
        Some(f) if f.exists() => from_file(&f).map(Some),
        _ => Ok(None),
    }
}

impl CredentialSource {
    /// What opens the repository: the recovery kit if one is given, else the password.
    pub fn credentials(&self, location: &str) -> Result<Credentials> {
        if let Some(kit) = &self.recovery_kit {
            let text =
                std::fs::read_to_string(kit).map_err(|e| Error::io("read recovery kit", kit, e))?;
            return Ok(Credentials::MasterKey(super::kit::parse(&text)?));
        }
        self.password(location).map(Credentials::Password)
    }

    /// The password from the first source that gives one (never empty); `location` names the
    /// repository in the error when none does.
    pub fn password(&self, location: &str) -> Result<Password> {
        if let Some(f) = &self.password_file {
            return from_file(f);
        }
        let dir = self.env.credentials_dir.as_deref();
        if let Some(name) = &self.credential {
            if let Some(p) = credential(dir, name)? {
                return Ok(p);
            }
            tracing::debug!(credential = %name, "the named systemd credential is not there");
        }
        if let Some((_, f)) = &self.env.password_file {
            return from_file(f);
        }
        if let Some((var, p)) = &self.env.password {
            use std::os::unix::ffi::OsStrExt;
            let what = format!("{var} is set but empty");
            return not_empty(Zeroizing::new(p.as_bytes().to_vec()), &what);
        }
        if let Some(p) = credential(dir, CREDENTIAL_NAME)? {
            return Ok(p);
        }
        if let Some(ask) = &self.prompt {
            return not_empty(ask()?, "the password typed at the prompt is empty");
        }
        Err(Error::Invalid(format!(
            "repository {location} is encrypted and no password was given: {}",
            self.hint
        )))
    }
}

/// Everything that opens one repository.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// A local path, `file:///path`, `s3://bucket/prefix`, `gs://bucket/prefix` or
    /// `az://container/prefix`.
    pub url: String,
    /// Storage settings (`--option`, `options`), limits and retries.
    pub storage: StorageOptions,
    /// Where cloud repositories keep their metadata cache; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Lock timings of the operations on it.
    pub lock: LockSettings,
    /// Where the password comes from.
    pub credentials: CredentialSource,
}

impl RepoSpec {
    /// A description of the repository at `url` with default storage settings, no cache and
    /// no password source.
    pub fn new(url: impl Into<String>) -> Self {
        RepoSpec {
            url: url.into(),
            storage: StorageOptions::default(),
            cache_dir: None,
            lock: LockSettings::default(),
            credentials: CredentialSource::default(),
        }
    }

    /// Storage settings as `KEY=VALUE` pairs (`--option`, `options`), and limits in KiB/s.
    pub fn with_storage(
        mut self,
        options: impl IntoIterator<Item = (String, String)>,
        limit_upload_kib: Option<u64>,
        limit_download_kib: Option<u64>,
    ) -> Self {
        self.storage.cloud.options = options.into_iter().collect();
        self.storage.limit_upload = limit_upload_kib.map(|k| k.saturating_mul(1024));
        self.storage.limit_download = limit_download_kib.map(|k| k.saturating_mul(1024));
        self
    }

    /// The storage, with retries and limits.
    pub fn storage(&self) -> Result<Arc<dyn crate::storage::Storage>> {
        crate::storage::open(&self.url, &self.storage)
    }

    /// Opens the repository: the storage, the key (asking the credential source only when the
    /// repository is encrypted), the metadata cache and the lock timings.
    pub fn open(&self) -> Result<Repository> {
        self.open_inner(None)
    }

    /// [`RepoSpec::open`] for a process that opens the same repository again and again (the
    /// daemon): see [`KeyCache`].
    pub fn open_with_keys(&self, keys: &KeyCache) -> Result<Repository> {
        self.open_inner(Some(keys))
    }

    fn open_inner(&self, keys: Option<&KeyCache>) -> Result<Repository> {
        let credentials = || self.credentials.credentials(&self.url);
        let storage = self.storage()?;
        let repo = match keys {
            Some(k) => Repository::open_with_keys(storage, credentials, k)?,
            None => Repository::open(storage, credentials)?,
        };
        Ok(repo
            .with_cache(self.cache_dir.as_deref())
            .with_lock_settings(self.lock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn password(s: &CredentialSource) -> Result<String> {
        s.password("/repo")
            .map(|p| String::from_utf8(p.to_vec()).expect("utf-8"))
    }

    /// Every source in the documented order: each wins over all that follow it.
    #[test]
    fn the_first_source_in_the_documented_order_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let creds = d.join("creds");
        std::fs::create_dir(&creds).expect("mkdir");
        write(&creds, "named", "named-credential\n");
        write(&creds, CREDENTIAL_NAME, "default-credential\n");
        let mut s = CredentialSource {
            recovery_kit: None,
            password_file: Some(write(d, "given", "given-file\n")),
            credential: Some("named".into()),
            env: PasswordEnv {
                password_file: Some(("LIFEBOAT_PASSWORD_FILE", write(d, "env", "env-file\n"))),
                password: Some(("LIFEBOAT_PASSWORD", "env-password".into())),
                credentials_dir: Some(creds),
            },
            prompt: Some(Arc::new(|| Ok(Zeroizing::new(b"prompt".to_vec())))),
            hint: String::new(),
        };
        let mut seen = Vec::new();
        seen.push(password(&s).expect("file"));
        s.password_file = None;
        seen.push(password(&s).expect("named credential"));
        s.credential = None;
        seen.push(password(&s).expect("env file"));
        s.env.password_file = None;
        seen.push(password(&s).expect("env password"));
        s.env.password = None;
        seen.push(password(&s).expect("default credential"));
        s.env.credentials_dir = None;
        seen.push(password(&s).expect("prompt"));
        assert_eq!(
            seen,
            [
                "given-file",
                "named-credential",
                "env-file",
                "env-password",
                "default-credential",
                "prompt"
            ]
        );
        s.prompt = None;
        s.hint = "set password_file".into();
        let e = password(&s).expect_err("nothing").to_string();
        assert!(
            e.contains("/repo") && e.contains("set password_file"),
            "{e}"
        );
    }

    /// An empty password is refused from every source, naming the source.
    #[test]
    fn an_empty_password_is_refused_from_every_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let empty = write(d, "empty", "\n");
        write(d, CREDENTIAL_NAME, "");
        let cases = [
            CredentialSource {
                password_file: Some(empty.clone()),
                ..Default::default()
            },
            CredentialSource {
                env: PasswordEnv {
                    password_file: Some(("LIFEBOAT_PASSWORD_FILE", empty)),
                    ..Default::default()
                },
                ..Default::default()
            },
            CredentialSource {
                env: PasswordEnv {
                    password: Some(("LIFEBOAT_PASSWORD", OsString::new())),
                    ..Default::default()
                },
                ..Default::default()
            },
            CredentialSource {
                env: PasswordEnv {
                    credentials_dir: Some(d.to_path_buf()),
                    ..Default::default()
                },
                ..Default::default()
            },
            CredentialSource {
                prompt: Some(Arc::new(|| Ok(Zeroizing::new(Vec::new())))),
                ..Default::default()
            },
        ];
        let names = [
            "empty",
            "empty",
            "LIFEBOAT_PASSWORD",
            CREDENTIAL_NAME,
            "prompt",
        ];
        for (s, name) in cases.iter().zip(names) {
            let e = password(s).expect_err("empty").to_string();
            assert!(e.contains("empty") && e.contains(name), "{e}");
        }
    }
}
