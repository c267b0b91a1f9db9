//! `lifeboat key add | list | remove | passwd | export`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::init::KdfArgs;
use super::{password, RepoArgs};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a password (a new key object for the same master key).
    Add(NewKeyArgs),
    /// List the key objects.
    List(ListArgs),
    /// Remove a key object (not the one in use, not the last one).
    Remove(RemoveArgs),
    /// Change the password in use: add a key with the new password, remove the current one.
    Passwd(NewKeyArgs),
    /// Write a recovery kit: the master key as printable text, with instructions.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Read the new password from this file (else LIFEBOAT_NEW_PASSWORD, else a prompt).
    #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The key's id or a unique prefix (see `lifeboat key list`).
    id: String,
}

#[derive(Debug, Args)]
// --repo is not required with --config (an empty value stands for "not given", as for drill).
#[command(mut_arg("repo", |a| a.required(false).default_value("").hide_default_value(true)))]
pub struct ExportArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Write the kit to this file (created with mode 0600; refuses to overwrite) instead of
    /// standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The kit of a repository of the daemon's config, opened with its settings (url,
    /// options, password) instead of --repo and its flags; name it with --repository or
    /// --job.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: the repository (its name in the config).
    #[arg(long, value_name = "NAME", requires = "config", conflicts_with = "job")]
    repository: Option<String>,
    /// With --config: the repository of this job.
    #[arg(long, value_name = "JOB", requires = "config")]
    job: Option<String>,
}

