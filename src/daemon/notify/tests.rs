#![allow(clippy::unwrap_used)]

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn event(&self) -> Event {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Holds the first request until the test releases it.
struct Gate {
    arrived: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
    /// Whether the test released it (rather than a 20 s safety timeout).
    released: Arc<Mutex<Option<bool>>>,
}

/// A local HTTP server that records requests and answers with `statuses` in turn (the last
/// one repeats).
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(statuses: &[u16]) -> Receiver {
        Self::start_gated(statuses, None)
    }

    fn start_gated(statuses: &[u16], gate: Option<Gate>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let statuses = statuses.to_vec();
        std::thread::spawn(move || {
            let mut gate = gate;
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                recorded.lock().push(request);
                if let Some(gate) = gate.take() {
                    let _ = gate.arrived.send(());
                    let released = gate.release.recv_timeout(Duration::from_secs(20)).is_ok();
                    *gate.released.lock() = Some(released);
                }
                let status = statuses[n.min(statuses.len() - 1)];
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(':')?;
        headers.push((key.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap_or(0));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn fast() -> NotifierOptions {
    NotifierOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            total: Duration::from_secs(10),
        },
        attempt_timeout: Duration::from_secs(10),
        ..NotifierOptions::default()
    }
}

fn webhook(name: &str, url: String) -> ChannelConfig {
    ChannelConfig::Webhook {
        name: name.into(),
        url,
        method: HttpMethod::Post,
        url_failure: None,
        headers: BTreeMap::new(),
        events: None,
    }
}

fn event(kind: EventKind, summary: &str) -> Event {
    Event::new(kind, Some("etc".into()), summary)
        .with_details(serde_json::json!({"error": "repository unreachable", "files": 3}))
}

const FLUSH: Duration = Duration::from_secs(30);

#[test]
fn webhook_posts_the_event_as_json() {
    let rx = Receiver::start(&[200]);
    let mut config = webhook("hook", rx.url("/hook?token=abc"));
    if let ChannelConfig::Webhook { headers, .. } = &mut config {
        headers.insert("Authorization".into(), "Bearer s3cret".into());
    }
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    let sent = event(EventKind::BackupFailed, "backup of job etc failed: boom");
    notifier.send(sent.clone());
    notifier.flush(FLUSH);
    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook?token=abc");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(request.event(), sent);
    let stats = notifier.stats();
    assert_eq!(stats[0].sent, 1);
    assert_eq!(stats[0].failed, 0);
    assert_eq!(stats[0].channel_type, "webhook");
    assert!(stats[0].last_sent.is_some());
}

#[test]
fn get_ping_uses_url_failure_for_failures() {
    let rx = Receiver::start(&[200]);
    let config = ChannelConfig::Webhook {
        name: "hc".into(),
        url: rx.url("/ping/abc"),
        method: HttpMethod::Get,
        url_failure: Some(rx.url("/ping/abc/fail")),
        headers: BTreeMap::new(),
        events: Some(vec![EventKind::BackupSucceeded, EventKind::BackupFailed]),
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    notifier.send(event(EventKind::BackupSucceeded, "ok"));
    notifier.flush(FLUSH);
    notifier.send(event(EventKind::BackupFailed, "failed"));
    notifier.flush(FLUSH);
    let requests = rx.requests();
    let seen: Vec<_> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.body.len()))
        .collect();
    assert_eq!(
        seen,
        vec![("GET", "/ping/abc", 0), ("GET", "/ping/abc/fail", 0)]
    );
}

#[test]
fn ntfy_gets_the_summary_as_text_with_headers() {
    let rx = Receiver::start(&[200]);
    let config = ChannelConfig::Ntfy {
        name: "phone".into(),
        url: rx.url("/lifeboat-alerts"),
        events: None,
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    let mut sent = event(
        EventKind::BackupFailed,
        "backup of job etc failed: disk full",
    );
    sent.host = "db1".into();
    notifier.send(sent);
    notifier.flush(FLUSH);
    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/lifeboat-alerts");
    assert_eq!(
        String::from_utf8_lossy(&request.body),
        "backup of job etc failed: disk full"
    );
    assert_eq!(
        request.header("title"),
        Some("Lifeboat on db1: backup failed")
    );
    assert_eq!(request.header("priority"), Some("high"));
    assert!(request.header("tags").unwrap().contains("backup_failed"));
}

#[test]
fn a_503_is_retried_then_delivered() {
    let rx = Receiver::start(&[503, 503, 200]);
    let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
    notifier.send(event(EventKind::Stale, "stale"));
    notifier.flush(FLUSH);
    assert_eq!(rx.requests().len(), 3);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (1, 0));
}

#[test]
fn retries_end_after_the_policys_attempts() {
    let rx = Receiver::start(&[500]);
    let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
    notifier.send(event(EventKind::Stale, "stale"));
    notifier.flush(FLUSH);
    assert_eq!(rx.requests().len(), 3);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (0, 1));
    let error = stats.last_error.as_deref().unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(error.contains("gave up after 3 tries"), "{error}");
}

#[test]
fn a_400_is_not_retried() {
    let rx = Receiver::start(&[400, 200]);
    let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
    notifier.send(event(EventKind::BackupFailed, "failed"));
    notifier.flush(FLUSH);
    assert_eq!(rx.requests().len(), 1);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (0, 1));
    assert!(stats.last_error.as_deref().unwrap().contains("400"));
}

