//! The Redis store as a [`Store`] for tests: every operation goes through the production
//! path ([`RedisStore::call`], a [`Link`] with its handshake, pipelining, timeouts and
//! reconnection, [`RedisStore::decode`]) over one blocking loopback socket that this driver
//! reads and writes itself, the way the module's Twisted glue does on the reactor.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use synapse_rendezvous_core::store::redis::{Call, Effect, Link, LinkConfig, Target, Value};
use synapse_rendezvous_core::store::{Executed, Maintenance, Operation};
use synapse_rendezvous_core::{RedisConfig, RedisStore, Store, StoreError};

/// A Redis store driven synchronously, one operation at a time.
pub struct LinkedRedis {
    store: RedisStore,
    /// Whether scripts take the caller's `now` (a manual clock) instead of Redis's clock.
    caller_clock: bool,
    driver: Mutex<Driver>,
}

struct Driver {
    address: SocketAddr,
    link: Link<u64>,
    stream: Option<TcpStream>,
    next_token: u64,
    timeout: Duration,
    /// Whether the last connection attempt failed (back off until `retry_at`).
    retry_at: Option<Instant>,
}

impl LinkedRedis {
    /// A store on `url` with `config`'s prefix and timeout, holding at most `capacity`
    /// sessions. With `caller_clock`, time comes from the `now` of each call.
    pub fn new(url: &str, config: &RedisConfig, capacity: usize, caller_clock: bool) -> Self {
        let target = Target::parse(url).expect("a Redis URL");
        let synapse_rendezvous_core::store::redis::Address::Tcp { host, port, .. } =
            &target.address
        else {
            panic!("tests use TCP");
        };
        let address = format!("{host}:{port}").parse().expect("a socket address");
        let link = Link::new(
            LinkConfig {
                connections: 1,
                max_pending: config.pending_limit(),
                timeout: config.timeout,
            },
            RedisStore::handshake(&target),
        );
        Self {
            store: RedisStore::new(config, capacity),
            caller_clock,
            driver: Mutex::new(Driver {
                address,
                link,
                stream: None,
                next_token: 0,
                timeout: config.timeout,
                retry_at: None,
            }),
        }
    }

    /// The same store, dropping sessions it cannot have written (see
    /// [`RedisStore::with_bounds`]).
    #[must_use]
    pub fn with_bounds(mut self, max_payload_bytes: usize, ttl: Duration) -> Self {
        self.store = self.store.with_bounds(max_payload_bytes, ttl);
        self
    }

    /// The calls' builder, for tests that look at the commands themselves.
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    fn now(&self, now: SystemTime) -> Option<SystemTime> {
        self.caller_clock.then_some(now)
    }

    /// Sends `call` and waits for its reply (or its failure) through the link.
    pub fn send(&self, call: Call, retry: bool) -> Result<Value, StoreError> {
        self.driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .run(call, retry)
    }
}

impl Store for LinkedRedis {
    fn execute(&self, operation: &Operation, now: SystemTime) -> Result<Executed, StoreError> {
        let call = self.store.call(operation, self.now(now));
        let retry = matches!(
            operation.action,
            synapse_rendezvous_core::store::Action::Read { .. }
        );
        let reply = self.send(call, retry)?;
        self.store.decode(operation, reply)
    }

    fn maintain(&self, now: SystemTime) -> Result<Maintenance, StoreError> {
        let reply = self.send(self.store.maintenance(self.now(now)), false)?;
        RedisStore::decode_maintenance(reply)
    }
}

impl Driver {
    fn run(&mut self, call: Call, retry: bool) -> Result<Value, StoreError> {
        let token = self.next_token;
        self.next_token += 1;
        let mut effects = Vec::new();
        self.ensure_connected(&mut effects);
        self.link
            .submit(token, call, retry, Instant::now(), &mut effects);
        loop {
            if let Some(reply) = self.apply(std::mem::take(&mut effects), token) {
                return reply;
            }
            let Some(deadline) = self.link.next_deadline() else {
                return Err(StoreError::Unavailable(
                    "the link forgot the call".to_owned(),
                ));
            };
            self.wait(deadline, &mut effects);
        }
    }

    /// Connects when no connection is up (at most once per `timeout` after a failure).
    fn ensure_connected(&mut self, effects: &mut Vec<Effect<u64>>) {
        if self.stream.is_some() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match TcpStream::connect_timeout(&self.address, self.timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.stream = Some(stream);
                self.retry_at = None;
                self.link.connected(0, Instant::now(), |_| true, effects);
            }
            Err(_) => self.retry_at = Some(Instant::now() + self.timeout),
        }
    }

    /// Reads until something happens or `deadline` passes (then ticks).
    fn wait(&mut self, deadline: Instant, effects: &mut Vec<Effect<u64>>) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(stream) = self.stream.as_mut() else {
            std::thread::sleep(left.min(Duration::from_millis(20)));
            self.ensure_connected(effects);
            self.link.tick(Instant::now(), effects);
            return;
        };
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let mut buffer = [0u8; 16 * 1024];
        match stream.read(&mut buffer) {
            Ok(0) => self.lose(effects),
            Ok(read) => self
                .link
                .received(0, &buffer[..read], Instant::now(), effects),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.link.tick(Instant::now(), effects);
            }
            Err(_) => self.lose(effects),
        }
    }

    fn lose(&mut self, effects: &mut Vec<Effect<u64>>) {
        self.stream = None;
        self.link.lost(0, Instant::now(), effects);
        self.ensure_connected(effects);
    }

    /// Carries out effects; the reply to `token`, once it is among them.
    fn apply(
        &mut self,
        effects: Vec<Effect<u64>>,
        token: u64,
    ) -> Option<Result<Value, StoreError>> {
        let mut answer = None;
        let mut more = Vec::new();
        for effect in effects {
            match effect {
                Effect::Write { bytes, .. } => {
                    let written = self.stream.as_mut().map(|stream| stream.write_all(&bytes));
                    if matches!(written, Some(Err(_))) {
                        self.lose(&mut more);
                    }
                }
                Effect::Close { .. } => self.lose(&mut more),
                Effect::Done {
                    token: done, reply, ..
                } if done == token => answer = Some(reply),
                Effect::Done { .. } => {}
            }
        }
        if !more.is_empty() {
            if let Some(reply) = self.apply(more, token) {
                answer = Some(reply);
            }
        }
        answer
    }
}
