//! Which part of the API a request path addresses.

use crate::id::SessionId;
use crate::msc4388::MSC4388_PREFIX;

/// The standard create path of MSC4108, served by Synapse's client listener.
pub const CREATE_PATH: &str = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous";
/// Where sessions live; Synapse's root resource answers CORS preflights under it.
pub const SESSION_PREFIX: &str = "/_synapse/client/rendezvous";

/// What a request path addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The create endpoint.
    Create,
    /// A session URL; `None` when its id cannot be one this server issued.
    Session(Option<SessionId>),
    /// MSC4388's prefix itself: discovery (GET) and create (POST).
    Msc4388Root,
    /// An MSC4388 session; `None` when its id cannot be one this server issued.
    Msc4388Session(Option<SessionId>),
    /// Nothing this API serves.
    Unknown,
}

impl Route {
    /// Whether the path is one of MSC4388's (served only when it is on).
    pub fn is_msc4388(self) -> bool {
        matches!(self, Self::Msc4388Root | Self::Msc4388Session(_))
    }
}

/// How paths map to routes in the mode the module runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    create_at_session_root: bool,
}

impl Routes {
    /// Takeover mode: creates arrive on [`CREATE_PATH`] only.
    pub fn takeover() -> Self {
        Self {
            create_at_session_root: false,
        }
    }

    /// Delegation mode: Synapse redirects creates to [`SESSION_PREFIX`] itself.
    pub fn delegation() -> Self {
        Self {
            create_at_session_root: true,
        }
    }

    /// The route of `path` (without the query string). MSC4388's paths are routed whatever
    /// the configuration; [`crate::Rendezvous`] treats them as unknown while it is off.
    pub fn route(self, path: &str) -> Route {
        if path == CREATE_PATH {
            return Route::Create;
        }
        if let Some(rest) = path.strip_prefix(MSC4388_PREFIX) {
            return match rest {
                "" => Route::Msc4388Root,
                _ => match rest.strip_prefix('/') {
                    Some(segment) if !segment.is_empty() && !segment.contains('/') => {
                        Route::Msc4388Session(
                            percent_decode(segment).and_then(|id| id.parse().ok()),
                        )
                    }
                    _ => Route::Unknown,
                },
            };
        }
        let Some(rest) = path.strip_prefix(SESSION_PREFIX) else {
            return Route::Unknown;
        };
        match rest {
            "" | "/" if self.create_at_session_root => Route::Create,
            "" | "/" => Route::Unknown,
            _ => match rest.strip_prefix('/') {
                Some(segment) if !segment.contains('/') => {
                    Route::Session(percent_decode(segment).and_then(|id| id.parse().ok()))
                }
                _ => Route::Unknown,
            },
        }
    }
}

/// `path` for a log line: a session id in it cut to its first characters, since the id is
/// the only secret guarding a session.
pub fn loggable_path(path: &str) -> String {
    for prefix in [SESSION_PREFIX, MSC4388_PREFIX] {
        match path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(segment) if segment.len() > crate::id::SHORT_LEN => {
                let cut = segment
                    .char_indices()
                    .nth(crate::id::SHORT_LEN)
                    .map_or(segment.len(), |(index, _)| index);
                return format!("{prefix}/{}…", &segment[..cut]);
            }
            Some(_) => return path.to_owned(),
            None => {}
        }
    }
    path.to_owned()
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::entropy::SystemEntropy;

    #[test]
    fn create_paths_depend_on_mode() {
        assert_eq!(Routes::takeover().route(CREATE_PATH), Route::Create);
        assert_eq!(Routes::takeover().route(SESSION_PREFIX), Route::Unknown);
        assert_eq!(Routes::delegation().route(SESSION_PREFIX), Route::Create);
        assert_eq!(
            Routes::delegation().route("/_synapse/client/rendezvous/"),
            Route::Create
        );
    }

    #[test]
    fn session_ids_are_parsed_strictly() {
        let id = SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap();
        let routes = Routes::takeover();
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/{id}")),
            Route::Session(Some(id))
        );
        let lower = id.to_string().to_lowercase();
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/{lower}")),
            Route::Session(None)
        );
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/%C3%A9")),
            Route::Session(None)
        );
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/%zz")),
            Route::Session(None)
        );
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/%")),
            Route::Session(None)
        );
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/{id}/x")),
            Route::Unknown
        );
        assert_eq!(
            routes.route(&format!("{SESSION_PREFIX}/..%2F..")),
            Route::Session(None)
        );
        assert_eq!(routes.route("/_synapse/client/rendezvousX"), Route::Unknown);
        assert_eq!(routes.route("/other"), Route::Unknown);
    }

    #[test]
    fn logged_paths_keep_only_a_prefix_of_the_id() {
        let id = SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap();
        let logged = loggable_path(&format!("{SESSION_PREFIX}/{id}"));
        assert_eq!(logged, format!("{SESSION_PREFIX}/{}", id.short()));
        assert!(!logged.contains(&id.to_string()[12..]));
        assert_eq!(loggable_path(CREATE_PATH), CREATE_PATH);
        assert_eq!(
            loggable_path(&format!("{SESSION_PREFIX}/éééééééééééééé")),
            format!("{SESSION_PREFIX}/éééééééééééé…")
        );
    }

    #[test]
    fn msc4388_paths_route_in_every_mode() {
        let id = SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap();
        for routes in [Routes::takeover(), Routes::delegation()] {
            assert_eq!(routes.route(MSC4388_PREFIX), Route::Msc4388Root);
            assert_eq!(
                routes.route(&format!("{MSC4388_PREFIX}/{id}")),
                Route::Msc4388Session(Some(id))
            );
            assert_eq!(
                routes.route(&format!("{MSC4388_PREFIX}/nope")),
                Route::Msc4388Session(None)
            );
            for other in ["/", "//", "x", "/a/b"] {
                assert_eq!(
                    routes.route(&format!("{MSC4388_PREFIX}{other}")),
                    Route::Unknown
                );
            }
        }
        let logged = loggable_path(&format!("{MSC4388_PREFIX}/{id}"));
        assert_eq!(logged, format!("{MSC4388_PREFIX}/{}", id.short()));
    }

    #[test]
    fn escaped_id_characters_decode() {
        let id = SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap();
        let text = id.to_string();
        let escaped = format!("%{:02X}{}", text.as_bytes()[0], &text[1..]);
        assert_eq!(
            Routes::takeover().route(&format!("{SESSION_PREFIX}/{escaped}")),
            Route::Session(Some(id))
        );
    }
}
