//! Scheduled repository tasks: prune and check per repository, restore drills per job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::runner::open_repository;
use crate::daemon::config::Config;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// A task the daemon runs on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Prune { repository: String },
    Check { repository: String },
    Drill { job: String },
}

impl Task {
    /// The key in the state and status: `prune:REPO`, `check:REPO`, `drill:JOB`.
    pub fn key(&self) -> String {
        match self {
            Task::Prune { repository } => format!("prune:{repository}"),
            Task::Check { repository } => format!("check:{repository}"),
            Task::Drill { job } => format!("drill:{job}"),
        }
    }

    /// The repository it works on.
    pub fn repository<'a>(&'a self, cfg: &'a Config) -> Option<&'a str> {
        match self {
            Task::Prune { repository } | Task::Check { repository } => Some(repository),
            Task::Drill { job } => cfg.job(job).map(|j| j.repository.as_str()),
        }
    }

    /// Whether it needs the repository to itself (no backup running there).
    pub fn exclusive(&self) -> bool {
        matches!(self, Task::Prune { .. })
    }
}

/// What a task found, typed until it leaves the daemon (the state file, events, `status`).
#[derive(Debug)]
pub enum TaskReport {
    /// The task failed before it had a report.
    None,
    Prune(crate::ops::prune::PruneReport),
    Check {
        report: crate::ops::check::CheckReport,
        /// The part of the data read (`n/t`), when only a part was.
        read_data_subset: Option<(u64, u64)>,
    },
    Drill(Box<crate::ops::drill::DrillReport>),
}

impl TaskReport {
    /// The report as the state file, events and `status` show it (`null` for none).
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            TaskReport::None => return serde_json::Value::Null,
            TaskReport::Prune(r) => serde_json::to_value(r),
            TaskReport::Check { report, .. } => serde_json::to_value(report),
            TaskReport::Drill(r) => serde_json::to_value(r),
        };
        // Plain structs of numbers and strings always serialize.
        let mut value = value.unwrap_or_default();
        if let TaskReport::Check {
            read_data_subset: Some((n, t)),
            ..
        } = self
        {
            value["read_data_subset"] = json!(format!("{n}/{t}"));
        }
        value
    }
}

/// How a task went.
#[derive(Debug)]
pub struct TaskOutcome {
    pub ok: bool,
    pub error: Option<String>,
    /// The task's report (prune, check or drill figures).
    pub report: TaskReport,
    pub duration: Duration,
}

/// Runs a task. `run_number` picks the check's read-data subset, so consecutive scheduled
/// checks read different packs and every pack is read once per cycle.
pub fn run_task(cfg: &Config, task: &Task, run_number: u64) -> TaskOutcome {
    let started = Instant::now();
    let result = run(cfg, task, run_number);
    let duration = started.elapsed();
    match result {
        Ok((ok, error, report)) => TaskOutcome {
            ok,
            error,
            report,
            duration,
        },
        Err(e) => TaskOutcome {
            ok: false,
            error: Some(e.to_string()),
            report: TaskReport::None,
            duration,
        },
    }
}

type Ran = (bool, Option<String>, TaskReport);

fn run(cfg: &Config, task: &Task, run_number: u64) -> Result<Ran> {
    let repo_name = task
        .repository(cfg)
        .ok_or_else(|| Error::Invalid(format!("{}: no such job or repository", task.key())))?;
    let r = cfg
        .repositories
        .get(repo_name)
        .ok_or_else(|| Error::Invalid(format!("no repository {repo_name:?}")))?;
    let tasks = cfg
        .repository_tasks
        .get(repo_name)
        .cloned()
        .unwrap_or_default();
    let repo = open_repository(cfg, r)?;
    let progress = Arc::new(Progress::default());
    match task {
        Task::Prune { .. } => {
            let opts = crate::ops::prune::PruneOptions {
                max_unused_percent: tasks.prune_max_unused,
                dry_run: false,
                lock: repo.lock_settings(),
            };
            let report = crate::ops::prune::prune(&repo, &opts, progress)?;
            Ok((true, None, TaskReport::Prune(report)))
        }
        Task::Check { .. } => {
            let subset = tasks.check_read_data_subset.map(|p| {
                let t = (100.0 / p).round().max(1.0) as u64;
                (run_number % t + 1, t)
            });
            let opts = crate::ops::check::CheckOptions {
                read_data: subset.is_some(),
                read_data_subset: subset,
                threads: r.downloads().unwrap_or(0),
            };
            let report = crate::ops::check::check(&repo, &opts, progress)?;
            let ok = report.is_ok();
            let error = (!ok).then(|| {
                let first = &report.errors[0];
                format!(
                    "{} problems; first: {}: {}",
                    report.errors.len(),
                    first.object,
                    first.message
                )
            });
            Ok((
                ok,
                error,
                TaskReport::Check {
                    report,
                    read_data_subset: subset,
                },
            ))
        }
        Task::Drill { job } => {
            let j = cfg
                .job(job)
                .ok_or_else(|| Error::Invalid(format!("no job named {job:?}")))?;
            let host = crate::daemon::runner::job_host(&j.config);
            let (id, snapshot) = crate::ops::drill::latest_of_job(&repo, job, &host)?;
            let opts = crate::ops::drill::DrillOptions {
                sample: match j.drill_share {
                    Some(p) => crate::ops::drill::Sample::Files(p / 100.0),
                    None => crate::ops::drill::Sample::All,
                },
                scratch: crate::ops::drill::default_scratch(),
                downloads: r.downloads().unwrap_or(0),
                ..Default::default()
            };
            let report = crate::ops::drill::drill(&repo, &id, &snapshot, &opts, progress)?;
            let error = (!report.passed).then(|| {
                format!(
                    "{} problems; first: {}",
                    report.problems.len(),
                    report.problems.first().map(String::as_str).unwrap_or("?")
                )
            });
            Ok((report.passed, error, TaskReport::Drill(Box::new(report))))
        }
    }
}