#[test]
fn errors_do_not_show_url_secrets() {
    // A port nobody listens on: connection refused, retried, given up.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/ping/SECRETUUID?token=SECRETTOKEN");
    let notifier = Notifier::start_with(vec![webhook("hook", url)], fast()).unwrap();
    notifier.send(event(EventKind::BackupFailed, "failed"));
    notifier.flush(FLUSH);
    let stats = &notifier.stats()[0];
    assert_eq!(stats.failed, 1);
    let error = stats.last_error.as_deref().unwrap();
    assert!(error.contains("127.0.0.1"), "{error}");
    assert!(!error.contains("SECRET"), "{error}");
    assert!(error.contains("gave up after 3 tries"), "{error}");
}

#[test]
fn events_filter_selects_kinds() {
    let rx = Receiver::start(&[200]);
    let mut only_failures = webhook("failures", rx.url("/failures"));
    if let ChannelConfig::Webhook { events, .. } = &mut only_failures {
        *events = Some(vec![EventKind::BackupFailed]);
    }
    let default = webhook("default", rx.url("/default"));
    let notifier = Notifier::start_with(vec![only_failures, default], fast()).unwrap();
    for kind in [
        EventKind::BackupSucceeded,
        EventKind::Stale,
        EventKind::BackupFailed,
        EventKind::Test,
    ] {
        notifier.send(event(kind, kind.as_str()));
    }
    notifier.flush(FLUSH);
    let mut seen: Vec<_> = rx
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.event().kind))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("/default".to_string(), EventKind::BackupFailed),
            ("/default".to_string(), EventKind::Stale),
            ("/default".to_string(), EventKind::Test),
            ("/failures".to_string(), EventKind::BackupFailed),
            ("/failures".to_string(), EventKind::Test),
        ]
    );
}

#[test]
fn send_returns_while_delivery_is_blocked_and_a_full_queue_drops_the_oldest() {
    let (arrived_tx, arrived_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let released = Arc::new(Mutex::new(None));
    let gate = Gate {
        arrived: arrived_tx,
        release: release_rx,
        released: Arc::clone(&released),
    };
    let rx = Receiver::start_gated(&[200], Some(gate));
    let options = NotifierOptions {
        queue_capacity: 2,
        ..fast()
    };
    let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], options).unwrap();
    notifier.send(event(EventKind::BackupFailed, "first"));
    // The receiver now holds the first delivery.
    arrived_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    for summary in ["second", "third", "fourth"] {
        notifier.send(event(EventKind::BackupFailed, summary));
    }
    // All sends returned while the worker is stuck in the first delivery.
    assert_eq!(notifier.stats()[0].queued, 2);
    assert_eq!(notifier.stats()[0].dropped, 1);
    release_tx.send(()).unwrap();
    notifier.flush(FLUSH);
    assert_eq!(*released.lock(), Some(true));
    let summaries: Vec<_> = rx.requests().iter().map(|r| r.event().summary).collect();
    assert_eq!(summaries, ["first", "third", "fourth"]);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.dropped, stats.queued), (3, 1, 0));
}

