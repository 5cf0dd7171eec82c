//! The gate: the access check the [`edge`](crate::http::edge) runs for
//! every request before it is routed. It finds a request's route template
//! by matching its path with matchit, the matcher axum's router uses, so a
//! path gets the same template here as there; then it applies the route's
//! [`Access`], the caller's key and the rate limit.
//!
//! It is not a route layer: axum clones a route layer's boxed service, and
//! the layer's own state, for every request, which cost about a tenth of
//! the in-memory booking throughput (see the README's performance
//! section).
//!
//! An open server (no keys) answers only requests addressed to a loopback
//! name, so that a web page that got a name of its own resolved to
//! 127.0.0.1 (DNS rebinding) cannot reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request};
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};

use super::access::{Access, AccessRules, Caller, DoctorScope, Role};
use super::keys::{bearer, ApiKey};
use crate::engine::{DoctorId, SlotId};
use crate::http::error::{self, ApiError};
use crate::http::fhir;
use crate::http::metrics::RequestMetrics;
use crate::http::rate_limit::Client;
use crate::http::{input, AppState};

/// The access check, with the route templates of every access rule.
pub struct Gate {
    app: AppState,
    templates: matchit::Router<RouteAccess>,
    /// Request counts by the index of the route template matched.
    requests: RequestMetrics,
}

/// One route template's rules, in registration order.
#[derive(Debug, Clone)]
struct RouteAccess {
    /// The route's place in [`Gate::route_templates`].
    index: usize,
    template: String,
    methods: Vec<(Method, Access)>,
}

impl RouteAccess {
    /// The access of `method` on this route; `HEAD` follows `GET`.
    fn access(&self, method: &Method) -> Option<Access> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.methods
            .iter()
            .find(|(rule_method, _)| rule_method == method)
            .map(|(_, access)| *access)
    }
}

impl Gate {
    /// A gate applying `rules`, the access rules of every route `app`
    /// serves.
    pub fn new(app: AppState, rules: &AccessRules) -> Gate {
        let (templates, routes) = route_table(rules);
        let requests = RequestMetrics::new(app.metrics.clone(), routes);
        Gate {
            app,
            templates,
            requests,
        }
    }

    /// Where answers are counted, by the route index [`Gate::check`]
    /// tells.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Checks the key and the rate limit, narrows doctor keys to their
    /// doctor and records the [`Caller`]; the request goes on, or the
    /// refusal is the answer. A path that no rule names goes on to the
    /// router's 404 once it has spent its caller's rate budget: every route
    /// the router serves has a rule (`http::app` refuses to build
    /// otherwise). An open server first refuses requests that are not
    /// addressed to a loopback name.
    ///
    /// In two steps: [`Gate::check`] decides what needs no data and tells
    /// the index of the route template the path matched, for the request
    /// metrics ([`Gate::requests`]), and
    /// [`Gate::admit`] finishes with what needs a read.
    pub async fn admit(&self, verdict: Verdict, request: &mut Request) -> Result<(), Response> {
        match verdict {
            Verdict::Admitted => Ok(()),
            Verdict::Refused(refusal) => Err(refusal),
            Verdict::Narrow {
                subject,
                doctor,
                key,
            } => {
                // Boxed: the reads it may make (of PostgreSQL, say) are
                // large futures, and every request's future would carry
                // their size.
                Box::pin(narrow_to_doctor(self, subject, &doctor, request)).await?;
                record_caller(request, &key);
                Ok(())
            }
        }
    }

    /// The matched route's index, and what can be decided without reading
    /// data.
    pub fn check(&self, request: &mut Request) -> (Option<usize>, Verdict) {
        let mut route = None;
        let verdict = self.verdict(request, &mut route);
        (route, verdict)
    }

