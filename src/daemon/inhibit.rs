//! A systemd-logind inhibitor lock in "delay" mode while backups run, and logind's
//! announcements of a coming shutdown.
//!
//! While a backup runs, the daemon holds a lock taken with
//! `org.freedesktop.login1.Manager.Inhibit("shutdown:sleep", "lifeboat", why, "delay")` on the
//! system bus. logind answers with a file descriptor: the lock is held as long as that
//! descriptor is open anywhere, and released when the last copy is closed ([`InhibitLock`] owns
//! it and closes it on drop; it is close-on-exec, so hooks and other children never inherit it).
//!
//! Why "delay" and not "block": a block lock makes a planned reboot fail outright (or need
//! `--ignore-inhibitors`), which an unattended server must never suffer because of a backup. A
//! delay lock only postpones it: logind announces the shutdown with the signal
//! `PrepareForShutdown(true)` (see [`Inhibitor::shutdown_pending`]), then waits until every delay
//! lock is released or until `InhibitDelayMaxSec=` has passed, whichever is first, and goes on.
//! That bound is set in logind.conf (`/etc/systemd/logind.conf` or a drop-in in
//! `/etc/systemd/logind.conf.d/`); it is 5 seconds by default, which is enough to stop a backup
//! cleanly (the running chunk, then the index of what was uploaded) but not to finish it.
//! Operators who want a running backup to get further before a reboot can raise it, e.g.
//! `InhibitDelayMaxSec=60`. On seeing the announcement, the daemon should stop its runs cleanly
//! and drop the locks; `PrepareForShutdown(false)` means the shutdown was cancelled.
//!
//! Everything here is optional: without a system bus or without logind (containers, minimal
//! systems), [`Inhibitor::connect`] logs that once and returns `None`, and backups run as
//! before. Every bus operation is bounded in time ([`CONNECT_TIMEOUT`], [`CALL_TIMEOUT`]), so a
//! hung bus delays the daemon by seconds at most.
//!
//! The calls are synchronous, for the daemon's loop: they run on the crate's shared tokio
//! runtime (`block_on`), which also runs the task that listens for the signal. They must not
//! be called from async code running on a tokio runtime.

use std::fmt::Display;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream};

use crate::error::{Error, Result};
use crate::storage::cloud::runtime;

/// How long [`Inhibitor::connect`] waits for the bus (connecting, authenticating, asking for
/// logind, subscribing to its signal) before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Inhibitor::acquire`] waits for logind's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the lock inhibits.
pub const WHAT: &str = "shutdown:sleep";
/// Who holds the lock, as `systemd-inhibit --list` shows it.
pub const WHO: &str = "lifeboat";
/// The lock's mode: postpone, never refuse (see the module documentation).
pub const MODE: &str = "delay";

/// The system bus when `DBUS_SYSTEM_BUS_ADDRESS` is not set (the D-Bus specification's
/// default).
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";
const SHUTDOWN_SIGNAL: &str = "PrepareForShutdown";

const BUS: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// Whether the absence of logind was logged already (it is logged at info level once, later
/// at debug level).
static UNAVAILABLE_LOGGED: AtomicBool = AtomicBool::new(false);

/// A connection to logind on the system bus, and what it announced.
#[derive(Debug)]
pub struct Inhibitor {
    conn: Connection,
    address: String,
    /// The last `PrepareForShutdown` value logind sent (false until it sends one).
    shutdown: Arc<AtomicBool>,
    /// The task that listens for `PrepareForShutdown`; stopped when the inhibitor is dropped.
    listener: tokio::task::JoinHandle<()>,
}

/// A held logind inhibitor lock; dropping it releases the lock.
#[derive(Debug)]
pub struct InhibitLock {
    fd: OwnedFd,
    why: String,
}

