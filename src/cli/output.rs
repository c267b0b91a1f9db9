//! Progress display: a bar on a terminal, JSON events with `--json`, nothing otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat::progress::Progress;

/// Reports progress until dropped.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `progress` for an operation called `verb`.
    pub fn start(progress: Arc<Progress>, json: bool, verb: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal();
        let handle = if json || terminal {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                let started = Instant::now();
                let bar = (!json && terminal).then(|| {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar
                });
                let mut last_json = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let elapsed = started.elapsed().as_secs_f64();
                    if let Some(bar) = &bar {
                        bar.set_message(line(verb, &progress, elapsed));
                        bar.tick();
                    } else if json && last_json.elapsed() >= Duration::from_secs(1) {
                        last_json = Instant::now();
                        let event = event(verb, &progress, elapsed);
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{event}");
                    }
                }
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
            }))
        } else {
            None
        };
        Reporter { stop, handle }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The terminal's progress line: percent, bytes done of the total, rate and time left when the
/// total is known, else the counters that move.
fn line(verb: &str, p: &Progress, elapsed: f64) -> String {
    use lifeboat::units::{human_bytes as human, human_duration};
    let read = Progress::get(&p.bytes_read);
    let files = Progress::get(&p.files);
    match p.estimate(elapsed) {
        Some(e) => {
            let total = Progress::get(&p.bytes_total);
            let amount = if total > 0 {
                format!("{} of {}", human(read), human(total))
            } else {
                format!(
                    "{} of {} entries",
                    Progress::get(&p.entries),
                    Progress::get(&p.entries_total)
                )
            };
            format!(
                "{verb}: {:.1}% {amount}, {}/s, {}",
                e.fraction * 100.0,
                human(e.bytes_per_sec as u64),
                match e.eta_secs {
                    Some(s) => format!("about {} left", human_duration(s)),
                    None => "time left not known yet".to_string(),
                }
            )
        }
        None => {
            let mut parts = Vec::new();
            let entries = Progress::get(&p.entries);
            if entries > 0 {
                parts.push(format!("{entries} entries"));
            }
            if files > 0 {
                parts.push(format!("{files} files"));
            }
            if read > 0 {
                parts.push(format!("{} read", human(read)));
            }
            let written = Progress::get(&p.bytes_written);
            if written > 0 {
                parts.push(format!("{} written", human(written)));
            }
            if parts.is_empty() {
                format!("{verb}: starting")
            } else {
                format!("{verb}: {}", parts.join(", "))
            }
        }
    }
}

/// A JSON progress event: the counters, and percent, rate and time left when a total is known.
fn event(verb: &str, p: &Progress, elapsed: f64) -> serde_json::Value {
    let mut event = serde_json::json!({
        "type": "progress",
        "operation": verb,
        "entries": Progress::get(&p.entries),
        "files": Progress::get(&p.files),
        "bytes_read": Progress::get(&p.bytes_read),
        "bytes_written": Progress::get(&p.bytes_written),
        "elapsed_secs": elapsed,
    });
    if let (Some(e), Some(o)) = (p.estimate(elapsed), event.as_object_mut()) {
        o.insert("bytes_total".into(), Progress::get(&p.bytes_total).into());
        o.insert(
            "entries_total".into(),
            Progress::get(&p.entries_total).into(),
        );
        o.insert("percent".into(), (e.fraction * 100.0).into());
        o.insert("bytes_per_sec".into(), e.bytes_per_sec.into());
        o.insert("eta_secs".into(), e.eta_secs.into());
    }
    event
}

/// A writer that counts what passes through it as `progress`'s bytes (`dump`: its output is
/// what it has verified).
pub struct Counting<'a, W: Write> {
    pub inner: W,
    pub progress: &'a Progress,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        Progress::add(&self.progress.bytes_read, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