    /// What can be decided without reading data; `route` is set to the
    /// matched route's index once the path is matched (a request refused
    /// before, as misdirected, matches none).
    fn verdict(&self, request: &mut Request, route: &mut Option<usize>) -> Verdict {
        let security = &self.app.security;
        // Before anything else: a web page that got a name of its own
        // resolved to 127.0.0.1 (DNS rebinding) reaches an open server only
        // under that name, which this refuses.
        if security.is_open() {
            if let Err(error) = addressed_to_loopback(request) {
                return Verdict::Refused(error.into_response());
            }
        }
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let Ok(found) = self.templates.at(request.uri().path()) else {
            return match security.spend_unrouted(request.headers(), address) {
                Ok(()) => Verdict::Admitted,
                Err(error) => Verdict::Refused(error.into_response()),
            };
        };
        *route = Some(found.value.index);
        let route = found.value;
        let method = request.method();
        let Some(access) = route.access(method) else {
            if let Err(error) = security.spend_unrouted(request.headers(), address) {
                return Verdict::Refused(error.into_response());
            }
            return Verdict::Refused(no_rule(method, route));
        };

        if access.is_public() || security.is_open() {
            // Health checks have a budget of their own, so that a flood of
            // other requests from the address (bad keys, unknown paths)
            // leaves them answerable.
            let client = if access == Access::HealthCheck {
                Client::health_check(address)
            } else {
                Client::address(address)
            };
            return match security.spend(&client) {
                // No caller recorded reads as anonymous (see `Caller::of`).
                Ok(()) => Verdict::Admitted,
                Err(error) => Verdict::Refused(error.into_response()),
            };
        }

        let key = match bearer(request.headers()) {
            Ok(presented) => security.key(presented),
            Err(()) => None,
        };
        let Some(key) = key else {
            // Failed attempts spend the address's budget, which slows guessing.
            if let Err(error) = security.spend(&Client::address(address)) {
                return Verdict::Refused(error.into_response());
            }
            return Verdict::Refused(unauthorized(
                request.headers().contains_key(header::AUTHORIZATION),
            ));
        };
        if let Err(error) = security.spend(&Client::Key(key.name.clone())) {
            return Verdict::Refused(error.into_response());
        }
        if !access.permits(&key.role) {
            return Verdict::Refused(ApiError::Forbidden.into_response());
        }
        if let (Access::Read(scope) | Access::Clinical(scope), Role::Doctor(doctor)) =
            (access, &key.role)
        {
            let in_path = |name| path_parameter(&found.params, name);
            let subject = match scope {
                DoctorScope::SlotList => Ok(Subject::SlotList),
                DoctorScope::EventFilters => Ok(Subject::EventFilters),
                DoctorScope::SlotInPath => in_path("slotId").map(Subject::Slot),
                DoctorScope::TokenInPath => in_path("tokenId").map(Subject::Token),
                DoctorScope::DoctorInPath => in_path("doctorId").map(Subject::Doctor),
                DoctorScope::FhirSchedule => {
                    in_path("id").map(|id| Subject::Doctor(fhir::ids::decode(&id).unwrap_or(id)))
                }
                // An id that names no slot decodes to the empty id, which
                // no slot has: the handler answers 404.
                DoctorScope::FhirSlot => in_path("id")
                    .map(|id| Subject::Slot(fhir::ids::decode(&id).unwrap_or_default())),
                DoctorScope::FhirAppointment => in_path("id").map(Subject::Token),
                DoctorScope::FhirSearch { parameter, target } => {
                    Ok(Subject::FhirSearch { parameter, target })
                }
                DoctorScope::AnyDoctor => {
                    record_caller(request, &key);
                    return Verdict::Admitted;
                }
            };
            return match subject {
                Ok(subject) => Verdict::Narrow {
                    subject,
                    doctor: doctor.clone(),
                    key,
                },
                Err(error) => Verdict::Refused(error.into_response()),
            };
        }
        record_caller(request, &key);
        Verdict::Admitted
    }
}

/// The rules by route template, for matching paths: each template once,
/// with its methods in the rules' order (the rules repeat a template for
/// each of its methods).
fn route_table(rules: &AccessRules) -> (matchit::Router<RouteAccess>, Vec<String>) {
    let mut routes: Vec<RouteAccess> = Vec::new();
    for (method, template, access) in rules.rules() {
        match routes.iter_mut().find(|route| route.template == *template) {
            Some(route) => route.methods.push((method.clone(), *access)),
            None => routes.push(RouteAccess {
                index: routes.len(),
                template: template.clone(),
                methods: vec![(method.clone(), *access)],
            }),
        }
    }
    let templates = routes.iter().map(|route| route.template.clone()).collect();
    let mut table = matchit::Router::new();
    for route in routes {
        table
            .insert(route.template.clone(), route)
            .expect("the rules' route templates are valid and do not overlap");
    }
    (table, templates)
}

/// What [`Gate::check`] decided.
pub enum Verdict {
    Admitted,
    Refused(Response),
    /// A doctor key's read or action, admitted once it is narrowed to its
    /// doctor.
    Narrow {
        subject: Subject,
        doctor: DoctorId,
        key: ApiKey,
    },
}

/// What a doctor key's read or action is about, as its rule's
/// [`DoctorScope`] finds it; path parameters percent-decoded.
pub enum Subject {
    SlotList,
    /// An event stream's `doctorId` and `slotId` filters.
    EventFilters,
    Slot(String),
    Token(String),
    Doctor(String),
    /// A FHIR search's references to doctors (by `parameter`, to `target`
    /// resources) and to slots.
    FhirSearch {
        parameter: &'static str,
        target: &'static str,
    },
}

