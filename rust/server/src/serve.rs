//! HTTP/1.1 on hyper: the client listeners, the metrics listener, the bounds on what a
//! client may send and hold, and the graceful stop.
//!
//! Bounds, so that no client can exhaust the server (each is configurable, see
//! `docs/standalone.md`):
//! - the request line and headers together: `max_header_bytes` (hyper's read buffer; more
//!   is answered 431), and at most 100 header lines (hyper's default, kept on the stack);
//! - the body: only creates and writes are read, and only when they declare a
//!   `Content-Length` within `max_payload_bytes`, so at most that many bytes are ever
//!   buffered. Uploads the core refuses from their headers (chunked: 400, as MSC4108
//!   requires a length; a declared length over the limit: 413) are read and thrown away up
//!   to [`DISCARD_LIMIT`] bytes before the answer, as Synapse does, so that a client still
//!   sending its body reads the answer instead of a reset connection; beyond that, or with
//!   `Expect: 100-continue`, they are answered at once and the connection closes;
//! - time: the headers must arrive within `request_timeout` (on a kept-alive connection
//!   counted from the end of the previous answer, so idle connections close too) and the
//!   body within `request_timeout` after them; a request that does not is dropped unanswered
//!   (slow clients cannot hold a connection open with a trickle of bytes);
//! - connections: at most `max_connections` at once; beyond it new ones wait in the
//!   kernel's accept queue until one closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::body::Whole;
use crate::config::Settings;

/// How many connections may wait in the kernel's queue before being accepted.
const BACKLOG: i32 = 1024;
/// Most body bytes read and thrown away from an upload that is refused anyway.
pub const DISCARD_LIMIT: u64 = 1024 * 1024;

/// What every connection task shares.
pub struct Context {
    app: Arc<App>,
    http: http1::Builder,
    request_timeout: Duration,
    slots: Arc<Semaphore>,
    /// Set when the server starts stopping: `/health` answers 503 from then on.
    draining: AtomicBool,
    stop: watch::Receiver<bool>,
    /// Signalled each time a client connection ends, for the drain.
    ended: Notify,
}

/// A request dropped without an answer (its body did not arrive in time, or the client
/// broke the framing); hyper closes the connection.
#[derive(Debug)]
struct Dropped(&'static str);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Dropped {}

/// Opens a listening socket on `address`. IPv6 sockets accept IPv6 only, so that
/// `[::]:8090` and `0.0.0.0:8090` can both be listed.
///
/// # Errors
/// The operating system's reason.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restarted server can bind again at once, while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

impl Context {
    /// The shared state of the client listeners, stopped through `stop`.
    pub fn new(settings: &Settings, app: Arc<App>, stop: watch::Receiver<bool>) -> Arc<Self> {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.request_timeout)
            .max_buf_size(settings.max_header_bytes)
            // The core writes Date itself, from the same clock as Expires.
            .auto_date_header(false)
            .keep_alive(true);
        Arc::new(Self {
            app,
            http,
            request_timeout: settings.request_timeout,
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            draining: AtomicBool::new(false),
            stop,
            ended: Notify::new(),
        })
    }

    /// Marks the server as stopping.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Waits until every client connection has ended, or `deadline`; whether they all did.
    pub async fn drained(&self, deadline: Instant) -> bool {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            if self.app.open_connections.load(Ordering::Acquire) == 0 {
                return true;
            }
            tokio::select! {
                () = self.ended.notified() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return self.app.open_connections.load(Ordering::Acquire) == 0;
                }
            }
        }
    }
}

/// Accepts client connections on `listener` until the stop signal.
pub async fn accept(listener: TcpListener, context: Arc<Context>) {
    let mut stop = context.stop.clone();
    loop {
        // A slot first: at the limit, connections wait in the kernel's queue.
        let permit = tokio::select! {
            permit = context.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                context.app.open_connections.fetch_add(1, Ordering::AcqRel);
                context
                    .app
                    .accepted_connections
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, peer, context.clone(), permit));
            }
            Err(error) => {
                // Out of file descriptors, most likely: give connections time to close.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts a client connection until it ends, however it ends.
struct Open(Arc<Context>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.app.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_one();
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = Open(context.clone());
    // Answers are written whole; nothing waits for more bytes of them.
    let _ = stream.set_nodelay(true);
    let mut stop = context.stop.clone();
    let handler = context.clone();
    let service = service_fn(move |request| {
        let handler = handler.clone();
        async move { handle(&handler, peer, request).await }
    });
    let conn = context.http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended");
                }
                return;
            }
            // Finish the request in flight, if any, then close.
            () = stopped(&mut stop), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

