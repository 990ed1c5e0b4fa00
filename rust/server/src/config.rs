//! The server's configuration file.
//!
//! One YAML mapping holding the module's own keys (`ttl`, `capacity`, `store`, `redis`,
//! `rate_limit`...: everything `Config::from_json` reads, with the same defaults, ranges and
//! errors, so that a `config:` block copied from `homeserver.yaml` means the same here) and a
//! few keys only a process of its own needs (`listen`, `public_base_url`, `metrics_listen`,
//! timeouts, logging). The server keys are taken out first and the rest goes to the core
//! untouched, so there is one definition of every shared key, in the core.
//!
//! YAML is read with `serde_norway`, the maintained fork of `serde_yaml` (archived by its
//! author in 2024): the same YAML 1.2 reading, a recent `rust-version`, and a serde
//! deserializer, so the file becomes a `serde_json::Value`, which is what the core parses.
//! (`serde_yml` is deprecated and had soundness advisories; `serde-saphyr` needs a newer
//! Rust than this workspace's.)

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use synapse_rendezvous_core::{parse_duration, Config, ConfigError, StoreConfig};

/// Where the server listens when `listen` is not given: loopback only, behind a proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Every key this file adds to the module's.
pub const SERVER_KEYS: [&str; 11] = [
    "listen",
    "public_base_url",
    "metrics_listen",
    "drain_timeout",
    "request_timeout",
    "max_connections",
    "max_header_bytes",
    "worker_threads",
    "log_format",
    "log_level",
    "redis_tls",
];

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO message key=value`, for people and journald.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// TLS files for a `rediss://` Redis (PEM). Without them the server verifies Redis against
/// the system's trust store and presents no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Trust anchors to verify Redis's certificate against, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (chain) to present.
    pub certificate: Option<PathBuf>,
    /// Its private key.
    pub private_key: Option<PathBuf>,
}

/// Everything the configuration file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The rendezvous settings, as the module reads them.
    pub core: Config,
    /// The client-facing listeners.
    pub listen: Vec<SocketAddr>,
    /// What clients reach this server as, ending in `/`; session URLs are built from it.
    pub public_base_url: String,
    /// Where `/metrics` (and `/health`) are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The longest in-flight requests are waited for after `SIGTERM`.
    pub drain_timeout: Duration,
    /// The longest a request may take to arrive: its headers (counted from the end of the
    /// previous request on a kept-alive connection) and then its body.
    pub request_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes.
    pub max_header_bytes: usize,
    /// Threads serving requests; `None` for one per CPU. Fewer than the CPUs leaves room
    /// for what shares the machine (Redis, a proxy): every thread handing work to another
    /// costs a wake-up.
    pub worker_threads: Option<usize>,
    /// How log lines look.
    pub log_format: LogFormat,
    /// The least severe level logged.
    pub log_level: tracing::Level,
    /// TLS material for `rediss://`.
    pub redis_tls: RedisTls,
}

