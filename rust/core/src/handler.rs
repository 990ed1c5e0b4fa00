//! The HTTP behaviour of the rendezvous API, sans-IO: [`Rendezvous::begin`] routes a
//! request and runs every check that needs no store, in the order MSC4108 clients rely on,
//! then either answers or asks for one store [`Operation`]; [`Rendezvous::finish`] turns
//! the store's answer into the response. [`Service`] joins the two for a store that answers
//! in place.
//!
//! MSC4388 (the 2025 API, when [`Config::msc4388`] is on) goes through the same two steps,
//! the same store and the same limits: its requests become their own [`Action`]s, so that
//! its sessions are never reachable through MSC4108's paths nor the reverse.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::clock::{floor_to_millis, Clock};
use crate::config::Config;
use crate::entropy::Entropy;
use crate::error::ErrorKind;
use crate::etag::{EntityTag, EntityTagList};
use crate::id::SessionId;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::msc4388::{is_navigation, parse_body, Authenticated, Msc4388Mode};
use crate::rate_limit::{ClientKey, Limit, PrefixGroup};
use crate::request::check_upload;
use crate::response::{Problem, Responder, Warning};
use crate::route::{Route, Routes, SESSION_PREFIX};
use crate::sequence::SequenceToken;
use crate::session::Protocol;
use crate::store::{
    Action, Admission, Executed, Maintenance, Msc4388Write, NewSession, Operation, Outcome, Quota,
    Store, StoreError,
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
    protocol: Protocol,
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
        matches!(
            self.operation.action,
            Action::Read { .. } | Action::Msc4388Read { .. }
        )
    }

    /// The API the request belongs to.
    pub fn protocol(&self) -> Protocol {
        self.protocol
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

    /// The route of `request` as served: MSC4388's paths are unknown while it is off.
    pub fn route(&self, request: &Request<Bytes>) -> Route {
        let route = self.routes.route(request.uri().path());
        if route.is_msc4388() && !self.config.msc4388.is_on() {
            Route::Unknown
        } else {
            route
        }
    }

    /// Starts answering `request`, received at `now`.
    pub fn begin(&self, request: &Request<Bytes>, now: SystemTime) -> Step {
        let now = floor_to_millis(now);
        let route = self.route(request);
        // Anything under MSC4388's prefix, once it is on, is answered (and counted) as
        // MSC4388's, unknown paths below it included.
        let protocol = if route.is_msc4388()
            || (self.config.msc4388.is_on()
                && request.uri().path().starts_with(crate::MSC4388_PREFIX))
        {
            Protocol::Msc4388
        } else {
            Protocol::Msc4108
        };
        match self.plan(request, route, now) {
            Ok(operation) => Step::Ask(Query {
                protocol: operation.action.protocol(),
                operation,
                method: request.method().clone(),
            }),
            Err(answer) => Step::Answer(self.sent(
                protocol,
                request.method(),
                answer.into_response(now, protocol),
            )),
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
        let now = floor_to_millis(now);
        let responder = Responder::new(now);
        let response = match reply {
            Ok(executed) => {
                self.metrics.expired(executed.expired);
                let mut response = match query.protocol {
                    Protocol::Msc4108 => self.respond(&query, executed.outcome, &responder),
                    Protocol::Msc4388 => {
                        self.respond_msc4388(&query, executed.outcome, &responder, now)
                    }
                };
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
                let mut response = match query.protocol {
                    Protocol::Msc4108 => responder.error(&kind),
                    Protocol::Msc4388 => responder.json_error(&kind),
                };
                response.extensions_mut().insert(Problem(error.to_string()));
                response
            }
        };
        self.sent(query.protocol, &query.method, response)
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
    fn sent(
        &self,
        protocol: Protocol,
        method: &Method,
        mut response: Response<Bytes>,
    ) -> Response<Bytes> {
        if method == Method::HEAD {
            *response.body_mut() = Bytes::new();
        }
        self.metrics.response(protocol, method, response.status());
        response
    }

    fn plan(
        &self,
        request: &Request<Bytes>,
        route: Route,
        now: SystemTime,
    ) -> Result<Operation, Answer> {
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
                let etag = EntityTag::generate(id, &*self.entropy)
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
            // Synapse answers HEAD wherever it answers GET.
            (Route::Msc4388Root, &Method::GET | &Method::HEAD) => Err(Answer::Json(
                StatusCode::OK,
                json!({ "create_available": self.may_create(request) }),
            )),
            (Route::Msc4388Root, &Method::POST) => self.plan_msc4388_create(request, now),
            (Route::Msc4388Session(id), &Method::GET | &Method::HEAD) => {
                // Before the lookup: a navigation learns nothing, not even whether the
                // session exists.
                if is_navigation(request.headers()) {
                    return Err(ErrorKind::Forbidden(
                        "Rendezvous sessions cannot be opened by browser navigation",
                    )
                    .into());
                }
                let id = id.ok_or(ErrorKind::SessionNotFound)?;
                Ok(self.operation(request, Limit::Session, Action::Msc4388Read { id }))
            }
            (Route::Msc4388Session(id), &Method::PUT) => {
                let body = parse_body(request.body(), true)?;
                let id = id.ok_or(ErrorKind::SessionNotFound)?;
                let presented = body.sequence_token.unwrap_or_default();
                // The successor of the presented token, which is the one the write gets if
                // the presented token is current (see `SequenceToken`).
                let next = SequenceToken::parse(&presented)
                    .and_then(|token| token.successor(id, &body.data))
                    .map(|token| token.to_entity_tag());
                let write = Msc4388Write {
                    id,
                    presented,
                    next,
                    data: body.data,
                };
                Ok(self.operation(request, Limit::Session, Action::Msc4388Write(write)))
            }
            (Route::Msc4388Session(id), &Method::DELETE) => {
                let id = id.ok_or(ErrorKind::SessionNotFound)?;
                Ok(self.operation(request, Limit::Session, Action::Msc4388Delete { id }))
            }
            (
                Route::Create | Route::Session(_) | Route::Msc4388Root | Route::Msc4388Session(_),
                _,
            ) => Err(ErrorKind::MethodNotAllowed.into()),
            (Route::Unknown, _) => Err(ErrorKind::UnknownPath.into()),
        }
    }

    /// Whether the caller of `request` may create an MSC4388 session: anyone in open mode,
    /// only a caller the glue marked [`Authenticated`] in authenticated mode.
    fn may_create(&self, request: &Request<Bytes>) -> bool {
        match self.config.msc4388 {
            Msc4388Mode::Off => false,
            Msc4388Mode::Open => true,
            Msc4388Mode::Authenticated => request.extensions().get::<Authenticated>().is_some(),
        }
    }

    /// An MSC4388 create: the policy, then the body (size bound, JSON, `data`, its size),
    /// then the same capacity, quota and rate limit as an MSC4108 create.
    fn plan_msc4388_create(
        &self,
        request: &Request<Bytes>,
        now: SystemTime,
    ) -> Result<Operation, Answer> {
        if !self.may_create(request) {
            return Err(ErrorKind::Forbidden(
                "Creating a rendezvous session requires an access token on this server",
            )
            .into());
        }
        let body = parse_body(request.body(), false)?;
        let id = SessionId::generate(now, &*self.entropy)
            .map_err(|error| Answer::internal(error.to_string()))?;
        let token = SequenceToken::initial(id, &body.data);
        let (quota, groups) = self.quota_and_groups(request);
        let action = Action::Msc4388Create(NewSession {
            id,
            payload: body.data,
            etag: token.to_entity_tag(),
            ttl: self.config.ttl,
            quota,
            groups,
        });
        Ok(self.operation(request, Limit::Create, action))
    }

    /// The quota and fair-share groups a create counts against.
    fn quota_and_groups(&self, request: &Request<Bytes>) -> (Option<Quota>, Vec<PrefixGroup>) {
        let client = self.limited_client(request);
        let quota = client.map(|client| Quota {
            client: *client,
            max: self.config.rate_limit.max_sessions_per_ip,
        });
        let groups = client
            .filter(|_| self.config.rate_limit.fair_share)
            .map(ClientKey::groups)
            .unwrap_or_default();
        (quota, groups)
    }

    fn plan_create(&self, request: &Request<Bytes>, now: SystemTime) -> Result<Operation, Answer> {
        check_upload(
            request.headers(),
            request.body(),
            self.config.max_payload_bytes,
        )?;
        let payload = request.body().clone();
        let fresh = SessionId::generate(now, &*self.entropy)
            .and_then(|id| Ok((id, EntityTag::generate(id, &*self.entropy)?)));
        let (id, etag) = fresh.map_err(|error| Answer::internal(error.to_string()))?;
        let (quota, groups) = self.quota_and_groups(request);
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
                self.metrics.rate_limited(Protocol::Msc4108);
                responder.error(&ErrorKind::RateLimited { retry_after })
            }
            Outcome::Full { retry_after } => {
                responder.error(&ErrorKind::CapacityExceeded { retry_after })
            }
            Outcome::Created(meta) => {
                self.metrics.session_created(Protocol::Msc4108);
                let Action::Create(new) = &query.operation.action else {
                    return responder.error(&ErrorKind::Internal);
                };
                responder.created(&meta, &self.session_url(new.id))
            }
            Outcome::Found(session) => responder.payload(&session),
            Outcome::NotModified { meta, length } => responder.not_modified(&meta, length),
            Outcome::Replaced(meta) => responder.accepted(&meta),
            Outcome::PreconditionFailed(meta) => {
                self.metrics.conflict(Protocol::Msc4108);
                responder.precondition_failed(&meta)
            }
            Outcome::Deleted => {
                self.metrics.session_deleted(Protocol::Msc4108);
                responder.deleted()
            }
            Outcome::NotFound => responder.error(&ErrorKind::SessionNotFound),
            // Only MSC4388 writes have it.
            Outcome::Unchanged(_) => responder.error(&ErrorKind::Internal),
        }
    }

    /// The MSC4388 response to a store's outcome, at `now` (for `expires_in_ms`).
    fn respond_msc4388(
        &self,
        query: &Query,
        outcome: Outcome,
        responder: &Responder,
        now: SystemTime,
    ) -> Response<Bytes> {
        let protocol = Protocol::Msc4388;
        // Relative, whole milliseconds, never negative (a live session ends after now).
        let expires_in_ms = |expires: SystemTime| {
            expires.duration_since(now).map_or(0, |left| {
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
            })
        };
        match outcome {
            Outcome::RateLimited { retry_after } | Outcome::QuotaExceeded { retry_after } => {
                self.metrics.rate_limited(protocol);
                responder.json_error(&ErrorKind::RateLimited { retry_after })
            }
            Outcome::Full { retry_after } => {
                responder.json_error(&ErrorKind::CapacityExceeded { retry_after })
            }
            Outcome::Created(meta) => {
                let Action::Msc4388Create(new) = &query.operation.action else {
                    return responder.json_error(&ErrorKind::Internal);
                };
                self.metrics.session_created(protocol);
                responder.json(
                    StatusCode::OK,
                    &json!({
                        "id": new.id.to_string(),
                        "sequence_token": meta.etag.opaque(),
                        "expires_in_ms": expires_in_ms(meta.expires),
                    }),
                )
            }
            Outcome::Found(session) => {
                let Ok(data) = std::str::from_utf8(&session.payload) else {
                    // Only a store holding what it never wrote can get here.
                    let mut response = responder.json_error(&ErrorKind::Internal);
                    response.extensions_mut().insert(Problem(format!(
                        "MSC4388 session {} holds data that is not UTF-8",
                        session.id.short()
                    )));
                    return response;
                };
                responder.json(
                    StatusCode::OK,
                    &json!({
                        "data": data,
                        "sequence_token": session.etag.opaque(),
                        "expires_in_ms": expires_in_ms(session.expires),
                    }),
                )
            }
            Outcome::Replaced(meta) => responder.json(
                StatusCode::OK,
                &json!({ "sequence_token": meta.etag.opaque() }),
            ),
            Outcome::Unchanged(meta) => {
                self.metrics.retry(protocol);
                responder.json(
                    StatusCode::OK,
                    &json!({ "sequence_token": meta.etag.opaque() }),
                )
            }
            Outcome::PreconditionFailed(_) => {
                self.metrics.conflict(protocol);
                responder.json_error(&ErrorKind::ConcurrentWrite)
            }
            Outcome::Deleted => {
                self.metrics.session_deleted(protocol);
                responder.json(StatusCode::OK, &json!({}))
            }
            Outcome::NotFound => responder.json_error(&ErrorKind::SessionNotFound),
            // Only MSC4108 reads with If-None-Match have it.
            Outcome::NotModified { .. } => responder.json_error(&ErrorKind::Internal),
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
    /// An MSC4388 JSON answer (discovery).
    Json(StatusCode, serde_json::Value),
    Error(ErrorKind, Option<Problem>),
}

impl Answer {
    fn internal(why: String) -> Self {
        Self::Error(ErrorKind::Internal, Some(Problem(why)))
    }

    /// The response, in the style of `protocol`'s API.
    fn into_response(self, now: SystemTime, protocol: Protocol) -> Response<Bytes> {
        let responder = Responder::new(now);
        match self {
            Self::Preflight => responder.preflight(),
            Self::Json(status, body) => responder.json(status, &body),
            Self::Error(kind, problem) => {
                let mut response = match protocol {
                    Protocol::Msc4108 => responder.error(&kind),
                    Protocol::Msc4388 => responder.json_error(&kind),
                };
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
