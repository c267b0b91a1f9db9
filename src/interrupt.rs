//! Cooperative interruption.
//!
//! The CLI (and later the daemon) routes SIGINT and SIGTERM to one flag; long operations poll
//! it at safe points and stop cleanly: a backup writes no snapshot (but indexes the packs it
//! already stored, so the next run reuses them), a restore removes its staging directory and
//! anything it placed, leaving the target as it was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The process-wide interruption flag.
pub fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Whether an interruption was requested.
pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Requests interruption (as a signal would).
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

/// Clears the flag (for a process that goes on after an interrupted operation, and tests).
pub fn reset() {
    flag().store(false, Ordering::SeqCst);
}

/// `Err(Error::Interrupted)` once an interruption was requested.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Routes SIGINT and SIGTERM to the flag. A second signal while the first is being handled
/// terminates the process at once.
pub fn install_handlers() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag().clone())?;
        signal_hook::flag::register(sig, flag().clone())?;
    }
    Ok(())
}
