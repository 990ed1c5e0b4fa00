//! The Redis store's connections on tokio, driven by the core's sans-IO [`Link`]: the same
//! pipelining, per-call timeout, `max_pending` bound, `NOSCRIPT` recovery, retry of reads
//! and stall detection as the module's, since the module runs the same `Link` from Twisted.
//! Only the bytes are moved here.
//!
//! One task owns the link and every connection. Requests hand it their script call over a
//! bounded channel and wait for the reply on a oneshot channel. Each time the task wakes it
//! takes every call that has arrived, lets the link write them (pipelined, one connection
//! filled before the next), writes each connection's bytes in one system call, and reads
//! every reply that has arrived: under load, one wake-up carries many requests each way.
//! Calls that have just arrived wait once for every other task ready to run on the
//! task's thread before they are written (`yield_now`, which tokio wakes only once the
//! thread has nothing else to do): otherwise tokio runs the task right after each request
//! that hands it a call, and every call costs a system call of its own.
//! A task of its own (rather than a lock around the link, taken by each request) keeps the
//! sockets' readiness and the link's timer in one place, as Twisted's reactor does for the
//! module, and lets the batching happen without any request waiting for another.
//!
//! The redis crate's own async client (`MultiplexedConnection`) was the alternative; it
//! would pipeline too, but with its own timeouts, bounds and reconnection, not the
//! module's, so the two would behave differently when Redis is slow or gone.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use synapse_rendezvous_core::store::redis::{
    Address, Call, Effect, Link, LinkConfig, Target, Value,
};
use synapse_rendezvous_core::{RedisStore, StoreError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_rustls::TlsConnector;

/// A call's reply, or why there is none, and how long it took from submission.
pub type Reply = (Result<Value, StoreError>, Duration);

/// Most calls taken from the channel per wake-up.
const BATCH: usize = 1024;
/// Rounds of work per poll before the task yields to others.
const ROUNDS: usize = 32;
/// Bytes read from a connection at a time.
const READ_SIZE: usize = 64 * 1024;
/// First wait before reconnecting after a loss; it doubles with every failed attempt in a
/// row, up to [`MAX_RETRY`]. Like the module: a restarted Redis is back within a second.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);
/// A connection up this long before it was lost was healthy: reconnect after the first wait.
const HEALTHY: Duration = Duration::from_secs(1);

struct Submission {
    call: Call,
    retry: bool,
    reply: oneshot::Sender<Reply>,
}

/// How connections to Redis are opened.
enum Endpoint {
    Tcp {
        host: String,
        port: u16,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    },
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

trait Duplex: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Duplex for T {}
type Stream = Pin<Box<dyn Duplex>>;
type Attempt = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

/// The handle requests use; the driving task runs until [`RedisLink::close`].
pub struct RedisLink {
    submissions: mpsc::Sender<Submission>,
    close: Mutex<Option<oneshot::Sender<()>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
    up: Arc<AtomicUsize>,
}

impl RedisLink {
    /// Starts the driving task on the current tokio runtime: it connects at once.
    ///
    /// # Errors
    /// When the target cannot be reached by this build (a UNIX socket elsewhere than on
    /// UNIX) or its TLS name is unusable.
    pub fn start(
        target: &Target,
        config: LinkConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let endpoint = match &target.address {
            Address::Tcp {
                host,
                port,
                tls: wants_tls,
            } => {
                let tls = match (wants_tls, tls) {
                    (Some(_), Some(config)) => {
                        let name = ServerName::try_from(host.clone()).map_err(|error| {
                            format!("redis.url: bad TLS name {host:?}: {error}")
                        })?;
                        Some((TlsConnector::from(config), name))
                    }
                    (Some(_), None) => return Err("redis.url: rediss:// without TLS".to_owned()),
                    (None, _) => None,
                };
                Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                    tls,
                }
            }
            #[cfg(unix)]
            Address::Unix(path) => Endpoint::Unix(path.clone()),
            #[cfg(not(unix))]
            Address::Unix(_) => return Err("redis.url: UNIX sockets need a UNIX system".into()),
        };
        let connections = config.connections.max(1);
        // The link refuses calls beyond max_pending itself (503 at once): the channel only
        // has to hold what arrives between two wake-ups of the task.
        let (submissions, receiver) = mpsc::channel(config.max_pending.max(1));
        let (close, closing) = oneshot::channel();
        let up = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        let driver = Driver {
            link: Link::new(config, RedisStore::handshake(target)),
            effects: Vec::new(),
            slots: (0..connections)
                .map(|_| Slot::Down {
                    retry_at: now,
                    delay: FIRST_RETRY,
                    failures: 0,
                })
                .collect(),
            submissions: receiver,
            inbox: Vec::with_capacity(BATCH),
            closing,
            closed: false,
            endpoint: Arc::new(endpoint),
            connect_timeout: config.timeout,
            read_buffer: vec![0; READ_SIZE],
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            up: up.clone(),
            fresh_calls: false,
            deferral: None,
        };
        let driver = tokio::spawn(driver.run());
        Ok(Self {
            submissions,
            close: Mutex::new(Some(close)),
            driver: Mutex::new(Some(driver)),
            up,
        })
    }

    /// Sends `call` and waits for its reply: within the link's timeout of its arrival at
    /// the task, whatever Redis does. `retry` says whether it may be sent twice.
    pub async fn call(&self, call: Call, retry: bool) -> Reply {
        let (reply, answer) = oneshot::channel();
        let submission = Submission { call, retry, reply };
        match self.submissions.try_send(submission) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return (Err(StoreError::Overloaded), Duration::ZERO)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return (shutting_down(), Duration::ZERO),
        }
        // The task answers every call it took, even at shutdown; a dropped sender means
        // the task itself is gone.
        answer
            .await
            .unwrap_or_else(|_| (shutting_down(), Duration::ZERO))
    }

    /// How many connections are open and set up now.
    pub fn connections_up(&self) -> usize {
        self.up.load(Ordering::Relaxed)
    }

    /// Answers every waiting call 503, closes the connections and ends the task, waiting
    /// at most `within` for it.
    pub async fn close(&self, within: Duration) {
        if let Some(close) = self
            .close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = close.send(());
        }
        let driver = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(driver) = driver {
            let _ = tokio::time::timeout(within, driver).await;
        }
    }
}

