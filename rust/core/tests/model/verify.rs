//! Checking one response against what the model expects, and updating the model.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_METHODS, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use synapse_rendezvous_core::SESSION_PREFIX;

use crate::checks::{
    check_common, check_error_body, check_full, check_length, check_validators, header_str,
    json_body, list_contains, new_etag, session_id_of,
};
use crate::expected::Expected;
use crate::reference::ModelSession;
use crate::run::Run;
use crate::system::{BASEURL, TTL};

impl Run {
    /// Checks `response` against `expected`, then brings the model up to date.
    pub(crate) fn check(
        &mut self,
        request: &Request<Bytes>,
        response: &Response<Bytes>,
        expected: Expected,
        now: SystemTime,
    ) -> Result<(), String> {
        let head = request.method() == Method::HEAD;
        check_common(response, now, head)?;
        let status = response.status();
        match expected {
            Expected::Error(want, errcode) => {
                ensure!(status == want, "status {status}, want {want} {errcode}");
                if !(head && response.body().is_empty()) {
                    check_error_body(response, errcode)?;
                }
            }
            Expected::Full(wait) => check_full(response, wait)?,
            Expected::Created => self.check_created(request, response, now)?,
            Expected::Payload(session, head) => {
                ensure!(status == StatusCode::OK, "status {status}, want 200");
                check_validators(response, &session)?;
                let content_type = header_str(response, &CONTENT_TYPE)?;
                ensure!(content_type == "text/plain", "Content-Type {content_type}");
                let want: &[u8] = if head { b"" } else { &session.payload };
                ensure!(response.body() == want, "body differs from the payload");
                check_length(response, session.payload.len())?;
            }
            Expected::NotModified(session) => {
                ensure!(
                    status == StatusCode::NOT_MODIFIED,
                    "status {status}, want 304"
                );
                check_validators(response, &session)?;
                ensure!(response.body().is_empty(), "304 with a body");
                // A 304 may only carry the length of the 200 it stands for.
                if response.headers().contains_key(CONTENT_LENGTH) {
                    check_length(response, session.payload.len())?;
                }
            }
            Expected::Accepted(mut session) => {
                ensure!(status == StatusCode::ACCEPTED, "status {status}, want 202");
                ensure!(response.body().is_empty(), "202 with a body");
                let content_type = header_str(response, &CONTENT_TYPE)?;
                ensure!(content_type == "text/plain", "Content-Type {content_type}");
                let etag = new_etag(response)?;
                let id = session_id_of(request);
                ensure!(
                    self.model.issue(&id, &etag),
                    "reused ETag {etag} on a write"
                );
                session.etag = etag;
                check_validators(response, &session)?;
                self.model.sessions.insert(id, session);
            }
            Expected::PreconditionFailed(session) => {
                ensure!(
                    status == StatusCode::PRECONDITION_FAILED,
                    "status {status}, want 412"
                );
                let body = check_error_body(response, "M_UNKNOWN")?;
                ensure!(
                    body["org.matrix.msc4108.errcode"] == "M_CONCURRENT_WRITE",
                    "412 without M_CONCURRENT_WRITE: {body}"
                );
                check_validators(response, &session)?;
            }
            Expected::Deleted => {
                ensure!(
                    status == StatusCode::NO_CONTENT,
                    "status {status}, want 204"
                );
                ensure!(response.body().is_empty(), "204 with a body");
                self.model.sessions.remove(&session_id_of(request));
            }
            Expected::Preflight => {
                ensure!(
                    status == StatusCode::NO_CONTENT,
                    "status {status}, want 204"
                );
                let methods = header_str(response, &ACCESS_CONTROL_ALLOW_METHODS)?;
                for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
                    ensure!(
                        list_contains(methods, method),
                        "preflight does not allow {method}: {methods}"
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn check_created(
        &mut self,
        request: &Request<Bytes>,
        response: &Response<Bytes>,
        now: SystemTime,
    ) -> Result<(), String> {
        let status = response.status();
        ensure!(status == StatusCode::CREATED, "status {status}, want 201");
        let body = json_body(response)?;
        let url = body["url"].as_str().ok_or("201 without a url")?.to_owned();
        ensure!(
            body.as_object().map(serde_json::Map::len) == Some(1),
            "201 body has more than the url: {body}"
        );
        let prefix = format!("{}{}/", BASEURL.trim_end_matches('/'), SESSION_PREFIX);
        let id = url
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("session URL {url} is not under {prefix}"))?
            .to_owned();
        ensure!(
            id.len() == 26
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "id {id:?} is not an upper-case ULID"
        );
        ensure!(
            !self.model.history.contains_key(&id),
            "id {id} issued twice"
        );
        let etag = new_etag(response)?;
        let session = ModelSession {
            payload: request.body().to_vec(),
            etag: etag.clone(),
            expires: now + TTL,
            last_modified: now,
        };
        check_validators(response, &session)?;
        ensure!(
            self.model.issue(&id, &etag),
            "reused ETag {etag} on a create"
        );
        self.model.ids.push(id.clone());
        self.model.sessions.insert(id, session);
        Ok(())
    }
}
