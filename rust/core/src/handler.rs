//! The HTTP behaviour of the rendezvous API, sans-IO: [`Rendezvous::begin`] routes a
//! request and runs every check that needs no store, in the order MSC4108 clients rely on,
//! then either answers or asks for one store [`Operation`]; [`Rendezvous::finish`] turns
//! the store's answer into the response. [`Service`] joins the two for a store that answers
//! in place.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response};

use crate::clock::{floor_to_millis, Clock};
use crate::config::Config;
use crate::entropy::Entropy;
use crate::error::ErrorKind;
use crate::etag::{EntityTag, EntityTagList};
use crate::id::SessionId;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::rate_limit::{ClientKey, Limit};
use crate::request::check_upload;
use crate::response::{Problem, Responder, Warning};
use crate::route::{Route, Routes, SESSION_PREFIX};
use crate::store::{
    Action, Admission, Executed, Maintenance, NewSession, Operation, Outcome, Quota, Store,
    StoreError,
};

/// The rendezvous API of one process: its configuration, randomness and counters.
pub struct Rendezvous {
    config: Config,
    entropy: Arc<dyn Entropy>,
    routes: Routes,
    session_url_base: String,
    metrics: Metrics,
}

/// What [`Rendezvous::begin`] decided.
#[derive(Debug)]
pub enum Step {
    /// The response, needing no store.
    Answer(Response<Bytes>),
    /// The store must carry out [`Query::operation`]; then call [`Rendezvous::finish`].
    Ask(Query),
}

/// A request waiting for its store operation.
#[derive(Debug)]
pub struct Query {
    operation: Operation,
    method: Method,
}

impl Query {
    /// What the store must do.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether sending the operation twice does no harm (a read takes a second token at
    /// worst), so that it may be retried after a lost connection.
    pub fn is_retry_safe(&self) -> bool {
        matches!(self.operation.action, Action::Read { .. })
    }
}

