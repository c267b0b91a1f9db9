//! The daemon's logind inhibitor lock (`lifeboat::daemon::inhibit`) against a fake logind on a
//! private, real D-Bus bus (`dbus-daemon`; see tests/suite/common/logind.rs).

#[path = "suite/common/mod.rs"]
mod common;

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::logind::{wait_until, FakeLogind, InhibitCall, PrivateBus};
use lifeboat::daemon::inhibit::{Inhibitor, CALL_TIMEOUT, CONNECT_TIMEOUT};

/// Generous bound for things that take milliseconds (a signal's delivery, a close seen).
// Long enough for a loaded machine: only a failing test waits it out.
const SOON: Duration = Duration::from_secs(15);

/// The tests of this file run one at a time. zbus receives the lock's file descriptor without
/// close-on-exec and `acquire` sets it a moment later; a process spawned by another test's
/// thread in that moment (a `dbus-daemon`, a `sleep`) would inherit the descriptor and keep
/// the lock held, and the release checks would fail for a reason outside the test.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn connect(fake: &FakeLogind) -> Inhibitor {
    Inhibitor::connect_to(fake.address())
        .unwrap_or_else(|| panic!("no inhibitor on the fake logind's bus {}", fake.address()))
}

#[test]
fn acquire_takes_a_delay_lock_held_until_dropped() {
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    assert_eq!(inhibitor.address(), fake.address());

    let lock = inhibitor.acquire("backup of job home").expect("acquire");
    assert_eq!(lock.why(), "backup of job home");
    let calls = fake.calls();
    assert_eq!(
        calls,
        vec![InhibitCall {
            what: "shutdown:sleep".into(),
            who: "lifeboat".into(),
            why: "backup of job home".into(),
            mode: "delay".into(),
        }]
    );
    assert!(calls[0].what.split(':').any(|w| w == "shutdown"));

    // Held while the lock lives (and stays held: nothing else closes it).
    assert!(fake.is_held(0), "lock released while the InhibitLock lives");
    std::thread::sleep(Duration::from_millis(200));
    assert!(fake.is_held(0), "lock released while the InhibitLock lives");

    // A second lock is independent of the first.
    let second = inhibitor
        .acquire("backup of job etc")
        .expect("second acquire");
    assert_eq!(fake.held_count(), 2);
    drop(lock);
    assert!(fake.wait_released(0, SOON), "lock not released after drop");
    assert!(fake.is_held(1), "dropping one lock released the other");
    drop(second);
    assert!(
        fake.wait_released(1, SOON),
        "second lock not released after drop"
    );
    assert_eq!(fake.held_count(), 0);
}

#[test]
fn lock_is_not_inherited_by_child_processes() {
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    let lock = inhibitor.acquire("backup with a hook").expect("acquire");
    // A hook that outlives the backup (here: a sleep) must not keep the lock held.
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    drop(lock);
    let released = fake.wait_released(0, SOON);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        released,
        "a child process started while the lock was held kept it held"
    );
}

/// Every descriptor of this process that refers to the same open pipe as `fd`, with whether
/// it is close-on-exec.
fn copies_of(fd: std::os::fd::BorrowedFd<'_>) -> Vec<(i32, bool)> {
    use std::os::fd::AsRawFd;
    let link = |n: i32| std::fs::read_link(format!("/proc/self/fd/{n}")).ok();
    let target = link(fd.as_raw_fd()).expect("the lock's descriptor in /proc/self/fd");
    let mut copies = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Some(n) = entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        else {
            continue;
        };
        if link(n).as_ref() != Some(&target) {
            continue;
        }
        // F_GETFD only reads the flags; a descriptor closed since the listing gives an
        // error, which we skip.
        let flags = nix::fcntl::fcntl(n, nix::fcntl::FcntlArg::F_GETFD);
        if let Ok(flags) = flags {
            let cloexec = nix::fcntl::FdFlag::from_bits_truncate(flags)
                .contains(nix::fcntl::FdFlag::FD_CLOEXEC);
            copies.push((n, cloexec));
        }
    }
    copies
}

