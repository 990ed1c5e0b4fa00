//! The rendezvous API over the configured store, from an `http::Request` to an
//! `http::Response`: all of the behaviour is the core's.
//!
//! Memory store: [`Service`] answers in place, on the tokio worker thread that read the
//! request (the store's lock is held for microseconds). Redis store: `Rendezvous::begin`,
//! the one script call of `RedisStore::call` through the [`RedisLink`],
//! `RedisStore::decode`, then `Rendezvous::finish`, exactly as the module does.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use synapse_rendezvous_core::rate_limit::{ClientKey, RateLimitConfig};
use synapse_rendezvous_core::store::redis::Address;
use synapse_rendezvous_core::{
    discarded, loggable_path, Backend, Notice, Problem, RedisStore, Rendezvous, Routes, Service,
    Step, SystemClock, SystemEntropy, Warning,
};

use crate::config::Settings;
use crate::metrics::{self, ServerStats};
use crate::redis::RedisLink;

/// How often ended sessions are freed and the live ones counted, as in the module.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

enum Serving {
    Memory {
        service: Service,
        backend: Backend,
    },
    Redis {
        rendezvous: Rendezvous,
        store: RedisStore,
        link: RedisLink,
        /// Live sessions at the last maintenance run.
        live_sessions: Mutex<Option<usize>>,
    },
}

/// The application: the API, its store and what the server counts.
pub struct App {
    serving: Serving,
    /// The rate limits when they are on (only then is the client worth identifying).
    limits: Option<RateLimitConfig>,
    max_payload_bytes: usize,
    /// Client connections open now, and accepted since start.
    pub(crate) open_connections: AtomicUsize,
    pub(crate) accepted_connections: AtomicU64,
}

impl App {
    /// Opens the store of `settings` (restoring the memory store's snapshot) and, for
    /// Redis, starts its connections on the current tokio runtime.
    ///
    /// # Errors
    /// What prevents serving, for the operator.
    pub fn open(settings: &Settings) -> Result<Self, String> {
        let config = &settings.core;
        let (backend, notices) =
            Backend::open(config, None, SystemTime::now()).map_err(|error| error.to_string())?;
        for notice in notices {
            match notice {
                Notice::Info(message) => tracing::info!("{message}"),
                Notice::Warning(message) => tracing::warn!("{message}"),
            }
        }
        // Delegation mode's routes: creates on the session root (where Synapse's 307 sends
        // clients) and on the standard create path (for clients sent here directly).
        let rendezvous = Rendezvous::new(
            config.clone(),
            Arc::new(SystemEntropy),
            Routes::delegation(),
            &settings.public_base_url,
        );
        let serving = match backend {
            Backend::Memory { ref store, .. } => Serving::Memory {
                service: Service::new(rendezvous, store.clone(), Arc::new(SystemClock)),
                backend,
            },
            Backend::Redis {
                store,
                target,
                link,
            } => {
                let tls = match &target.address {
                    Address::Tcp { tls: Some(tls), .. } => Some(crate::tls::client_config(
                        &settings.redis_tls,
                        tls.insecure,
                    )?),
                    _ => None,
                };
                Serving::Redis {
                    rendezvous,
                    store,
                    link: RedisLink::start(&target, link, tls)?,
                    live_sessions: Mutex::new(None),
                }
            }
        };
        Ok(Self {
            serving,
            limits: config.rate_limit.enabled.then(|| config.rate_limit.clone()),
            // MSC4388's JSON bodies may be longer than max_payload_bytes of data.
            max_payload_bytes: config.max_body_bytes(),
            open_connections: AtomicUsize::new(0),
            accepted_connections: AtomicU64::new(0),
        })
    }

