//! Repositories in object storage (S3 and S3-compatibles, Google Cloud Storage, Azure Blob
//! Storage) through the `object_store` crate.
//!
//! The engine's storage calls are synchronous and come from its worker threads; each call here
//! runs on a small shared tokio runtime (`block_on`), so uploads and downloads from several
//! workers proceed concurrently. Transient faults (5xx, throttling, timeouts, connection resets
//! and refusals) are retried by `object_store` with exponential backoff and jitter for up to
//! [`CloudOptions::retry_timeout`] per request (the count of retries is no bound in practice: a
//! refused connection fails at once, and ten quick retries would end an outage's wait after a
//! few seconds); other 4xx answers are not retried. A request given up on for such a fault is
//! [`Error::Unreachable`], never damage. Create-only writes use `PutMode::Create`
//! (`If-None-Match: *`); [`CloudStorage::probe_create_only`] checks that the store honours it.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::{FileKind, Storage};
use crate::error::{Error, Result};

/// The runtime that drives every object store request (and the daemon's D-Bus connection,
/// `daemon::inhibit`).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lifeboat-io")
            .enable_all()
            .build()
            // Without a runtime no cloud repository can work; this only fails when the
            // process cannot create threads or an epoll instance at all.
            .unwrap_or_else(|e| panic!("cannot start the I/O runtime: {e}"))
    })
}

/// How long a request keeps going after an interrupt (SIGINT, SIGTERM) was requested: a
/// request in flight usually finishes well within it (a lock removed on the way out), while
/// one retried through an outage is abandoned instead of holding up a clean stop for the
/// whole retry budget.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Runs a request on the runtime until it finishes, or until an interrupt was requested and
/// the request has run for [`INTERRUPT_GRACE`] ([`Error::Interrupted`]). A dropped request is
/// no write: a PUT is stored whole or not at all, and an unfinished multipart upload is no
/// object.
fn wait<T>(request: impl std::future::Future<Output = T>) -> Result<T> {
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if crate::interrupt::requested() && started.elapsed() >= INTERRUPT_GRACE {
                    return;
                }
            }
        };
        futures_util::pin_mut!(request, watch);
        match futures_util::future::select(request, watch).await {
            futures_util::future::Either::Left((done, _)) => Ok(done),
            futures_util::future::Either::Right(_) => Err(Error::Interrupted),
        }
    })
}

/// Objects larger than this are uploaded in parts (packs of the default 16 MiB go in one PUT,
/// which costs fewer requests).
pub const MULTIPART_THRESHOLD: usize = 32 << 20;
/// Size of one part of a multipart upload.
const MULTIPART_PART: usize = 16 << 20;

/// Which cloud a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// A parsed repository URL: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUrl {
    pub cloud: Cloud,
    pub bucket: String,
    pub prefix: String,
}

impl CloudUrl {
    /// Parses a URL; `Ok(None)` when it is not a cloud URL.
    pub fn parse(url: &str) -> Result<Option<Self>> {
        let (scheme, rest) = match url.split_once("://") {
            Some(x) => x,
            None => return Ok(None),
        };
        let cloud = match scheme {
            "s3" => Cloud::S3,
            "gs" | "gcs" => Cloud::Gcs,
            "az" | "azure" => Cloud::Azure,
            "file" => return Ok(None),
            other => {
                return Err(Error::Invalid(format!(
                    "repository URL {url:?}: unknown scheme {other:?} (use a path, file://, s3://, gs:// or az://)"
                )))
            }
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!(
                "repository URL {url:?} names no bucket or container"
            )));
        }
        Ok(Some(CloudUrl {
            cloud,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }))
    }
}

/// Settings of the HTTP client and retries.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// `object_store` configuration keys and values (`endpoint`, `region`, `allow_http`,
    /// `virtual_hosted_style_request`, ...), on top of the cloud's standard environment.
    pub options: HashMap<String, String>,
    /// Maximum retries of one request: a guard only, far above what `retry_timeout` allows
    /// with backoffs of up to 15 s.
    pub max_retries: usize,
    /// Bound on the total time spent retrying one request (the repository option
    /// `retry_timeout`): how long an outage is waited out.
    pub retry_timeout: Duration,
    /// Bound on one request attempt.
    pub request_timeout: Duration,
}

