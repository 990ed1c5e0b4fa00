//! The HTTP behaviour of the rendezvous API: routing, then the checks in the order MSC4108
//! clients rely on, then the store.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response};

use crate::clock::Clock;
use crate::config::Config;
use crate::entropy::Entropy;
use crate::error::ErrorKind;
use crate::etag::EntityTagList;
use crate::id::SessionId;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::rate_limit::{
    ClientKey, Decision, Limit, MemoryRateLimiter, MemorySessionQuota, RateLimiter, SessionQuota,
};
use crate::request::check_upload;
use crate::response::{Problem, Responder};
use crate::route::{Route, Routes, SESSION_PREFIX};
use crate::session::Session;
use crate::store::{CreateOutcome, ReplaceOutcome, Store, StoreError};

/// The rendezvous API of one process: configuration, store, clock and randomness.
pub struct Rendezvous {
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    limiter: Arc<dyn RateLimiter>,
    quota: Arc<dyn SessionQuota>,
    routes: Routes,
    session_url_base: String,
    metrics: Metrics,
}

impl Rendezvous {
    /// The API serving `routes`, with session URLs under `public_baseurl` (the homeserver's
    /// setting, which ends in `/`; one is added if missing). Rate limits are kept in this
    /// process's memory unless [`Rendezvous::with_limits`] says otherwise; they apply to
    /// requests that carry a [`ClientKey`] extension.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        routes: Routes,
        public_baseurl: &str,
    ) -> Self {
        let base = public_baseurl.trim_end_matches('/');
        let limiter = Arc::new(MemoryRateLimiter::new(config.rate_limit.clone()));
        Self {
            config,
            store,
            clock,
            entropy,
            limiter,
            quota: Arc::new(MemorySessionQuota::new()),
            routes,
            session_url_base: format!("{base}{SESSION_PREFIX}/"),
            metrics: Metrics::default(),
        }
    }

    /// The same API with its rate limits and per-client session counts kept elsewhere
    /// (shared by several processes).
    #[must_use]
    pub fn with_limits(
        mut self,
        limiter: Arc<dyn RateLimiter>,
        quota: Arc<dyn SessionQuota>,
    ) -> Self {
        self.limiter = limiter;
        self.quota = quota;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store sessions live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The absolute URL of a session.
    pub fn session_url(&self, id: SessionId) -> String {
        format!("{}{id}", self.session_url_base)
    }

    /// Answers one request. Never fails: every problem becomes an HTTP error response, and
    /// store failures also carry a [`Problem`] extension for the caller to log.
    pub fn handle(&self, request: &Request<Bytes>) -> Response<Bytes> {
        let now = self.clock.now();
        let responder = Responder::new(now);
        let route = self.routes.route(request.uri().path());
        let result = match self.check_rate_limit(request, route, now) {
            Ok(()) => self.dispatch(request, route, &responder),
            Err(failure) => Err(failure),
        };
        let mut response = result.unwrap_or_else(|failure| {
            if matches!(failure.kind, ErrorKind::RateLimited { .. }) {
                self.metrics.rate_limited();
            }
            let mut response = responder.error(&failure.kind);
            if let Some(problem) = failure.problem {
                response.extensions_mut().insert(problem);
            }
            response
        });
        // A HEAD answer is the GET answer's headers alone, errors included; its
        // Content-Length still describes what a GET would carry.
        if request.method() == Method::HEAD {
            *response.body_mut() = Bytes::new();
        }
        self.metrics.response(request.method(), response.status());
        response
    }

    /// Every counter of this instance, now.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            sessions_expired: self.store.expired_total(),
            ..self.metrics.snapshot()
        }
    }

    /// Runs one store call, recording its latency and any error.
    fn timed<T>(&self, call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call();
        self.metrics
            .store_call(started.elapsed(), result.as_ref().err());
        result
    }

    fn check_rate_limit(
        &self,
        request: &Request<Bytes>,
        route: Route,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let limit = match route {
            _ if request.method() == Method::OPTIONS => return Ok(()),
            Route::Create => Limit::Create,
            Route::Session(_) => Limit::Session,
            Route::Unknown => return Ok(()),
        };
        let Some(client) = self.limited_client(request) else {
            return Ok(());
        };
        match self.timed(|| self.limiter.check(limit, client, now))? {
            Decision::Allowed => Ok(()),
            Decision::Limited { retry_after } => Err(ErrorKind::RateLimited { retry_after }.into()),
        }
    }

    /// The client a request counts against, unless limits do not apply to it.
    fn limited_client<'r>(&self, request: &'r Request<Bytes>) -> Option<&'r ClientKey> {
        request
            .extensions()
            .get::<ClientKey>()
            .filter(|client| self.config.rate_limit.applies_to(client))
    }

    fn dispatch(&self, request: &Request<Bytes>, route: Route, responder: &Responder) -> Outcome {
        match route {
            Route::Create => match *request.method() {
                Method::POST => self.create(request, responder),
                Method::OPTIONS => Ok(responder.preflight()),
                _ => Err(ErrorKind::MethodNotAllowed.into()),
            },
            Route::Session(id) => match *request.method() {
                Method::GET => self.read(request, id, false, responder),
                Method::HEAD => self.read(request, id, true, responder),
                Method::PUT => self.write(request, id, responder),
                Method::DELETE => self.delete(id, responder),
                Method::OPTIONS => Ok(responder.preflight()),
                _ => Err(ErrorKind::MethodNotAllowed.into()),
            },
            Route::Unknown => Err(ErrorKind::UnknownPath.into()),
        }
    }

    /// The 500 answer for a failure outside the core's control, such as a panic the caller
    /// caught.
    pub fn internal_error(&self) -> Response<Bytes> {
        Responder::new(self.clock.now()).error(&ErrorKind::Internal)
    }

    /// Frees expired sessions; meant to run periodically on every process.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    pub fn reclaim_expired(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        self.limiter.forget_idle(now);
        self.quota.forget_expired(now);
        self.timed(|| self.store.reclaim_expired(now))
    }

    /// How many sessions are live now.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    pub fn live_count(&self) -> Result<usize, StoreError> {
        self.timed(|| self.store.live_count(self.clock.now()))
    }

    fn create(&self, request: &Request<Bytes>, responder: &Responder) -> Outcome {
        check_upload(
            request.headers(),
            request.body(),
            self.config.max_payload_bytes,
        )?;
        let now = self.clock.now();
        let session = Session::create(request.body().clone(), now, self.config.ttl, &*self.entropy)
            .map_err(|error| Failure::internal(error.to_string()))?;
        let owner = self.limited_client(request);
        if let Some(client) = owner {
            let max = self.config.rate_limit.max_sessions_per_ip;
            let decision = self.timed(|| {
                self.quota
                    .reserve(client, session.id, session.expires, max, now)
            })?;
            if let Decision::Limited { retry_after } = decision {
                return Err(ErrorKind::RateLimited { retry_after }.into());
            }
        }
        let outcome = self.timed(|| self.store.create(session.clone(), now));
        if owner.is_some() && !matches!(outcome, Ok(CreateOutcome::Created)) {
            self.timed(|| self.quota.release(session.id))?;
        }
        match outcome? {
            CreateOutcome::Created => {
                self.metrics.session_created();
                Ok(responder.created(&session, &self.session_url(session.id)))
            }
            CreateOutcome::Full { retry_after } => {
                Err(ErrorKind::CapacityExceeded { retry_after }.into())
            }
        }
    }

    fn read(
        &self,
        request: &Request<Bytes>,
        id: Option<SessionId>,
        head: bool,
        responder: &Responder,
    ) -> Outcome {
        let session = self.live_session(id)?;
        // A malformed If-None-Match cannot name the current version: answer in full.
        let if_none_match =
            EntityTagList::from_headers(request.headers().get_all(http::header::IF_NONE_MATCH))
                .ok()
                .flatten();
        if if_none_match.is_some_and(|tags| tags.matches(&session.etag)) {
            Ok(responder.not_modified(&session))
        } else {
            Ok(responder.payload(&session, head))
        }
    }

    fn write(
        &self,
        request: &Request<Bytes>,
        id: Option<SessionId>,
        responder: &Responder,
    ) -> Outcome {
        check_upload(
            request.headers(),
            request.body(),
            self.config.max_payload_bytes,
        )?;
        let if_match =
            EntityTagList::from_headers(request.headers().get_all(http::header::IF_MATCH))
                .map_err(|_| ErrorKind::InvalidHeader("If-Match"))?
                .ok_or(ErrorKind::MissingHeader("If-Match"))?;
        let id = id.ok_or(ErrorKind::SessionNotFound)?;
        let now = self.clock.now();
        let version = Session::next_version(id, request.body().clone(), now, &*self.entropy)
            .map_err(|error| Failure::internal(error.to_string()))?;
        match self.timed(|| self.store.replace(id, &if_match, version, now))? {
            ReplaceOutcome::Replaced(session) => Ok(responder.accepted(&session)),
            ReplaceOutcome::PreconditionFailed(session) => {
                self.metrics.conflict();
                Ok(responder.precondition_failed(&session))
            }
            ReplaceOutcome::NotFound => Err(ErrorKind::SessionNotFound.into()),
        }
    }

    fn delete(&self, id: Option<SessionId>, responder: &Responder) -> Outcome {
        let id = id.ok_or(ErrorKind::SessionNotFound)?;
        if self.timed(|| self.store.delete(id, self.clock.now()))? {
            self.metrics.session_deleted();
            self.timed(|| self.quota.release(id))?;
            Ok(responder.deleted())
        } else {
            Err(ErrorKind::SessionNotFound.into())
        }
    }

    fn live_session(&self, id: Option<SessionId>) -> Result<Session, Failure> {
        let id = id.ok_or(ErrorKind::SessionNotFound)?;
        self.timed(|| self.store.get(id, self.clock.now()))?
            .ok_or_else(|| ErrorKind::SessionNotFound.into())
    }
}

type Outcome = Result<Response<Bytes>, Failure>;

/// An error response to send, and what to log about it.
struct Failure {
    kind: ErrorKind,
    problem: Option<Problem>,
}

impl Failure {
    fn internal(why: String) -> Self {
        Self {
            kind: ErrorKind::Internal,
            problem: Some(Problem(why)),
        }
    }
}

impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        Self {
            kind,
            problem: None,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        let kind = match error {
            StoreError::Unavailable(_) | StoreError::Timeout => ErrorKind::StoreUnavailable,
            StoreError::Corrupt(_) => ErrorKind::Internal,
        };
        Self {
            kind,
            problem: Some(Problem(error.to_string())),
        }
    }
}