#[test]
fn rate_limit_coalesces_a_burst() {
    let rx = Receiver::start(&[200]);
    let options = NotifierOptions {
        rate_limit: RateLimit {
            max_events: 3,
            per: Duration::from_secs(3600),
        },
        ..fast()
    };
    let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], options).unwrap();
    for n in 0..10 {
        let kind = if n == 9 {
            EventKind::Recovered
        } else {
            EventKind::BackupFailed
        };
        notifier.send(event(kind, &format!("event {n}")));
    }
    notifier.flush(FLUSH);
    let events: Vec<_> = rx.requests().iter().map(Request::event).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].summary, "event 0");
    assert_eq!(events[2].summary, "event 2");
    let notice = &events[3];
    assert!(
        notice.summary.starts_with("7 more events suppressed"),
        "{}",
        notice.summary
    );
    assert!(notice.summary.contains("6 backup_failed, 1 recovered"));
    assert_eq!(notice.kind, EventKind::Recovered);
    assert_eq!(notice.job.as_deref(), Some("etc"));
    assert_eq!(notice.details["suppressed"], 7);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.suppressed, stats.failed), (4, 7, 0));
}

#[test]
fn flush_delivers_what_is_queued() {
    let rx = Receiver::start(&[200]);
    let notifier = Notifier::start_with(
        vec![webhook("a", rx.url("/a")), webhook("b", rx.url("/b"))],
        fast(),
    )
    .unwrap();
    for n in 0..20 {
        notifier.send(event(EventKind::Maintenance, &format!("m{n}")));
    }
    notifier.flush(FLUSH);
    assert_eq!(rx.requests().len(), 40);
    for stats in notifier.stats() {
        assert_eq!((stats.sent, stats.queued), (20, 0));
    }
}

#[test]
fn no_channels_is_fine() {
    let notifier = Notifier::start(Vec::new()).unwrap();
    notifier.send(event(EventKind::Test, "test"));
    notifier.flush(Duration::from_secs(1));
    assert!(notifier.stats().is_empty());
}

#[test]
fn command_gets_the_event_on_stdin_and_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("event.json");
    let env = dir.path().join("env");
    let script = format!(
        "cat > '{}'; printf '%s|%s|%s' \"$LIFEBOAT_EVENT\" \"$LIFEBOAT_JOB\" \"$LIFEBOAT_SUMMARY\" > '{}'",
        json.display(),
        env.display()
    );
    let config = ChannelConfig::Command {
        name: "script".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        timeout_secs: None,
        events: None,
        env: BTreeMap::new(),
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    let sent = event(EventKind::MissedSchedule, "job etc missed its 02:00 run");
    notifier.send(sent.clone());
    notifier.flush(FLUSH);
    assert_eq!(notifier.stats()[0].sent, 1);
    let written: Event = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(written, sent);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "missed_schedule|etc|job etc missed its 02:00 run"
    );
}

#[test]
fn a_failing_command_reports_its_stderr_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let script = format!(
        "echo run >> '{}'; echo 'no route' >&2; exit 3",
        count.display()
    );
    let config = ChannelConfig::Command {
        name: "script".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        timeout_secs: None,
        events: None,
        env: BTreeMap::new(),
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    notifier.send(event(EventKind::BackupFailed, "failed"));
    notifier.flush(FLUSH);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (0, 1));
    let error = stats.last_error.as_deref().unwrap();
    assert!(error.contains("no route"), "{error}");
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "run\n");
}

#[test]
fn a_hanging_command_is_killed_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell and a child of it: both must go.
    let script = format!("sleep 600 & echo $$ $! > '{}'; wait", pids.display());
    let config = ChannelConfig::Command {
        name: "hang".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        timeout_secs: Some(1),
        events: None,
        env: BTreeMap::new(),
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    notifier.send(event(EventKind::BackupFailed, "failed"));
    notifier.flush(FLUSH);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (0, 1));
    let error = stats.last_error.as_deref().unwrap();
    assert!(error.contains("killed"), "{error}");
    let pids = std::fs::read_to_string(&pids).unwrap();
    for pid in pids.split_whitespace() {
        // SIGKILL takes effect asynchronously: wait (boundedly) until the process is gone
        // or a zombie waiting for init.
        let gone = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            stat.is_empty() || matches!(state, Some("Z" | "X"))
        };
        let give_up = Instant::now() + Duration::from_secs(20);
        while !gone() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "process {pid} still runs");
    }
}