impl Default for CloudOptions {
    fn default() -> Self {
        CloudOptions {
            options: HashMap::new(),
            max_retries: 1000,
            retry_timeout: super::DEFAULT_RETRY_TIMEOUT,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// A repository under a prefix of a bucket or container.
#[derive(Debug)]
pub struct CloudStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// How long each request is retried (for messages).
    retry_timeout: Duration,
}

/// An `io::Error` carrying the whole cause chain as text (the object store's own messages
/// are short; the cause says what happened on the wire).
fn io_other(e: impl std::error::Error) -> io::Error {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    io::Error::other(msg)
}

/// TLS uses rustls with the ring provider (see Cargo.toml), installed once per process.
fn install_tls_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Fails only if another provider was installed first, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl CloudStorage {
    /// Builds the store for `url` with the cloud's environment and `opts`.
    pub fn new(url: &CloudUrl, display: &str, opts: &CloudOptions) -> Result<Self> {
        install_tls_provider();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: opts.max_retries,
            retry_timeout: opts.retry_timeout,
        };
        // Timeouts go in as configuration keys: replacing the builder's client options would
        // drop what it read from the environment (AWS_ALLOW_HTTP, proxies, ...).
        let timeout = format!("{}s", opts.request_timeout.as_secs().max(1));
        let client_keys = [
            (ClientConfigKey::Timeout, timeout.as_str()),
            (ClientConfigKey::ConnectTimeout, "15s"),
        ];
        let bad = |e: object_store::Error| Error::Invalid(format!("repository {display}: {e}"));
        // The three builders share their shape: the cloud's environment, the bucket, retries,
        // timeouts as client keys, then the operator's options by configuration key name.
        // Then, before anything is built, whether any credential source is configured: without
        // one the client would ask the cloud's instance metadata service, which off a cloud
        // machine ends in a 403 or a timeout that says nothing about credentials.
        let mut instance = false;
        macro_rules! build {
            ($builder:expr, $key:ty, $configured:path) => {{
                let mut b = $builder.with_retry(retry);
                for (k, v) in client_keys {
                    b = b.with_config(<$key>::Client(k), v);
                }
                for (k, v) in &opts.options {
                    if k == INSTANCE_CREDENTIALS_OPTION {
                        instance = parse_bool(v).ok_or_else(|| {
                            Error::Invalid(format!(
                                "storage option {INSTANCE_CREDENTIALS_OPTION}: {v:?} is not \
                                 true or false"
                            ))
                        })?;
                        continue;
                    }
                    let key: $key = k
                        .parse()
                        .map_err(|e| Error::Invalid(format!("storage option {k:?}: {e}")))?;
                    b = b.with_config(key, v);
                }
                if !instance && !$configured(&b) {
                    return Err(no_credentials(url.cloud, display));
                }
                Arc::new(b.build().map_err(bad)?) as Arc<dyn ObjectStore>
            }};
        }
        let store = match url.cloud {
            Cloud::S3 => build!(
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&url.bucket),
                object_store::aws::AmazonS3ConfigKey,
                s3_credentials_configured
            ),
            Cloud::Gcs => build!(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&url.bucket),
                object_store::gcp::GoogleConfigKey,
                gcs_credentials_configured
            ),
            Cloud::Azure => build!(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&url.bucket),
                object_store::azure::AzureConfigKey,
                azure_credentials_configured
            ),
        };
        Ok(CloudStorage {
            store,
            prefix: url.prefix.clone(),
            url: display.to_string(),
            retry_timeout: opts.retry_timeout,
        })
    }

    fn path(&self, kind: FileKind, name: &str) -> ObjectPath {
        let rel = kind.path(name);
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn dir(&self, kind: FileKind) -> ObjectPath {
        match (self.prefix.is_empty(), kind.dir()) {
            (true, d) => ObjectPath::from(d),
            (false, "") => ObjectPath::from(self.prefix.as_str()),
            (false, d) => ObjectPath::from(format!("{}/{d}", self.prefix)),
        }
    }

    fn err(&self, op: &'static str, kind: FileKind, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                name: kind.path(name),
            },
            other => self.fail(
                op,
                format!("{}/{}", self.url.trim_end_matches('/'), kind.path(name)),
                other,
            ),
        }
    }

    /// The error of a request on `name` that failed with `e`: [`Error::Unreachable`] when the
    /// storage could not be reached for the whole retry budget, else [`Error::Storage`].
    fn fail(&self, op: &'static str, name: String, e: object_store::Error) -> Error {
        if unreachable(&e) {
            Error::Unreachable {
                op,
                name,
                cause: io_other(e),
                budget: self.retry_timeout,
            }
        } else {
            Error::Storage {
                op,
                name,
                cause: io_other(e),
            }
        }
    }
}

