//! Criterion benchmark of the core alone: one request through [`Service::handle`] on a
//! [`MemoryStore`], with no Python, Twisted or network around it.
//!
//! `scripts/bench` runs it as
//! `cargo bench -p synapse-rendezvous-core --bench core -- --warm-up-time 1 --measurement-time 3`
//! and copies the estimates into `docs/performance.md`.
//!
//! The requests are built once and answered again and again; ids and ETags come from the
//! system's randomness, as in production. The clock is a [`ManualClock`] standing still, so
//! that a session never expires in the middle of a measurement; the create benchmark moves it
//! past the TTL and runs maintenance (outside the timed calls) to reclaim its sessions before
//! the store is full.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_main, Criterion};
use http::{Method, Request, StatusCode};
use synapse_rendezvous_core::{
    Config, ManualClock, MemoryStore, Rendezvous, Routes, Service, SystemEntropy, CREATE_PATH,
};

/// The largest payload MSC4108 allows, as every upload here carries.
const PAYLOAD_BYTES: usize = 4096;
/// Sessions the create benchmark makes before it reclaims them (the default capacity).
const CAPACITY: usize = 10_000;

/// A core on a memory store of the default capacity, and the clock it reads.
fn service() -> (Service, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let config = Config {
        capacity: CAPACITY,
        ..Config::default()
    };
    let store = Arc::new(MemoryStore::new(config.capacity));
    let rendezvous = Rendezvous::new(
        config,
        Arc::new(SystemEntropy),
        Routes::takeover(),
        "https://matrix.example.org/",
    );
    (Service::new(rendezvous, store, clock.clone()), clock)
}

fn payload() -> Bytes {
    Bytes::from(vec![b'Q'; PAYLOAD_BYTES])
}

/// A well-formed `text/plain` upload.
fn upload(method: Method, uri: &str, if_match: Option<&str>) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "text/plain")
        .header("content-length", PAYLOAD_BYTES.to_string());
    if let Some(tag) = if_match {
        builder = builder.header("if-match", tag);
    }
    match builder.body(payload()) {
        Ok(request) => request,
        Err(error) => panic!("a valid request: {error}"),
    }
}

fn get(uri: &str, if_none_match: Option<&str>) -> Request<Bytes> {
    let mut builder = Request::builder().method(Method::GET).uri(uri);
    if let Some(tag) = if_none_match {
        builder = builder.header("if-none-match", tag);
    }
    match builder.body(Bytes::new()) {
        Ok(request) => request,
        Err(error) => panic!("a valid request: {error}"),
    }
}

/// Answers `request`, checking the status so that no error path is measured by mistake.
fn answer(service: &Service, request: &Request<Bytes>, expected: StatusCode) {
    let response = service.handle(black_box(request));
    assert_eq!(response.status(), expected, "{request:?}");
    black_box(response);
}

/// A live session: its path and its `ETag`.
fn session(service: &Service) -> (String, String) {
    let response = service.handle(&upload(Method::POST, CREATE_PATH, None));
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = match serde_json::from_slice(response.body()) {
        Ok(body) => body,
        Err(error) => panic!("the 201 body is JSON: {error}"),
    };
    let url = body["url"].as_str().unwrap_or_default();
    let path = url
        .trim_start_matches("https://matrix.example.org")
        .to_owned();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (path, etag)
}

fn create(c: &mut Criterion) {
    let (service, clock) = service();
    let request = upload(Method::POST, CREATE_PATH, None);
    let ttl = service.rendezvous().config().ttl;
    c.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                // Free the store (untimed) before it is full: every session made so far expires.
                clock.advance(ttl + Duration::from_secs(1));
                if let Err(error) = service.maintain() {
                    panic!("the memory store cannot fail: {error}");
                }
                let batch = (iters - done).min(CAPACITY as u64);
                let started = Instant::now();
                for _ in 0..batch {
                    answer(&service, &request, StatusCode::CREATED);
                }
                elapsed += started.elapsed();
                done += batch;
            }
            elapsed
        });
    });
}

fn read(c: &mut Criterion) {
    let (service, _clock) = service();
    let (path, etag) = session(&service);
    let not_modified = get(&path, Some(&etag));
    c.bench_function("get_304", |b| {
        b.iter(|| answer(&service, &not_modified, StatusCode::NOT_MODIFIED));
    });
    let full = get(&path, None);
    c.bench_function("get_200", |b| {
        b.iter(|| answer(&service, &full, StatusCode::OK));
    });
}

fn write(c: &mut Criterion) {
    let (service, _clock) = service();
    let (path, _etag) = session(&service);
    let put = upload(Method::PUT, &path, Some("*"));
    c.bench_function("put_4k", |b| {
        b.iter(|| answer(&service, &put, StatusCode::ACCEPTED));
    });
}

mod group {
    // In a private module: the function the macro defines needs no documentation.
    use super::{create, read, write};
    criterion::criterion_group!(benches, create, read, write);
}

criterion_main!(group::benches);
