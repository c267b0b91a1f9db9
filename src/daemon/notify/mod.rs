//! Notifications: tell people (and monitoring) what the daemon did.
//!
//! The daemon builds an [`Event`] for each thing worth telling (a failed backup, a missed
//! schedule, recovery, start and stop, ...) and hands it to [`Notifier::send`], which never
//! blocks: every configured channel has its own bounded queue and its own worker thread, so a
//! slow or unreachable mail server does not hold up a webhook, and nothing holds up the daemon.
//!
//! Channels ([`ChannelConfig`], `[[notify]]` tables of the daemon's configuration):
//! - `webhook`: POST the event as JSON, or a plain GET ping (healthchecks.io, Uptime Kuma),
//!   with a separate URL for failures if wanted;
//! - `ntfy`: a plain-text POST of the summary line with Title/Priority/Tags headers;
//! - `email`: a plain-text mail over SMTP (STARTTLS, implicit TLS or none);
//! - `command`: run a program (no shell) with the event as JSON on standard input.
//!
//! Delivery is retried with exponential backoff on network errors, timeouts, HTTP 5xx, 408 and
//! 429 and SMTP transient errors; never on other HTTP 4xx, permanent SMTP errors or a failing
//! command. Each channel is rate limited (30 events a minute by default); the excess is
//! coalesced into one "N more events suppressed" notice sent when the window allows it (or at
//! [`Notifier::flush`]).
//!
//! Secrets stay out of logs and error texts: URLs are shown as scheme and host only (query
//! tokens, ping UUIDs and ntfy topics are secrets), header values and the SMTP password never.
//!
//! Here: the [`Notifier`] (one queue and worker per channel). Beside it: `events.rs` (what
//! happened: [`Event`], [`EventKind`]), `channels.rs` (the `[[notify]]` configuration and its
//! checks), `options.rs` (delivery errors, the notifier's options, statistics), `worker.rs` (a
//! channel's queue, rate limit, retries, coalescing), and one file per way of delivering:
//! `http.rs` (webhooks, pings, ntfy), `email.rs`, `command.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::storage::{GiveUp, RetryPolicy};
use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

mod channels;
mod command;
mod email;
mod events;
mod http;
mod options;
mod worker;

pub use channels::*;
use command::*;
pub use events::*;
use http::*;
pub use options::*;
use worker::*;

/// Sends events to the configured channels from background threads (one per channel).
///
/// Dropping it stops the workers without waiting (an attempt under way finishes on its own);
/// call [`Notifier::flush`] first to deliver what is queued.
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    capacity: usize,
}

struct Channel {
    name: String,
    type_name: &'static str,
    events: Option<Vec<EventKind>>,
    state: Mutex<ChannelState>,
    /// Signals new events, stop, flush and the end of a delivery (worker and flushers wait).
    cond: Condvar,
}

#[derive(Default)]
struct ChannelState {
    queue: VecDeque<Event>,
    busy: bool,
    stop: bool,
    /// Set while a flush waits: pending notices go out at once, retries end by then.
    flush_deadline: Option<Instant>,
    suppressed: Option<Suppressed>,
    sent: u64,
    failed: u64,
    dropped: u64,
    suppressed_total: u64,
    last_sent: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl ChannelState {
    fn idle(&self) -> bool {
        self.queue.is_empty() && !self.busy && self.suppressed.is_none()
    }
}

/// Events held back by the rate limit, to be summarized in one notice.
struct Suppressed {
    count: u64,
    kinds: BTreeMap<EventKind, u64>,
    first_time: DateTime<Utc>,
    same_job: bool,
    last: Event,
}

impl Suppressed {
    fn add(slot: &mut Option<Suppressed>, event: Event) {
        match slot {
            Some(s) => {
                s.count += 1;
                *s.kinds.entry(event.kind).or_default() += 1;
                s.same_job &= s.last.job == event.job;
                s.last = event;
            }
            None => {
                *slot = Some(Suppressed {
                    count: 1,
                    kinds: BTreeMap::from([(event.kind, 1)]),
                    first_time: event.time,
                    same_job: true,
                    last: event,
                })
            }
        }
    }

    /// The notice: kind, job and host of the latest suppressed event (so a ping channel
    /// reports the latest state), the counts in summary and details.
    fn notice(self, limit: &RateLimit) -> Event {
        let kinds = self
            .kinds
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ");
        let summary = format!(
            "{} more event{} suppressed (rate limit: {} per {} s): {kinds}; latest: {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            limit.max_events,
            limit.per.as_secs(),
            self.last.summary
        );
        let kinds_json: serde_json::Map<String, serde_json::Value> = self
            .kinds
            .iter()
            .map(|(kind, n)| (kind.as_str().to_string(), (*n).into()))
            .collect();
        Event {
            kind: self.last.kind,
            job: if self.same_job {
                self.last.job.clone()
            } else {
                None
            },
            host: self.last.host.clone(),
            time: Utc::now(),
            summary,
            details: serde_json::json!({
                "suppressed": self.count,
                "kinds": kinds_json,
                "first_time": self.first_time,
                "latest": self.last,
            }),
        }
    }
}

impl Notifier {
    /// Validates the channels and starts one worker thread per channel, with the default
    /// [`NotifierOptions`]. `send` never blocks the caller.
    pub fn start(channels: Vec<ChannelConfig>) -> Result<Self, NotifyError> {
        Self::start_with(channels, NotifierOptions::default())
    }

