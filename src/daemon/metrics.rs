//! `/metrics` (Prometheus text format) and `/health` over HTTP, for monitoring. Off by default;
//! when on, it should listen on localhost (`metrics_listen = "127.0.0.1:9188"`). It serves a
//! copy of the daemon's status that the main loop refreshes, so a slow scraper never blocks
//! scheduling.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use serde_json::Value;

use super::listen::ReadError;
use crate::error::{Error, Result};

/// The status the endpoint serves, refreshed by the daemon.
pub type Shared = Arc<RwLock<Value>>;

/// The longest request head read (request line and headers); a client that sends more without
/// the blank line ending them gets 431 and is closed.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;

/// What a client beyond the connection cap gets.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 35\r\nConnection: close\r\n\r\ntoo many connections: try again...\n";

/// Starts serving on `listen`, through the daemon's connection server ([`super::listen`]):
/// a thread per connection up to a cap, a bounded request head, a deadline per request.
pub fn serve(listen: &str, status: Shared) -> Result<()> {
    let listener =
        TcpListener::bind(listen).map_err(|e| Error::io("listen for metrics on", listen, e))?;
    super::listen::serve(
        "lifeboat-metrics",
        std::iter::from_fn(move || Some(listener.accept().map(|(c, _)| c))),
        move |c| {
            let _ = answer(c, &status);
        },
        BUSY,
    )
    .map_err(|e| Error::io("start metrics thread", "thread", e))
}

/// Whether `head` holds a whole request head (ended by a blank line).
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