#[test]
fn every_copy_of_the_lock_descriptor_is_close_on_exec() {
    // The reply message that carried the lock keeps its own descriptor for as long as any
    // clone of it lives in the connection (zbus's reader task hands the reply to the caller
    // before it is done with its clone); a child spawned then must not inherit it. Without
    // the fix this failed within a few rounds on a loaded machine, as CI once did through
    // `lock_is_not_inherited_by_child_processes`.
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    for round in 0..100 {
        let lock = inhibitor.acquire("backup with a hook").expect("acquire");
        let copies = copies_of(std::os::fd::AsFd::as_fd(&lock));
        assert!(
            copies.iter().all(|&(_, cloexec)| cloexec),
            "round {round}: descriptors of the lock without close-on-exec: {copies:?}"
        );
        drop(lock);
        assert!(
            fake.wait_released(round, SOON),
            "round {round}: not released"
        );
    }
}

#[test]
fn prepare_for_shutdown_is_reported_and_its_cancellation_too() {
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    assert!(!inhibitor.shutdown_pending());

    fake.prepare_for_shutdown(true);
    assert!(
        wait_until(SOON, || inhibitor.shutdown_pending()),
        "PrepareForShutdown(true) not reported within {SOON:?}"
    );
    fake.prepare_for_shutdown(false);
    assert!(
        wait_until(SOON, || !inhibitor.shutdown_pending()),
        "PrepareForShutdown(false) not reported within {SOON:?}"
    );
}

#[test]
fn prepare_for_shutdown_from_another_client_is_ignored() {
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    let impostor = fake.bus().connect(fake.runtime());
    fake.runtime()
        .block_on(impostor.emit_signal(
            None::<&str>,
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "PrepareForShutdown",
            &(true,),
        ))
        .expect("emit the impostor's signal");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !inhibitor.shutdown_pending(),
        "a PrepareForShutdown from a client that is not logind was believed"
    );
    // The real one still gets through.
    fake.prepare_for_shutdown(true);
    assert!(wait_until(SOON, || inhibitor.shutdown_pending()));
}

#[test]
fn connect_honours_dbus_system_bus_address() {
    let _serial = serial();
    // The only test here that reads or sets the variable.
    let fake = FakeLogind::start();
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", fake.address());
    let inhibitor = Inhibitor::connect();
    std::env::remove_var("DBUS_SYSTEM_BUS_ADDRESS");
    let inhibitor = inhibitor.expect("connect() to the bus DBUS_SYSTEM_BUS_ADDRESS names");
    assert_eq!(inhibitor.address(), fake.address());
    drop(inhibitor.acquire("env").expect("acquire"));
    assert_eq!(fake.calls().len(), 1);
}

#[test]
fn nonexistent_bus_gives_none_quickly() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let address = format!("unix:path={}", dir.path().join("nothing-here").display());
    let start = Instant::now();
    assert!(Inhibitor::connect_to(&address).is_none());
    assert!(Inhibitor::connect_to("unix:path=/nonexistent/dir/bus").is_none());
    assert!(Inhibitor::connect_to("no-such-transport:x=y").is_none());
    // Without waiting for the connection timeout, as a hung bus makes it.
    assert!(
        start.elapsed() < CONNECT_TIMEOUT,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn bus_without_logind_gives_none() {
    let _serial = serial();
    let bus = PrivateBus::start();
    let start = Instant::now();
    assert!(Inhibitor::connect_to(bus.address()).is_none());
    assert!(
        start.elapsed() < CONNECT_TIMEOUT + SOON,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn hung_bus_gives_none_within_the_bound() {
    let _serial = serial();
    // A socket that accepts connections and never says a word.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hung");
    let listener = UnixListener::bind(&path).expect("bind");
    let start = Instant::now();
    assert!(Inhibitor::connect_to(&format!("unix:path={}", path.display())).is_none());
    let took = start.elapsed();
    assert!(
        took >= CONNECT_TIMEOUT - Duration::from_millis(100) && took < CONNECT_TIMEOUT + SOON,
        "a hung bus took {took:?} (bound {CONNECT_TIMEOUT:?})"
    );
    drop(listener);
}

#[test]
fn acquire_fails_in_bounded_time_with_a_clear_error_when_logind_goes_away() {
    let _serial = serial();
    let fake = FakeLogind::start();
    let inhibitor = connect(&fake);
    let address = fake.address().to_owned();
    drop(fake); // the bus and logind are gone
    let start = Instant::now();
    let err = inhibitor
        .acquire("after the bus died")
        .expect_err("acquire without a bus")
        .to_string();
    assert!(start.elapsed() < CALL_TIMEOUT + SOON);
    assert!(
        err.contains("org.freedesktop.login1.Manager.Inhibit") && err.contains(&address),
        "the error does not say what failed and where: {err}"
    );
}
