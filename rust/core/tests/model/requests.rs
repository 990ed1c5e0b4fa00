//! Building the HTTP requests that operations send.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request};

use crate::ops::{ContentTypeChoice, Length, Upload};

pub(crate) fn upload_request(
    method: Method,
    path: &str,
    upload: &Upload,
    condition: Option<HeaderValue>,
) -> Request<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(upload.body.clone()))
        .unwrap();
    let headers = request.headers_mut();
    let exact = HeaderValue::from(upload.body.len());
    match upload.length {
        Length::Exact => {
            headers.insert(CONTENT_LENGTH, exact);
        }
        Length::Missing => {}
        Length::Declared(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        Length::Malformed(value) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static(value));
        }
        Length::Twice { agreeing } => {
            headers.append(CONTENT_LENGTH, exact);
            let other = upload.body.len() + usize::from(!agreeing);
            headers.append(CONTENT_LENGTH, HeaderValue::from(other));
        }
        Length::Chunked { with_length } => {
            if with_length {
                headers.insert(CONTENT_LENGTH, exact);
            }
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    }
    match upload.content_type {
        ContentTypeChoice::Valid(value) | ContentTypeChoice::Invalid(value) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        }
        ContentTypeChoice::Missing => {}
        ContentTypeChoice::Twice => {
            headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
    }
    if let Some(value) = condition {
        headers.insert(IF_MATCH, value);
    }
    request
}

pub(crate) fn plain_request(
    method: Method,
    path: &str,
    if_none_match: Option<HeaderValue>,
) -> Request<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::new())
        .unwrap();
    if let Some(value) = if_none_match {
        request.headers_mut().insert(IF_NONE_MATCH, value);
    }
    request
}
