//! The channels' configuration (`[[notify]]` tables) and its checks.

use super::*;

/// HTTP method of a webhook channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// POST the event as a JSON body.
    #[default]
    #[serde(alias = "POST")]
    Post,
    /// A plain GET without a body (a ping).
    #[serde(alias = "GET")]
    Get,
}

/// How an email channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (default port 465).
    Tls,
    /// No encryption at all (default port 25): only for a relay on the same machine or network.
    None,
}

/// Where notifications go: one `[[notify]]` table of the daemon's configuration.
///
/// `events` lists the kinds a channel receives; without it a channel receives everything except
/// `backup_succeeded` (a `backup_partial`, a snapshot without some unreadable files, included). Test events ([`EventKind::Test`]) go to every channel whatever its list.
///
/// `Debug` shows URLs as scheme and host only and header names without values, so a
/// configuration can be logged without its secrets.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// POST a JSON body (the Event) to `url`; or, with `method = "get"`, a plain GET ping
    /// (healthchecks.io, Uptime Kuma push URLs). `url_failure` (optional) is used instead of
    /// `url` for failure-type events (healthchecks.io uses <url>/fail). Optional `headers`.
    Webhook {
        name: String,
        url: String,
        #[serde(default)]
        method: HttpMethod,
        #[serde(default)]
        url_failure: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// ntfy-style plain text POST: body is the summary line, with Title/Priority/Tags headers.
    /// (An access token can go in the URL as ntfy's `?auth=` parameter.)
    Ntfy {
        name: String,
        url: String,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// Email over SMTP. `password_file` holds the password (a trailing newline is ignored); it
    /// is read at each delivery, so it can be rotated without a restart.
    Email {
        name: String,
        server: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        security: SmtpSecurity,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
        from: String,
        to: Vec<String>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// Run a command (argv, no shell) with the Event as JSON on stdin and LIFEBOAT_EVENT,
    /// LIFEBOAT_JOB, LIFEBOAT_SUMMARY (and LIFEBOAT_HOST) in the environment; bounded by a
    /// timeout (default 30 s), after which its whole process group is stopped. A command that
    /// fails is not run again. It starts from a clean environment (see [`crate::daemon::child`]) plus
    /// `env`.
    Command {
        name: String,
        argv: Vec<String>,
        #[serde(default)]
        timeout_secs: Option<u64>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
        /// Variables added to its environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
}

impl ChannelConfig {
    /// The channel's name (unique among the channels).
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Webhook { name, .. }
            | ChannelConfig::Ntfy { name, .. }
            | ChannelConfig::Email { name, .. }
            | ChannelConfig::Command { name, .. } => name,
        }
    }

    /// The channel's type as written in the configuration (`webhook`, `ntfy`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook { .. } => "webhook",
            ChannelConfig::Ntfy { .. } => "ntfy",
            ChannelConfig::Email { .. } => "email",
            ChannelConfig::Command { .. } => "command",
        }
    }

    pub(super) fn events(&self) -> Option<&[EventKind]> {
        match self {
            ChannelConfig::Webhook { events, .. }
            | ChannelConfig::Ntfy { events, .. }
            | ChannelConfig::Email { events, .. }
            | ChannelConfig::Command { events, .. } => events.as_deref(),
        }
    }

    /// Whether the channel receives events of this kind.
    pub fn wants(&self, kind: EventKind) -> bool {
        wants(self.events(), kind)
    }

    /// Checks the channel on its own: URLs parse, headers are valid, addresses parse, the
    /// password file is readable, argv is not empty, ... (Name uniqueness is checked by
    /// [`Notifier::start`].) Error texts never contain URLs or secrets.
    pub fn validate(&self) -> Result<(), NotifyError> {
        self.prepare().map(|_| ())
    }

    /// Validates and turns the configuration into what the worker uses.
    pub(super) fn prepare(&self) -> Result<Sink, NotifyError> {
        let name = self.name();
        let invalid = |reason: String| NotifyError::InvalidChannel {
            channel: name.to_string(),
            reason,
        };
        if name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        match self {
            ChannelConfig::Webhook {
                url,
                method,
                url_failure,
                headers,
                ..
            } => {
                let url = parse_http_url(url).map_err(|e| invalid(format!("url: {e}")))?;
                let url_failure = url_failure
                    .as_deref()
                    .map(parse_http_url)
                    .transpose()
                    .map_err(|e| invalid(format!("url_failure: {e}")))?;
                let mut header_map = reqwest::header::HeaderMap::new();
                for (key, value) in headers {
                    let key = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|_| invalid(format!("headers: {key:?} is not a valid name")))?;
                    // The value may be a secret (Authorization): not in the message.
                    let mut value =
                        reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                            invalid(format!(
                                "headers: the value of {key} is not a valid header value"
                            ))
                        })?;
                    value.set_sensitive(true);
                    header_map.insert(key, value);
                }
                Ok(Sink::Webhook {
                    method: *method,
                    url,
                    url_failure,
                    headers: header_map,
                    client: http_client().map_err(invalid)?,
                })
            }
            ChannelConfig::Ntfy { url, .. } => {
                let url = parse_http_url(url).map_err(|e| invalid(format!("url: {e}")))?;
                Ok(Sink::Ntfy {
                    url,
                    client: http_client().map_err(invalid)?,
                })
            }
            ChannelConfig::Email {
                server,
                port,
                security,
                username,
                password_file,
                from,
                to,
                ..
            } => {
                if server.trim().is_empty() {
                    return Err(invalid("server is empty".into()));
                }
                if *port == Some(0) {
                    return Err(invalid("port 0 is not a port".into()));
                }
                let from: lettre::message::Mailbox = from
                    .parse()
                    .map_err(|e| invalid(format!("from {from:?} is not a mail address: {e}")))?;
                if to.is_empty() {
                    return Err(invalid("to lists no recipient".into()));
                }
                let to = to
                    .iter()
                    .map(|addr| {
                        addr.parse::<lettre::message::Mailbox>().map_err(|e| {
                            invalid(format!("to: {addr:?} is not a mail address: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match (username, password_file) {
                    (Some(_), Some(path)) => {
                        read_password(path).map_err(invalid)?;
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(invalid("username is set but password_file is not".into()))
                    }
                    (None, Some(_)) => {
                        return Err(invalid("password_file is set but username is not".into()))
                    }
                }
                let sink = EmailSink {
                    server: server.clone(),
                    port: *port,
                    security: *security,
                    username: username.clone(),
                    password_file: password_file.clone(),
                    from,
                    to,
                };
                // Builds the TLS parameters once, so a bad server name shows now.
                sink.transport(None, Duration::from_secs(30))
                    .map_err(|e| invalid(format!("server {server:?}: {e}")))?;
                Ok(Sink::Email(Box::new(sink)))
            }
            ChannelConfig::Command {
                argv,
                timeout_secs,
                env,
                ..
            } => {
                for key in env.keys() {
                    crate::daemon::child::check_env_name(key).map_err(invalid)?;
                }
                match argv.first() {
                    None => return Err(invalid("argv is empty".into())),
                    Some(program) if program.is_empty() => {
                        return Err(invalid("argv[0] (the program) is empty".into()))
                    }
                    Some(_) => {}
                }
                if *timeout_secs == Some(0) {
                    return Err(invalid("timeout_secs must be at least 1".into()));
                }
                Ok(Sink::Command {
                    argv: argv.clone(),
                    timeout: timeout_secs.map(Duration::from_secs),
                    env: env.clone(),
                })
            }
        }
    }
}

pub(super) fn wants(events: Option<&[EventKind]>, kind: EventKind) -> bool {
    kind == EventKind::Test
        || match events {
            Some(list) => list.contains(&kind),
            None => kind != EventKind::BackupSucceeded,
        }
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelConfig::Webhook {
                name,
                url,
                method,
                url_failure,
                headers,
                events,
            } => f
                .debug_struct("Webhook")
                .field("name", name)
                .field("url", &RedactedUrl(url))
                .field("method", method)
                .field("url_failure", &url_failure.as_deref().map(RedactedUrl))
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("events", events)
                .finish(),
            ChannelConfig::Ntfy { name, url, events } => f
                .debug_struct("Ntfy")
                .field("name", name)
                .field("url", &RedactedUrl(url))
                .field("events", events)
                .finish(),
            ChannelConfig::Email {
                name,
                server,
                port,
                security,
                username,
                password_file,
                from,
                to,
                events,
            } => f
                .debug_struct("Email")
                .field("name", name)
                .field("server", server)
                .field("port", port)
                .field("security", security)
                .field("username", username)
                .field("password_file", password_file)
                .field("from", from)
                .field("to", to)
                .field("events", events)
                .finish(),
            ChannelConfig::Command {
                name,
                argv,
                timeout_secs,
                events,
                env,
            } => f
                .debug_struct("Command")
                .field("name", name)
                .field("argv", argv)
                .field("timeout_secs", timeout_secs)
                .field("events", events)
                // Names only: values may be tokens.
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// A URL shown as scheme and host only.
pub(super) struct RedactedUrl<'a>(&'a str);

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::Url::parse(self.0) {
            Ok(url) => write!(f, "\"{}\"", redact_url(&url)),
            Err(_) => f.write_str("\"<not a URL>\""),
        }
    }
}

/// `scheme://host[:port]/…`: what of a URL can be logged (paths and queries hold tokens).
pub(super) fn redact_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() {
        out.push_str("/…");
    }
    out
}

pub(super) fn parse_http_url(text: &str) -> Result<reqwest::Url, String> {
    // The parse error never includes the input, which may hold a token.
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

pub(super) fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading password_file {}: {e}", path.display()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("password_file {} is empty", path.display()));
    }
    Ok(password.to_string())
}
