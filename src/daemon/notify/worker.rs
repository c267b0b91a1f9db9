//! A channel's worker: its queue, rate limit, retries and coalescing.

use super::*;

/// A channel made ready to deliver.
pub(super) enum Sink {
    Webhook {
        method: HttpMethod,
        url: reqwest::Url,
        url_failure: Option<reqwest::Url>,
        headers: reqwest::header::HeaderMap,
        client: reqwest::Client,
    },
    Ntfy {
        url: reqwest::Url,
        client: reqwest::Client,
    },
    Email(Box<EmailSink>),
    Command {
        argv: Vec<String>,
        timeout: Option<Duration>,
        env: BTreeMap<String, String>,
    },
}

impl Sink {
    pub(super) fn uses_http(&self) -> bool {
        matches!(self, Sink::Webhook { .. } | Sink::Ntfy { .. })
    }
}

pub(super) struct EmailSink {
    pub(super) server: String,
    pub(super) port: Option<u16>,
    pub(super) security: SmtpSecurity,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) from: lettre::message::Mailbox,
    pub(super) to: Vec<lettre::message::Mailbox>,
}

/// Why one delivery attempt failed.
#[derive(Debug)]
pub(super) struct DeliveryError {
    pub(super) reason: String,
    pub(super) retryable: bool,
    pub(super) retry_after: Option<Duration>,
}

