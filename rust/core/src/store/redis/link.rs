//! Pipelined connections to Redis as a sans-IO state machine: the caller owns the sockets
//! and the timer (Twisted's reactor in the module), tells the link what happened, and
//! carries out the [`Effect`]s it returns. Replies come back in the order the calls were
//! written, so each connection keeps a queue of what it is owed.
//!
//! The bounds: every call is answered within `timeout` of its submission, whatever Redis
//! does; at most `max_pending` calls wait or are in flight at once (calls abandoned after
//! their timeout still count until Redis answers them or their connection is closed), and
//! beyond that a call fails at once. A connection whose oldest call has waited `timeout`
//! without an answer is closed: Redis is stalled or the link is dead.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ::redis::{Cmd, Value};

use super::replies::Replies;
use super::scripts::Call;
use crate::store::StoreError;

/// The link's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// How many connections to keep.
    pub connections: usize,
    /// Most calls waiting or in flight at once.
    pub max_pending: usize,
    /// Longest a call may take from submission to answer.
    pub timeout: Duration,
}

/// Something the caller must do.
#[derive(Debug)]
pub enum Effect<T> {
    /// Write these bytes to connection `connection`.
    Write {
        /// Which connection.
        connection: usize,
        /// What to write.
        bytes: Vec<u8>,
    },
    /// A call is over: hand its reply (or why there is none) to whoever made it.
    Done {
        /// What the caller submitted with the call.
        token: T,
        /// The reply.
        reply: Result<Value, StoreError>,
        /// How long it took from submission.
        elapsed: Duration,
    },
    /// Close connection `connection` now and report [`Link::lost`] once it is gone.
    Close {
        /// Which connection.
        connection: usize,
        /// Why, for the log.
        why: String,
    },
}

/// A call and what the link knows about it.
#[derive(Debug)]
struct Job<T> {
    token: T,
    call: Call,
    submitted: Instant,
    /// Whether it may be sent again on another connection after its own was lost
    /// (reads only: sending a write twice could apply it twice).
    retry: bool,
    /// Whether it was already resent with the script's source after `NOSCRIPT`.
    with_source: bool,
}

/// What a connection is owed, in order.
#[derive(Debug)]
enum Owed<T> {
    /// The reply to a command of the connection's opening handshake.
    Handshake,
    /// The reply to a call.
    Job(Job<T>, Instant),
    /// The reply to a call already answered with a timeout: read and dropped.
    Abandoned(Instant),
}

#[derive(Debug)]
struct Connection<T> {
    up: bool,
    owed: VecDeque<Owed<T>>,
    replies: Replies,
}

impl<T> Connection<T> {
    fn new() -> Self {
        Self {
            up: false,
            owed: VecDeque::new(),
            replies: Replies::default(),
        }
    }

    /// How much it has in flight, to spread calls over the connections.
    fn load(&self) -> usize {
        self.owed.len()
    }
}

/// Calls to Redis over a few pipelined connections.
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    handshake: Vec<Cmd>,
    connections: Vec<Connection<T>>,
    waiting: VecDeque<Job<T>>,
    pending: usize,
    closed: bool,
}

impl<T> Link<T> {
    /// Calls in flight on a connection before the next one takes new calls.
    pub const FILL: usize = 32;

    /// A link whose connections each open with `handshake` (authentication, database
    /// selection, script loading). Every connection starts down.
    pub fn new(config: LinkConfig, handshake: Vec<Cmd>) -> Self {
        Self {
            connections: (0..config.connections.max(1))
                .map(|_| Connection::new())
                .collect(),
            config,
            handshake,
            waiting: VecDeque::new(),
            pending: 0,
            closed: false,
        }
    }

    /// How many calls wait or are in flight.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Sends `call`, or keeps it until a connection is up; `retry` says whether it is safe
    /// to send twice.
    pub fn submit(
        &mut self,
        token: T,
        call: Call,
        retry: bool,
        now: Instant,
        out: &mut Vec<Effect<T>>,
    ) {
        if self.closed || self.pending >= self.config.max_pending {
            let reply = Err(if self.closed {
                StoreError::Unavailable("shutting down".to_owned())
            } else {
                StoreError::Overloaded
            });
            out.push(Effect::Done {
                token,
                reply,
                elapsed: Duration::ZERO,
            });
            return;
        }
        self.pending += 1;
        let job = Job {
            token,
            call,
            submitted: now,
            retry,
            with_source: false,
        };
        match self.least_loaded() {
            Some(connection) => self.send(connection, job, now, out),
            None => self.waiting.push_back(job),
        }
    }