/// The storage option (lifeboat's own, not passed to the cloud client) that lets the cloud
/// client take credentials from the machine's instance metadata service (an EC2 instance role,
/// a GCE service account, an Azure managed identity) when no other source is configured.
pub const INSTANCE_CREDENTIALS_OPTION: &str = "instance_credentials";

/// A boolean as `object_store` reads one (`true`, `1`, `yes`, `on`, `y` and their opposites).
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" => Some(true),
        "0" | "false" | "off" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// Whether a builder's setting is there and not empty.
fn set(v: Option<String>) -> bool {
    v.is_some_and(|v| !v.is_empty())
}

/// Whether a builder's boolean setting is true.
fn on(v: Option<String>) -> bool {
    v.as_deref().and_then(parse_bool).unwrap_or(false)
}

/// Whether an S3 builder has a credential source other than the instance metadata service:
/// keys (a half-given pair is `object_store`'s own error), a web identity token with its role,
/// container credentials (ECS, EKS pod identity), or unsigned requests (`skip_signature`).
fn s3_credentials_configured(b: &object_store::aws::AmazonS3Builder) -> bool {
    use object_store::aws::AmazonS3ConfigKey as K;
    let get = |k: K| b.get_config_value(&k);
    set(get(K::AccessKeyId))
        || set(get(K::SecretAccessKey))
        || (set(get(K::WebIdentityTokenFile)) && set(get(K::RoleArn)))
        || set(get(K::ContainerCredentialsRelativeUri))
        || (set(get(K::ContainerCredentialsFullUri))
            && set(get(K::ContainerAuthorizationTokenFile)))
        || on(get(K::SkipSignature))
}

/// Whether a GCS builder has a credential source other than the metadata server: a service
/// account file or key, an application credentials file (named, or gcloud's application
/// default credentials in `~/.config/gcloud`), a bearer token, or unsigned requests.
fn gcs_credentials_configured(b: &object_store::gcp::GoogleCloudStorageBuilder) -> bool {
    use object_store::gcp::GoogleConfigKey as K;
    let get = |k: K| b.get_config_value(&k);
    set(get(K::ServiceAccount))
        || set(get(K::ServiceAccountKey))
        || set(get(K::ApplicationCredentials))
        || set(get(K::BearerToken))
        || on(get(K::SkipSignature))
        || std::env::var_os("HOME").is_some_and(|h| {
            std::path::Path::new(&h)
                .join(".config/gcloud/application_default_credentials.json")
                .exists()
        })
}

