//! Errors of a delivery, the notifier's options and its statistics.

use super::*;

/// Why notifications could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A channel's configuration is invalid.
    #[error("notification channel {channel:?}: {reason}")]
    InvalidChannel { channel: String, reason: String },

    /// A channel's worker could not be started.
    #[error("notification channel {channel:?}: cannot start its worker: {reason}")]
    Start { channel: String, reason: String },
}

/// Per-channel rate limit: at most `max_events` deliveries in any window of `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// 0 turns the limit off.
    pub max_events: u32,
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            max_events: 30,
            per: Duration::from_secs(60),
        }
    }
}

/// Tunables of a [`Notifier`]; the defaults suit the daemon, tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierOptions {
    /// How deliveries are retried (`total`: no retry starts after this much time since the
    /// first try; `max_backoff` also caps a server's Retry-After).
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request or SMTP conversation.
    pub attempt_timeout: Duration,
    pub rate_limit: RateLimit,
    /// Events waiting per channel; when full, the oldest is dropped.
    pub queue_capacity: usize,
    /// Timeout of command channels without `timeout_secs`.
    pub command_timeout: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
                total: Duration::from_secs(120),
            },
            attempt_timeout: Duration::from_secs(30),
            rate_limit: RateLimit::default(),
            queue_capacity: 1000,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// Delivery statistics of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    pub name: String,
    /// `webhook`, `ntfy`, `email` or `command`.
    #[serde(rename = "type")]
    pub channel_type: &'static str,
    /// Deliveries that succeeded (suppression notices included).
    pub sent: u64,
    /// Deliveries given up: a permanent error, retries exhausted, or a flush deadline.
    pub failed: u64,
    /// Events discarded undelivered: the queue was full, or the notifier stopped.
    pub dropped: u64,
    /// Events held back by the rate limit (and reported in a summary notice instead).
    pub suppressed: u64,
    /// Events waiting now.
    pub queued: usize,
    /// When the last delivery succeeded.
    pub last_sent: Option<DateTime<Utc>>,
    /// Why the last failed delivery failed (without secrets).
    pub last_error: Option<String>,
}