fn record_caller(request: &mut Request, key: &ApiKey) {
    request.extensions_mut().insert(Caller {
        name: key.name.clone(),
    });
}

/// An open server answers only requests addressed to a loopback name:
/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port, in the
/// `Host` header and in the target of an absolute-form request line.
/// 421 otherwise; 400 for an HTTP/1.1 request without exactly one `Host`
/// header (RFC 9112, section 3.2). An HTTP/1.0 request may omit `Host`:
/// browsers always send it.
fn addressed_to_loopback(request: &Request) -> Result<(), ApiError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::Malformed(
            "the request has more than one Host header".into(),
        ));
    }
    if let Some(target) = request.uri().authority() {
        if !is_loopback_authority(target.as_str()) {
            return Err(ApiError::MisdirectedRequest);
        }
    }
    match host {
        Some(host) if host.to_str().is_ok_and(is_loopback_authority) => Ok(()),
        Some(_) => Err(ApiError::MisdirectedRequest),
        None if request.version() >= Version::HTTP_11 => Err(ApiError::Malformed(
            "an HTTP/1.1 request must have a Host header".into(),
        )),
        None => Ok(()),
    }
}

/// Whether `authority` (`host[:port]`) names a loopback host: `localhost`
/// in any letter case, an IPv4 address in 127.0.0.0/8, or the bracketed
/// IPv6 loopback address (also as an IPv4-mapped address).
fn is_loopback_authority(authority: &str) -> bool {
    let (is_loopback, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((inside, port)) = bracketed.split_once(']') else {
                return false;
            };
            let address = inside.parse::<Ipv6Addr>();
            (
                address.is_ok_and(|address| IpAddr::V6(address).to_canonical().is_loopback()),
                port,
            )
        }
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<Ipv4Addr>()
                        .is_ok_and(|address| address.is_loopback()),
                port,
            )
        }
    };
    let port_is_valid = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit())
        });
    is_loopback && port_is_valid
}

/// Checks a doctor key's read or action against the data's doctor. Resources that do
/// not exist or cannot be parsed are left to the handler (404 or 400).
async fn narrow_to_doctor(
    gate: &Gate,
    subject: Subject,
    doctor: &DoctorId,
    request: &mut Request,
) -> Result<(), Response> {
    let app = &gate.app;
    let other_doctor = || {
        error::problem(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this key may see and act on only its own doctor's slots, tokens and queue",
            Default::default(),
        )
    };
    match subject {
        Subject::SlotList | Subject::EventFilters => {
            let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            else {
                return Err(
                    ApiError::Malformed("the query string could not be read".into())
                        .into_response(),
                );
            };
            let asked: Vec<&str> = pairs
                .iter()
                .filter(|(name, _)| name == "doctorId")
                .map(|(_, value)| value.as_str())
                .collect();
            if asked.iter().any(|asked| *asked != doctor.as_str()) {
                return Err(other_doctor());
            }
            if asked.is_empty() {
                add_doctor_filter(request, doctor);
            }
            if matches!(subject, Subject::EventFilters) {
                if let Some((_, slot)) = pairs.iter().find(|(name, _)| name == "slotId") {
                    return slot_of_doctor(app, slot, doctor, other_doctor).await;
                }
            }
            Ok(())
        }
        Subject::FhirSearch { parameter, target } => {
            let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            else {
                return Err(
                    ApiError::Malformed("the query string could not be read".into())
                        .into_response(),
                );
            };
            let mut named = false;
            for (_, value) in pairs.iter().filter(|(name, _)| name == parameter) {
                for reference in value.split(',') {
                    named = true;
                    match fhir::search::reference_id(reference, target) {
                        Ok(Some(id)) if id == doctor.as_str() => {}
                        _ => return Err(other_doctor()),
                    }
                }
            }
            if !named {
                // A doctor id too long to be a FHIR id is written as is:
                // the reference then names nothing, and the search finds
                // nothing, as the doctor has no FHIR resources.
                let id = fhir::ids::encode(doctor.as_str())
                    .unwrap_or_else(|| doctor.as_str().to_owned());
                add_query_pair(request, parameter, &format!("{target}/{id}"));
            }
            for (_, value) in pairs.iter().filter(|(name, _)| name == "slot") {
                for reference in value.split(',') {
                    // A value that names no slot is the handler's to refuse.
                    if let Ok(Some(slot)) = fhir::search::reference_id(reference, "Slot") {
                        slot_of_doctor(app, &slot, doctor, other_doctor).await?;
                    }
                }
            }
            Ok(())
        }
        Subject::Slot(raw) => slot_of_doctor(app, &raw, doctor, other_doctor).await,
        Subject::Doctor(raw) if raw == doctor.as_str() => Ok(()),
        Subject::Doctor(_) => Err(other_doctor()),
        Subject::Token(raw) => {
            let Ok(token) = input::token_id(&raw) else {
                return Ok(());
            };
            match app.service.token(token).await {
                Ok(Some(detail)) if detail.token.doctor != *doctor => Err(other_doctor()),
                Ok(_) => Ok(()),
                Err(error) => Err(ApiError::from(error).into_response()),
            }
        }
    }
}