/// Whether an Azure builder has a credential source other than the instance metadata service:
/// the emulator, an account key, a SAS, a bearer token, a service principal (secret or
/// federated token), the Azure CLI, a credential type chosen explicitly
/// (`credential_type=managed_identity` is a choice of the metadata service), Fabric tokens, or
/// unsigned requests. A managed identity endpoint alone (`IDENTITY_ENDPOINT`, `msi_endpoint`)
/// is not: it only says where the metadata service is.
fn azure_credentials_configured(b: &object_store::azure::MicrosoftAzureBuilder) -> bool {
    use object_store::azure::AzureConfigKey as K;
    let get = |k: K| b.get_config_value(&k);
    let client = set(get(K::ClientId)) && set(get(K::AuthorityId));
    on(get(K::UseEmulator))
        || set(get(K::AccessKey))
        || set(get(K::SasKey))
        || set(get(K::Token))
        || (client && (set(get(K::ClientSecret)) || set(get(K::FederatedTokenFile))))
        || on(get(K::UseAzureCli))
        || get(K::CredentialType).is_some_and(|t| !t.is_empty() && t != "auto")
        || set(get(K::FabricTokenServiceUrl))
        || on(get(K::SkipSignature))
}

/// What a recovery kit says about reaching a repository's storage ([`kit_settings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitSettings {
    /// Settings that are no secret, as `--option KEY=VALUE` takes them, sorted: those given
    /// (`--option`, a repository's `options`), then those of the cloud's environment
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...) that were not given.
    pub options: Vec<(String, String)>,
    /// The variables to set for the secrets that were given (as options or in the
    /// environment): names only, never values.
    pub secrets: Vec<String>,
    /// The cloud's credential variables, as an operator sets them (`None` for a local
    /// repository).
    pub credentials: Option<&'static str>,
}

/// Whether a storage option's canonical name (`aws_secret_access_key`) names a secret; paths of
/// credential files count too (the kit names the variable, the file is not with it).
fn is_secret(canonical: &str) -> bool {
    ["secret", "token", "key", "password", "sas", "credential"]
        .iter()
        .any(|w| canonical.contains(w))
}

/// The settings a recovery kit prints for the repository at `location` opened with `given`
/// (`--option` pairs; lifeboat's own, `retry_timeout` and `instance_credentials`, pass as
/// they are). Reads the cloud's environment, as opening it does.
pub fn kit_settings(location: &str, given: &[(String, String)]) -> Result<KitSettings> {
    let Some(url) = CloudUrl::parse(location)? else {
        let mut options = given.to_vec();
        options.sort();
        return Ok(KitSettings {
            options,
            ..KitSettings::default()
        });
    };
    /// Sorts `(key, value)` settings of one cloud into `out`: `short` is the name `--option`
    /// shows, `canonical` the configuration key's own (upper case: its variable).
    macro_rules! sort_out {
        ($key:ty, $prefixes:expr, $env_prefix:expr, $credentials:expr) => {{
            let name = |k: &str| -> Option<(String, String)> {
                let key: $key = k.parse().ok()?;
                let canonical = key.as_ref().to_string();
                let short = $prefixes
                    .iter()
                    .find_map(|p: &&str| canonical.strip_prefix(*p))
                    .filter(|s| s.parse::<$key>().ok() == Some(key))
                    .unwrap_or(&canonical)
                    .to_string();
                Some((short, canonical))
            };
            let mut out = KitSettings {
                credentials: Some($credentials),
                ..KitSettings::default()
            };
            let mut seen = std::collections::HashSet::new();
            for (k, v) in given {
                match name(k) {
                    Some((_, canonical)) if is_secret(&canonical) => {
                        seen.insert(canonical.clone());
                        out.secrets.push(canonical.to_ascii_uppercase());
                    }
                    Some((short, canonical)) => {
                        seen.insert(canonical);
                        out.options.push((short, v.clone()));
                    }
                    None => out.options.push((k.clone(), v.clone())),
                }
            }
            let mut env: Vec<(String, String)> = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with($env_prefix))
                .collect();
            env.sort();
            for (var, v) in env {
                let Some((short, canonical)) = name(&var.to_ascii_lowercase()) else {
                    continue;
                };
                if !seen.insert(canonical.clone()) {
                    continue;
                }
                if is_secret(&canonical) {
                    out.secrets.push(var);
                } else {
                    out.options.push((short, v));
                }
            }
            out.options.sort();
            out.secrets.sort();
            out.secrets.dedup();
            out
        }};
    }
    Ok(match url.cloud {
        Cloud::S3 => sort_out!(
            object_store::aws::AmazonS3ConfigKey,
            ["aws_"],
            "AWS_",
            "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...  (and AWS_SESSION_TOKEN=... \
             with temporary credentials)"
        ),
        Cloud::Gcs => sort_out!(
            object_store::gcp::GoogleConfigKey,
            ["google_"],
            "GOOGLE_",
            "export GOOGLE_SERVICE_ACCOUNT=/path/to/service-account-key.json  (or \
             GOOGLE_APPLICATION_CREDENTIALS=...)"
        ),
        Cloud::Azure => sort_out!(
            object_store::azure::AzureConfigKey,
            ["azure_storage_", "azure_"],
            "AZURE_",
            "export AZURE_STORAGE_ACCOUNT_NAME=... AZURE_STORAGE_ACCOUNT_KEY=...  (or a SAS in \
             AZURE_STORAGE_SAS_KEY=...)"
        ),
    })
}