impl DeliveryError {
    pub(super) fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError {
            reason: reason.into(),
            retryable: false,
            retry_after: None,
        }
    }

    pub(super) fn transient(reason: impl Into<String>) -> Self {
        DeliveryError {
            reason: reason.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

pub(super) struct Worker {
    pub(super) channel: Arc<Channel>,
    pub(super) sink: Sink,
    pub(super) options: NotifierOptions,
}

/// What the worker took from its queue.
pub(super) enum Work {
    Event(Event),
    Notice(Event),
}

impl Worker {
    pub(super) fn run(self, ready: mpsc::Sender<Result<(), String>>) {
        let runtime = if self.sink.uses_http() {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => Some(runtime),
                Err(e) => {
                    let _ = ready.send(Err(format!("building an async runtime: {e}")));
                    return;
                }
            }
        } else {
            None
        };
        let _ = ready.send(Ok(()));
        drop(ready);

        let channel = &self.channel;
        let limit = &self.options.rate_limit;
        let mut window: VecDeque<Instant> = VecDeque::new();
        loop {
            let work = {
                let mut state = channel.state.lock();
                loop {
                    if state.stop {
                        state.dropped += state.queue.len() as u64;
                        state.queue.clear();
                        return;
                    }
                    let now = Instant::now();
                    while window
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) >= limit.per)
                    {
                        window.pop_front();
                    }
                    let slot_free =
                        limit.max_events == 0 || window.len() < limit.max_events as usize;
                    // A flush sends the notice past the limit, once the queue is drained.
                    let flushing = state.flush_deadline.is_some() && state.queue.is_empty();
                    if state.suppressed.is_some() && (slot_free || flushing) {
                        if let Some(suppressed) = state.suppressed.take() {
                            state.busy = true;
                            break Work::Notice(suppressed.notice(limit));
                        }
                    }
                    if let Some(event) = state.queue.pop_front() {
                        if slot_free {
                            state.busy = true;
                            break Work::Event(event);
                        }
                        state.suppressed_total += 1;
                        if state.suppressed.is_none() {
                            tracing::warn!(
                                channel = %channel.name,
                                "more than {} notifications in {} s: holding back the excess",
                                limit.max_events,
                                limit.per.as_secs()
                            );
                        }
                        Suppressed::add(&mut state.suppressed, event);
                        continue;
                    }
                    match (&state.suppressed, window.front()) {
                        // A pending notice waits for a slot to free.
                        (Some(_), Some(oldest)) => {
                            let wake = *oldest + limit.per;
                            channel.cond.wait_until(&mut state, wake);
                        }
                        _ => channel.cond.wait(&mut state),
                    }
                }
            };
            window.push_back(Instant::now());
            let (event, what) = match work {
                Work::Event(event) => (event, "event"),
                Work::Notice(event) => (event, "suppression notice"),
            };
            let result = self.deliver_with_retry(&event, runtime.as_ref());
            let mut state = channel.state.lock();
            state.busy = false;
            match result {
                Ok(()) => {
                    state.sent += 1;
                    state.last_sent = Some(Utc::now());
                    tracing::debug!(channel = %channel.name, kind = %event.kind, "delivered {what}");
                }
                Err(reason) => {
                    state.failed += 1;
                    tracing::warn!(
                        channel = %channel.name,
                        kind = %event.kind,
                        "notification not delivered: {reason}"
                    );
                    state.last_error = Some(reason);
                }
            }
            drop(state);
            channel.cond.notify_all();
        }
    }

    /// Delivers with retries; the error says why it gave up.
    pub(super) fn deliver_with_retry(
        &self,
        event: &Event,
        runtime: Option<&tokio::runtime::Runtime>,
    ) -> Result<(), String> {
        let policy = &self.options.retry;
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            let mut timeout = self
                .options
                .attempt_timeout
                .min(policy.total.saturating_sub(start.elapsed()));
            if let Some(deadline) = self.channel.state.lock().flush_deadline {
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            }
            let timeout = timeout.max(Duration::from_millis(500));
            let error = match self.deliver_once(event, runtime, timeout) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !error.retryable {
                return Err(error.reason);
            }
            let mut wait = policy.backoff(attempt);
            if let Some(after) = error.retry_after {
                wait = wait.max(after.min(policy.max_backoff));
            }
            match policy.give_up(attempt, start.elapsed(), wait) {
                None => {}
                Some(GiveUp::Attempts) => {
                    return Err(format!("{} (gave up after {attempt} tries)", error.reason))
                }
                Some(GiveUp::Time) => {
                    return Err(format!(
                        "{} (gave up after {attempt} tries in {} s)",
                        error.reason,
                        start.elapsed().as_secs()
                    ))
                }
            }
            tracing::debug!(
                channel = %self.channel.name,
                "try {attempt} failed: {}; retrying in {} ms",
                error.reason,
                wait.as_millis()
            );
            let until = Instant::now() + wait;
            let mut state = self.channel.state.lock();
            loop {
                if state.stop {
                    return Err(format!("{} (notifier stopped)", error.reason));
                }
                if state.flush_deadline.is_some_and(|d| d < until) {
                    return Err(format!(
                        "{} (no time left to retry before the flush deadline)",
                        error.reason
                    ));
                }
                if Instant::now() >= until {
                    break;
                }
                self.channel.cond.wait_until(&mut state, until);
            }
            drop(state);
            attempt += 1;
        }
    }

    pub(super) fn deliver_once(
        &self,
        event: &Event,
        runtime: Option<&tokio::runtime::Runtime>,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        match &self.sink {
            Sink::Webhook {
                method,
                url,
                url_failure,
                headers,
                client,
            } => {
                let url = match url_failure {
                    Some(failure) if event.kind.is_failure() => failure,
                    _ => url,
                };
                let request = match method {
                    HttpMethod::Get => client.get(url.clone()),
                    HttpMethod::Post => {
                        let body = serde_json::to_vec(event).map_err(|e| {
                            DeliveryError::permanent(format!("encoding the event as JSON: {e}"))
                        })?;
                        client
                            .post(url.clone())
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body)
                    }
                };
                http_send(runtime, request.headers(headers.clone()), url, timeout)
            }
            Sink::Ntfy { url, client } => {
                let title = header_text(&format!(
                    "Lifeboat on {}: {}",
                    event.host,
                    event.kind.title()
                ));
                let (priority, tag) = if event.kind.is_failure() {
                    ("high", "rotating_light")
                } else if matches!(
                    event.kind,
                    EventKind::Recovered | EventKind::BackupSucceeded | EventKind::DrillPassed
                ) {
                    ("default", "white_check_mark")
                } else {
                    ("default", "information_source")
                };
                let request = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("Title", title)
                    .header("Priority", priority)
                    .header("Tags", format!("{tag},lifeboat,{}", event.kind))
                    .body(crate::display::scrub(&event.summary).into_owned());
                http_send(runtime, request, url, timeout)
            }
            Sink::Email(sink) => sink.send(event, timeout),
            Sink::Command {
                argv,
                timeout: own,
                env,
            } => run_command(
                argv,
                env,
                event,
                own.unwrap_or(self.options.command_timeout),
            ),
        }
    }
}