/// Refuses a slot of another doctor than `doctor`; a slot that does not
/// exist or cannot be parsed is left to the handler.
async fn slot_of_doctor(
    app: &AppState,
    raw: &str,
    doctor: &DoctorId,
    other_doctor: impl Fn() -> Response,
) -> Result<(), Response> {
    let Some(slot) = SlotId::parse(raw) else {
        return Ok(());
    };
    match app.service.slot_summary(&slot).await {
        Ok(Some(summary)) if summary.doctor != *doctor => Err(other_doctor()),
        Ok(_) => Ok(()),
        Err(error) => Err(ApiError::from(error).into_response()),
    }
}

/// Makes `GET /slots` (or an event stream) hold only `doctor`'s slots. Doctor ids need no
/// percent-encoding.
fn add_doctor_filter(request: &mut Request, doctor: &DoctorId) {
    add_query_pair(request, "doctorId", doctor.as_str());
}

/// Adds `name=value` to the request's query; both must need no
/// percent-encoding (ids, references and parameter names do not).
fn add_query_pair(request: &mut Request, name: &str, value: &str) {
    let uri = request.uri().clone();
    let path_and_query = match uri.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}&{name}={value}", uri.path()),
        _ => format!("{}?{name}={value}", uri.path()),
    };
    let mut parts = uri.into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_str(&path_and_query).expect("a valid path plus a valid id"));
    *request.uri_mut() = Uri::from_parts(parts).expect("only the query changed");
}

/// A path parameter of the request, percent-decoded as axum decodes it
/// for the handler.
fn path_parameter(params: &matchit::Params, name: &str) -> Result<String, ApiError> {
    let Some(raw) = params.get(name) else {
        tracing::error!(
            parameter = name,
            "an access rule names a path parameter its route lacks"
        );
        return Err(ApiError::Forbidden);
    };
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|_| ApiError::Malformed("the path could not be read".into()))
}

fn unauthorized(sent_a_key: bool) -> Response {
    let mut response = ApiError::Unauthorized.into_response();
    // RFC 6750: no error code when no credentials were sent.
    let challenge = if sent_a_key {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// A route without a rule: closed. A known route with other methods gets
/// the 405 that axum would give, with the rules' methods in `Allow`.
fn no_rule(method: &Method, route: &RouteAccess) -> Response {
    let mut allowed: Vec<&str> = Vec::new();
    for (rule_method, _) in &route.methods {
        allowed.push(rule_method.as_str());
        if rule_method == Method::GET {
            allowed.push("HEAD");
        }
    }
    if allowed.is_empty() {
        tracing::error!(%method, route = route.template, "no access rule for this route: it stays closed until it is registered with one");
        return closed("no access rule covers this route");
    }
    let mut response = error::problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this path does not take this method; see the Allow header",
        Default::default(),
    );
    let allow = HeaderValue::from_str(&allowed.join(",")).expect("method names are header text");
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

fn closed(detail: &str) -> Response {
    error::problem(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        detail,
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities_are_recognised() {
        for loopback in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:65535",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(is_loopback_authority(loopback), "{loopback}");
        }
        for other in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            "user@localhost",
            "128.0.0.1",
            "10.0.0.1:8080",
            "[::2]",
            "::1",
            "[::1",
            "localhost:",
            "localhost:80x",
            "localhost:123456",
            "127.0.0.1:8080:80",
        ] {
            assert!(!is_loopback_authority(other), "{other}");
        }
    }

    #[test]
    fn a_route_without_rules_is_closed_and_a_known_route_allows_only_its_rules() {
        let reports = RouteAccess {
            index: 0,
            template: "/reports".into(),
            methods: Vec::new(),
        };
        let closed = no_rule(&Method::GET, &reports);
        assert_eq!(closed.status(), StatusCode::FORBIDDEN);
        let (_, _, rules) = crate::http::openapi::api(false);
        let (table, _) = route_table(&rules);
        let slot = table.at("/slots/D1-09").unwrap().value;
        let wrong_method = no_rule(&Method::DELETE, slot);
        assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong_method.headers()[header::ALLOW], "GET,HEAD,PATCH");
    }
}
