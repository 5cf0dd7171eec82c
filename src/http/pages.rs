//! The web pages for the people who run an OPD day: the front desk
//! (`/desk`), the doctor (`/doctor`), the waiting-hall board (`/board`),
//! the schedule (`/schedule`), the day report (`/reports`) and the start
//! page (`/`).
//!
//! Every file a page loads is in `web/` and built into the binary here, so
//! `cargo run --release` alone serves the pages and nothing is fetched from
//! another host (a hospital LAN has no internet). The pages are plain HTML,
//! CSS and JavaScript modules: no build step, nothing to install at run
//! time. They hold no data of their own; their scripts call the API with
//! the key the user signs in with (see the README, "Web pages").
//!
//! `GET /board` is also the API's board (JSON). A browser that navigates
//! there asks for HTML first, and [`negotiate`] hands it the page instead;
//! every other client, the page's own `fetch` included, gets the JSON.

use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::routes::Routes;

/// The pages and their files, for anyone: they carry no data.
pub fn router() -> Routes {
    Routes::new()
        .page("/", get(|| async { file("index.html") }))
        .page("/desk", get(|| async { file("desk.html") }))
        .page("/doctor", get(|| async { file("doctor.html") }))
        .page("/schedule", get(|| async { file("schedule.html") }))
        .page("/reports", get(|| async { file("reports.html") }))
        .page(
            "/ui/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

/// Where the files of `web/` are served; the board page is
/// `/ui/board.html`, which a browser reaches as `/board`.
const BOARD_PAGE: &str = "/ui/board.html";

/// The route whose answer depends on `Accept`: the board.
const BOARD: &str = "/board";

/// Sends a browser's navigation to `/board` to the board page, keeping the
/// query (the page reads `doctorId` and `lang` from it). Returns whether
/// the answer depends on the request's `Accept` header, so that the caller
/// says so in `Vary` and no cache hands the page to the API or the JSON to
/// a browser.
pub fn negotiate(request: &mut Request) -> bool {
    if request.uri().path() != BOARD {
        return false;
    }
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    if is_read && prefers_html(request.headers()) {
        let target = match request.uri().query() {
            Some(query) => format!("{BOARD_PAGE}?{query}"),
            None => BOARD_PAGE.to_owned(),
        };
        // The query came from a valid URI and the path is fixed, so the
        // new URI is valid; should it ever not be, the JSON is served.
        if let Ok(uri) = target.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    true
}

/// Whether `Accept` ranks HTML above JSON, as a browser's navigation does
/// (`text/html,…,*/*;q=0.8`). Equal ranks, `*/*` alone or no `Accept` at
/// all mean JSON: API clients get what the contract says.
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    quality(accept, "text", "html") > quality(accept, "application", "json")
}

/// The quality `accept` gives `kind/subtype`: that of the most specific
/// range that matches it (RFC 9110, section 12.5.1), 0 when none does.
fn quality(accept: &str, kind: &str, subtype: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let Some((range_kind, range_subtype)) = media.split_once('/') else {
            continue;
        };
        let specificity = if range_kind == "*" && range_subtype == "*" {
            1
        } else if range_kind.eq_ignore_ascii_case(kind) && range_subtype == "*" {
            2
        } else if range_kind.eq_ignore_ascii_case(kind)
            && range_subtype.eq_ignore_ascii_case(subtype)
        {
            3
        } else {
            continue;
        };
        let q = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q="))
            .find_map(|value| value.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(seen, _)| specificity > seen) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// What the pages may load and do: only this server's own scripts, styles,
/// images and API; no inline script or style, no frames, no plugins, no
/// form sent anywhere (the pages' scripts handle every form, so a key
/// typed into a form can never end up in a URL), and no page of another
/// site may frame them.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of `web/`, built into the binary.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        Asset {
            name: $name,
            media_type: $media_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)),
        }
    };
}

/// Every file of `web/`; a unit test checks that none is missing.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("desk.html", HTML),
    asset!("doctor.html", HTML),
    asset!("board.html", HTML),
    asset!("schedule.html", HTML),
    asset!("reports.html", HTML),
    asset!("app.css", CSS),
    asset!("board.css", CSS),
    asset!("api.js", JAVASCRIPT),
    asset!("stream.js", JAVASCRIPT),
    asset!("signin.js", JAVASCRIPT),
    asset!("words.js", JAVASCRIPT),
    asset!("desk.js", JAVASCRIPT),
    asset!("doctor.js", JAVASCRIPT),
    asset!("board.js", JAVASCRIPT),
    asset!("schedule.js", JAVASCRIPT),
    asset!("reports.js", JAVASCRIPT),
    asset!("icon.svg", SVG),
];

/// The file named `name`, with its media type and the headers every page
/// answer carries; 404 for a name that is not one of them.
fn file(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return ApiError::RouteNotFound(format!("/ui/{name}")).into_response();
    };
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    // Pages change with the binary: a browser asks again each time, and a
    // LAN serves these few small files at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_web_is_served_and_every_served_file_exists() {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
        let mut on_disk: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_type().unwrap().is_file())
            .map(|entry| entry.file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|asset| asset.name.into()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn browsers_navigating_get_html_and_api_clients_get_json() {
        let html = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            prefers_html(&headers)
        };
        // Chromium's and Firefox's navigation headers.
        assert!(html("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
        assert!(html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(html("application/json;q=0.5, text/html"));
        assert!(!html("*/*"));
        assert!(!html("application/json"));
        assert!(!html("application/json, text/html"));
        assert!(!html("text/html;q=0.5, application/*"));
        assert!(!html("text/html;q=0, */*"));
        assert!(!html(""));
        assert!(!prefers_html(&HeaderMap::new()));
    }
}