/// Why the configuration file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// The file cannot be read.
    Unreadable(String),
    /// The file is not YAML, or not a mapping.
    Syntax(String),
    /// A key has a value that cannot be used; names the key.
    Invalid(ConfigError),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(why) | Self::Syntax(why) => f.write_str(why),
            Self::Invalid(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SettingsError {}

impl From<ConfigError> for SettingsError {
    fn from(error: ConfigError) -> Self {
        Self::Invalid(error)
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`SettingsError`] saying what is wrong, naming the key where there is one.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            SettingsError::Unreadable(format!("cannot read {}: {error}", path.display()))
        })?;
        Self::from_yaml(&text)
    }

    /// Checks a configuration given as YAML text.
    ///
    /// # Errors
    /// [`SettingsError`] saying what is wrong, naming the key where there is one.
    pub fn from_yaml(text: &str) -> Result<Self, SettingsError> {
        let value: Value = serde_norway::from_str(text)
            .map_err(|error| SettingsError::Syntax(format!("not valid YAML: {error}")))?;
        Self::from_json(value)
    }

    /// Checks a configuration already read into a JSON value.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first key that cannot be used.
    pub fn from_json(value: Value) -> Result<Self, SettingsError> {
        let mut map = match value {
            Value::Object(map) => map,
            // An empty file: every default, but public_base_url is required.
            Value::Null => Map::new(),
            _ => {
                return Err(SettingsError::Syntax(
                    "the configuration must be a mapping of options".to_owned(),
                ))
            }
        };
        let mut own = Map::new();
        for key in SERVER_KEYS {
            if let Some(value) = map.remove(key) {
                own.insert(key.to_owned(), value);
            }
        }
        // The rest is the module's block: its errors already name their keys.
        let core = Config::from_json(&Value::Object(map))?;
        if let StoreConfig::Redis(redis) = &core.store {
            // The module can fall back to the homeserver's own Redis; there is none here.
            if redis.url.is_none() {
                return Err(invalid("redis.url", "is required with `store: redis`").into());
            }
        }
        let get = |key: &str| own.get(key).filter(|value| !value.is_null());
        let public_base_url = match get("public_base_url") {
            Some(value) => base_url(value)?,
            None => {
                return Err(invalid(
                    "public_base_url",
                    "is required: the address clients reach this server at, such as \
                     https://matrix.example.org/",
                )
                .into())
            }
        };
        let listen = match get("listen") {
            Some(value) => addresses("listen", value)?,
            None => vec![DEFAULT_LISTEN
                .parse()
                .map_err(|_| invalid("listen", "bad default"))?],
        };
        let metrics_listen = get("metrics_listen")
            .map(|value| address("metrics_listen", value))
            .transpose()?;
        if let Some(metrics) = metrics_listen {
            if listen.contains(&metrics) {
                return Err(invalid(
                    "metrics_listen",
                    format!("{metrics} is also in `listen`: give the metrics their own port"),
                )
                .into());
            }
        }
        let drain_timeout = get("drain_timeout").map_or(Ok(Duration::from_secs(10)), |value| {
            duration(
                "drain_timeout",
                value,
                Duration::ZERO,
                Duration::from_secs(300),
            )
        })?;
        let request_timeout =
            get("request_timeout").map_or(Ok(Duration::from_secs(10)), |value| {
                duration(
                    "request_timeout",
                    value,
                    Duration::from_millis(100),
                    Duration::from_secs(300),
                )
            })?;
        let max_connections = get("max_connections").map_or(Ok(10_000), |value| {
            integer("max_connections", value, 1, 1_000_000)
        })?;
        // hyper's read buffer cannot be smaller than 8 KiB.
        let max_header_bytes = get("max_header_bytes").map_or(Ok(16_384), |value| {
            integer("max_header_bytes", value, 8_192, 1_048_576)
        })?;
        let worker_threads = get("worker_threads")
            .map(|value| integer("worker_threads", value, 1, 1024))
            .transpose()?;
        let (log_format, log_level) = logging(get("log_format"), get("log_level"))?;
        let redis_tls = get("redis_tls")
            .map(|value| redis_tls(value, &core))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            core,
            listen,
            public_base_url,
            metrics_listen,
            drain_timeout,
            request_timeout,
            max_connections,
            max_header_bytes,
            worker_threads,
            log_format,
            log_level,
            redis_tls,
        })
    }
}

fn logging(
    format: Option<&Value>,
    level: Option<&Value>,
) -> Result<(LogFormat, tracing::Level), ConfigError> {
    let format = match format.map(Value::as_str) {
        None | Some(Some("text")) => LogFormat::Text,
        Some(Some("json")) => LogFormat::Json,
        Some(_) => return Err(invalid("log_format", "must be \"text\" or \"json\"")),
    };
    let level = match level {
        None => tracing::Level::INFO,
        Some(value) => value
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                invalid(
                    "log_level",
                    format!("must be error, warn, info, debug or trace, got {value}"),
                )
            })?,
    };
    Ok((format, level))
}

