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
                    let entries = Progress::get(&progress.entries);
                    let files = Progress::get(&progress.files);
                    let read = Progress::get(&progress.bytes_read);
                    let written = Progress::get(&progress.bytes_written);
                    if let Some(bar) = &bar {
                        bar.set_message(format!(
                            "{verb}: {entries} entries, {files} files, {} read, {} written",
                            lifeboat::units::human_bytes(read),
                            lifeboat::units::human_bytes(written)
                        ));
                        bar.tick();
                    } else if json && last_json.elapsed() >= Duration::from_secs(1) {
                        last_json = Instant::now();
                        let event = serde_json::json!({
                            "type": "progress",
                            "entries": entries,
                            "files": files,
                            "bytes_read": read,
                            "bytes_written": written,
                            "elapsed_secs": started.elapsed().as_secs_f64(),
                        });
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