impl Inhibitor {
    /// Connects to logind on the system bus: the one `DBUS_SYSTEM_BUS_ADDRESS` names, else the
    /// standard one. `None` when there is no bus or no logind on it (logged, once at info
    /// level); never an error.
    pub fn connect() -> Option<Inhibitor> {
        Self::connect_to(&system_bus_address(
            std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok(),
        ))
    }

    /// Connects to logind on the bus at `address` (a D-Bus address such as
    /// `unix:path=/run/dbus/system_bus_socket`). `None` when that bus cannot be reached within
    /// [`CONNECT_TIMEOUT`] or has no logind (logged).
    pub fn connect_to(address: &str) -> Option<Inhibitor> {
        let outcome = runtime()
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, open(address)).await });
        let reason = match outcome {
            Ok(Ok(inhibitor)) => {
                tracing::debug!(bus = address, "connected to logind: backups delay shutdown");
                return Some(inhibitor);
            }
            Ok(Err(reason)) => reason,
            Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        };
        let message = "no logind inhibitor lock: backups will not delay a shutdown or reboot";
        if UNAVAILABLE_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::debug!(bus = address, %reason, "{message}");
        } else {
            tracing::info!(bus = address, %reason, "{message}");
        }
        None
    }

    /// Takes a delay lock on shutdown and sleep, `why` being the reason logind shows (e.g.
    /// "backup of job home"). The lock is held until the returned [`InhibitLock`] is dropped.
    pub fn acquire(&self, why: &str) -> Result<InhibitLock> {
        let args = (WHAT, WHO, why, MODE);
        let call = self.conn.call_method(
            Some(LOGIND),
            LOGIND_PATH,
            Some(LOGIND_MANAGER),
            "Inhibit",
            &args,
        );
        let reply = runtime()
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, call).await })
            .map_err(|_| self.fail(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(|e| self.fail(e))?;
        // zbus receives descriptors without close-on-exec, and the reply keeps its own copy
        // for as long as any clone of the message lives (the connection hands every message
        // to each of its streams, the shutdown listener's too). Set close-on-exec on that
        // copy, or a hook or child process started while the lock is held would keep it held
        // after we drop ours.
        for fd in reply.data().fds() {
            close_on_exec(fd.as_fd()).map_err(|e| self.fail(e))?;
        }
        let fd: zbus::zvariant::OwnedFd = reply
            .body()
            .deserialize()
            .map_err(|e| self.fail(format!("the answer is not a file descriptor: {e}")))?;
        let fd = OwnedFd::from(fd);
        // Our own copy is a close-on-exec duplicate already; make sure of it.
        close_on_exec(fd.as_fd()).map_err(|e| self.fail(e))?;
        tracing::debug!(why, "took a logind delay inhibitor lock");
        Ok(InhibitLock {
            fd,
            why: why.to_owned(),
        })
    }

    /// Whether logind announced a shutdown or reboot (`PrepareForShutdown(true)`) that it has
    /// not cancelled since. Never blocks.
    pub fn shutdown_pending(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// The bus address this inhibitor is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn fail(&self, reason: impl Display) -> Error {
        Error::Invalid(format!(
            "cannot take a logind inhibitor lock ({LOGIND_MANAGER}.Inhibit on the bus at {}): \
             {reason}",
            self.address
        ))
    }
}

/// Sets close-on-exec on `fd`.
fn close_on_exec(fd: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let flags = rustix::io::fcntl_getfd(fd)
        .map_err(|e| format!("cannot read the lock's descriptor flags: {e}"))?;
    rustix::io::fcntl_setfd(fd, flags | rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("cannot make the lock close-on-exec: {e}"))
}

impl Drop for Inhibitor {
    fn drop(&mut self) {
        // The listener's message stream keeps the connection open; stop it so the
        // connection closes.
        self.listener.abort();
    }
}

impl InhibitLock {
    /// The reason the lock was taken with.
    pub fn why(&self) -> &str {
        &self.why
    }
}