fn answer(mut stream: TcpStream, status: &Shared) -> std::io::Result<()> {
    let deadline = Instant::now() + super::listen::REQUEST_DEADLINE;
    let head = super::listen::read_request(&mut stream, MAX_REQUEST_HEAD, deadline, head_complete);
    let (code, content_type, body) = match head {
        Ok(head) => {
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            // A copy: the lock is not held while answering.
            let status = status.read().clone();
            match path {
                "/metrics" => (200, "text/plain; version=0.0.4", render(&status)),
                "/health" => {
                    let (ok, text) = health(&status);
                    (if ok { 200 } else { 503 }, "text/plain", text)
                }
                _ => (
                    404,
                    "text/plain",
                    "not found: try /metrics or /health\n".to_string(),
                ),
            }
        }
        Err(e @ ReadError::TooLarge(_)) => (431, "text/plain", format!("{e}\n")),
        Err(e @ ReadError::TooSlow(_)) => (408, "text/plain", format!("{e}\n")),
        Err(ReadError::Closed | ReadError::Io(_)) => return Ok(()),
    };
    let reason = match code {
        200 => "OK",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    super::listen::write_answer(&mut stream, response.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Healthy while every job is within its staleness bound.
pub fn health(status: &Value) -> (bool, String) {
    let stale: Vec<&str> = status["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["stale"].as_bool() == Some(true))
        .filter_map(|j| j["name"].as_str())
        .collect();
    if stale.is_empty() {
        (true, "ok\n".into())
    } else {
        (false, format!("stale: {}\n", stale.join(", ")))
    }
}

fn ts(v: &Value) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of a status.
pub fn render(status: &Value) -> String {
    type Getter = fn(&Value) -> Option<f64>;
    let metrics: [(&str, &str, &str, Getter); 12] = [
        (
            "lifeboat_job_last_success_timestamp_seconds",
            "gauge",
            "Time of the last successful backup.",
            |j| ts(&j["state"]["last_success"]),
        ),
        (
            "lifeboat_job_last_run_timestamp_seconds",
            "gauge",
            "Start of the last run.",
            |j| ts(&j["state"]["last_start"]),
        ),
        (
            "lifeboat_job_last_run_success",
            "gauge",
            "1 if the last run wrote a snapshot, 0 if it failed.",
            |j| {
                j["state"]["last_result"]
                    .as_str()
                    .map(|r| if r == "failed" { 0.0 } else { 1.0 })
            },
        ),
        (
            "lifeboat_job_last_duration_seconds",
            "gauge",
            "Duration of the last run.",
            |j| j["state"]["last_duration_secs"].as_f64(),
        ),
        (
            "lifeboat_job_last_bytes_read",
            "gauge",
            "Bytes read from the source by the last run.",
            |j| j["state"]["last_bytes_read"].as_f64(),
        ),
        (
            "lifeboat_job_last_bytes_added",
            "gauge",
            "Bytes added to the repository by the last run.",
            |j| j["state"]["last_bytes_added"].as_f64(),
        ),
        (
            "lifeboat_job_last_files",
            "gauge",
            "Files in the last snapshot.",
            |j| j["state"]["last_files"].as_f64(),
        ),
        (
            "lifeboat_job_last_source_errors",
            "gauge",
            "Source entries the last run could not read.",
            |j| j["state"]["last_source_errors"].as_f64(),
        ),
        (
            "lifeboat_job_running",
            "gauge",
            "1 while a backup of the job runs.",
            |j| Some(if j["running"].is_null() { 0.0 } else { 1.0 }),
        ),
        (
            "lifeboat_job_stale",
            "gauge",
            "1 when no backup succeeded within stale_after.",
            |j| {
                Some(if j["stale"].as_bool() == Some(true) {
                    1.0
                } else {
                    0.0
                })
            },
        ),
        (
            "lifeboat_job_successes_total",
            "counter",
            "Runs that wrote a snapshot.",
            |j| j["state"]["successes"].as_f64(),
        ),
        (
            "lifeboat_job_failures_total",
            "counter",
            "Runs that failed.",
            |j| j["state"]["failures"].as_f64(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for j in status["jobs"].as_array().into_iter().flatten() {
            if let (Some(job), Some(v)) = (j["name"].as_str(), get(j)) {
                out.push_str(&format!("{name}{{job=\"{}\"}} {v}\n", escape(job)));
            }
        }
    }
    if let Some(t) = ts(&status["daemon"]["started"]) {
        out.push_str("# HELP lifeboat_daemon_start_timestamp_seconds When the daemon started.\n");
        out.push_str("# TYPE lifeboat_daemon_start_timestamp_seconds gauge\n");
        out.push_str(&format!("lifeboat_daemon_start_timestamp_seconds {t}\n"));
    }
    if let Some(b) = status["daemon"]["resident_bytes"].as_u64() {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        out.push_str(&format!("process_resident_memory_bytes {b}\n"));
    }
    // Scheduled prunes, checks and drills, by task key (`prune:REPO`, `check:REPO`, `drill:JOB`).
    let tasks: Vec<&Value> = status["tasks"].as_array().into_iter().flatten().collect();
    type TaskGetter = fn(&Value) -> Option<f64>;
    let task_metrics: [(&str, &str, TaskGetter); 3] = [
        (
            "lifeboat_task_last_success_timestamp_seconds",
            "Time of the task's last success.",
            |t| ts(&t["state"]["last_success"]),
        ),
        (
            "lifeboat_task_last_run_ok",
            "1 if the task's last run succeeded (a drill passed, a check found nothing), 0 if not.",
            |t| {
                t["state"]["last_ok"]
                    .as_bool()
                    .map(|b| f64::from(u8::from(b)))
            },
        ),
        (
            "lifeboat_task_last_duration_seconds",
            "Duration of the task's last run.",
            |t| t["state"]["last_duration_secs"].as_f64(),
        ),
    ];
    for (name, help, get) in task_metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for t in &tasks {
            if let (Some(key), Some(v)) = (t["task"].as_str(), get(t)) {
                out.push_str(&format!("{name}{{task=\"{}\"}} {v}\n", escape(key)));
            }
        }
    }
    let drill_metrics: [(&str, &str, &str); 3] = [
        (
            "lifeboat_drill_estimated_full_restore_seconds",
            "Estimated time to restore the job's whole latest snapshot, from its last drill.",
            "estimated_full_restore_secs",
        ),
        (
            "lifeboat_drill_bytes_restored",
            "Bytes the last drill restored and verified.",
            "bytes_restored",
        ),
        (
            "lifeboat_drill_throughput_bytes_per_second",
            "Restore throughput measured by the last drill.",
            "throughput_bytes_per_sec",
        ),
    ];
    for (name, help, field) in drill_metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for t in &tasks {
            let (Some(key), Some(v)) = (
                t["task"].as_str().and_then(|k| k.strip_prefix("drill:")),
                t["state"]["last_report"][field].as_f64(),
            ) else {
                continue;
            };
            out.push_str(&format!("{name}{{job=\"{}\"}} {v}\n", escape(key)));
        }
    }
    // Alerting rules can mute "backup stale" alerts while a planned window is in force.
    let windows = status["maintenance"].as_array().into_iter().flatten();
    let active = windows.clone().any(|w| w["phase"] == "active");
    let next = windows
        .filter(|w| w["phase"] == "upcoming")
        .filter_map(|w| ts(&w["start"]))
        .min_by(f64::total_cmp);
    out.push_str(
        "# HELP lifeboat_maintenance_active 1 while a planned maintenance window is in force.\n",
    );
    out.push_str("# TYPE lifeboat_maintenance_active gauge\n");
    out.push_str(&format!(
        "lifeboat_maintenance_active {}\n",
        u8::from(active)
    ));
    if let Some(t) = next {
        out.push_str("# HELP lifeboat_maintenance_next_start_timestamp_seconds Start of the next planned maintenance window.\n");
        out.push_str("# TYPE lifeboat_maintenance_next_start_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "lifeboat_maintenance_next_start_timestamp_seconds {t}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_jobs_and_health() {
        let status = serde_json::json!({
            "daemon": {"started": "2026-11-26T10:00:00Z", "resident_bytes": 31457280},
            "jobs": [
                {"name": "etc", "running": null, "stale": false,
                 "state": {"last_success": "2026-11-26T11:00:00Z", "last_result": "success", "last_bytes_added": 42, "successes": 3, "failures": 1}},
                {"name": "db\"x", "running": {"kind": "full"}, "stale": true, "state": {"last_result": "failed"}},
            ],
            "maintenance": [{"phase": "upcoming", "start": "2026-11-27T00:00:00Z"}],
            "tasks": [
                {"task": "drill:etc", "state": {"last_ok": true, "last_report": {"estimated_full_restore_secs": 42.5}}},
                {"task": "check:local", "state": {"last_ok": false}},
            ],
        });
        let m = render(&status);
        assert!(
            m.contains("lifeboat_job_last_success_timestamp_seconds{job=\"etc\"} 1795690800"),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_job_last_bytes_added{job=\"etc\"} 42"),
            "{m}"
        );
        assert!(m.contains("lifeboat_job_running{job=\"db\\\"x\"} 1"), "{m}");
        assert!(
            m.contains("lifeboat_job_last_run_success{job=\"db\\\"x\"} 0"),
            "{m}"
        );
        assert!(
            m.contains("# TYPE lifeboat_job_failures_total counter"),
            "{m}"
        );
        assert!(m.contains("lifeboat_maintenance_active 0\n"), "{m}");
        assert!(
            m.contains("# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 31457280\n"),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_task_last_run_ok{task=\"drill:etc\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_task_last_run_ok{task=\"check:local\"} 0\n"),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_drill_estimated_full_restore_seconds{job=\"etc\"} 42.5\n"),
            "{m}"
        );
        assert!(
            m.contains("lifeboat_maintenance_next_start_timestamp_seconds 1795737600"),
            "{m}"
        );
        let (ok, text) = health(&status);
        assert!(!ok && text.contains("db\"x"));
    }
}
