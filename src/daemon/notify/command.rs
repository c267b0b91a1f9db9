//! Delivery to a command (no shell), the event as JSON on its standard input.

use super::*;

/// Runs a command channel through the daemon's child runner ([`crate::daemon::child`]): the event as
/// JSON on its input, in its own process group, its output read while it runs. The daemon's
/// stop does not cut it short (the stop itself is announced through it); its timeout does.
pub(super) fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    event: &Event,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let json = serde_json::to_vec(event)
        .map_err(|e| DeliveryError::permanent(format!("encoding the event as JSON: {e}")))?;
    let spec = crate::daemon::child::Spec {
        argv,
        config_env: env,
        env: vec![
            ("LIFEBOAT_EVENT", event.kind.as_str().to_string()),
            ("LIFEBOAT_JOB", event.job.clone().unwrap_or_default()),
            (
                "LIFEBOAT_SUMMARY",
                crate::display::scrub(&event.summary).into_owned(),
            ),
            ("LIFEBOAT_HOST", event.host.clone()),
        ],
        stdin: Some(json),
        timeout,
        on_stop: None,
    };
    let outcome = crate::daemon::child::run(&spec)
        .map_err(|e| DeliveryError::permanent(format!("cannot run {program}: {e}")))?;
    match outcome.end {
        crate::daemon::child::End::Exited(s) if s.success() => Ok(()),
        crate::daemon::child::End::TimedOut => Err(DeliveryError::permanent(format!(
            "{program} did not finish within {} s: killed with its process group",
            timeout.as_secs_f64()
        ))),
        _ => Err(DeliveryError::permanent(format!(
            "{program} {}",
            outcome
                .failure(timeout)
                .unwrap_or_else(|| "failed".to_string())
        ))),
    }
}
