//! `lifeboat init`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use lifeboat::repo::{Cipher, InitOptions, KdfSetting, MasterKey};
use lifeboat::Repository;

use super::{password, RepoArgs};

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Store everything unencrypted (not recommended: anyone who can read the storage reads
    /// the backups). The repository records this.
    #[arg(long, conflicts_with = "cipher")]
    insecure_no_encryption: bool,
    /// The cipher that seals every object: xaes-256-gcm or xchacha20-poly1305 (default: the
    /// faster one on this machine: xaes-256-gcm where the CPU has AES instructions). Every
    /// Lifeboat reads both; AES without those instructions is several times slower.
    #[arg(long, value_name = "NAME", value_parser = parse_cipher)]
    cipher: Option<Cipher>,
    /// zstd compression level for new data (1-22).
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Take the chunking parameters and the chunk-id key of this existing repository (opened
    /// with --from-password-file, --from-recovery-kit or LIFEBOAT_FROM_PASSWORD*; never this
    /// repository's password): the same data then gives the same chunks and ids in both, so
    /// copies between them store each chunk once. The encryption key is new.
    #[arg(long, value_name = "SRC")]
    copy_params_from: Option<String>,
    #[command(flatten)]
    from: super::FromArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Password stretching of a new key (default: Argon2id, 64 MiB, iterations for about 0.5 s of one
/// core's work here, in one lane per core up to 4, computed in parallel).
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Argon2id memory in KiB (with --kdf-iterations; default: 64 MiB with iterations
    /// calibrated to about 0.5 s of one core's work here, one lane per core up to 4).
    #[arg(
        long,
        env = "LIFEBOAT_KDF_MEMORY_KIB",
        value_name = "KIB",
        requires = "kdf_iterations"
    )]
    kdf_memory_kib: Option<u32>,
    /// Argon2id iterations (with --kdf-memory-kib).
    #[arg(
        long,
        env = "LIFEBOAT_KDF_ITERATIONS",
        value_name = "N",
        requires = "kdf_memory_kib"
    )]
    kdf_iterations: Option<u32>,
    /// Argon2id lanes, computed in parallel (with --kdf-memory-kib and --kdf-iterations).
    #[arg(
        long,
        env = "LIFEBOAT_KDF_PARALLELISM",
        value_name = "N",
        default_value_t = 1
    )]
    kdf_parallelism: u32,
}

impl KdfArgs {
    pub fn setting(&self) -> KdfSetting {
        match (self.kdf_memory_kib, self.kdf_iterations) {
            (Some(memory_kib), Some(iterations)) => KdfSetting::Fixed {
                memory_kib,
                iterations,
                parallelism: self.kdf_parallelism,
            },
            _ => KdfSetting::Calibrate,
        }
    }
}

fn parse_cipher(name: &str) -> std::result::Result<Cipher, String> {
    Cipher::from_name(name)
        .ok_or_else(|| format!("unknown cipher {name:?}: use {}", Cipher::names()))
}

pub fn run(a: InitArgs) -> Result<ExitCode> {
    if a.repo.recovery_kit.is_some() {
        bail!("--recovery-kit opens an existing repository; init makes a new master key");
    }
    let storage = a.repo.storage()?;
    let mut opts = InitOptions {
        compression_level: a.compression_level,
        pack_size: a.pack_size_mib.saturating_mul(1 << 20),
        encryption: !a.insecure_no_encryption,
        cipher: a.cipher,
        kdf: a.kdf.setting(),
        ..InitOptions::default()
    };
    let from_given = a.from.from_password_file.is_some()
        || a.from.from_recovery_kit.is_some()
        || !a.from.from_options.is_empty();
    if from_given && a.copy_params_from.is_none() {
        bail!("--from-password-file, --from-recovery-kit and --from-option open the repository of --copy-params-from: give it");
    }
    if let Some(src) = &a.copy_params_from {
        let source = a
            .from
            .open(src, a.repo.cache())
            .with_context(|| format!("--copy-params-from {src}: the source repository"))?;
        opts.chunker = source.config().chunker;
        match (source.master_key(), opts.encryption) {
            (Some(m), true) => opts.master = Some(MasterKey::sharing_ids_with(m)),
            (None, true) => errln!(
                "lifeboat: warning: {src} is unencrypted: its chunk ids are plain BLAKE3 and this \
                 repository's are keyed, so a copy hashes every chunk again (the chunking \
                 parameters are shared)"
            ),
            (Some(_), false) => errln!(
                "lifeboat: warning: {src} is encrypted and this repository is not: its chunk ids \
                 are keyed and this one's plain BLAKE3, so a copy hashes every chunk again (the \
                 chunking parameters are shared)"
            ),
            (None, false) => {} // both plain BLAKE3
        }
    }
    let pw = if opts.encryption {
        Some(password::new_repository(
            a.repo.password_file.clone(),
            &a.repo.repo,
        )?)
    } else {
        None
    };
    let repo = Repository::init(storage, &opts, pw.as_deref().map(Vec::as_slice))?;
    let cfg = repo.config();
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "id": cfg.id,
                "copy_params_from": a.copy_params_from,
                "location": repo.storage().location(),
                "version": cfg.version,
                "encryption": cfg.encryption,
                "key_id": repo.key_id(),
            })
        )?;
    } else {
        outln!(
            "created repository {} at {}",
            &cfg.id[..8],
            repo.storage().location()
        )?;
        if let Some(src) = &a.copy_params_from {
            outln!("chunking parameters and chunk ids as in {src}: copies between the two store each chunk once")?;
        }
        if cfg.is_encrypted() {
            outln!(
                "encryption: {} (key {})",
                cfg.encryption,
                repo.key_id().map(|k| &k[..8]).unwrap_or("")
            )?;
            outln!(
                "keep the password safe: without it (or a recovery kit from `lifeboat key export`) the backups cannot be read"
            )?;
        } else {
            outln!("encryption: none (--insecure-no-encryption)")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