impl AsFd for InhibitLock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for InhibitLock {
    fn drop(&mut self) {
        // The descriptor closes right after this, which releases the lock.
        tracing::debug!(why = %self.why, "releasing the logind inhibitor lock");
    }
}

/// The system bus address: `env` (the value of `DBUS_SYSTEM_BUS_ADDRESS`) when set and not
/// empty, else the standard one.
fn system_bus_address(env: Option<String>) -> String {
    env.filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_owned())
}

/// Connects, checks that logind is there (running or startable by the bus), and starts
/// listening for its shutdown announcements. Runs on the runtime; the error says what failed.
async fn open(address: &str) -> std::result::Result<Inhibitor, String> {
    let conn = zbus::connection::Builder::address(address)
        .map_err(|e| format!("invalid bus address: {e}"))?
        .build()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;

    let has_owner: bool = bus_call(&conn, "NameHasOwner", &(LOGIND,)).await?;
    if !has_owner {
        let activatable: Vec<String> = bus_call(&conn, "ListActivatableNames", &()).await?;
        if !activatable.iter().any(|n| n == LOGIND) {
            return Err(format!("{LOGIND} (systemd-logind) is not on this bus"));
        }
    }

    // The bus delivers only the signals of the current owner of the name (logind), not those
    // another client may send with the same interface and member.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(LOGIND)
        .and_then(|b| b.path(LOGIND_PATH))
        .and_then(|b| b.interface(LOGIND_MANAGER))
        .and_then(|b| b.member(SHUTDOWN_SIGNAL))
        .map_err(|e| format!("cannot build the signal match rule: {e}"))?
        .build();
    let mut signals = MessageStream::for_match_rule(rule, &conn, Some(16))
        .await
        .map_err(|e| format!("cannot subscribe to {LOGIND_MANAGER}.{SHUTDOWN_SIGNAL}: {e}"))?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let bus = address.to_owned();
    // Spawned last: nothing after it awaits, so the connect timeout cannot leave it behind.
    let listener = tokio::spawn(async move {
        while let Some(msg) = signals.next().await {
            match msg.and_then(|m| m.body().deserialize::<bool>()) {
                Ok(start) => {
                    flag.store(start, Ordering::SeqCst);
                    if start {
                        tracing::info!("logind announced a shutdown or reboot");
                    } else {
                        tracing::info!("logind cancelled the announced shutdown or reboot");
                    }
                }
                Err(e) => tracing::warn!(bus, "unreadable {SHUTDOWN_SIGNAL} signal: {e}"),
            }
        }
        tracing::warn!(
            bus,
            "lost the connection to the system bus: shutdown announcements are no longer seen"
        );
    });

    Ok(Inhibitor {
        conn,
        address: address.to_owned(),
        shutdown,
        listener,
    })
}

/// Calls `method` of the bus itself and reads its one return value.
async fn bus_call<B, R>(conn: &Connection, method: &str, body: &B) -> std::result::Result<R, String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let reply = conn
        .call_method(Some(BUS), BUS_PATH, Some(BUS), method, body)
        .await
        .map_err(|e| format!("{BUS}.{method}: {e}"))?;
    reply
        .body()
        .deserialize()
        .map_err(|e| format!("{BUS}.{method} answered something unexpected: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn inhibit_bus_address_comes_from_the_environment_or_the_standard_socket() {
        assert_eq!(system_bus_address(None), DEFAULT_SYSTEM_BUS);
        assert_eq!(system_bus_address(Some(String::new())), DEFAULT_SYSTEM_BUS);
        assert_eq!(
            system_bus_address(Some("unix:path=/tmp/x".into())),
            "unix:path=/tmp/x"
        );
    }

    #[test]
    fn inhibit_connect_without_a_bus_is_none_quickly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = format!("unix:path={}", dir.path().join("no-bus").display());
        let start = Instant::now();
        assert!(Inhibitor::connect_to(&address).is_none());
        assert!(Inhibitor::connect_to("not a D-Bus address").is_none());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
