//! A private D-Bus bus (a real `dbus-daemon`) and a fake systemd-logind on it, for the tests of
//! the daemon's inhibitor lock.
//!
//! [`FakeLogind::start`] gives a bus whose address goes into `DBUS_SYSTEM_BUS_ADDRESS` (of a
//! `lifeboat` child process) or into `Inhibitor::connect_to`; the fake serves
//! `org.freedesktop.login1.Manager.Inhibit` as logind does (a pipe's write end for the caller,
//! the read end kept, so closing the caller's copy shows as end-of-file here) and emits
//! `PrepareForShutdown` on request.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use tempfile::TempDir;
use zbus::object_server::SignalEmitter;

pub const LOGIND: &str = "org.freedesktop.login1";
pub const LOGIND_PATH: &str = "/org/freedesktop/login1";

/// How long a private bus may take to start.
const BUS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `dbus-daemon` of its own, listening on a socket in a temporary directory, letting anyone
/// own any name and send anything. Killed on drop.
pub struct PrivateBus {
    child: Child,
    address: String,
    _dir: TempDir,
}

impl PrivateBus {
    /// Starts the bus. Panics, saying to install it, when `dbus-daemon` is missing.
    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("temp dir for the private bus");
        let config = dir.path().join("bus.conf");
        fs::write(&config, bus_config(&dir.path().join("bus")))
            .unwrap_or_else(|e| panic!("write {config:?}: {e}"));
        let mut child = match Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--print-address", "--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "dbus-daemon is not installed; these tests need it: install the Debian package \
                 dbus-daemon (`apt-get install dbus-daemon`; tests/run.sh does)"
            ),
            Err(e) => panic!("cannot start dbus-daemon: {e}"),
        };
        // The address is its first line; read it on a thread so a daemon that neither prints
        // nor exits fails the test instead of hanging it.
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let address = rx
            .recv_timeout(BUS_START_TIMEOUT)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if address.is_empty() {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            let _ = child.wait();
            panic!("dbus-daemon printed no address within {BUS_START_TIMEOUT:?}; stderr:\n{err}");
        }
        PrivateBus {
            child,
            address,
            _dir: dir,
        }
    }

    /// The bus's D-Bus address (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A plain client connection to the bus, driven by `rt`.
    pub fn connect(&self, rt: &tokio::runtime::Runtime) -> zbus::Connection {
        rt.block_on(async {
            zbus::connection::Builder::address(self.address())?
                .build()
                .await
        })
        .unwrap_or_else(|e| panic!("connect to the private bus {}: {e}", self.address))
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// The arguments of one `Inhibit` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InhibitCall {
    pub what: String,
    pub who: String,
    pub why: String,
    pub mode: String,
}

struct Lock {
    call: InhibitCall,
    /// The pipe's read end (non-blocking): end-of-file once every copy of the write end, which
    /// went to the caller, is closed.
    kept: File,
}

type Locks = Arc<Mutex<Vec<Lock>>>;

/// The fake `org.freedesktop.login1.Manager`.
struct Manager {
    locks: Locks,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    fn inhibit(
        &self,
        what: String,
        who: String,
        why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (read, write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| zbus::fdo::Error::Failed(format!("pipe: {e}")))?;
        self.locks.lock().expect("lock list").push(Lock {
            call: InhibitCall {
                what,
                who,
                why,
                mode,
            },
            kept: File::from(read),
        });
        // Our copy of the write end goes with the reply: zbus closes it once sent.
        Ok(write.into())
    }

    #[zbus(signal)]
    async fn prepare_for_shutdown(emitter: &SignalEmitter<'_>, start: bool) -> zbus::Result<()>;
}

/// A fake logind on a private bus of its own.
pub struct FakeLogind {
    locks: Locks,
    // Dropped in this order: the fake's connection, its runtime, then the bus.
    conn: zbus::Connection,
    rt: tokio::runtime::Runtime,
    bus: PrivateBus,
}

impl FakeLogind {
    /// Starts a private bus and serves the fake logind on it.
    pub fn start() -> FakeLogind {
        let bus = PrivateBus::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime for the fake logind");
        let locks = Locks::default();
        let manager = Manager {
            locks: Arc::clone(&locks),
        };
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(bus.address())?
                    .name(LOGIND)?
                    .serve_at(LOGIND_PATH, manager)?
                    .build()
                    .await
            })
            .unwrap_or_else(|e| panic!("serve the fake logind on {}: {e}", bus.address()));
        FakeLogind {
            locks,
            conn,
            rt,
            bus,
        }
    }

    /// The bus's address, for `DBUS_SYSTEM_BUS_ADDRESS` or `Inhibitor::connect_to`.
    pub fn address(&self) -> &str {
        self.bus.address()
    }

    /// The bus the fake serves on.
    pub fn bus(&self) -> &PrivateBus {
        &self.bus
    }

    /// The runtime that drives the fake (usable for other connections of a test).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Every `Inhibit` call so far, in order.
    pub fn calls(&self) -> Vec<InhibitCall> {
        self.locks
            .lock()
            .expect("lock list")
            .iter()
            .map(|l| l.call.clone())
            .collect()
    }

    /// Whether the lock of the `index`th `Inhibit` call is still held (its caller's descriptor
    /// is open somewhere).
    pub fn is_held(&self, index: usize) -> bool {
        let mut locks = self.locks.lock().expect("lock list");
        let lock = locks
            .get_mut(index)
            .unwrap_or_else(|| panic!("no Inhibit call number {index}"));
        let mut buf = [0u8; 16];
        loop {
            match lock.kept.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue, // nobody writes to a lock; ignore it if they do
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("read the kept end of lock {index}: {e}"),
            }
        }
    }

    /// How many locks are held now.
    pub fn held_count(&self) -> usize {
        let n = self.locks.lock().expect("lock list").len();
        (0..n).filter(|&i| self.is_held(i)).count()
    }

    /// Waits up to `timeout` for the lock of the `index`th call to be released; whether it was.
    pub fn wait_released(&self, index: usize, timeout: Duration) -> bool {
        wait_until(timeout, || !self.is_held(index))
    }

    /// Waits up to `timeout` until there have been `n` `Inhibit` calls; whether there were.
    pub fn wait_calls(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.calls().len() >= n)
    }

    /// Emits `PrepareForShutdown(start)` as logind does when a shutdown begins (true) or is
    /// cancelled (false).
    pub fn prepare_for_shutdown(&self, start: bool) {
        self.rt
            .block_on(async {
                let emitter = SignalEmitter::new(&self.conn, LOGIND_PATH)?;
                Manager::prepare_for_shutdown(&emitter, start).await
            })
            .unwrap_or_else(|e| panic!("emit PrepareForShutdown({start}): {e}"));
    }
}

/// Polls `cond` every 10 ms for up to `timeout`; whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
