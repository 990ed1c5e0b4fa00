//! The Redis store from the reactor: requests become script calls on a [`Link`], whose
//! connections the Python glue opens with Twisted and whose effects are carried out here,
//! outside the lock, once the link has decided.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::Request;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use synapse_rendezvous_core::store::redis::{Address, Effect, Link, LinkConfig, Target, Value};
use synapse_rendezvous_core::{
    discarded, loggable_path, Query, RedisStore, Rendezvous, Step, StoreError,
};

use crate::handler::{guarded, Glue};
use crate::metrics::Metrics;
use crate::twisted::{is_disconnected, write_response};

/// What a call on the link was made for.
enum Token {
    /// A request, answered once its call completes.
    Request {
        request: Py<PyAny>,
        query: Box<Query>,
    },
    /// The periodic maintenance call.
    Maintenance,
}

/// Where the Redis server is, for the glue to connect to.
#[pyclass(module = "synapse_rendezvous._core", frozen, get_all)]
pub struct RedisAddress {
    /// `"tcp"` or `"unix"`.
    kind: &'static str,
    /// Host name or address (TCP).
    host: Option<String>,
    /// Port (TCP).
    port: Option<u16>,
    /// Whether to speak TLS (TCP).
    tls: bool,
    /// Whether to skip verifying the server's certificate (`#insecure` in the URL).
    insecure: bool,
    /// Socket path (UNIX).
    path: Option<String>,
    /// How many connections to open.
    connections: usize,
    /// The longest a request may wait, in seconds (also bounds each connection attempt).
    timeout: f64,
}

struct LinkState {
    link: Link<Token>,
    transports: Vec<Option<Py<PyAny>>>,
    /// Whether the glue's timer is running.
    timer_armed: bool,
    /// Live sessions at the last maintenance run.
    live_sessions: Option<usize>,
}

/// A thing to do once the lock is released.
enum Action {
    Write(Py<PyAny>, Vec<u8>),
    Close(Option<Py<PyAny>>, usize, String),
    Done(Token, Result<Value, StoreError>, std::time::Duration),
}

pub(crate) struct RedisServing {
    rendezvous: Rendezvous,
    store: RedisStore,
    address: Address,
    link_config: LinkConfig,
    state: Mutex<LinkState>,
}

impl RedisServing {
    pub(crate) fn new(
        rendezvous: Rendezvous,
        store: RedisStore,
        target: &Target,
        link_config: LinkConfig,
    ) -> Self {
        let link = Link::new(link_config, RedisStore::handshake(target));
        Self {
            rendezvous,
            store,
            address: target.address.clone(),
            state: Mutex::new(LinkState {
                link,
                transports: (0..link_config.connections.max(1)).map(|_| None).collect(),
                timer_armed: false,
                live_sessions: None,
            }),
            link_config,
        }
    }

    pub(crate) fn address(&self) -> RedisAddress {
        let (kind, host, port, tls, insecure, path) = match &self.address {
            Address::Tcp { host, port, tls } => (
                "tcp",
                Some(host.clone()),
                Some(*port),
                tls.is_some(),
                tls.is_some_and(|tls| tls.insecure),
                None,
            ),
            Address::Unix(path) => (
                "unix",
                None,
                None,
                false,
                false,
                Some(path.display().to_string()),
            ),
        };
        RedisAddress {
            kind,
            host,
            port,
            tls,
            insecure,
            path,
            connections: self.link_config.connections.max(1),
            timeout: self.link_config.timeout.as_secs_f64(),
        }
    }

    pub(crate) fn handle(
        &self,
        py: Python<'_>,
        glue: &Glue,
        request: &Bound<'_, PyAny>,
        parsed: &Request<Bytes>,
    ) -> PyResult<Option<f64>> {
        let now = glue.now(py);
        let step = guarded(|| self.rendezvous.begin(parsed, now)).unwrap_or_else(|why| {
            glue.log(
                py,
                "error",
                &format!(
                    "panic while handling {}: {why}",
                    loggable_path(parsed.uri().path())
                ),
            );
            Step::Answer(self.rendezvous.internal_error(now))
        });
        let query = match step {
            Step::Answer(response) => {
                glue.log_problem(py, parsed, &response);
                write_response(request, &response, &glue.header_names)?;
                return Ok(None);
            }
            Step::Ask(query) => query,
        };
        if is_disconnected(request) {
            return Ok(None);
        }
        let call = self.store.call(query.operation(), None);
        let retry = query.is_retry_safe();
        let token = Token::Request {
            request: request.clone().unbind(),
            query: Box::new(query),
        };
        Ok(self.run(py, glue, |link, out| {
            link.submit(token, call, retry, Instant::now(), out);
        }))
    }

    pub(crate) fn maintain(&self, py: Python<'_>, glue: &Glue) -> Option<f64> {
        let call = self.store.maintenance(None);
        self.run(py, glue, |link, out| {
            link.submit(Token::Maintenance, call, false, Instant::now(), out);
        })
    }

    pub(crate) fn connected(
        &self,
        py: Python<'_>,
        glue: &Glue,
        index: usize,
        transport: Py<PyAny>,
    ) -> Option<f64> {
        if let Some(slot) = self.lock().transports.get_mut(index) {
            *slot = Some(transport);
        }
        let wanted = |token: &Token| match token {
            Token::Request { request, .. } => !is_disconnected(request.bind(py)),
            Token::Maintenance => true,
        };
        self.run(py, glue, |link, out| {
            link.connected(index, Instant::now(), wanted, out);
        })
    }

