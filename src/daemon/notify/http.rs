//! Delivery over HTTP: webhooks, pings and ntfy.

use super::*;

pub(super) fn install_tls_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Fails only if another provider was installed first, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(super) fn http_client() -> Result<reqwest::Client, String> {
    install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            format!(
                "building the HTTP client: {}",
                error_chain(&e.without_url())
            )
        })
}

pub(super) fn http_send(
    runtime: Option<&tokio::runtime::Runtime>,
    request: reqwest::RequestBuilder,
    url: &reqwest::Url,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let Some(runtime) = runtime else {
        return Err(DeliveryError::permanent("no async runtime (a bug)"));
    };
    let target = redact_url(url);
    runtime.block_on(async move {
        let response = request.timeout(timeout).send().await.map_err(|e| {
            let retryable = !e.is_builder();
            let reason = format!("{target}: {}", error_chain(&e.without_url()));
            DeliveryError {
                reason,
                retryable,
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let body = one_line(&body, 200);
        let reason = if body.is_empty() {
            format!("{target}: HTTP {status}")
        } else {
            format!("{target}: HTTP {status}: {body}")
        };
        let retryable = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT;
        Err(DeliveryError {
            reason,
            retryable,
            retry_after,
        })
    })
}

/// An error and its sources, joined by ": " (repeats left out).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `text` on one line, at most `max` characters.
pub(super) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let mut cut: String = joined.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        joined
    }
}

/// Header values must be visible ASCII: anything else becomes '?'.
pub(super) fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}