fn base_url(value: &Value) -> Result<String, ConfigError> {
    let key = "public_base_url";
    let text = value
        .as_str()
        .ok_or_else(|| invalid(key, format!("must be a URL, got {value}")))?;
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid(key, format!("must be a URL, got {text:?}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(invalid(
            key,
            format!("must be an http:// or https:// URL with a host, got {text:?}"),
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(invalid(
            key,
            format!("must not have a query or fragment, got {text:?}"),
        ));
    }
    // Session URLs are `{public_base_url}_synapse/client/rendezvous/{id}`, like Synapse's
    // `public_baseurl`, which ends in `/`.
    Ok(format!("{}/", text.trim_end_matches('/')))
}

fn address(key: &str, value: &Value) -> Result<SocketAddr, ConfigError> {
    let text = value
        .as_str()
        .ok_or_else(|| invalid(key, format!("must be a \"host:port\" string, got {value}")))?;
    text.parse().map_err(|_| {
        invalid(
            key,
            format!(
                "must be an IP address and a port, such as 127.0.0.1:8090 or [::1]:8090, \
                 got {text:?}"
            ),
        )
    })
}

fn addresses(key: &str, value: &Value) -> Result<Vec<SocketAddr>, ConfigError> {
    let items = match value {
        // One address alone is a list of one.
        Value::String(_) => return Ok(vec![address(key, value)?]),
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            return Err(invalid(
                key,
                format!("must be a non-empty list of \"host:port\" strings, got {value}"),
            ))
        }
    };
    let mut found: Vec<SocketAddr> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let here = format!("{key}[{index}]");
        let address = address(&here, item)?;
        if found.contains(&address) {
            return Err(invalid(&here, format!("{address} is listed twice")));
        }
        found.push(address);
    }
    Ok(found)
}

fn duration(
    key: &str,
    value: &Value,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let parsed = match value {
        Value::Number(number) => number.as_u64().map(Duration::from_millis),
        Value::String(text) => parse_duration(text),
        _ => None,
    };
    parsed.filter(|d| (min..=max).contains(d)).ok_or_else(|| {
        invalid(
            key,
            format!(
                "must be a duration from {}ms to {}s (such as \"10s\" or \"500ms\"), got {value}",
                min.as_millis(),
                max.as_secs()
            ),
        )
    })
}

fn integer(key: &str, value: &Value, min: u64, max: u64) -> Result<usize, ConfigError> {
    value
        .as_u64()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                key,
                format!("must be an integer from {min} to {max}, got {value}"),
            )
        })
}

fn path(key: &str, value: &Value) -> Result<PathBuf, ConfigError> {
    match value.as_str() {
        Some(text) if !text.is_empty() => Ok(PathBuf::from(text)),
        _ => Err(invalid(key, format!("must be a file path, got {value}"))),
    }
}

