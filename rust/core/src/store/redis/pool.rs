//! Connections to Redis: an r2d2 pool whose every use is bounded by one deadline, and the
//! mapping of Redis failures to [`StoreError`].
//!
//! Every operation has one deadline, the configured timeout from its start: checkout waits at
//! most the time left, and reads and writes on the connection get the time left before each
//! use. Connecting happens in r2d2's own threads, each attempt bounded by the timeout, and is
//! retried there with back-off until Redis answers again, so service resumes by itself.
//!
//! A connection is checked with `PING` (one round trip) at every checkout, so that
//! connections left over from before a Redis restart are discarded instead of failing a
//! request. Any error other than an error reply from Redis marks the connection broken, so
//! that a late reply can never be read as the answer to a later command.

use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ConnectionLike, ErrorKind, RedisError};
use r2d2::{ManageConnection, Pool};

use crate::store::StoreError;

/// Opens connections for the pool, each bounded by `timeout`.
struct Manager {
    client: Client,
    timeout: Duration,
}

/// A pooled connection and what the pool needs to know about it.
struct Conn {
    inner: Connection,
    /// Set after any failure that may leave the connection out of step with the server.
    broken: bool,
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    fn connect(&self) -> Result<Conn, RedisError> {
        let inner = self.client.get_connection_with_timeout(self.timeout)?;
        Ok(Conn {
            inner,
            broken: false,
        })
    }

    fn is_valid(&self, _conn: &mut Conn) -> Result<(), RedisError> {
        // Checked by `Connections::run` within the request's deadline instead.
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.inner.is_open()
    }
}

/// The pool of one store (cloning shares the pool).
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool<Manager>,
    timeout: Duration,
}

impl Connections {
    /// A pool of at most `size` connections to the server of `client`. Opens nothing yet,
    /// so it never fails: Redis may come up later.
    pub(super) fn new(client: Client, timeout: Duration, size: u32) -> Self {
        // r2d2 refuses a zero timeout or size with a panic.
        let timeout = timeout.max(Duration::from_millis(1));
        let pool = Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(Manager { client, timeout });
        Self { pool, timeout }
    }

    /// Runs `op` on a live connection, all within the timeout.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection can be had or Redis answers with an
    /// error, [`StoreError::Timeout`] when the time runs out, [`StoreError::Corrupt`] when
    /// the data is not what the store wrote.
    pub(super) fn run<T>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = loop {
            let left = time_left(deadline)?;
            let mut conn = self
                .pool
                .get_timeout(left)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            set_timeouts(&mut conn, time_left(deadline)?)?;
            match ping(&mut conn) {
                Ok(()) => break conn,
                // Stale (Redis restarted, the link dropped): r2d2 discards it; try another.
                Err(_) if conn.broken => {}
                // Redis answered, with an error (loading, read-only, auth...): give up.
                Err(e) => return Err(e),
            }
        };
        set_timeouts(&mut conn, time_left(deadline)?)?;
        op(&mut conn.inner).map_err(|e| fail(&mut conn, &e))
    }
}

fn time_left(deadline: Instant) -> Result<Duration, StoreError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(StoreError::Timeout)
    } else {
        Ok(left)
    }
}

fn set_timeouts(conn: &mut Conn, left: Duration) -> Result<(), StoreError> {
    conn.inner
        .set_read_timeout(Some(left))
        .and_then(|()| conn.inner.set_write_timeout(Some(left)))
        .map_err(|e| fail(conn, &e))
}

fn ping(conn: &mut Conn) -> Result<(), StoreError> {
    ::redis::cmd("PING")
        .query::<()>(&mut conn.inner)
        .map_err(|e| fail(conn, &e))
}

/// Maps `error`, marking the connection broken unless Redis itself answered it.
fn fail(conn: &mut Conn, error: &RedisError) -> StoreError {
    let replied = matches!(
        error.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    );
    if !replied {
        conn.broken = true;
    }
    store_error(error)
}

/// The store's view of a Redis failure.
pub(super) fn store_error(error: &RedisError) -> StoreError {
    if error.is_timeout() {
        StoreError::Timeout
    } else if error.code() == Some("WRONGTYPE") {
        StoreError::Corrupt(format!("a key of the store holds another type: {error}"))
    } else if matches!(
        error.kind(),
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse
    ) {
        StoreError::Corrupt(format!("unexpected reply from Redis: {error}"))
    } else {
        StoreError::Unavailable(error.to_string())
    }
}