    /// The first open connection with room, else the least loaded one. Filling one
    /// connection first batches more calls into each write and each read, which is what
    /// costs the process: the others stand by for a lost one, and take the overflow.
    fn least_loaded(&self) -> Option<usize> {
        let up = || {
            self.connections
                .iter()
                .enumerate()
                .filter(|(_, connection)| connection.up)
        };
        up().find(|(_, connection)| connection.load() < Self::FILL)
            .or_else(|| up().min_by_key(|(_, connection)| connection.load()))
            .map(|(index, _)| index)
    }

    fn send(&mut self, connection: usize, job: Job<T>, now: Instant, out: &mut Vec<Effect<T>>) {
        let bytes = if job.with_source {
            job.call.with_source().get_packed_command()
        } else {
            job.call.command().get_packed_command()
        };
        self.connections[connection]
            .owed
            .push_back(Owed::Job(job, now));
        out.push(Effect::Write { connection, bytes });
    }

    /// Connection `connection` is open: it sends its handshake, then the waiting calls that
    /// are still `wanted` (the others are dropped unanswered: their client has gone).
    pub fn connected(
        &mut self,
        connection: usize,
        now: Instant,
        wanted: impl Fn(&T) -> bool,
        out: &mut Vec<Effect<T>>,
    ) {
        if connection >= self.connections.len() {
            return;
        }
        if self.closed {
            out.push(Effect::Close {
                connection,
                why: "shutting down".to_owned(),
            });
            return;
        }
        // A connection reported open again before its loss was: settle what it owed.
        self.lost(connection, now, out);
        let state = &mut self.connections[connection];
        state.up = true;
        let mut bytes = Vec::new();
        for command in &self.handshake {
            command.write_packed_command(&mut bytes);
            state.owed.push_back(Owed::Handshake);
        }
        if !bytes.is_empty() {
            out.push(Effect::Write { connection, bytes });
        }
        while let Some(job) = self.waiting.pop_front() {
            if wanted(&job.token) {
                self.send(connection, job, now, out);
            } else {
                self.pending -= 1;
            }
        }
    }

    /// Bytes arrived on connection `connection`.
    pub fn received(
        &mut self,
        connection: usize,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Effect<T>>,
    ) {
        let Some(state) = self.connections.get_mut(connection) else {
            return;
        };
        state.replies.extend(data);
        loop {
            let state = &mut self.connections[connection];
            let value = match state.replies.next_reply() {
                Ok(Some(value)) => value,
                Ok(None) => return,
                Err(malformed) => return self.close_connection(connection, malformed.0, out),
            };
            match state.owed.pop_front() {
                None => {
                    let why = "Redis sent a reply nobody asked for".to_owned();
                    return self.close_connection(connection, why, out);
                }
                Some(Owed::Handshake) => {
                    if let Value::ServerError(error) = value {
                        let why = format!(
                            "Redis refused the connection's setup: {} {}",
                            error.code(),
                            error.details().unwrap_or_default()
                        );
                        return self.close_connection(connection, why, out);
                    }
                }
                Some(Owed::Abandoned(_)) => self.pending -= 1,
                Some(Owed::Job(mut job, _)) => {
                    let missing_script =
                        matches!(&value, Value::ServerError(error) if error.code() == "NOSCRIPT");
                    if missing_script && !job.with_source {
                        job.with_source = true;
                        self.send(connection, job, now, out);
                        continue;
                    }
                    self.pending -= 1;
                    out.push(Effect::Done {
                        elapsed: now.saturating_duration_since(job.submitted),
                        token: job.token,
                        reply: Ok(value),
                    });
                }
            }
        }
    }