pub fn run(cmd: KeyCommand) -> Result<ExitCode> {
    match cmd {
        KeyCommand::Add(a) => {
            let repo = a.repo.open()?;
            let pw = password::new_key(a.new_password_file.clone(), &a.repo.repo)?;
            let id = repo.add_key(&pw, &a.kdf.setting())?;
            outln!("added key {}", &id[..8])?;
        }
        KeyCommand::Passwd(a) => {
            let repo = a.repo.open()?;
            let Some(old) = repo.key_id().map(str::to_string) else {
                bail!("key passwd changes the password in use: open the repository with a password, not a recovery kit");
            };
            let pw = password::new_key(a.new_password_file.clone(), &a.repo.repo)?;
            let id = repo.add_key(&pw, &a.kdf.setting())?;
            // The new key is durable before the old one goes.
            repo.storage()
                .remove(lifeboat::storage::FileKind::Key, &old)
                .with_context(|| {
                    format!(
                        "the new key {} was added, but removing the old key {} failed",
                        &id[..8],
                        &old[..8]
                    )
                })?;
            outln!(
                "password changed: key {} replaced by key {}",
                &old[..8],
                &id[..8]
            )?;
        }
        KeyCommand::List(a) => {
            let repo = a.repo.open()?;
            let keys = repo.list_keys()?;
            if a.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| match k {
                        Ok(k) => serde_json::json!({
                            "id": id, "current": Some(id.as_str()) == repo.key_id(),
                            "created": k.created, "host": k.host, "username": k.username,
                            "kdf": {"algorithm": k.kdf.algorithm, "memory_kib": k.kdf.memory_kib,
                                    "iterations": k.kdf.iterations, "parallelism": k.kdf.parallelism},
                        }),
                        Err(e) => serde_json::json!({"id": id, "error": e.to_string()}),
                    })
                    .collect();
                jsonln!(&v)?;
            } else {
                outln!(" {:<8}  {:<20}  {:<16}  USER", "ID", "CREATED", "HOST")?;
                for (id, k) in &keys {
                    let mark = if Some(id.as_str()) == repo.key_id() {
                        "*"
                    } else {
                        " "
                    };
                    match k {
                        Ok(k) => outln!(
                            "{mark}{:<8}  {:<20}  {:<16}  {}",
                            &id[..8],
                            k.created.format("%Y-%m-%d %H:%M:%S"),
                            k.host,
                            k.username
                        )?,
                        Err(e) => outln!("{mark}{:<8}  unreadable: {e}", &id[..8])?,
                    }
                }
            }
        }
        KeyCommand::Remove(a) => {
            let repo = a.repo.open()?;
            let id = repo.remove_key(&a.id)?;
            outln!("removed key {}", &id[..8])?;
        }
        KeyCommand::Export(a) => {
            let (repo, location, options) = export_repository(&a)?;
            // A local repository given as a relative path is written down absolute: the kit is
            // read on another day, from another directory.
            let location = if location.contains("://") || location.starts_with('/') {
                location
            } else {
                std::path::absolute(&location)?
                    .to_string_lossy()
                    .into_owned()
            };
            let Some(master) = repo.master_key() else {
                bail!("the repository is not encrypted: there is no key to export");
            };
            let storage = lifeboat::storage::cloud::kit_settings(&location, &options)?;
            let all = repo.load_snapshots()?;
            let newest = lifeboat::repo::select::newest_per_lineage(&all);
            let host = lifeboat::repo::snapshot::local_host();
            let kit = lifeboat::repo::kit::render(
                master,
                &lifeboat::repo::kit::KitInfo {
                    location: &location,
                    repo_id: &repo.config().id,
                    storage: &storage,
                    newest: &newest,
                    local_host: &host,
                },
            );
            match &a.output {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("create {}", path.display()))?;
                    f.write_all(kit.as_bytes())?;
                    f.sync_all()?;
                    errln!(
                        "recovery kit written to {} (keep it offline and secret)",
                        path.display()
                    );
                }
                None => {
                    warn_if_stdout_is_shared();
                    print!("{kit}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Storage options as `--option` gives them, KEY=VALUE.
type StorageOptions = Vec<(String, String)>;

/// The repository `key export` writes the kit of, its location and its storage options: from
/// --repo and its flags, or from a repository of the daemon's config (--config with
/// --repository or --job).
fn export_repository(a: &ExportArgs) -> Result<(lifeboat::Repository, String, StorageOptions)> {
    let Some(file) = &a.config else {
        if a.repo.repo.is_empty() {
            bail!(
                "give the repository (--repo or LIFEBOAT_REPOSITORY), or a daemon config and one \
                 of its repositories (--config FILE --repository NAME, or --job JOB)"
            );
        }
        return Ok((a.repo.open()?, a.repo.repo.clone(), a.repo.options.clone()));
    };
    let cfg = lifeboat::daemon::config::Config::load(file)
        .map_err(|e| anyhow::Error::new(e).context("invalid config"))?;
    let name = match (&a.repository, &a.job) {
        (Some(r), _) => r.clone(),
        (None, Some(job)) => match cfg.job(job) {
            Some(j) => j.repository.clone(),
            None => bail!("no job named {job:?} in {}", file.display()),
        },
        (None, None) => {
            let names: Vec<&String> = cfg.repositories.keys().collect();
            match names.as_slice() {
                [only] => (*only).clone(),
                _ => bail!(
                    "{} defines {} repositories: name one with --repository NAME (or --job JOB): {}",
                    file.display(),
                    names.len(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let Some(r) = cfg.repositories.get(&name) else {
        bail!("{} defines no repository named {name:?}", file.display());
    };
    if !a.repo.repo.is_empty() {
        errln!("lifeboat: note: the kit of repository {name:?} of the config; --repo is not used");
    }
    let repo = lifeboat::daemon::runner::open_repository(&cfg, r)
        .with_context(|| format!("repository {name:?} of {}", file.display()))?;
    let options = r
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((repo, r.url.clone(), options))
}

/// Warns when standard output is a regular file that users other than the owner can read: the
/// kit opens the repository without a password (`--output FILE` creates it 0600).
fn warn_if_stdout_is_shared() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o077 != 0 {
        errln!(
            "lifeboat: warning: the recovery kit goes to a file that other users can read (mode \
             {mode:04o}): whoever reads it can open the repository without a password. Make it \
             private (chmod 600), or write it with --output FILE, which creates it with mode 0600"
        );
    }
}
