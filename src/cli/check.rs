//! `lifeboat check`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use lifeboat::ops::check::{check, CheckOptions};
use lifeboat::units::human_bytes as human;

use super::output::Reporter;
use super::{RepoArgs, EXIT_FAILURE};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Read every pack and verify every chunk.
    #[arg(long)]
    read_data: bool,
    /// Read and verify only a subset of the packs: "n/t" (subset n of t; running 1/t to t/t
    /// reads everything once) or "P%" (a random subset of about P percent).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    #[command(flatten)]
    downloads: super::DownloadArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let subset = a
        .read_data_subset
        .as_deref()
        .map(lifeboat::ops::check::parse_subset)
        .transpose()?;
    let opts = CheckOptions {
        read_data: a.read_data || subset.is_some(),
        read_data_subset: subset,
        threads: a.downloads.get().unwrap_or(0),
    };
    let progress = super::progress();
    let started = std::time::Instant::now();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "check");
        check(&repo, &opts, progress)?
    };
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        jsonln!(&report)?;
    } else {
        for w in &report.warnings {
            outln!("warning: {w}")?;
        }
        for p in &report.errors {
            outln!("error: {}: {}", p.object, p.message)?;
            for f in &p.affects {
                outln!("  affects {}", lifeboat::display::escape(f))?;
            }
        }
        let data = if opts.read_data {
            format!(
                ", {} of pack data read and verified ({}/s)",
                human(report.bytes_read),
                human(lifeboat::units::per_sec(report.bytes_read, secs))
            )
        } else {
            String::new()
        };
        outln!(
            "checked {} snapshots, {} packs, {} chunks{data} in {}",
            report.snapshots,
            report.packs,
            report.blobs,
            lifeboat::units::human_duration(secs)
        )?;
    }
    if report.is_ok() {
        if !a.json {
            outln!("no errors found")?;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lifeboat: error: the repository has {} problems (listed above); see \"When things go wrong\" in the README",
            report.errors.len()
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}
