//! The control socket: `lifeboat status | run | pause | resume` talk to the running daemon over
//! a Unix socket in its runtime directory (mode 0600: root only, like the daemon). One JSON
//! request per connection, one JSON answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Run {
        job: String,
        full: bool,
    },
    Pause {
        job: Option<String>,
        for_secs: Option<u64>,
    },
    Resume {
        job: Option<String>,
    },
}

/// The socket's path in a runtime directory.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("lifeboat.sock")
}

/// Binds the control socket (replacing a stale one left by a crashed daemon).
pub fn bind(runtime_dir: &Path) -> Result<UnixListener> {
    std::fs::create_dir_all(runtime_dir)
        .map_err(|e| Error::io("create runtime directory", runtime_dir, e))?;
    let p = socket_path(runtime_dir);
    if UnixStream::connect(&p).is_ok() {
        return Err(Error::Invalid(format!(
            "another lifeboat daemon is already running (its control socket {} answers)",
            p.display()
        )));
    }
    let _ = std::fs::remove_file(&p);
    let listener = UnixListener::bind(&p).map_err(|e| Error::io("bind control socket", &p, e))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("restrict control socket", &p, e))?;
    Ok(listener)
}

/// The longest request line read (requests are a few hundred bytes; a client that sends more
/// without a newline is refused instead of growing the daemon's memory).
pub const MAX_REQUEST: usize = 64 << 10;

/// Reads one request from a connection: one line, at most [`MAX_REQUEST`] bytes, all of it
/// within [`super::listen::REQUEST_DEADLINE`] (however slowly it trickles in).
pub fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let deadline = Instant::now() + super::listen::REQUEST_DEADLINE;
    let bytes = super::listen::read_request(stream, MAX_REQUEST, deadline, |b| b.contains(&b'\n'))
        .map_err(|e| Error::Invalid(format!("bad control request: {e}")))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .map_err(|e| Error::Invalid(format!("bad control request: not UTF-8 ({e})")))?;
    parse_request(line)
}

/// What a client beyond the connection cap gets.
pub const BUSY: &[u8] =
    b"{\"ok\":false,\"error\":\"the daemon is serving too many control connections: try again\"}\n";

/// Parses one request line (public as the pure parsing step for tests and the fuzz targets).
pub fn parse_request(line: &str) -> Result<Request> {
    serde_json::from_str(line).map_err(|e| Error::Invalid(format!("bad control request: {e}")))
}

/// Until when a `pause` for `for_secs` seconds from `now` holds runs (`None`, or a time past
/// the calendar's end: a century).
pub fn pause_until(now: DateTime<Utc>, for_secs: Option<u64>) -> DateTime<Utc> {
    let century = chrono::TimeDelta::days(365 * 100);
    let far_future = now
        .checked_add_signed(century)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    for_secs
        .and_then(|s| i64::try_from(s).ok())
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(far_future)
}

/// Writes the answer (within [`super::listen::ANSWER_DEADLINE`]).
pub fn write_answer(stream: &mut UnixStream, answer: &serde_json::Value) {
    let _ = super::listen::write_answer(stream, format!("{answer}\n").as_bytes());
}

/// Sends a request to the daemon whose runtime directory is `runtime_dir`.
pub fn ask(runtime_dir: &Path, request: &Request) -> Result<serde_json::Value> {
    let p = socket_path(runtime_dir);
    // A daemon that is (re)starting may have its socket but not yet accept: try a few times.
    let mut attempt = 0;
    let connected = loop {
        match UnixStream::connect(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            other => break other,
        }
    };
    let mut stream = connected.map_err(|e| {
        Error::Invalid(format!(
            "cannot reach the lifeboat daemon at {} ({e}): is it running (systemctl status lifeboat)? Is this the right --config?",
            p.display()
        ))
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let text = serde_json::to_string(request).map_err(|e| Error::Invalid(e.to_string()))?;
    writeln!(stream, "{text}").map_err(|e| Error::io("send control request", &p, e))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| Error::io("read control answer", &p, e))?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| Error::Invalid(format!("bad answer from the daemon: {e}")))?;
    if v.get("ok").and_then(|o| o.as_bool()) == Some(false) {
        let msg = v.get("error").and_then(|e| e.as_str()).unwrap_or("refused");
        return Err(Error::Invalid(msg.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_request_line_is_refused_at_the_limit() {
        let (client, server) = UnixStream::pair().expect("pair");
        let writer = std::thread::spawn(move || {
            let mut client = client;
            let junk = vec![b'x'; 1 << 20];
            // The reader stops at the limit and drops its end: the write then fails.
            let _ = client.write_all(&junk);
        });
        let mut server = server;
        let err = read_request(&mut server).expect_err("refused");
        assert!(err.to_string().contains("longer than 65536 bytes"), "{err}");
        drop(server);
        writer.join().expect("writer");

        // A request within the limit still reads.
        let (mut client, mut server) = UnixStream::pair().expect("pair");
        client.write_all(b"{\"cmd\":\"status\"}\n").expect("write");
        assert_eq!(read_request(&mut server).expect("status"), Request::Status);
    }

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_request(r#"{"cmd":"run","job":"etc","full":true}"#).expect("run"),
            Request::Run {
                job: "etc".into(),
                full: true
            }
        );
        assert!(parse_request(r#"{"cmd":"format"}"#).is_err());
        assert!(parse_request("").is_err());
    }

    #[test]
    fn pause_for_an_absurd_time_does_not_crash_the_daemon() {
        // `lifeboat pause --for 300000y` (or any u64 on the socket) made the daemon's main
        // thread panic on DateTime overflow.
        let now = Utc::now();
        for secs in [10_000_000_000_000u64, i64::MAX as u64, u64::MAX] {
            assert!(pause_until(now, Some(secs)) > now, "{secs}");
        }
        assert_eq!(
            pause_until(now, Some(60)),
            now + chrono::Duration::seconds(60)
        );
        assert!(pause_until(now, None) > now + chrono::Duration::days(365 * 99));
    }
}