async fn handle(
    context: &Context,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Whole>, Dropped> {
    if request.uri().path() == "/health" {
        return Ok(health(context, request.method()));
    }
    let (parts, body) = request.into_parts();
    let max = context.app.max_payload_bytes();
    let body = match upload(&parts.method, &parts.headers, max) {
        Upload::Keep => read_body(body, max, context.request_timeout).await?,
        Upload::Discard => {
            discard_body(body, context.request_timeout).await?;
            Bytes::new()
        }
        Upload::Ignore => {
            // Not read: hyper drains a small rest or closes the connection.
            drop(body);
            Bytes::new()
        }
    };
    let mut request = Request::from_parts(parts, body);
    context.app.identify(&mut request, Some(peer.ip()));
    let response = context.app.answer(&request).await;
    Ok(Whole::response(response))
}

/// What to do with a request's body.
#[derive(Debug, PartialEq, Eq)]
enum Upload {
    /// Read it for the core: an upload declaring a length within the limit.
    Keep,
    /// Read it and throw it away: an upload the core refuses from its headers alone.
    Discard,
    /// Leave it: no body, or one too large to be worth reading.
    Ignore,
}

fn upload(method: &Method, headers: &HeaderMap, max: usize) -> Upload {
    if !(method == Method::POST || method == Method::PUT) {
        return Upload::Ignore;
    }
    // A client waiting for 100 Continue sends nothing more unless asked: answer at once.
    let waits = headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if headers.contains_key(TRANSFER_ENCODING) {
        return if waits {
            Upload::Ignore
        } else {
            Upload::Discard
        };
    }
    let mut declared = None;
    for value in &headers.get_all(CONTENT_LENGTH) {
        // hyper has refused unparseable and disagreeing lengths already.
        let length = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        declared = declared.max(length);
    }
    match declared {
        Some(length) if length <= max as u64 => Upload::Keep,
        Some(length) if length <= DISCARD_LIMIT && !waits => Upload::Discard,
        // No length, or one too large to be worth reading.
        _ => Upload::Ignore,
    }
}

/// Reads the body and throws it away, up to [`DISCARD_LIMIT`] bytes, within `within`.
async fn discard_body(mut body: Incoming, within: Duration) -> Result<(), Dropped> {
    let reading = async move {
        let mut total = 0;
        while total <= DISCARD_LIMIT {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| Dropped("the request body broke off"))?;
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
            }
        }
        Ok(())
    };
    tokio::time::timeout(within, reading)
        .await
        .unwrap_or(Err(Dropped("the request body did not arrive in time")))
}

/// At most `max + 1` bytes of the body (enough for the core to see a body over the limit),
/// within `within`.
async fn read_body(mut body: Incoming, max: usize, within: Duration) -> Result<Bytes, Dropped> {
    let reading = async move {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0;
        while total <= max {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| Dropped("the request body broke off"))?;
            if let Ok(mut data) = frame.into_data() {
                data.truncate(max + 1 - total);
                total += data.len();
                chunks.push(data);
            }
        }
        // One chunk is the usual case: no copy.
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => {
                let mut whole = BytesMut::with_capacity(total);
                for chunk in chunks {
                    whole.extend_from_slice(&chunk);
                }
                whole.freeze()
            }
        })
    };
    tokio::time::timeout(within, reading)
        .await
        .unwrap_or(Err(Dropped("the request body did not arrive in time")))
}

/// `/health`: 200 while serving with a usable store, 503 while stopping or while Redis
/// cannot be reached, so that a load balancer sends requests elsewhere.
fn health(context: &Context, method: &Method) -> Response<Whole> {
    let (status, text) = if context.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else if !context.app.store_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    let mut response = plain(status, text);
    if method == Method::HEAD {
        *response.body_mut() = Bytes::new();
    }
    Whole::response(response)
}

fn plain(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::copy_from_slice(text.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves `/metrics` and `/health` on `listener` until the stop signal.
pub async fn metrics(listener: TcpListener, context: Arc<Context>) {
    let mut stop = context.stop.clone();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(8192);
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let context = context.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let context = context.clone();
                async move { Ok::<_, Infallible>(scrape(&context, &request)) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn scrape(context: &Context, request: &Request<Incoming>) -> Response<Whole> {
    let path = request.uri().path();
    if path == "/health" {
        return health(context, request.method());
    }
    if path != "/metrics" {
        return Whole::response(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    let text = context.app.metrics_text();
    let mut response = plain(StatusCode::OK, "");
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    *response.body_mut() = Bytes::from(text);
    if request.method() == Method::HEAD {
        *response.body_mut() = Bytes::new();
    }
    Whole::response(response)
}

/// Returns once the stop signal is given (at once if it already was).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: it is not `Send`.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Runs `work` every `period` until the stop signal.
pub async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => work().await,
            () = stopped(&mut stop) => return,
        }
    }
}