fn shutting_down() -> Result<Value, StoreError> {
    Err(StoreError::Unavailable("shutting down".to_owned()))
}

enum Slot {
    /// Not connected; try again at `retry_at`.
    Down {
        retry_at: Instant,
        delay: Duration,
        failures: u32,
    },
    Connecting {
        attempt: Attempt,
        delay: Duration,
        failures: u32,
    },
    Up {
        stream: Stream,
        /// Bytes the link wrote, `sent` of them already on the socket.
        out: Vec<u8>,
        sent: usize,
        /// Written bytes may sit in a TLS buffer until flushed.
        unflushed: bool,
        since: Instant,
        delay: Duration,
    },
}

struct Driver {
    link: Link<oneshot::Sender<Reply>>,
    effects: Vec<Effect<oneshot::Sender<Reply>>>,
    slots: Vec<Slot>,
    submissions: mpsc::Receiver<Submission>,
    inbox: Vec<Submission>,
    closing: oneshot::Receiver<()>,
    closed: bool,
    endpoint: Arc<Endpoint>,
    connect_timeout: Duration,
    read_buffer: Vec<u8>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    up: Arc<AtomicUsize>,
    /// Calls arrived since the last write to the sockets.
    fresh_calls: bool,
    /// The wait for the other ready tasks before those calls are written.
    deferral: Option<Arc<Deferral>>,
}

