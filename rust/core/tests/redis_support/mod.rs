//! A throw-away `redis-server` per test, and a watchdog that bounds each test's time.
//!
//! The server is a child process on a free loopback port, with no persistence and its files
//! in a fresh temporary directory; it is killed when its handle is dropped, even when the test
//! panics. `redis-server` must be installed (CI installs Debian's): without it the tests fail,
//! they do not pass silently. `REDIS_SERVER` may name another binary.

#![allow(dead_code)]

mod linked;
mod operations;

pub use linked::LinkedRedis;
// Each test crate that includes this module uses a different part of it.
#[allow(unused_imports)]
pub use operations::{create, delete, new_session, read, replace, run, TTL};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use synapse_rendezvous_core::RedisConfig;

/// Longest any single test may run.
pub const LIMIT: Duration = Duration::from_secs(60);

/// How long a server may take to answer its first `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// Process ids of every running server, for the watchdog to kill before it exits.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// A server on a free port.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server on `port`, which must be free (a restart after [`RedisServer::stop`]).
    pub fn start_on(port: u16) -> Self {
        Self::try_start(port).unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    fn try_start(port: u16) -> Option<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rendezvous-redis-{}-{port}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{binary}` ({e}): the Redis store tests need a real Redis \
                     server; install it (apt-get install -y redis-server) or set REDIS_SERVER"
                )
            });
        lock_running().push(child.id());
        let mut server = Self { child, port, dir };
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None; // Exited: most likely the port was taken meanwhile.
            }
            if ping(port) {
                return Some(server);
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {port} did not answer PING within {STARTUP:?}");
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: frozen, it still accepts
    /// connections (the kernel does) but never answers.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server and waits until it is gone.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        lock_running().retain(|&running| running != pid);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis://` URL of a server on `port`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The store's settings with `prefix` and a timeout of `timeout`.
pub fn config(prefix: &str, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: None,
        key_prefix: prefix.to_owned(),
        timeout,
        pool_size: 1,
        max_pending: None,
    }
}

/// A store on the server at `port`, on Redis's own clock.
pub fn store(port: u16, prefix: &str, capacity: usize) -> LinkedRedis {
    LinkedRedis::new(
        &url(port),
        &config(prefix, Duration::from_secs(2)),
        capacity,
        false,
    )
}

/// A store on the server at `port` whose time is the `now` of each operation.
pub fn store_on_caller_clock(port: u16, prefix: &str, capacity: usize) -> LinkedRedis {
    LinkedRedis::new(
        &url(port),
        &config(prefix, Duration::from_secs(2)),
        capacity,
        true,
    )
}

/// Whether a server answers `PING` on `port` within a short while.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn lock_running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bounds a test's time: unless dropped within `limit`, kills every server this process
/// started and exits the test binary with a failure, so that a hang cannot stall CI.
pub struct Watchdog {
    _stop: Sender<()>,
}

impl Watchdog {
    /// Arms a watchdog for the test `name`.
    pub fn arm(name: &'static str, limit: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        thread::spawn(move || {
            if stopped.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                give_up(name, limit);
            }
        });
        Self { _stop: stop }
    }
}

fn give_up(name: &str, limit: Duration) {
    // Straight to stderr: the test harness would swallow `eprintln!` of a test thread.
    let _ = writeln!(
        std::io::stderr(),
        "test {name} still running after {limit:?}: killing its servers and exiting"
    );
    for pid in lock_running().drain(..) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    std::process::exit(101);
}
