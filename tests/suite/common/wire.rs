//! Faults on the wire: an HTTP proxy in front of the S3 or Azure test server that passes every
//! exchange through and breaks the ones a rule names, the way networks and object stores break
//! them — an error status instead of the answer (503 Slow Down, 500 on the second page of a
//! listing), a connection closed before the request reached the server or after it did (the
//! client never hears the answer), a body shorter than its `Content-Length` — and, when told,
//! drops `If-None-Match` from requests, as a store that ignores create-only writes does.
//!
//! What the client sees is real HTTP: object_store's parser, its retries and Lifeboat's
//! classification of the error all run, unlike faults returned above the storage layer
//! ([`super::faulty`]). One request per connection: the proxy asks the server to close after
//! each answer and tells the client so (`Connection: close`), so a connection is never reused
//! after a fault.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// What a rule does to an exchange it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status with an error document; the request never reaches the server.
    Status(u16),
    /// Closes the connection once the request is read; it never reaches the server.
    Reset,
    /// Passes the request to the server, then closes the connection without answering: the
    /// server did the work, the client does not know it.
    LostAnswer,
    /// Passes the exchange through, but sends only the first half of the answer's body (its
    /// `Content-Length` unchanged), then closes.
    ShortBody,
    /// Reads the request's head and a little of its body, then closes the connection while
    /// the client is still sending (the unread rest makes it a reset): an upload cut off on
    /// the wire. It never reaches the server.
    CutUpload,
}

/// Which exchanges a rule breaks, and how many more times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The request's method (`GET`, `PUT`, ...); any when `None`.
    pub method: Option<&'static str>,
    /// A piece of the request target (path and query) it must contain, such as `/data/` or
    /// `continuation-token=`.
    pub target_contains: &'static str,
    pub fault: Fault,
    /// How many matching exchanges it breaks (`usize::MAX`: all).
    pub times: usize,
}

impl Rule {
    pub fn new(method: &'static str, target_contains: &'static str, fault: Fault) -> Self {
        Rule {
            method: Some(method),
            target_contains,
            fault,
            times: 1,
        }
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    strip_if_none_match: bool,
    /// Every exchange: method, target, and the fault applied, if any.
    log: Vec<(String, String, Option<Fault>)>,
}

/// The proxy; stops when dropped.
pub struct WireProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl WireProxy {
    /// A proxy on 127.0.0.1 in front of `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the wire proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopped) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, upstream) = (st.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = exchange(conn, &upstream, &st);
                });
            }
        });
        WireProxy { port, state, stop }
    }

    /// The proxy's address, to use as the storage endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule; rules are tried in the order added.
    pub fn inject(&self, rule: Rule) {
        self.state.lock().rules.push(rule);
    }

    /// Removes every rule that has not run out.
    pub fn clear(&self) {
        self.state.lock().rules.clear();
    }

    /// Whether `If-None-Match` is dropped from requests (a store ignoring create-only).
    pub fn strip_if_none_match(&self, on: bool) {
        self.state.lock().strip_if_none_match = on;
    }

    /// The faults applied so far, in order, with the method and target they hit.
    pub fn applied(&self) -> Vec<(String, String, Fault)> {
        self.state
            .lock()
            .log
            .iter()
            .filter_map(|(m, t, f)| f.map(|f| (m.clone(), t.clone(), f)))
            .collect()
    }

    /// How many exchanges passed through or were broken.
    pub fn exchanges(&self) -> usize {
        self.state.lock().log.len()
    }
}

impl Drop for WireProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A request or answer head: the first line and the header lines, as received.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> io::Result<Option<Head>> {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "head cut short",
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Some(Head {
            first: first.trim_end_matches(['\r', '\n']).to_string(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self = self.without(name);
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A request body, raw: `Content-Length` bytes, or chunks up to the last one.
fn read_body(head: &Head, r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let chunked = head
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len: usize = head
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut raw = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line)?;
        raw.extend_from_slice(size_line.as_bytes());
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let mut line = String::new();
                r.read_line(&mut line)?;
                raw.extend_from_slice(line.as_bytes());
                if line.trim().is_empty() {
                    return Ok(raw);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk)?;
        raw.extend_from_slice(&chunk);
    }
}

/// Serves one client connection: one request, passed through or broken.
fn exchange(client: TcpStream, upstream: &str, state: &Mutex<State>) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(head) = Head::read(&mut reader)? else {
        return Ok(());
    };
    let mut parts = head.first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (fault, strip) = {
        let mut st = state.lock();
        let fault = st
            .rules
            .iter_mut()
            .find(|r| {
                r.times > 0
                    && r.method.is_none_or(|m| m == method)
                    && target.contains(r.target_contains)
            })
            .map(|r| {
                r.times -= 1;
                r.fault
            });
        st.log.push((method.clone(), target.clone(), fault));
        (fault, st.strip_if_none_match)
    };
    let mut client = client;
    if fault == Some(Fault::CutUpload) {
        let mut some = [0u8; 16 << 10];
        let _ = reader.read(&mut some)?;
        drop(reader);
        return client.shutdown(Shutdown::Both);
    }
    let body = read_body(&head, &mut reader)?;
    match fault {
        Some(Fault::Status(code)) => {
            let (reason, error) = match code {
                503 => ("Slow Down", "SlowDown"),
                500 => ("Internal Server Error", "InternalError"),
                _ => ("Injected", "InjectedFault"),
            };
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{error}</Code>\
                 <Message>injected by the test's wire proxy</Message></Error>"
            );
            let answer = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                doc.len()
            );
            client.write_all(answer.as_bytes())?;
            return client.shutdown(Shutdown::Both);
        }
        Some(Fault::Reset) => return client.shutdown(Shutdown::Both),
        _ => {}
    }
    let mut head = head.with("Connection", "close");
    if strip {
        head = head.without("if-none-match");
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head.bytes())?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if fault == Some(Fault::LostAnswer) {
        return client.shutdown(Shutdown::Both);
    }
    let mut r = BufReader::new(answer.as_slice());
    let Some(ahead) = Head::read(&mut r)? else {
        return client.shutdown(Shutdown::Both);
    };
    let mut abody = Vec::new();
    r.read_to_end(&mut abody)?;
    let ahead = ahead.with("Connection", "close");
    client.write_all(&ahead.bytes())?;
    if fault == Some(Fault::ShortBody) {
        client.write_all(&abody[..abody.len() / 2])?;
    } else {
        client.write_all(&abody)?;
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}