fn redis_tls(value: &Value, core: &Config) -> Result<RedisTls, ConfigError> {
    let Value::Object(map) = value else {
        return Err(invalid("redis_tls", "must be a mapping"));
    };
    let tls_url = matches!(&core.store, StoreConfig::Redis(redis)
        if redis.url.as_deref().is_some_and(|url| url.starts_with("rediss://")));
    if !tls_url {
        return Err(invalid(
            "redis_tls",
            "only applies with `store: redis` and a rediss:// `redis.url`",
        ));
    }
    let mut tls = RedisTls::default();
    for (key, value) in map {
        let here = format!("redis_tls.{key}");
        let file = path(&here, value)?;
        match key.as_str() {
            "ca_file" => tls.ca_file = Some(file),
            "certificate" => tls.certificate = Some(file),
            "private_key" => tls.private_key = Some(file),
            _ => return Err(invalid(&here, "unknown option")),
        }
    }
    if tls.certificate.is_some() != tls.private_key.is_some() {
        return Err(invalid(
            "redis_tls",
            "`certificate` and `private_key` go together",
        ));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(yaml: &str) -> String {
        match Settings::from_yaml(yaml).unwrap_err() {
            SettingsError::Invalid(error) => error.key,
            other => panic!("not a key error: {other}"),
        }
    }

    const BASE: &str = "public_base_url: https://matrix.example.org\n";

    #[test]
    fn minimal_file_gives_the_defaults() {
        let settings = Settings::from_yaml(BASE).unwrap();
        assert_eq!(settings.core, Config::default());
        assert_eq!(settings.public_base_url, "https://matrix.example.org/");
        assert_eq!(settings.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(settings.metrics_listen, None);
        assert_eq!(settings.drain_timeout, Duration::from_secs(10));
        assert_eq!(settings.request_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_connections, 10_000);
        assert_eq!(settings.max_header_bytes, 16_384);
        assert_eq!(settings.worker_threads, None);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.log_level, tracing::Level::INFO);
    }

    #[test]
    fn module_and_server_keys_are_read() {
        let settings = Settings::from_yaml(
            "public_base_url: http://127.0.0.1:8090/\n\
             listen: [\"127.0.0.1:8090\", \"[::1]:8090\"]\n\
             metrics_listen: 127.0.0.1:9100\n\
             drain_timeout: 3s\n\
             worker_threads: 1\n\
             log_format: json\n\
             log_level: debug\n\
             ttl: 90s\n\
             capacity: 5\n\
             store: redis\n\
             redis:\n  url: rediss://redis.internal:6380/1\n  key_prefix: \"x:\"\n\
             redis_tls:\n  ca_file: /etc/ssl/redis-ca.pem\n\
             rate_limit:\n  enabled: false\n",
        )
        .unwrap();
        assert_eq!(settings.listen.len(), 2);
        assert!(settings.listen[1].is_ipv6());
        assert_eq!(settings.worker_threads, Some(1));
        assert_eq!(
            settings.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(settings.drain_timeout, Duration::from_secs(3));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.log_level, tracing::Level::DEBUG);
        assert_eq!(settings.core.ttl, Duration::from_secs(90));
        assert_eq!(settings.core.capacity, 5);
        assert!(!settings.core.rate_limit.enabled);
        assert!(matches!(settings.core.store, StoreConfig::Redis(_)));
        assert_eq!(
            settings.redis_tls.ca_file,
            Some(PathBuf::from("/etc/ssl/redis-ca.pem"))
        );
    }

    #[test]
    fn errors_name_their_key() {
        assert_eq!(key_of("listen: []\n"), "public_base_url");
        assert_eq!(key_of("ttl: 3\n"), "ttl");
        assert_eq!(key_of(&format!("{BASE}capcity: 3\n")), "capcity");
        assert_eq!(
            key_of(&format!(
                "{BASE}rate_limit:\n  create:\n    per_second: 0\n"
            )),
            "rate_limit.create.per_second"
        );
        assert_eq!(
            key_of(&format!("{BASE}listen: [\"nowhere\"]\n")),
            "listen[0]"
        );
        assert_eq!(
            key_of(&format!(
                "{BASE}listen: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n"
            )),
            "listen[1]"
        );
        assert_eq!(key_of(&format!("{BASE}listen: 8090\n")), "listen");
        assert_eq!(
            key_of("public_base_url: ftp://example.org/\n"),
            "public_base_url"
        );
        assert_eq!(
            key_of("public_base_url: https://example.org/?x=1\n"),
            "public_base_url"
        );
        assert_eq!(key_of(&format!("{BASE}store: redis\n")), "redis.url");
        assert_eq!(
            key_of(&format!("{BASE}drain_timeout: 1h\n")),
            "drain_timeout"
        );
        assert_eq!(
            key_of(&format!("{BASE}max_header_bytes: 100\n")),
            "max_header_bytes"
        );
        assert_eq!(
            key_of(&format!("{BASE}worker_threads: 0\n")),
            "worker_threads"
        );
        assert_eq!(key_of(&format!("{BASE}log_format: xml\n")), "log_format");
        assert_eq!(key_of(&format!("{BASE}log_level: loud\n")), "log_level");
        assert_eq!(
            key_of(&format!(
                "{BASE}listen: [\"127.0.0.1:1\"]\nmetrics_listen: \"127.0.0.1:1\"\n"
            )),
            "metrics_listen"
        );
        assert_eq!(key_of(&format!("{BASE}redis_tls: {{}}\n")), "redis_tls");
        assert_eq!(
            key_of(&format!(
                "{BASE}store: redis\nredis: {{url: \"rediss://r:1\"}}\nredis_tls: {{cafile: x}}\n"
            )),
            "redis_tls.cafile"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let error = Settings::from_yaml("ttl: [\n").unwrap_err();
        assert!(matches!(error, SettingsError::Syntax(_)), "{error}");
        assert!(error.to_string().contains("line"), "{error}");
        assert!(matches!(
            Settings::from_yaml("- a\n- b\n").unwrap_err(),
            SettingsError::Syntax(_)
        ));
    }
}