    pub(crate) fn received(
        &self,
        py: Python<'_>,
        glue: &Glue,
        index: usize,
        data: &[u8],
    ) -> Option<f64> {
        self.run(py, glue, |link, out| {
            link.received(index, data, Instant::now(), out);
        })
    }

    pub(crate) fn lost(&self, py: Python<'_>, glue: &Glue, index: usize) -> Option<f64> {
        if let Some(slot) = self.lock().transports.get_mut(index) {
            *slot = None;
        }
        self.run(py, glue, |link, out| link.lost(index, Instant::now(), out))
    }

    pub(crate) fn tick(&self, py: Python<'_>, glue: &Glue) -> Option<f64> {
        self.lock().timer_armed = false;
        self.run(py, glue, |link, out| link.tick(Instant::now(), out))
    }

    pub(crate) fn close(&self, py: Python<'_>, glue: &Glue) {
        self.run(py, glue, |link, out| link.close(Instant::now(), out));
    }

    pub(crate) fn rendezvous(&self) -> &Rendezvous {
        &self.rendezvous
    }

    pub(crate) fn metrics(&self) -> Metrics {
        Metrics {
            snapshot: self.rendezvous.metrics(),
            live_sessions: self.lock().live_sessions,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `step` on the link, then carries out what it decided; returns the delay for the
    /// glue's timer when it must be started.
    fn run(
        &self,
        py: Python<'_>,
        glue: &Glue,
        step: impl FnOnce(&mut Link<Token>, &mut Vec<Effect<Token>>),
    ) -> Option<f64> {
        let mut effects = Vec::new();
        let (actions, timer) = {
            let mut state = self.lock();
            step(&mut state.link, &mut effects);
            let actions: Vec<Action> = effects
                .into_iter()
                .filter_map(|effect| match effect {
                    Effect::Write { connection, bytes } => state
                        .transports
                        .get(connection)
                        .and_then(Option::as_ref)
                        .map(|transport| Action::Write(transport.clone_ref(py), bytes)),
                    Effect::Close { connection, why } => {
                        let transport = state
                            .transports
                            .get(connection)
                            .and_then(Option::as_ref)
                            .map(|transport| transport.clone_ref(py));
                        Some(Action::Close(transport, connection, why))
                    }
                    Effect::Done {
                        token,
                        reply,
                        elapsed,
                    } => Some(Action::Done(token, reply, elapsed)),
                })
                .collect();
            let timer = if state.timer_armed {
                None
            } else {
                state.link.next_deadline().map(|deadline| {
                    state.timer_armed = true;
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                })
            };
            (actions, timer)
        };
        for action in actions {
            self.carry_out(py, glue, action);
        }
        timer
    }

    fn carry_out(&self, py: Python<'_>, glue: &Glue, action: Action) {
        match action {
            Action::Write(transport, bytes) => {
                if let Err(error) = transport
                    .bind(py)
                    .call_method1(intern!(py, "write"), (PyBytes::new(py, &bytes),))
                {
                    glue.log(py, "warning", &format!("writing to Redis failed: {error}"));
                }
            }
            Action::Close(transport, index, why) => {
                glue.log(
                    py,
                    "warning",
                    &format!("closing Redis connection {index}: {why}"),
                );
                if let Some(transport) = transport {
                    let _ = transport
                        .bind(py)
                        .call_method0(intern!(py, "abortConnection"));
                }
            }
            Action::Done(Token::Maintenance, reply, _) => {
                match reply.and_then(RedisStore::decode_maintenance) {
                    Ok(found) => {
                        self.rendezvous.count_expired(found.expired);
                        self.lock().live_sessions = Some(found.live);
                        if found.discarded > 0 {
                            glue.log(py, "warning", &discarded(found.discarded).0);
                        }
                    }
                    Err(error) => glue.log(
                        py,
                        "warning",
                        &format!("could not reclaim expired sessions: {error}"),
                    ),
                }
            }
            Action::Done(Token::Request { request, query }, reply, elapsed) => {
                let now = glue.now(py);
                let request = request.bind(py);
                let method = query.method().clone();
                let answered = guarded(|| {
                    let executed =
                        reply.and_then(|value| self.store.decode(query.operation(), value));
                    self.rendezvous.finish(*query, executed, elapsed, now)
                });
                let response = answered.unwrap_or_else(|why| {
                    glue.log(
                        py,
                        "error",
                        &format!("panic while answering a request: {why}"),
                    );
                    self.rendezvous.internal_error(now)
                });
                glue.log_warning_of(py, &response);
                if let Some(synapse_rendezvous_core::Problem(why)) = response.extensions().get() {
                    let path = request
                        .getattr(intern!(py, "path"))
                        .and_then(|path| path.extract::<Vec<u8>>())
                        .unwrap_or_default();
                    let path = loggable_path(&String::from_utf8_lossy(&path));
                    glue.log(py, "error", &format!("{method} {path}: {why}"));
                }
                if let Err(error) = write_response(request, &response, &glue.header_names) {
                    glue.log(py, "error", &format!("could not write a response: {error}"));
                }
            }
        }
    }
}
