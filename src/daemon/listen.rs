//! The one connection server of the daemon's listeners: the metrics/health HTTP endpoint and
//! the control socket.
//!
//! Each connection gets a thread of its own, at most [`MAX_CONNECTIONS`] at once (one more is
//! answered "busy" and closed at once), and a deadline for the whole exchange, not per byte:
//! its request head must arrive within [`REQUEST_DEADLINE`] and within the listener's size
//! bound, and its answer must be taken within [`ANSWER_DEADLINE`]. So an idle client, one that
//! sends a byte every few seconds, or one that sends megabytes without an end of line never
//! blocks another client and never grows the daemon's memory beyond the bound.
//!
//! Why not an HTTP server crate: hyper is in the dependency tree, but only as reqwest's client;
//! its server side needs hyper's `server` feature, hyper-util and tokio's networking, and would
//! still not serve the control socket's one-line JSON protocol. The exchange here is one short
//! request and one answer per connection; threads with deadlines serve both listeners in a
//! hundred lines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections served at once, per listener.
pub const MAX_CONNECTIONS: usize = 32;
/// A request (its head, for HTTP) must have arrived this long after the connection was taken.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// An answer must have been taken by the client this long after it started to be written.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Stack of a connection thread (they parse a request and format an answer).
const STACK: usize = 256 << 10;

/// A connection of either listener.
pub trait Conn: Read + Write + Send + 'static {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

/// Serves `incoming` on a thread named `name`: `handle` runs on a thread per connection (at
/// most [`MAX_CONNECTIONS`] at once); a connection beyond that gets `busy` written to it
/// (one short write, bounded by a second) and is closed.
pub fn serve<C, I, H>(
    name: &str,
    incoming: I,
    handle: H,
    busy: &'static [u8],
) -> std::io::Result<()>
where
    C: Conn,
    I: Iterator<Item = std::io::Result<C>> + Send + 'static,
    H: Fn(C) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let active = Arc::new(AtomicUsize::new(0));
    let thread_name = format!("{name}-conn");
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            for conn in incoming {
                let Ok(conn) = conn else {
                    // Out of file descriptors, say: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let mut conn = conn;
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = conn.write_all(busy);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let slot = Slot(active.clone());
                let handle = handle.clone();
                // A thread that cannot start drops its closure: the slot is given back and the
                // connection closed.
                let _ = std::thread::Builder::new()
                    .name(thread_name.clone())
                    .stack_size(STACK)
                    .spawn(move || {
                        let _slot = slot;
                        handle(conn);
                    });
            }
        })?;
    Ok(())
}

/// One of the listener's connection slots, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a request was not read.
#[derive(Debug)]
pub enum ReadError {
    /// More than the bound without its end.
    TooLarge(usize),
    /// Not complete by the deadline.
    TooSlow(Duration),
    /// The client closed the connection without sending anything.
    Closed,
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(max) => write!(f, "the request is longer than {max} bytes"),
            ReadError::TooSlow(d) => write!(
                f,
                "the request did not arrive within {}",
                humantime::format_duration(*d)
            ),
            ReadError::Closed => write!(f, "the client closed the connection without a request"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads from `conn` until `complete` says the bytes so far hold the whole request, at most
/// `max` bytes and until `deadline` (for all of it, however the bytes trickle in).
pub fn read_request<C: Conn>(
    conn: &mut C,
    max: usize,
    deadline: Instant,
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, ReadError> {
    let mut got = Vec::with_capacity(1024.min(max));
    let mut buf = [0u8; 4096];
    let total = deadline.saturating_duration_since(Instant::now());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TooSlow(total));
        }
        conn.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        let room = (max - got.len()).min(buf.len());
        match conn.read(&mut buf[..room]) {
            // The client closed its side: what it sent is the request (a request without
            // its final newline, from `printf ... | nc -U`, still counts).
            Ok(0) if got.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::TooSlow(total))
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
        if complete(&got) {
            return Ok(got);
        }
        if got.len() >= max {
            return Err(ReadError::TooLarge(max));
        }
    }
}

/// Writes `bytes` to `conn`, all of them within [`ANSWER_DEADLINE`].
pub fn write_answer<C: Conn>(conn: &mut C, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(b: &[u8]) -> bool {
        b.contains(&b'\n')
    }

    /// RELIABILITY case 27: a request that trickles in a byte at a time is cut at the
    /// deadline for the whole request, not kept alive by each byte.
    #[test]
    fn a_trickling_request_is_cut_at_its_total_deadline() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..40 {
                if client.write_all(b"x").is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        let deadline = Instant::now() + Duration::from_millis(800);
        let err = read_request(&mut server, 1024, deadline, line).unwrap_err();
        assert!(matches!(err, ReadError::TooSlow(_)), "{err}");
        assert!(err.to_string().contains("did not arrive within"), "{err}");
        drop(server);
        assert!(writer.join().unwrap(), "the writer was not cut off");
    }

    /// RELIABILITY case 27: a request without an end stops being read at the bound.
    #[test]
    fn an_endless_request_stops_at_the_bound() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&vec![b'x'; 1 << 20]);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = read_request(&mut server, 8192, deadline, line).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge(8192)), "{err}");
        drop(server);
        writer.join().unwrap();

        let (mut server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"hello\n").unwrap();
        let got = read_request(&mut server, 8192, deadline, line).unwrap();
        assert_eq!(got, b"hello\n");

        // Closed after the request without its newline: that is the request; closed with
        // nothing sent: no request.
        let (mut server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"hello").unwrap();
        drop(client);
        assert_eq!(
            read_request(&mut server, 8192, deadline, line).unwrap(),
            b"hello"
        );
        let (mut server, client) = UnixStream::pair().unwrap();
        drop(client);
        assert!(matches!(
            read_request(&mut server, 8192, deadline, line),
            Err(ReadError::Closed)
        ));
    }

    /// RELIABILITY case 27: connections are served at once, and one past the cap is told so.
    #[test]
    fn connections_are_served_concurrently_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        serve(
            "test-listener",
            std::iter::from_fn(move || Some(listener.accept().map(|(c, _)| c))),
            |mut c: UnixStream| {
                let deadline = Instant::now() + Duration::from_secs(60);
                if read_request(&mut c, 100, deadline, line).is_ok() {
                    let _ = write_answer(&mut c, b"ok\n");
                }
            },
            b"busy\n",
        )
        .unwrap();
        // Idle clients fill every slot but one: the last one is still answered.
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS - 1)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let ask = || {
            let mut c = UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            // Turned away, the write may find the connection closed.
            let _ = c.write_all(b"hi\n");
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            answer
        };
        assert_eq!(ask(), "ok\n");
        // With one more idle client, the next is turned away at once.
        let extra = UnixStream::connect(&path).unwrap();
        let mut answer = String::new();
        for _ in 0..200 {
            answer = ask();
            if answer == "busy\n" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(answer, "busy\n");
        drop((idle, extra));
        // Slots are given back.
        let mut answer = String::new();
        for _ in 0..200 {
            answer = ask();
            if answer == "ok\n" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(answer, "ok\n");
    }
}
