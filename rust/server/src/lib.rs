//! `synapse-rendezvous-server`: the MSC4108 rendezvous API of `synapse-rendezvous-core` as a
//! standalone HTTP server, for Synapse's `experimental_features.msc4108_delegation_endpoint`
//! to send clients to.
//!
//! It serves the layout of the module's delegation mode (creates on
//! `POST /_synapse/client/rendezvous`, and on the standard create path too; sessions under
//! `/_synapse/client/rendezvous/{id}`) with the module's configuration keys, limits and
//! errors, since every answer is the core's. With the Redis store it shares sessions, rate
//! limits and capacity with the module and with other servers on the same Redis and key
//! prefix. `docs/standalone.md` is the operator's guide.

pub mod app;
pub mod body;
pub mod config;
pub mod metrics;
pub mod redis;
pub mod serve;
pub mod tls;
pub mod trivial;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::app::{App, MAINTENANCE_INTERVAL};
use crate::config::{LogFormat, Settings};
use crate::serve::Context;

/// Why the server stopped other than on request.
#[derive(Debug)]
pub enum Failure {
    /// The configuration cannot be used (exit status 2).
    Config(String),
    /// Something else prevented serving (exit status 1).
    Start(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) | Self::Start(why) => f.write_str(why),
        }
    }
}

/// Sets up the log: lines on stderr, as text or JSON, from `level` up.
pub fn init_logging(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level);
    // Fails only if a subscriber is already set (tests): that one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Serves until `SIGTERM` or `SIGINT`, then stops gracefully: the listeners close at once,
/// requests in flight get up to `drain_timeout` to finish (a second signal cuts that
/// short), Redis's connections close, and the memory store's snapshot is written once no
/// request can change the store any more.
///
/// # Errors
/// [`Failure`] when the server cannot start.
pub fn run(settings: &Settings) -> Result<(), Failure> {
    // TLS files are configuration: check them before anything starts.
    if let synapse_rendezvous_core::StoreConfig::Redis(redis) = &settings.core.store {
        if let Some(url) = redis
            .url
            .as_deref()
            .filter(|url| url.starts_with("rediss://"))
        {
            tls::client_config(&settings.redis_tls, url.ends_with("#insecure"))
                .map_err(Failure::Config)?;
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = settings.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("rendezvous")
        .build()
        .map_err(|error| Failure::Start(format!("cannot start the runtime: {error}")))?;
    let served = runtime.block_on(serve(settings));
    // Whatever still runs (requests past the drain deadline) is dropped here, unanswered,
    // before the snapshot: nothing can change the store while it is written.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let app = served?;
    match app.save_snapshot() {
        Ok(Some(saved)) => tracing::info!(sessions = saved, "saved the session snapshot"),
        Ok(None) => {}
        Err(error) => tracing::error!("could not save the session snapshot: {error}"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn serve(settings: &Settings) -> Result<Arc<App>, Failure> {
    let mut listeners = Vec::with_capacity(settings.listen.len());
    for (index, address) in settings.listen.iter().enumerate() {
        let listener = serve::bind(*address).map_err(|error| {
            Failure::Start(format!(
                "cannot listen on {address} (`listen[{index}]`): {error}"
            ))
        })?;
        listeners.push(listener);
    }
    let metrics_listener = settings
        .metrics_listen
        .map(|address| {
            serve::bind(address).map_err(|error| {
                Failure::Start(format!(
                    "cannot listen on {address} (`metrics_listen`): {error}"
                ))
            })
        })
        .transpose()?;
    let app = Arc::new(App::open(settings).map_err(Failure::Start)?);
    for warning in settings.core.rate_limit.startup_warnings(false) {
        tracing::warn!("{warning}");
    }
    let addresses: Vec<String> = settings.listen.iter().map(ToString::to_string).collect();
    tracing::info!(
        "synapse-rendezvous-server {} serving MSC4108 rendezvous on {} for {}: {}",
        env!("CARGO_PKG_VERSION"),
        addresses.join(", "),
        settings.public_base_url,
        settings.core
    );
    let (stop, stopping) = watch::channel(false);
    let context = Context::new(settings, app.clone(), stopping.clone());
    for listener in listeners {
        tokio::spawn(serve::accept(listener, context.clone()));
    }
    if let Some(listener) = metrics_listener {
        tokio::spawn(serve::metrics(listener, context.clone()));
    }
    let maintained = app.clone();
    tokio::spawn(serve::every(MAINTENANCE_INTERVAL, stopping, move || {
        let app = maintained.clone();
        async move { app.maintain().await }
    }));

    let mut signals = Signals::new().map_err(Failure::Start)?;
    let which = signals.next().await;
    tracing::info!(
        signal = which,
        drain_timeout_ms = settings.drain_timeout.as_millis(),
        "stopping: no new connections, finishing the requests in flight"
    );
    context.start_draining();
    let _ = stop.send(true);
    let deadline = Instant::now() + settings.drain_timeout;
    let drained = tokio::select! {
        drained = context.drained(deadline) => drained,
        which = signals.next() => {
            tracing::warn!(signal = which, "second signal: not waiting for requests in flight");
            false
        }
    };
    if !drained {
        tracing::warn!(
            connections = app
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed),
            "requests still in flight when the drain ended: their connections are closed"
        );
    }
    app.close(Duration::from_secs(1)).await;
    Ok(app)
}

/// `SIGTERM` and `SIGINT`.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen =
                |kind| signal(kind).map_err(|error| format!("cannot listen for signals: {error}"));
            Ok(Self {
                terminate: listen(SignalKind::terminate())?,
                interrupt: listen(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
