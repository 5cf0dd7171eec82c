//! CORS: which web origins' pages may call the API from a browser. Off
//! unless origins are configured (`--cors-origin`), and refused for a
//! server without keys (see [`Security::new`](super::auth::Security::new)).
//!
//! Keys travel in the `Authorization` header, never in cookies, so no
//! credentials are allowed.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A configured origin that is not `scheme://host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid CORS origin {origin:?}: {message}")]
pub struct InvalidOrigin {
    origin: String,
    message: String,
}

/// A CORS layer for the given origins; `*` alone allows any origin.
/// `None` when no origin is given.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, InvalidOrigin> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        if origins.len() > 1 {
            return Err(InvalidOrigin {
                origin: "*".into(),
                message: "`*` allows every origin and cannot be combined with others".into(),
            });
        }
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::LOCATION,
                header::LINK,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// An origin is `scheme://host[:port]`, as browsers send it.
fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = |message: &str| InvalidOrigin {
        origin: origin.to_owned(),
        message: message.to_owned(),
    };
    let uri: Uri = origin
        .parse()
        .map_err(|_| invalid("expected scheme://host[:port]"))?;
    let has_path = uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/");
    if uri.scheme().is_none() || uri.authority().is_none() || has_path || origin.ends_with('/') {
        return Err(invalid(
            "expected scheme://host[:port] with no path or trailing slash",
        ));
    }
    HeaderValue::from_str(origin).map_err(|_| invalid("not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_must_be_bare_origins() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&["https://desk.example.org".into()])
            .unwrap()
            .is_some());
        assert!(layer(&["http://localhost:3000".into()]).unwrap().is_some());
        assert!(layer(&["*".into()]).unwrap().is_some());
        for bad in [
            "desk.example.org",
            "https://desk.example.org/",
            "https://x.org/app",
            "*,https://a.org",
        ] {
            let origins: Vec<String> = bad.split(',').map(str::to_owned).collect();
            assert!(layer(&origins).is_err(), "{bad}");
        }
    }
}