    /// `"memory"` or `"redis"`, as the metrics label it.
    pub fn store_kind(&self) -> &'static str {
        match self.serving {
            Serving::Memory { .. } => "memory",
            Serving::Redis { .. } => "redis",
        }
    }

    /// The largest body worth reading.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    fn rendezvous(&self) -> &Rendezvous {
        match &self.serving {
            Serving::Memory { service, .. } => service.rendezvous(),
            Serving::Redis { rendezvous, .. } => rendezvous,
        }
    }

    /// Marks `request` with the client it counts against, when rate limits are on: the
    /// TCP peer, or with `rate_limit.trusted_proxies` the client the core finds in
    /// `X-Forwarded-For` behind them.
    pub fn identify(&self, request: &mut Request<Bytes>, peer: Option<IpAddr>) {
        let Some(limits) = &self.limits else {
            return;
        };
        let client = if limits.trusts_proxies() {
            limits.client_of(peer, request.headers())
        } else {
            peer.map_or_else(ClientKey::unknown, ClientKey::new)
        };
        request.extensions_mut().insert(client);
    }

    /// Answers one rendezvous request (identified already). Never fails: a panic in the
    /// core costs this request a 500, nothing more.
    pub async fn answer(&self, request: &Request<Bytes>) -> Response<Bytes> {
        let response = match &self.serving {
            Serving::Memory { service, .. } => {
                let now = SystemTime::now();
                guarded(|| service.handle_at(request, now))
                    .unwrap_or_else(|why| self.panicked(request, &why))
            }
            Serving::Redis {
                rendezvous,
                store,
                link,
                ..
            } => {
                let now = SystemTime::now();
                match guarded(|| rendezvous.begin(request, now)) {
                    Err(why) => self.panicked(request, &why),
                    Ok(Step::Answer(response)) => response,
                    Ok(Step::Ask(query)) => {
                        let call = store.call(query.operation(), None);
                        let (reply, elapsed) = link.call(call, query.is_retry_safe()).await;
                        let now = SystemTime::now();
                        guarded(move || {
                            let executed =
                                reply.and_then(|value| store.decode(query.operation(), value));
                            rendezvous.finish(query, executed, elapsed, now)
                        })
                        .unwrap_or_else(|why| self.panicked(request, &why))
                    }
                }
            }
        };
        log_problem(request, &response);
        response
    }

    fn panicked(&self, request: &Request<Bytes>, why: &str) -> Response<Bytes> {
        tracing::error!(
            method = %request.method(),
            path = %loggable_path(request.uri().path()),
            "panic while handling a request: {why}"
        );
        self.rendezvous().internal_error(SystemTime::now())
    }

    /// Whether the store can be used now: always for memory, with a connection up for
    /// Redis.
    pub fn store_ready(&self) -> bool {
        match &self.serving {
            Serving::Memory { .. } => true,
            Serving::Redis { link, .. } => link.connections_up() > 0,
        }
    }

    /// Frees ended sessions and counts the live ones: in place for memory, one call for
    /// Redis (whose count the metrics then report).
    pub async fn maintain(&self) {
        match &self.serving {
            Serving::Memory { service, .. } => match service.maintain() {
                Ok(found) if found.discarded > 0 => {
                    tracing::warn!("{}", discarded(found.discarded).0);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("could not reclaim expired sessions: {error}"),
            },
            Serving::Redis {
                rendezvous,
                store,
                link,
                live_sessions,
            } => {
                let (reply, _) = link.call(store.maintenance(None), false).await;
                match reply.and_then(RedisStore::decode_maintenance) {
                    Ok(found) => {
                        rendezvous.count_expired(found.expired);
                        *live_sessions.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(found.live);
                        if found.discarded > 0 {
                            tracing::warn!("{}", discarded(found.discarded).0);
                        }
                    }
                    Err(error) => tracing::warn!("could not reclaim expired sessions: {error}"),
                }
            }
        }
    }

    /// The Prometheus exposition of every counter.
    pub fn metrics_text(&self) -> String {
        let (snapshot, live, redis_up) = match &self.serving {
            Serving::Memory { service, .. } => {
                // Counting the live sessions frees the ended ones: microseconds.
                let live = service.maintain().ok().map(|found| found.live);
                (service.metrics(), live, None)
            }
            Serving::Redis {
                rendezvous,
                link,
                live_sessions,
                ..
            } => (
                rendezvous.metrics(),
                *live_sessions.lock().unwrap_or_else(PoisonError::into_inner),
                Some(link.connections_up() as u64),
            ),
        };
        let stats = ServerStats {
            open_connections: self.open_connections.load(Ordering::Relaxed) as u64,
            accepted_connections: self.accepted_connections.load(Ordering::Relaxed),
            redis_connections_up: redis_up,
        };
        metrics::render(&snapshot, self.store_kind(), live, &stats)
    }

    /// At shutdown, once requests have drained: answers what still waits on Redis and
    /// closes its connections.
    pub async fn close(&self, within: Duration) {
        if let Serving::Redis { link, .. } = &self.serving {
            link.close(within).await;
        }
    }

    /// Saves the memory store's live sessions to its snapshot, if one is configured: how
    /// many. Call once nothing can change the store any more.
    ///
    /// # Errors
    /// Why the snapshot could not be written.
    pub fn save_snapshot(&self) -> Result<Option<usize>, String> {
        match &self.serving {
            Serving::Memory { backend, .. } => backend
                .save_snapshot(SystemTime::now())
                .map_err(|error| error.to_string()),
            Serving::Redis { .. } => Ok(None),
        }
    }
}

/// Logs what the core attached to a response: a store failure (error) or sessions it
/// dropped (warning).
fn log_problem(request: &Request<Bytes>, response: &Response<Bytes>) {
    if let Some(Warning(why)) = response.extensions().get::<Warning>() {
        tracing::warn!("{why}");
    }
    if let Some(Problem(why)) = response.extensions().get::<Problem>() {
        tracing::error!(
            method = %request.method(),
            path = %loggable_path(request.uri().path()),
            status = response.status().as_u16(),
            "{why}"
        );
    }
}

/// Runs `work`, turning a panic into its message.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}
