//! Every request is exactly one Redis call: after a warm-up (the connection is open and its
//! scripts are loaded), a create, a GET, a PUT and a DELETE, each rate limited and the create
//! under a quota, reach Redis as four `EVALSHA`s and nothing else: no `PING` before them, no
//! `EVAL` fallback, no separate read of the session or the bucket.
//!
//! `INFO commandstats` also counts the commands the scripts run inside Redis (their `HMGET`
//! and `HSET`...), so it proves the `EVALSHA` count; `MONITOR`, which marks those as `lua`,
//! proves that the client sent nothing more.

// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

mod redis_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use redis_support::{store, RedisServer, Watchdog, LIMIT};
use synapse_rendezvous_core::rate_limit::ClientKey;
use synapse_rendezvous_core::store::redis::{Replies, Value};
use synapse_rendezvous_core::{
    Config, Rendezvous, Routes, Service, SystemClock, SystemEntropy, CREATE_PATH,
};

const BASEURL: &str = "https://matrix.example.org";
const MARKER: &str = "end-of-requests";

/// A request from one rate-limited client.
fn request(
    method: Method,
    uri: &str,
    if_match: Option<&str>,
    body: &'static [u8],
) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .extension(ClientKey::new(Ipv4Addr::new(192, 0, 2, 1).into()));
    if !body.is_empty() {
        builder = builder
            .header("content-type", "text/plain")
            .header("content-length", body.len());
    }
    if let Some(tag) = if_match {
        builder = builder.header("if-match", tag);
    }
    builder.body(Bytes::from_static(body)).unwrap()
}

/// One of each request, checking each answer.
fn one_of_each(service: &Service) {
    let created = service.handle(&request(Method::POST, CREATE_PATH, None, b"hi"));
    assert_eq!(created.status(), StatusCode::CREATED, "{created:?}");
    let body: serde_json::Value = serde_json::from_slice(created.body()).unwrap();
    let path = body["url"]
        .as_str()
        .unwrap()
        .trim_start_matches(BASEURL)
        .to_owned();
    let read = service.handle(&request(Method::GET, &path, None, b""));
    assert_eq!(read.status(), StatusCode::OK, "{read:?}");
    let written = service.handle(&request(Method::PUT, &path, Some("*"), b"there"));
    assert_eq!(written.status(), StatusCode::ACCEPTED, "{written:?}");
    let deleted = service.handle(&request(Method::DELETE, &path, None, b""));
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "{deleted:?}");
}

/// A `MONITOR` connection: every command the server runs, as one line each.
struct Monitor {
    stream: TcpStream,
    replies: Replies,
}

impl Monitor {
    fn start(port: u16) -> Self {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut monitor = Self {
            stream,
            replies: Replies::default(),
        };
        monitor.stream.write_all(b"MONITOR\r\n").unwrap();
        assert_eq!(monitor.next_line(), "OK");
        monitor
    }

    fn next_line(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.replies.next_reply().unwrap() {
                Some(Value::Okay) => return "OK".to_owned(),
                Some(Value::SimpleString(line)) => return line,
                Some(other) => panic!("MONITOR sent {other:?}"),
                None => {}
            }
            assert!(Instant::now() < deadline, "MONITOR went quiet");
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => panic!("MONITOR connection closed"),
                Ok(read) => self.replies.extend(&buffer[..read]),
                Err(_) => {}
            }
        }
    }

    /// The commands clients sent (not the scripts' own) until the `ECHO` of [`MARKER`].
    fn client_commands_until_marker(&mut self) -> Vec<String> {
        let mut commands = Vec::new();
        loop {
            let line = self.next_line();
            if line.contains(MARKER) {
                return commands;
            }
            // `<time> [<db> <client address, or lua>] "<COMMAND>" "<arg>"...`
            let (source, command) = line
                .split_once(']')
                .and_then(|(head, rest)| Some((head.split_once('[')?.1, rest)))
                .unwrap_or_else(|| panic!("unexpected MONITOR line {line:?}"));
            if !source.ends_with(" lua") {
                let name = command.trim().split('"').nth(1).unwrap_or_default();
                commands.push(name.to_ascii_uppercase());
            }
        }
    }
}

/// `INFO commandstats` as command and number of calls.
fn command_calls(conn: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[test]
fn every_request_is_one_evalsha_and_nothing_else() {
    let _watchdog = Watchdog::arm("every_request_is_one_evalsha_and_nothing_else", LIMIT);
    let server = RedisServer::start();
    let config = Config {
        capacity: 10,
        ..Config::default()
    };
    assert!(config.rate_limit.enabled, "limits must apply to the client");
    let rendezvous = Rendezvous::new(
        config,
        Arc::new(SystemEntropy),
        Routes::takeover(),
        &format!("{BASEURL}/"),
    );
    let store = Arc::new(store(server.port(), "calls:", 10));
    let service = Service::new(rendezvous, store, Arc::new(SystemClock));
    // Opens the connection and loads the scripts: not what a request costs.
    one_of_each(&service);

    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let mut monitor = Monitor::start(server.port());
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    one_of_each(&service);
    let _: String = redis::cmd("ECHO").arg(MARKER).query(&mut conn).unwrap();

    let calls = command_calls(&mut conn);
    assert_eq!(calls.get("evalsha"), Some(&4), "{calls:?}");
    for never in [
        "eval", "ping", "script", "hello", "client", "select", "auth",
    ] {
        let named = |name: &String| name.split('|').next() == Some(never);
        assert!(!calls.keys().any(named), "{never}: {calls:?}");
    }
    let sent = monitor.client_commands_until_marker();
    let from_the_store: Vec<_> = sent
        .iter()
        .filter(|command| !matches!(command.as_str(), "CONFIG" | "ECHO"))
        .collect();
    assert_eq!(from_the_store, ["EVALSHA"; 4], "every command: {sent:?}");
}