    /// [`Notifier::start`] with explicit options (tests use short backoffs).
    pub fn start_with(
        channels: Vec<ChannelConfig>,
        options: NotifierOptions,
    ) -> Result<Self, NotifyError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut prepared = Vec::with_capacity(channels.len());
        for config in &channels {
            if !seen.insert(config.name()) {
                return Err(NotifyError::InvalidChannel {
                    channel: config.name().to_string(),
                    reason: "another channel has the same name".into(),
                });
            }
            prepared.push(config.prepare()?);
        }
        let options = NotifierOptions {
            retry: RetryPolicy {
                max_attempts: options.retry.max_attempts.max(1),
                ..options.retry
            },
            queue_capacity: options.queue_capacity.max(1),
            ..options
        };
        let mut notifier = Notifier {
            channels: Vec::with_capacity(channels.len()),
            capacity: options.queue_capacity,
        };
        for (config, sink) in channels.iter().zip(prepared) {
            let channel = Arc::new(Channel {
                name: config.name().to_string(),
                type_name: config.type_name(),
                events: config.events().map(<[EventKind]>::to_vec),
                state: Mutex::new(ChannelState::default()),
                cond: Condvar::new(),
            });
            // The thread builds its own runtime (a runtime must not be dropped inside another
            // one, and `start` may be called from async code) and reports whether it could.
            let (ready_tx, ready_rx) = mpsc::channel();
            let worker = Worker {
                channel: Arc::clone(&channel),
                sink,
                options: options.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("notify-{}", channel.name))
                .spawn(move || worker.run(ready_tx));
            let started = match spawned {
                Err(e) => Err(format!("spawning a thread: {e}")),
                Ok(_) => ready_rx
                    .recv()
                    .unwrap_or_else(|_| Err("the worker thread ended".into())),
            };
            if let Err(reason) = started {
                // Dropping `notifier` stops the workers already started.
                return Err(NotifyError::Start {
                    channel: channel.name.clone(),
                    reason,
                });
            }
            notifier.channels.push(channel);
        }
        Ok(notifier)
    }

    /// Queues the event for every channel that wants it; returns at once. A channel whose
    /// queue is full drops its oldest event (with a warning).
    pub fn send(&self, event: Event) {
        for channel in &self.channels {
            if !wants(channel.events.as_deref(), event.kind) {
                continue;
            }
            let mut state = channel.state.lock();
            if state.stop {
                continue;
            }
            if state.queue.len() >= self.capacity {
                state.queue.pop_front();
                state.dropped += 1;
                // One warning per hundred drops is enough to see the problem.
                if state.dropped % 100 == 1 {
                    tracing::warn!(
                        channel = %channel.name,
                        dropped = state.dropped,
                        "notification queue full ({} events): dropped the oldest event",
                        self.capacity
                    );
                }
            }
            state.queue.push_back(event.clone());
            drop(state);
            channel.cond.notify_all();
        }
    }

    /// Delivers everything queued, including pending rate-limit notices, or gives up when
    /// `timeout` has passed (retries stop by then too). Used at daemon shutdown. Blocks: from
    /// async code call it through `spawn_blocking`.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for channel in &self.channels {
            let mut state = channel.state.lock();
            state.flush_deadline = Some(state.flush_deadline.map_or(deadline, |d| d.max(deadline)));
            drop(state);
            channel.cond.notify_all();
        }
        for channel in &self.channels {
            let mut state = channel.state.lock();
            while !state.idle() && !state.stop {
                if channel.cond.wait_until(&mut state, deadline).timed_out() {
                    break;
                }
            }
            if !state.idle() {
                tracing::warn!(
                    channel = %channel.name,
                    queued = state.queue.len(),
                    "notifications not delivered within the flush timeout of {} s",
                    timeout.as_secs_f64()
                );
            }
            if state.flush_deadline == Some(deadline) {
                state.flush_deadline = None;
            }
        }
    }

    /// Delivery statistics per channel, in configuration order.
    pub fn stats(&self) -> Vec<ChannelStats> {
        self.channels
            .iter()
            .map(|channel| {
                let state = channel.state.lock();
                ChannelStats {
                    name: channel.name.clone(),
                    channel_type: channel.type_name,
                    sent: state.sent,
                    failed: state.failed,
                    dropped: state.dropped,
                    suppressed: state.suppressed_total,
                    queued: state.queue.len(),
                    last_sent: state.last_sent,
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for channel in &self.channels {
            channel.state.lock().stop = true;
            channel.cond.notify_all();
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests;