impl Rendezvous {
    /// The API serving `routes`, with session URLs under `public_baseurl` (the homeserver's
    /// setting, which ends in `/`; one is added if missing). Rate limits apply to requests
    /// that carry a [`ClientKey`] extension.
    pub fn new(
        config: Config,
        entropy: Arc<dyn Entropy>,
        routes: Routes,
        public_baseurl: &str,
    ) -> Self {
        let base = public_baseurl.trim_end_matches('/');
        Self {
            config,
            entropy,
            routes,
            session_url_base: format!("{base}{SESSION_PREFIX}/"),
            metrics: Metrics::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The absolute URL of a session.
    pub fn session_url(&self, id: SessionId) -> String {
        format!("{}{id}", self.session_url_base)
    }

    /// Every counter of this instance, now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Counts sessions a store removed after they ended, outside any request (maintenance).
    pub fn count_expired(&self, expired: usize) {
        self.metrics.expired(expired);
    }

    /// Starts answering `request`, received at `now`.
    pub fn begin(&self, request: &Request<Bytes>, now: SystemTime) -> Step {
        let now = floor_to_millis(now);
        match self.plan(request, now) {
            Ok(operation) => Step::Ask(Query {
                operation,
                method: request.method().clone(),
            }),
            Err(answer) => Step::Answer(self.sent(request.method(), answer.into_response(now))),
        }
    }

    /// The response to a [`Query`], once the store has answered it (`elapsed` after it was
    /// asked). Store failures carry a [`Problem`] extension for the caller to log.
    // By value: answering consumes the query, so that none is answered twice.
    #[allow(clippy::needless_pass_by_value)]
    pub fn finish(
        &self,
        query: Query,
        reply: Result<Executed, StoreError>,
        elapsed: Duration,
        now: SystemTime,
    ) -> Response<Bytes> {
        self.metrics.store_call(elapsed, reply.as_ref().err());
        let responder = Responder::new(floor_to_millis(now));
        let response = match reply {
            Ok(executed) => {
                self.metrics.expired(executed.expired);
                let mut response = self.respond(&query, executed.outcome, &responder);
                if executed.discarded > 0 {
                    response
                        .extensions_mut()
                        .insert(discarded(executed.discarded));
                }
                response
            }
            Err(error) => {
                let kind = match error {
                    StoreError::Unavailable(_) | StoreError::Timeout => ErrorKind::StoreUnavailable,
                    StoreError::Overloaded => ErrorKind::StoreOverloaded,
                    StoreError::Corrupt(_) => ErrorKind::Internal,
                };
                let mut response = responder.error(&kind);
                response.extensions_mut().insert(Problem(error.to_string()));
                response
            }
        };
        self.sent(&query.method, response)
    }

    /// The 404 `M_UNRECOGNIZED` for a request this process does not serve where it arrived
    /// (a listener without the client API), as for any path the API does not know.
    pub fn not_served(&self, now: SystemTime) -> Response<Bytes> {
        Responder::new(now).error(&ErrorKind::UnknownPath)
    }

    /// The 500 answer for a failure outside the core's control, such as a panic the caller
    /// caught.
    pub fn internal_error(&self, now: SystemTime) -> Response<Bytes> {
        Responder::new(now).error(&ErrorKind::Internal)
    }

    /// Counts a response and shapes it for its method: a HEAD answer is the GET answer's
    /// headers alone, errors included (its Content-Length still describes what a GET would
    /// carry).
    fn sent(&self, method: &Method, mut response: Response<Bytes>) -> Response<Bytes> {
        if method == Method::HEAD {
            *response.body_mut() = Bytes::new();
        }
        self.metrics.response(method, response.status());
        response
    }

    fn plan(&self, request: &Request<Bytes>, now: SystemTime) -> Result<Operation, Answer> {
        let route = self.routes.route(request.uri().path());
        let method = request.method();
        if method == Method::OPTIONS && !matches!(route, Route::Unknown) {
            return Err(Answer::Preflight);
        }
        match (route, method) {
            (Route::Create, &Method::POST) => self.plan_create(request, now),
            (Route::Session(id), &Method::GET | &Method::HEAD) => {
                // A malformed If-None-Match cannot name the current version: answer in full.
                let if_none_match = EntityTagList::from_headers(
                    request.headers().get_all(http::header::IF_NONE_MATCH),
                )
                .ok()
                .flatten();
                let id = id.ok_or(ErrorKind::SessionNotFound)?;
                Ok(self.operation(request, Limit::Session, Action::Read { id, if_none_match }))
            }
            (Route::Session(id), &Method::PUT) => {
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
                let payload = request.body().clone();
                let etag = EntityTag::generate(id, &payload, &*self.entropy)
                    .map_err(|error| Answer::internal(error.to_string()))?;
                let action = Action::Replace {
                    id,
                    if_match,
                    payload,
                    etag,
                };
                Ok(self.operation(request, Limit::Session, action))
            }
            (Route::Session(id), &Method::DELETE) => {
                let id = id.ok_or(ErrorKind::SessionNotFound)?;
                Ok(self.operation(request, Limit::Session, Action::Delete { id }))
            }
            (Route::Create | Route::Session(_), _) => Err(ErrorKind::MethodNotAllowed.into()),
            (Route::Unknown, _) => Err(ErrorKind::UnknownPath.into()),
        }
    }

    fn plan_create(&self, request: &Request<Bytes>, now: SystemTime) -> Result<Operation, Answer> {
        check_upload(
            request.headers(),
            request.body(),
            self.config.max_payload_bytes,
        )?;
        let payload = request.body().clone();
        let fresh = SessionId::generate(now, &*self.entropy)
            .and_then(|id| Ok((id, EntityTag::generate(id, &payload, &*self.entropy)?)));
        let (id, etag) = fresh.map_err(|error| Answer::internal(error.to_string()))?;
        let client = self.limited_client(request);
        let quota = client.map(|client| Quota {
            client: *client,
            max: self.config.rate_limit.max_sessions_per_ip,
        });
        let groups = client
            .filter(|_| self.config.rate_limit.fair_share)
            .map(ClientKey::groups)
            .unwrap_or_default();
        let action = Action::Create(NewSession {
            id,
            payload,
            etag,
            ttl: self.config.ttl,
            quota,
            groups,
        });
        Ok(self.operation(request, Limit::Create, action))
    }

    fn operation(&self, request: &Request<Bytes>, limit: Limit, action: Action) -> Operation {
        let admission = self.limited_client(request).map(|client| Admission {
            client: *client,
            limit,
            bucket: self.config.rate_limit.bucket(limit),
        });
        Operation { admission, action }
    }

    /// The client a request counts against, unless limits do not apply to it.
    fn limited_client<'r>(&self, request: &'r Request<Bytes>) -> Option<&'r ClientKey> {
        request
            .extensions()
            .get::<ClientKey>()
            .filter(|client| self.config.rate_limit.applies_to(client))
    }

