//! `lifeboat init`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use lifeboat::repo::InitOptions;
use lifeboat::storage::open_location;
use lifeboat::Repository;

use super::RepoArgs;

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// zstd compression level for new data (1-22).
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InitArgs) -> Result<ExitCode> {
    let storage = open_location(&a.repo.repo)?;
    let opts = InitOptions {
        compression_level: a.compression_level,
        pack_size: a.pack_size_mib.saturating_mul(1 << 20),
    };
    let repo = Repository::init(storage, &opts)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"id": repo.config().id, "location": repo.storage().location(), "version": repo.config().version})
        );
    } else {
        println!(
            "created repository {} at {}",
            &repo.config().id[..8],
            repo.storage().location()
        );
    }
    Ok(ExitCode::SUCCESS)
}
