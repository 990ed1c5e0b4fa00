//! The benchmark's ceiling for the load generator (hidden `--bench-trivial ADDRESS`): the
//! same runtime and HTTP/1.1 settings as the server, answering every request with an empty
//! 200 and doing nothing else. What a load generator gets from it on a machine is the most
//! it can measure there; `scripts/bench` reports it beside the server's figures.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Response};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::body::Whole;

/// Serves the trivial answer on `address` until the process is stopped.
///
/// # Errors
/// When the address cannot be listened on.
pub fn run(address: SocketAddr) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async move {
        let listener = crate::serve::bind(address).map_err(|error| error.to_string())?;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let http = http.clone();
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response = Response::new(Bytes::new());
                    response
                        .headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                    Ok::<_, Infallible>(Whole::response(response))
                });
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