#[test]
fn config_parses_with_type_tags_and_rejects_unknown_fields() {
    let json = serde_json::json!([
        {"type": "webhook", "name": "hc", "url": "https://hc-ping.com/uuid", "method": "get",
         "url_failure": "https://hc-ping.com/uuid/fail", "events": ["backup_failed", "backup_succeeded"]},
        {"type": "ntfy", "name": "phone", "url": "https://ntfy.sh/topic"},
        {"type": "email", "name": "mail", "server": "smtp.example.com", "security": "tls",
         "from": "Lifeboat <lifeboat@example.com>", "to": ["ops@example.com"]},
        {"type": "command", "name": "script", "argv": ["/usr/local/bin/alert"], "timeout_secs": 5}
    ]);
    let configs: Vec<ChannelConfig> = serde_json::from_value(json).unwrap();
    assert_eq!(configs.len(), 4);
    assert!(matches!(
        &configs[0],
        ChannelConfig::Webhook {
            method: HttpMethod::Get,
            url_failure: Some(_),
            ..
        }
    ));
    assert!(configs[0].wants(EventKind::BackupSucceeded));
    assert!(!configs[0].wants(EventKind::Stale));
    assert!(!configs[1].wants(EventKind::BackupSucceeded));
    assert!(configs[1].wants(EventKind::Stale));
    assert!(matches!(
        &configs[2],
        ChannelConfig::Email {
            security: SmtpSecurity::Tls,
            port: None,
            ..
        }
    ));
    for config in &configs {
        config.validate().unwrap();
    }

    let unknown = serde_json::json!({"type": "ntfy", "name": "n", "url": "https://x", "colour": 1});
    assert!(serde_json::from_value::<ChannelConfig>(unknown).is_err());
    let bad_type = serde_json::json!({"type": "pager", "name": "n"});
    assert!(serde_json::from_value::<ChannelConfig>(bad_type).is_err());
}

#[test]
fn config_parses_from_toml_notify_tables() {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        notify: Vec<ChannelConfig>,
    }
    let text = r#"
        [[notify]]
        type = "email"
        name = "mail"
        server = "smtp.example.com"
        port = 2525
        security = "none"
        from = "lifeboat@example.com"
        to = ["ops@example.com"]
        events = ["backup_failed", "stale"]

        [[notify]]
        type = "webhook"
        name = "hook"
        url = "https://example.com/h"
        method = "GET"
        headers = { Authorization = "Bearer x" }

        [[notify]]
        type = "command"
        name = "script"
        argv = ["/bin/true"]
        timeout_secs = 5
    "#;
    let file: File = toml::from_str(text).unwrap();
    assert_eq!(file.notify.len(), 3);
    assert_eq!(
        file.notify[0],
        ChannelConfig::Email {
            name: "mail".into(),
            server: "smtp.example.com".into(),
            port: Some(2525),
            security: SmtpSecurity::None,
            username: None,
            password_file: None,
            from: "lifeboat@example.com".into(),
            to: vec!["ops@example.com".into()],
            events: Some(vec![EventKind::BackupFailed, EventKind::Stale]),
        }
    );
    assert!(matches!(
        &file.notify[1],
        ChannelConfig::Webhook { method: HttpMethod::Get, headers, .. } if headers.len() == 1
    ));
    assert!(matches!(
        &file.notify[2],
        ChannelConfig::Command {
            timeout_secs: Some(5),
            ..
        }
    ));

    let typo =
        "[[notify]]\ntype = \"ntfy\"\nname = \"n\"\nurl = \"https://x\"\nevent = [\"stale\"]\n";
    let error = toml::from_str::<File>(typo).err().unwrap().to_string();
    assert!(error.contains("event"), "{error}");
    let bad_kind =
        "[[notify]]\ntype = \"ntfy\"\nname = \"n\"\nurl = \"https://x\"\nevents = [\"failed\"]\n";
    assert!(toml::from_str::<File>(bad_kind).is_err());
}