/// The error of a cloud repository opened with no credential source: what to set, for this
/// cloud; nothing was sent anywhere.
fn no_credentials(cloud: Cloud, display: &str) -> Error {
    let (what, set) = match cloud {
        Cloud::S3 => (
            "S3",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN with \
             temporary credentials), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (the AWS \
             CLI's ~/.aws/credentials and AWS_PROFILE are not read)",
        ),
        Cloud::Gcs => (
            "Google Cloud Storage",
            "set GOOGLE_SERVICE_ACCOUNT (the path of a service account's JSON key file) or \
             GOOGLE_APPLICATION_CREDENTIALS",
        ),
        Cloud::Azure => (
            "Azure",
            "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, or with a SAS in \
             AZURE_STORAGE_SAS_KEY, or a service principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, \
             AZURE_CLIENT_SECRET)",
        ),
    };
    let instance = match cloud {
        Cloud::S3 => "an EC2 instance role",
        Cloud::Gcs => "the service account of a GCE machine",
        Cloud::Azure => "the managed identity of an Azure machine",
    };
    Error::Invalid(format!(
        "repository {display}: no {what} credentials are configured (nothing was sent): {set}; \
         to use {instance} from the instance metadata service, add --option \
         {INSTANCE_CREDENTIALS_OPTION}=true ({INSTANCE_CREDENTIALS_OPTION} = true in the \
         repository's options in the daemon's config)"
    ))
}

/// Whether `object_store` gave up on a request because the storage could not be reached: a
/// transport failure (no connection, the request not sent, a timeout, the connection dropped)
/// or an answer meaning "not now" (5xx, 429 Too Many Requests, 408 Request Timeout, or an
/// error document in a 200 answer), after its retries. Not: 4xx answers, undecodable answers.
fn unreachable(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    for c in causes(e) {
        if let Some(http) = c.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        // object_store 0.14 keeps its retry error type private, so a status is read from its
        // message ("Server returned non-2xx status code: 503 Service Unavailable: ...");
        // `storage_faults` pins this against a fake endpoint.
        let text = c.to_string();
        if text.contains("Server returned error response") {
            return true;
        }
        if let Some(status) = status_in(&text) {
            return status >= 500 || status == 429 || status == 408;
        }
    }
    false
}

/// The causes of an `object_store` request error, outermost first (none but for `Generic`,
/// the variant of failed requests).
fn causes(e: &object_store::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    let first: Option<&(dyn std::error::Error + 'static)> = match e {
        object_store::Error::Generic { source, .. } => Some(source.as_ref()),
        _ => None,
    };
    std::iter::successors(first, |c| c.source())
}

/// Whether `object_store` failed a request on the wire after it began sending it (the
/// connection reset or broken, or the request timing out), which it retries only for requests
/// it takes for idempotent: the retryable kind of I/O error it amounts to.
fn cut_off(e: &object_store::Error) -> Option<io::ErrorKind> {
    use object_store::client::{HttpError, HttpErrorKind};
    let http = causes(e).find_map(|c| c.downcast_ref::<HttpError>())?;
    match http.kind() {
        HttpErrorKind::Interrupted => Some(io::ErrorKind::ConnectionReset),
        HttpErrorKind::Timeout => Some(io::ErrorKind::TimedOut),
        _ => None,
    }
}