impl Driver {
    async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_drive(cx)).await;
        tracing::debug!("Redis link closed");
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS {
            let now = Instant::now();
            let mut busy = self.poll_control(cx, now);
            for index in 0..self.slots.len() {
                busy |= self.poll_slot(index, cx, now);
            }
            busy |= self.apply_effects(now);
            if self.writes_may_go(cx) {
                for index in 0..self.slots.len() {
                    busy |= self.flush(index, cx, now);
                }
            }
            busy |= self.apply_effects(now);
            if self.closed {
                // Every call has been answered (link.close) and every socket is dropped.
                for slot in &mut self.slots {
                    if matches!(slot, Slot::Up { .. }) {
                        self.up.fetch_sub(1, Ordering::Relaxed);
                    }
                    *slot = down(now, FIRST_RETRY, 0);
                }
                self.submissions.close();
                while let Ok(submission) = self.submissions.try_recv() {
                    let _ = submission.reply.send((shutting_down(), Duration::ZERO));
                }
                return Poll::Ready(());
            }
            busy |= self.poll_timer(cx, now);
            if !busy {
                return Poll::Pending;
            }
        }
        // Plenty done in this poll: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The shutdown signal and new calls.
    fn poll_control(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut busy = false;
        if !self.closed && Pin::new(&mut self.closing).poll(cx).is_ready() {
            self.closed = true;
            self.link.close(now, &mut self.effects);
            busy = true;
        }
        match self.submissions.poll_recv_many(cx, &mut self.inbox, BATCH) {
            Poll::Ready(0) => {
                // Every handle is gone: nobody can ask anything any more.
                if !self.closed {
                    self.closed = true;
                    self.link.close(now, &mut self.effects);
                }
                busy = true;
            }
            Poll::Ready(_) => {
                self.fresh_calls = true;
                for submission in self.inbox.drain(..) {
                    self.link.submit(
                        submission.reply,
                        submission.call,
                        submission.retry,
                        now,
                        &mut self.effects,
                    );
                }
                busy = true;
            }
            Poll::Pending => {}
        }
        busy
    }

    /// Whether the sockets may be written now: not while calls that just arrived wait for
    /// the other ready tasks' calls, so that all of them go out in one write.
    fn writes_may_go(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(deferral) = &self.deferral {
            if !deferral.fired(cx.waker()) {
                return false;
            }
            self.deferral = None;
            self.fresh_calls = false;
            return true;
        }
        if !self.fresh_calls || self.closed {
            return true;
        }
        self.deferral = Some(Deferral::start(cx.waker()));
        false
    }

    /// Connects, reads what arrived; whether anything happened.
    fn poll_slot(&mut self, index: usize, cx: &mut Context<'_>, now: Instant) -> bool {
        match &mut self.slots[index] {
            Slot::Down {
                retry_at,
                delay,
                failures,
            } => {
                if self.closed || now < *retry_at {
                    return false;
                }
                let attempt = Box::pin(connect(self.endpoint.clone(), self.connect_timeout));
                self.slots[index] = Slot::Connecting {
                    attempt,
                    delay: *delay,
                    failures: *failures,
                };
                true
            }
            Slot::Connecting {
                attempt,
                delay,
                failures,
            } => match attempt.as_mut().poll(cx) {
                Poll::Pending => false,
                Poll::Ready(Ok(stream)) => {
                    if *failures > 0 {
                        tracing::info!(connection = index, "connected to Redis again");
                    } else {
                        tracing::debug!(connection = index, "connected to Redis");
                    }
                    self.slots[index] = Slot::Up {
                        stream,
                        out: Vec::new(),
                        sent: 0,
                        unflushed: false,
                        since: now,
                        delay: *delay,
                    };
                    self.up.fetch_add(1, Ordering::Relaxed);
                    // Calls of requests that have gone since they were submitted are not
                    // sent: their oneshot is closed.
                    self.link
                        .connected(index, now, |reply| !reply.is_closed(), &mut self.effects);
                    true
                }
                Poll::Ready(Err(error)) => {
                    // One warning per outage, not one per attempt.
                    if *failures == 0 {
                        tracing::warn!(connection = index, %error, "cannot connect to Redis");
                    } else {
                        tracing::debug!(connection = index, %error, "cannot connect to Redis");
                    }
                    let next = (*delay * 2).min(MAX_RETRY);
                    self.slots[index] = down(now + *delay, next, *failures + 1);
                    true
                }
            },
            Slot::Up { stream, .. } => {
                let mut busy = false;
                // Bounded, so that one flooded connection cannot starve the others.
                for _ in 0..16 {
                    let mut buffer = ReadBuf::new(&mut self.read_buffer);
                    match stream.as_mut().poll_read(cx, &mut buffer) {
                        Poll::Pending => return busy,
                        Poll::Ready(Ok(())) if buffer.filled().is_empty() => {
                            self.lose(index, now, "Redis closed the connection");
                            return true;
                        }
                        Poll::Ready(Ok(())) => {
                            self.link
                                .received(index, buffer.filled(), now, &mut self.effects);
                            busy = true;
                        }
                        Poll::Ready(Err(error)) => {
                            self.lose(index, now, &error.to_string());
                            return true;
                        }
                    }
                }
                busy
            }
        }
    }

    /// Writes what the link wrote to connection `index`.
    fn flush(&mut self, index: usize, cx: &mut Context<'_>, now: Instant) -> bool {
        let Slot::Up {
            stream,
            out,
            sent,
            unflushed,
            ..
        } = &mut self.slots[index]
        else {
            return false;
        };
        let mut busy = false;
        while *sent < out.len() {
            match stream.as_mut().poll_write(cx, &out[*sent..]) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    self.lose(index, now, "Redis stopped taking bytes");
                    return true;
                }
                Poll::Ready(Ok(written)) => {
                    *sent += written;
                    *unflushed = true;
                    busy = true;
                }
                Poll::Ready(Err(error)) => {
                    self.lose(index, now, &error.to_string());
                    return true;
                }
            }
        }
        if *sent == out.len() {
            out.clear();
            *sent = 0;
        }
        if *unflushed {
            match stream.as_mut().poll_flush(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => *unflushed = false,
                Poll::Ready(Err(error)) => {
                    self.lose(index, now, &error.to_string());
                    return true;
                }
            }
        }
        busy
    }

    /// Carries out what the link decided, until it decides nothing more.
    fn apply_effects(&mut self, now: Instant) -> bool {
        let mut any = false;
        while !self.effects.is_empty() {
            any = true;
            for effect in std::mem::take(&mut self.effects) {
                match effect {
                    Effect::Write { connection, bytes } => {
                        if let Some(Slot::Up { out, .. }) = self.slots.get_mut(connection) {
                            out.extend_from_slice(&bytes);
                        }
                    }
                    Effect::Close { connection, why } => {
                        if !self.closed {
                            tracing::warn!(connection, %why, "closing Redis connection");
                        }
                        self.lose(connection, now, &why);
                    }
                    Effect::Done {
                        token,
                        reply,
                        elapsed,
                    } => {
                        // The request may have gone (its client disconnected).
                        let _ = token.send((reply, elapsed));
                    }
                }
            }
        }
        any
    }

    /// Drops connection `index` and tells the link, which answers or re-sends what it owed.
    fn lose(&mut self, index: usize, now: Instant, why: &str) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if let Slot::Up { since, delay, .. } = slot {
            let healthy = now.saturating_duration_since(*since) >= HEALTHY;
            let delay = if healthy { FIRST_RETRY } else { *delay };
            if !self.closed {
                tracing::warn!(connection = index, %why, "lost the connection to Redis");
            }
            self.up.fetch_sub(1, Ordering::Relaxed);
            *slot = down(now + delay, (delay * 2).min(MAX_RETRY), 0);
            self.link.lost(index, now, &mut self.effects);
        }
    }

    /// Runs the link's timer (calls whose time is up, stalled connections) and wakes for
    /// the next reconnection attempt.
    fn poll_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let retry = self
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Down { retry_at, .. } => Some(*retry_at),
                _ => None,
            })
            .min();
        let next = match (self.link.next_deadline(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = next else {
            self.timer_at = None;
            return false;
        };
        if self.timer_at != Some(at) {
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
            self.timer_at = Some(at);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer_at = None;
        self.link.tick(now, &mut self.effects);
        true
    }
}

/// A wake-up once the thread has run every other task ready now. `tokio::task::yield_now`
/// asks tokio for exactly that, but its future is ready on its next poll whatever woke the
/// task, and the driver is polled again as soon as a request hands it a call; so the
/// deferred wake-up is caught here and remembered.
struct Deferral {
    fired: AtomicBool,
    waker: Mutex<Waker>,
}

impl Deferral {
    fn start(waker: &Waker) -> Arc<Self> {
        let deferral = Arc::new(Self {
            fired: AtomicBool::new(false),
            waker: Mutex::new(waker.clone()),
        });
        let deferred = Waker::from(deferral.clone());
        let mut yielding = std::pin::pin!(tokio::task::yield_now());
        // The first poll only hands `deferred` to tokio; outside a runtime it wakes at once.
        if yielding
            .as_mut()
            .poll(&mut Context::from_waker(&deferred))
            .is_ready()
        {
            deferral.fired.store(true, Ordering::Release);
        }
        deferral
    }

    /// Whether the wake-up came; if not, it will wake `waker`.
    fn fired(&self, waker: &Waker) -> bool {
        if self.fired.load(Ordering::Acquire) {
            return true;
        }
        let mut current = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if !current.will_wake(waker) {
            current.clone_from(waker);
        }
        drop(current);
        // It may have come while the waker was swapped: then the old one was woken.
        self.fired.load(Ordering::Acquire)
    }
}

impl Wake for Deferral {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wake_by_ref();
    }
}

fn down(retry_at: Instant, delay: Duration, failures: u32) -> Slot {
    Slot::Down {
        retry_at,
        delay,
        failures,
    }
}

/// Opens one connection (TCP with TLS if asked, or a UNIX socket), within `within`.
async fn connect(endpoint: Arc<Endpoint>, within: Duration) -> io::Result<Stream> {
    let opening = async move {
        match &*endpoint {
            Endpoint::Tcp { host, port, tls } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                // Small pipelined writes must not wait for Nagle; keep-alive finds a dead
                // peer behind a silent network.
                tcp.set_nodelay(true)?;
                let _ = socket2::SockRef::from(&tcp).set_keepalive(true);
                match tls {
                    None => Ok(Box::pin(tcp) as Stream),
                    Some((connector, name)) => {
                        let stream = connector.connect(name.clone(), tcp).await?;
                        Ok(Box::pin(stream) as Stream)
                    }
                }
            }
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok(Box::pin(stream) as Stream)
            }
        }
    };
    tokio::time::timeout(within, opening)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {} ms", within.as_millis()),
            ))
        })
}
