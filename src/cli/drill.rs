//! `lifeboat drill`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use lifeboat::daemon::config::Config;
use lifeboat::ops::drill::{default_scratch, drill, latest_of_job, DrillOptions, Sample};

use super::output::Reporter;
use super::{RepoArgs, EXIT_FAILURE};

/// Arguments of `lifeboat drill`.
#[derive(Debug, Args)]
// --repo is not required with --config (an empty value stands for "not given": Option<RepoArgs>
// would not do, as the environment sets other repository options such as LIFEBOAT_CACHE_DIR).
#[command(mut_arg("repo", |a| a.required(false).default_value("").hide_default_value(true)))]
#[command(after_help = "\
Examples:
  lifeboat drill --repo /mnt/backup/repo                 # latest snapshot, 10% of its files
  lifeboat drill --repo /mnt/backup/repo 3fa2c1 --all    # every file of snapshot 3fa2c1
  lifeboat drill --config /etc/lifeboat/lifeboat.toml etc --sample-bytes 5 --scratch /srv/drill")]
pub struct DrillArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Drill the latest snapshot of a daemon job instead: the daemon's config file, whose
    /// repository settings (and password) are used instead of --repo and its options; the
    /// argument is then the job's name. Without --repo and --config, the daemon's config
    /// (LIFEBOAT_CONFIG, else /etc/lifeboat/lifeboat.toml) is used when it exists, so
    /// `lifeboat drill JOB` drills a job of this server.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["job", "host", "path", "tag"])]
    config: Option<PathBuf>,
    /// Snapshot id, unique id prefix, or "latest" (the default); with --config, the job.
    #[arg(value_name = "SNAPSHOT|JOB")]
    which: Option<String>,
    /// Restore this percentage of the snapshot's files, chosen at random (at least one file).
    /// The default is 10.
    #[arg(long, value_name = "PCT", conflicts_with_all = ["sample_bytes", "all"])]
    sample_files: Option<f64>,
    /// Restore files chosen at random until they hold this percentage of the snapshot's bytes.
    #[arg(long, value_name = "PCT", conflicts_with = "all")]
    sample_bytes: Option<f64>,
    /// Restore the whole snapshot.
    #[arg(long)]
    all: bool,
    /// Seed of the random choice; the same seed picks the same files of the same snapshot
    /// (the report gives the seed used).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Where to make the scratch directory (created inside, removed at the end): default
    /// $TMPDIR, else /var/tmp. Give a directory on the file system a real restore would write
    /// to: on tmpfs (as /tmp often is) the drill does not measure disk writes and its
    /// estimate comes out too short.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    #[command(flatten)]
    snapshots: super::SnapshotArgs,
    /// List the sampled files (absolute paths in the snapshot).
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    downloads: super::DownloadArgs,
    /// Print the report as JSON (after JSON progress events, one object per line).
    #[arg(long)]
    json: bool,
}

fn share(flag: &str, pct: f64) -> Result<f64> {
    if pct > 0.0 && pct <= 100.0 {
        Ok(pct / 100.0)
    } else {
        bail!("{flag} {pct}: give a percentage above 0 and at most 100")
    }
}

pub fn run(a: DrillArgs) -> Result<ExitCode> {
    // A restore opens the repository and finds its snapshot as this does: the time counts in
    // the estimate.
    let started = std::time::Instant::now();
    let sample = match (a.sample_files, a.sample_bytes, a.all) {
        (_, _, true) => Sample::All,
        (Some(p), _, _) => Sample::Files(share("--sample-files", p)?),
        (_, Some(p), _) => Sample::Bytes(share("--sample-bytes", p)?),
        _ => Sample::default(),
    };
    let repo_args = (!a.repo.repo.is_empty()).then_some(&a.repo);
    let config = a.config.clone().or_else(|| {
        let default = std::env::var_os("LIFEBOAT_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(lifeboat::daemon::config::DEFAULT_CONFIG));
        (repo_args.is_none() && default.exists()).then_some(default)
    });
    if config.is_some() && repo_args.is_some() {
        errln!("lifeboat: note: drilling the job of the daemon config; --repo is not used");
    }
    let mut downloads = a.downloads.get();
    let (repo, (id, snap)) = match (&config, repo_args) {
        (Some(file), _) => {
            let Some(job) = &a.which else {
                bail!("give the name of the job to drill: lifeboat drill --config FILE JOB");
            };
            let cfg =
                Config::load(file).map_err(|e| anyhow::Error::new(e).context("invalid config"))?;
            let Some(j) = cfg.job(job) else {
                bail!("no job named {job:?} in {}", file.display());
            };
            let Some(r) = cfg.repositories.get(&j.repository) else {
                bail!(
                    "job {job:?} names repository {:?}, which {} does not define",
                    j.repository,
                    file.display()
                );
            };
            let repo = lifeboat::daemon::runner::open_repository(&cfg, r)
                .with_context(|| format!("repository {:?} of job {job:?}", j.repository))?;
            let host = lifeboat::daemon::runner::job_host(&j.config);
            let found = latest_of_job(&repo, job, &host)?;
            downloads = downloads.or(r.downloads());
            (repo, found)
        }
        (None, Some(r)) => {
            let repo = r.open()?;
            let selector = a.which.as_deref().unwrap_or("latest");
            let found = repo.find_snapshot(selector, &a.snapshots.filter(&[]))?;
            (repo, found)
        }
        (None, None) => bail!(
            "give the repository (--repo or LIFEBOAT_REPOSITORY), or a daemon config and job \
             (--config FILE JOB)"
        ),
    };
    let opts = DrillOptions {
        sample,
        scratch: a.scratch.clone().unwrap_or_else(default_scratch),
        seed: a.seed,
        threads: 0,
        downloads: downloads.unwrap_or(0),
        list_files: a.list,
        open_secs: started.elapsed().as_secs_f64(),
    };
    super::announce(&id, &snap);
    let progress = super::progress();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "drill");
        drill(&repo, &id, &snap, &opts, progress)?
    };
    for w in &report.warnings {
        errln!("lifeboat: warning: {w}");
    }
    for p in &report.problems {
        errln!("lifeboat: problem: {p}");
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), "drill".into());
        }
        outln!("{v}")?;
    } else {
        for f in &report.files {
            outln!("sampled: {}", lifeboat::display::escape(f))?;
        }
        outln!("{}", report.summary())?;
        outln!(
            "snapshot {} of {} ({}{}), sample: {}{}; listing {}, restore {}, verification {}",
            id.short(),
            report
                .snapshot_time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            report.host,
            report
                .job
                .as_deref()
                .map(|j| format!(", job {j}"))
                .unwrap_or_default(),
            report.sample,
            if sample == Sample::All {
                String::new()
            } else {
                format!(" (seed {})", report.seed)
            },
            lifeboat::units::human_duration(report.listing_secs),
            lifeboat::units::human_duration(report.restore_secs),
            lifeboat::units::human_duration(report.verify_secs),
        )?;
    }
    if report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lifeboat: error: drill of snapshot {} failed: {} problem{} (listed above); run \
             `lifeboat check --read-data` to find every damaged object and the files it affects",
            id.short(),
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}