#[test]
fn validation_names_the_channel_and_hides_secrets() {
    let bad_url = webhook("hook", "not a url?token=SECRET".into());
    let error = Notifier::start(vec![bad_url]).unwrap_err().to_string();
    assert!(error.contains("\"hook\""), "{error}");
    assert!(error.contains("url"), "{error}");
    assert!(!error.contains("SECRET"), "{error}");

    let ftp = webhook("hook", "ftp://example.com/x".into());
    assert!(ftp.validate().unwrap_err().to_string().contains("ftp"));

    let empty_argv = ChannelConfig::Command {
        name: "c".into(),
        argv: Vec::new(),
        timeout_secs: None,
        events: None,
        env: BTreeMap::new(),
    };
    assert!(empty_argv
        .validate()
        .unwrap_err()
        .to_string()
        .contains("argv"));

    let twice = vec![
        webhook("same", "https://example.com/a".into()),
        webhook("same", "https://example.com/b".into()),
    ];
    let error = Notifier::start(twice).unwrap_err().to_string();
    assert!(error.contains("same name"), "{error}");

    let no_password = ChannelConfig::Email {
        name: "mail".into(),
        server: "smtp.example.com".into(),
        port: None,
        security: SmtpSecurity::Starttls,
        username: Some("me".into()),
        password_file: Some("/nonexistent/lifeboat-password".into()),
        from: "lifeboat@example.com".into(),
        to: vec!["ops@example.com".into()],
        events: None,
    };
    let error = no_password.validate().unwrap_err().to_string();
    assert!(error.contains("password_file"), "{error}");

    let bad_to = ChannelConfig::Email {
        name: "mail".into(),
        server: "smtp.example.com".into(),
        port: None,
        security: SmtpSecurity::Starttls,
        username: None,
        password_file: None,
        from: "lifeboat@example.com".into(),
        to: vec!["not an address".into()],
        events: None,
    };
    assert!(bad_to.validate().unwrap_err().to_string().contains("to"));

    let mut secret_header = webhook("hook", "https://example.com/p/SECRET?token=SECRET".into());
    if let ChannelConfig::Webhook { headers, .. } = &mut secret_header {
        headers.insert("Authorization".into(), "Bearer SECRET".into());
    }
    let debug = format!("{secret_header:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(debug.contains("https://example.com/…"), "{debug}");
    assert!(debug.contains("Authorization"), "{debug}");
}

/// Speaks just enough SMTP to take one mail; returns the DATA part.
fn fake_smtp() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let _ = writer.write_all(b"220 fake ESMTP\r\n");
        let mut data = String::new();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    let _ = writer.write_all(b"250 queued\r\n");
                } else {
                    data.push_str(&line);
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 fake\r\n",
                "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    let _ = writer.write_all(b"221 bye\r\n");
                    break;
                }
                _ => b"500 what\r\n",
            };
            let _ = writer.write_all(reply);
        }
        let _ = tx.send(data);
    });
    (port, rx)
}

#[test]
fn email_goes_through_smtp() {
    let (port, mail) = fake_smtp();
    let config = ChannelConfig::Email {
        name: "mail".into(),
        server: "127.0.0.1".into(),
        port: Some(port),
        security: SmtpSecurity::None,
        username: None,
        password_file: None,
        from: "Lifeboat <lifeboat@example.com>".into(),
        to: vec!["ops@example.com".into()],
        events: None,
    };
    let notifier = Notifier::start_with(vec![config], fast()).unwrap();
    let mut sent = event(
        EventKind::BackupFailed,
        "backup of job etc failed: disk full",
    );
    sent.host = "db1".into();
    notifier.send(sent);
    notifier.flush(FLUSH);
    let stats = &notifier.stats()[0];
    assert_eq!((stats.sent, stats.failed), (1, 0), "{:?}", stats.last_error);
    let data = mail.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        data.contains("Subject: [lifeboat] db1: backup of job etc failed: disk full"),
        "{data}"
    );
    assert!(data.contains("To: ops@example.com"), "{data}");
    assert!(data.contains("repository unreachable"), "{data}");
}