    /// Connection `connection` is gone: reads with time left are sent again once a
    /// connection is up, every other call it owed fails.
    pub fn lost(&mut self, connection: usize, now: Instant, out: &mut Vec<Effect<T>>) {
        let Some(state) = self.connections.get_mut(connection) else {
            return;
        };
        let owed = std::mem::take(&mut state.owed);
        *state = Connection::new();
        let mut again = Vec::new();
        for item in owed {
            match item {
                Owed::Handshake => {}
                Owed::Abandoned(_) => self.pending -= 1,
                Owed::Job(mut job, _) => {
                    let time_left =
                        now.saturating_duration_since(job.submitted) < self.config.timeout;
                    if job.retry && time_left && !self.closed {
                        job.retry = false;
                        again.push(job);
                    } else {
                        self.pending -= 1;
                        out.push(Effect::Done {
                            elapsed: now.saturating_duration_since(job.submitted),
                            token: job.token,
                            reply: Err(StoreError::Unavailable(
                                "the connection to Redis was lost".to_owned(),
                            )),
                        });
                    }
                }
            }
        }
        for job in again.into_iter().rev() {
            self.waiting.push_front(job);
        }
        if let Some(connection) = self.least_loaded() {
            while let Some(job) = self.waiting.pop_front() {
                self.send(connection, job, now, out);
            }
        }
    }

    /// Answers every call whose time is up, and closes connections that stopped answering.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Effect<T>>) {
        let timeout = self.config.timeout;
        let expired = |since: Instant| now.saturating_duration_since(since) >= timeout;
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for job in self.waiting.drain(..) {
            if expired(job.submitted) {
                self.pending -= 1;
                out.push(timed_out(job, now));
            } else {
                kept.push_back(job);
            }
        }
        self.waiting = kept;
        let mut stalled = Vec::new();
        for (index, connection) in self.connections.iter_mut().enumerate() {
            let mut unanswered = false;
            for owed in &mut connection.owed {
                match owed {
                    Owed::Handshake => {}
                    Owed::Abandoned(sent) => unanswered |= expired(*sent),
                    Owed::Job(job, sent) => {
                        if expired(job.submitted) {
                            unanswered |= expired(*sent);
                            let sent = *sent;
                            if let Owed::Job(job, _) =
                                std::mem::replace(owed, Owed::Abandoned(sent))
                            {
                                out.push(timed_out(job, now));
                            }
                        }
                    }
                }
            }
            if unanswered && connection.up {
                stalled.push(index);
            }
        }
        for index in stalled {
            let why = format!("Redis did not answer within {} ms", timeout.as_millis());
            self.close_connection(index, why, out);
        }
    }

    /// When [`Link::tick`] next has something to do, if anything waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|job| job.submitted);
        let owed = self
            .connections
            .iter()
            .flat_map(|connection| connection.owed.iter())
            .filter_map(|owed| match owed {
                Owed::Job(job, _) => Some(job.submitted),
                Owed::Abandoned(sent) => Some(*sent),
                Owed::Handshake => None,
            });
        waiting.chain(owed).min().map(|at| at + self.config.timeout)
    }

    fn close_connection(&mut self, connection: usize, why: String, out: &mut Vec<Effect<T>>) {
        self.connections[connection].up = false;
        out.push(Effect::Close { connection, why });
    }

    /// Fails every call and closes every connection; later calls fail at once.
    pub fn close(&mut self, now: Instant, out: &mut Vec<Effect<T>>) {
        self.closed = true;
        let shutting_down = || Err(StoreError::Unavailable("shutting down".to_owned()));
        for job in self.waiting.drain(..) {
            out.push(Effect::Done {
                elapsed: now.saturating_duration_since(job.submitted),
                token: job.token,
                reply: shutting_down(),
            });
        }
        for (index, connection) in self.connections.iter_mut().enumerate() {
            for owed in connection.owed.drain(..) {
                if let Owed::Job(job, _) = owed {
                    out.push(Effect::Done {
                        elapsed: now.saturating_duration_since(job.submitted),
                        token: job.token,
                        reply: shutting_down(),
                    });
                }
            }
            if connection.up {
                connection.up = false;
                out.push(Effect::Close {
                    connection: index,
                    why: "shutting down".to_owned(),
                });
            }
        }
        self.pending = 0;
    }
}

fn timed_out<T>(job: Job<T>, now: Instant) -> Effect<T> {
    Effect::Done {
        elapsed: now.saturating_duration_since(job.submitted),
        token: job.token,
        reply: Err(StoreError::Timeout),
    }
}