    fn respond(&self, query: &Query, outcome: Outcome, responder: &Responder) -> Response<Bytes> {
        match outcome {
            Outcome::RateLimited { retry_after } | Outcome::QuotaExceeded { retry_after } => {
                self.metrics.rate_limited();
                responder.error(&ErrorKind::RateLimited { retry_after })
            }
            Outcome::Full { retry_after } => {
                responder.error(&ErrorKind::CapacityExceeded { retry_after })
            }
            Outcome::Created(meta) => {
                self.metrics.session_created();
                let Action::Create(new) = &query.operation.action else {
                    return responder.error(&ErrorKind::Internal);
                };
                responder.created(&meta, &self.session_url(new.id))
            }
            Outcome::Found(session) => responder.payload(&session),
            Outcome::NotModified { meta, length } => responder.not_modified(&meta, length),
            Outcome::Replaced(meta) => responder.accepted(&meta),
            Outcome::PreconditionFailed(meta) => {
                self.metrics.conflict();
                responder.precondition_failed(&meta)
            }
            Outcome::Deleted => {
                self.metrics.session_deleted();
                responder.deleted()
            }
            Outcome::NotFound => responder.error(&ErrorKind::SessionNotFound),
        }
    }
}

/// The warning for sessions the store dropped because it cannot have written them.
pub fn discarded(count: usize) -> Warning {
    Warning(format!(
        "dropped {count} session(s) from the store that it cannot have written (a payload \
         over max_payload_bytes or an expiry beyond now + ttl): forged data, or a process \
         sharing the store with other limits"
    ))
}

/// An answer decided without the store.
enum Answer {
    Preflight,
    Error(ErrorKind, Option<Problem>),
}

impl Answer {
    fn internal(why: String) -> Self {
        Self::Error(ErrorKind::Internal, Some(Problem(why)))
    }

    fn into_response(self, now: SystemTime) -> Response<Bytes> {
        let responder = Responder::new(now);
        match self {
            Self::Preflight => responder.preflight(),
            Self::Error(kind, problem) => {
                let mut response = responder.error(&kind);
                if let Some(problem) = problem {
                    response.extensions_mut().insert(problem);
                }
                response
            }
        }
    }
}

impl From<ErrorKind> for Answer {
    fn from(kind: ErrorKind) -> Self {
        Self::Error(kind, None)
    }
}

/// The API over a store that answers in place, on a clock: one call per request.
pub struct Service {
    rendezvous: Rendezvous,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Service {
    /// `rendezvous` over `store`, with every request stamped by `clock`.
    pub fn new(rendezvous: Rendezvous, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            rendezvous,
            store,
            clock,
        }
    }

    /// The API itself.
    pub fn rendezvous(&self) -> &Rendezvous {
        &self.rendezvous
    }

    /// Answers one request at the clock's time. Never fails: every problem becomes an HTTP
    /// error response, and store failures also carry a [`Problem`] extension for the caller
    /// to log.
    pub fn handle(&self, request: &Request<Bytes>) -> Response<Bytes> {
        self.handle_at(request, self.clock.now())
    }

    /// Answers one request received at `now`.
    pub fn handle_at(&self, request: &Request<Bytes>, now: SystemTime) -> Response<Bytes> {
        let now = floor_to_millis(now);
        match self.rendezvous.begin(request, now) {
            Step::Answer(response) => response,
            Step::Ask(query) => {
                let started = Instant::now();
                let reply = self.store.execute(query.operation(), now);
                self.rendezvous.finish(query, reply, started.elapsed(), now)
            }
        }
    }

    /// Frees ended sessions and counts the live ones; meant to run periodically.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    pub fn maintain(&self) -> Result<Maintenance, StoreError> {
        self.maintain_at(self.clock.now())
    }

    /// The same at `now`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    pub fn maintain_at(&self, now: SystemTime) -> Result<Maintenance, StoreError> {
        let found = self.store.maintain(floor_to_millis(now))?;
        self.rendezvous.count_expired(found.expired);
        Ok(found)
    }

    /// Every counter, now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.rendezvous.metrics()
    }
}