/// The HTTP status of an `object_store` request error's message, if it names one.
fn status_in(message: &str) -> Option<u16> {
    let (_, rest) = message.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

impl Storage for CloudStorage {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn remote(&self) -> bool {
        true
    }

    fn create_layout(&self) -> Result<()> {
        // Object stores have no directories; the location only has to be empty.
        let prefix = if self.prefix.is_empty() {
            None
        } else {
            Some(ObjectPath::from(self.prefix.as_str()))
        };
        let first = wait(async { self.store.list(prefix.as_ref()).try_next().await })?;
        match first {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Error::RepositoryExists {
                location: self.url.clone(),
                reason: "the location already holds objects".into(),
            }),
            Err(e) => Err(self.fail("list", self.url.clone(), e)),
        }
    }

    fn has_config(&self) -> Result<bool> {
        let p = self.path(FileKind::Config, "config");
        match wait(self.store.head(&p))? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("inspect", FileKind::Config, "config", e)),
        }
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        wait(async { self.store.get(&p).await?.bytes().await })?
            // No copy when, as usual, the body was collected into one buffer that nothing else
            // holds (`Vec::from` copies only a shared or offset buffer).
            .map(Vec::from)
            .map_err(|e| self.err("read", kind, name, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        let range = offset..offset + u64::from(len);
        let bytes = wait(self.store.get_range(&p, range))?.map_err(|e| {
            // 416 Range Not Satisfiable: the object ends before the range starts.
            if matches!(&e, object_store::Error::Generic { source, .. }
                    if status_in(&source.to_string()) == Some(416))
            {
                return Error::Storage {
                    op: "read range of",
                    name: kind.path(name),
                    cause: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object ends before the range asked for (truncated)",
                    ),
                };
            }
            self.err("read range of", kind, name, e)
        })?;
        if bytes.len() != len as usize {
            return Err(Error::Storage {
                op: "read range of",
                name: kind.path(name),
                cause: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object is shorter than expected",
                ),
            });
        }
        Ok(Vec::from(bytes))
    }

    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.create_owned(kind, name, bytes::Bytes::copy_from_slice(data))
    }

    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        let p = self.path(kind, name);
        if data.len() > MULTIPART_THRESHOLD {
            // Multipart uploads cannot be conditional everywhere: look first. Objects this
            // large are packs, named by the hash of their content, so a concurrent writer of
            // the same name writes the same bytes.
            match wait(self.store.head(&p))? {
                Ok(_) => return Ok(false),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("inspect", kind, name, e)),
            }
            let result = wait(async {
                let upload = self.store.put_multipart(&p).await?;
                let mut w =
                    object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
                w.put(data);
                w.finish().await
            })?;
            return result
                .map(|_| true)
                .map_err(|e| self.err("write", kind, name, e));
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(data);
        match wait(self.store.put_opts(&p, payload, opts))? {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            // The client does not retry a create-only upload cut off on the wire (a connection
            // reset or a timeout while the body was going out): it is not idempotent in its
            // eyes. It is here: `RetryingStorage` tries again, and a first attempt that did
            // land makes the next one find the object (`Ok(false)`, same name, same bytes).
            Err(e) => match cut_off(&e) {
                Some(io_kind) => Err(Error::Storage {
                    op: "write",
                    name: format!("{}/{}", self.url.trim_end_matches('/'), kind.path(name)),
                    cause: io::Error::new(io_kind, io_other(e)),
                }),
                None => Err(self.err("write", kind, name, e)),
            },
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let dir = self.dir(kind);
        let metas: Vec<object_store::ObjectMeta> = wait(self.store.list(Some(&dir)).try_collect())?
            .map_err(|e| {
                self.fail(
                    "list",
                    format!("{}/{}", self.url.trim_end_matches('/'), kind.dir()),
                    e,
                )
            })?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let Some(name) = m.location.filename() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if kind == FileKind::Config && name != "config" {
                continue;
            }
            out.push((name.to_string(), m.size));
        }
        out.sort();
        Ok(out)
    }

    fn probe_create_only(&self) -> Result<bool> {
        let name = format!("probe-{:016x}", rand::random::<u64>());
        let first = self.create(FileKind::Lock, &name, b"create-only probe")?;
        let second = self.create(FileKind::Lock, &name, b"create-only probe, second write");
        self.remove(FileKind::Lock, &name)?;
        Ok(first && matches!(second, Ok(false)))
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let p = self.path(kind, name);
        match wait(self.store.head(&p))? {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Err(crate::error::Error::NotFound {
                name: kind.path(name),
            }),
            Err(e) => Err(self.err("inspect", kind, name, e)),
        }
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.path(kind, name);
        match wait(self.store.delete(&p))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("remove", kind, name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kit's settings: options given by any of their names are shown by their short name,
    /// secrets given as options only as the variable to set (never the value), lifeboat's own
    /// options as given; a local repository keeps its options and needs no credentials.
    #[test]
    fn kit_settings_show_options_and_name_secrets() {
        let given: Vec<(String, String)> = [
            ("aws_endpoint", "https://minio.example.net:9000"),
            ("virtual_hosted_style_request", "false"),
            ("token", "very-secret-session"),
            ("secret_access_key", "very-secret-key"),
            ("retry_timeout", "10m"),
            ("instance_credentials", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let k = kit_settings("s3://bucket/prefix", &given).expect("settings");
        for want in [
            ("endpoint", "https://minio.example.net:9000"),
            ("virtual_hosted_style_request", "false"),
            ("retry_timeout", "10m"),
            ("instance_credentials", "true"),
        ] {
            assert!(
                k.options
                    .contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?}: {k:?}"
            );
        }
        assert!(
            k.secrets.contains(&"AWS_SESSION_TOKEN".to_string())
                && k.secrets.contains(&"AWS_SECRET_ACCESS_KEY".to_string()),
            "{k:?}"
        );
        assert!(!format!("{k:?}").contains("very-secret"), "{k:?}");
        assert!(k
            .credentials
            .is_some_and(|c| c.contains("AWS_ACCESS_KEY_ID")));

        let az: Vec<(String, String)> = vec![
            ("azure_storage_account_key".into(), "c2VjcmV0".into()),
            ("account_name".into(), "acct".into()),
        ];
        let k = kit_settings("az://c/p", &az).expect("settings");
        assert!(
            k.options.contains(&("account_name".into(), "acct".into())),
            "{k:?}"
        );
        assert!(
            k.secrets.contains(&"AZURE_STORAGE_ACCOUNT_KEY".to_string()),
            "{k:?}"
        );

        let local = kit_settings("/srv/repo", &given[4..5]).expect("local");
        assert_eq!(local.options, vec![("retry_timeout".into(), "10m".into())]);
        assert!(local.credentials.is_none() && local.secrets.is_empty());
    }

    #[test]
    fn urls() {
        let u = CloudUrl::parse("s3://bucket/some/prefix/")
            .expect("ok")
            .expect("cloud");
        assert_eq!(
            u,
            CloudUrl {
                cloud: Cloud::S3,
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        let u = CloudUrl::parse("az://c").expect("ok").expect("cloud");
        assert_eq!((u.cloud, u.prefix.as_str()), (Cloud::Azure, ""));
        assert_eq!(
            CloudUrl::parse("gs://b/p")
                .expect("ok")
                .expect("cloud")
                .cloud,
            Cloud::Gcs
        );
        assert!(CloudUrl::parse("/srv/repo").expect("ok").is_none());
        assert!(CloudUrl::parse("file:///srv/repo").expect("ok").is_none());
        assert!(CloudUrl::parse("ftp://x/y").is_err());
        assert!(CloudUrl::parse("s3:///p").is_err());
    }
}
