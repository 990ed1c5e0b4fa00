//! The body of every response, built so that hyper sends the core's `Content-Length` as is.
//!
//! The core puts an explicit `Content-Length` on every answer: `0` on the empty 202 and on
//! DELETE's 204 (a proxy that sees no length may re-frame the answer and weaken its ETag),
//! and on a 304 or a HEAD answer the length the GET would carry. hyper keeps a response's
//! `Content-Length` header only when its body claims an exact length and is not already at
//! its end: for a body that is empty and done it drops the header (and for 204 and 304
//! writes none). So this body never says it is done before it has been read, and its size
//! hint is the length the header states. hyper then writes the header as given and, for
//! HEAD, 204 and 304, sends no body bytes at all, as HTTP requires.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::Response;
use http_body::{Body, Frame, SizeHint};

/// A whole response body, known in advance.
#[derive(Debug)]
pub struct Whole {
    data: Option<Bytes>,
    length: u64,
    read: bool,
}

impl Whole {
    /// `data`, with a length of its own.
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let length = data.len() as u64;
        Self {
            data: (!data.is_empty()).then_some(data),
            length,
            read: false,
        }
    }

    /// The core's response, its body carried as [`Whole`]. An empty body stands for the
    /// length its `Content-Length` header states (HEAD, 304); a body with bytes always has
    /// its own length.
    pub fn response(response: Response<Bytes>) -> Response<Self> {
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        response.map(|data| {
            let mut body = Self::new(data);
            if body.data.is_none() {
                body.length = declared.unwrap_or(0);
            }
            body
        })
    }
}

impl Body for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Only bodies with bytes are ever read: hyper reads no body for an exact length of
        // zero, nor for HEAD, 204 or 304.
        let data = self.data.take();
        self.read = true;
        self.length = 0;
        Poll::Ready(data.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        // Never before the first read, even when empty: see the module's documentation.
        self.read
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}
