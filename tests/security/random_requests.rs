//! Random requests, valid and not: never a 5xx, and every 4xx is a
//! problem+json.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// One random request: method, path, headers and body.
#[derive(Debug, Clone)]
struct RandomRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn random_request(tokens: Vec<String>) -> impl Strategy<Value = RandomRequest> {
    let odd_method = prop::sample::select(vec![
        "GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND",
    ])
    .prop_map(str::to_owned);
    // Path segments: real slot and token ids, and ids with reserved
    // characters, stray percent signs, invalid UTF-8 escapes, UUIDs in odd
    // cases, and ids over 64 characters.
    let segment = prop_oneof![
        3 => prop::sample::select(tokens),
        2 => Just("D1-09".to_owned()),
        1 => "[A-Za-z0-9._~-]{0,12}",
        1 => "[A-Za-z0-9%._~!$&'()*+,;=:@-]{0,20}",
        1 => "(%[0-9A-Fa-f]{2}){1,6}",
        1 => "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        1 => "[A-Za-z]{65,80}",
    ];
    // Mostly a documented method on its route, sometimes any method on
    // any path.
    let method_and_path = prop_oneof![
        6 => (
            prop::sample::select(vec![
                ("POST", "/tokens"),
                ("GET", "/tokens/{id}"),
                ("POST", "/tokens/{id}/cancel"),
                ("POST", "/tokens/{id}/no-show"),
                ("GET", "/slots"),
                ("POST", "/slots"),
                ("GET", "/slots/{id}"),
                ("PATCH", "/slots/{id}"),
                ("GET", "/healthz"),
            ]),
            segment.clone(),
        )
            .prop_map(|((method, template), id)| (method.to_owned(), template.replace("{id}", &id))),
        1 => (odd_method, prop::collection::vec(segment, 0..4))
            .prop_map(|(method, segments)| (method, format!("/{}", segments.join("/")))),
    ];
    let query = prop::option::of(prop_oneof![
        "doctorId=[A-Za-z0-9%/._-]{0,70}",
        "date=[0-9a-z%-]{0,12}",
        "[a-zA-Z=&%]{0,20}",
    ]);
    let key = prop_oneof![
        1 => Just(None),
        3 => Just(Some(format!("Bearer {ADMIN_KEY}"))),
        2 => Just(Some(format!("Bearer {DESK_KEY}"))),
        1 => Just(Some(format!("Bearer {DOCTOR_D1_KEY}"))),
        1 => Just(Some(format!("Bearer {DOCTOR_D2_KEY}"))),
        1 => Just(Some(format!("Bearer {VIEWER_KEY}"))),
        1 => "[ -~]{0,40}".prop_map(Some),
    ];
    let content_type = prop::option::of(prop_oneof![
        4 => Just("application/json".to_owned()),
        1 => Just("application/json; charset=utf-8".to_owned()),
        1 => Just("text/plain".to_owned()),
        1 => "[ -~]{0,30}",
    ]);
    let extra_headers = prop::collection::vec(
        (
            prop_oneof![
                Just("idempotency-key".to_owned()),
                Just("accept".to_owned()),
                Just("origin".to_owned()),
                // Not content-length or transfer-encoding: those frame the
                // message, and hyper answers bad framing with a bare 400
                // before any of the API runs.
                "x-[a-z]{1,10}",
            ],
            "[ -~]{0,60}",
        ),
        0..4,
    );
    let body = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        3 => json_body().prop_map(|value| value.to_string().into_bytes()),
    ];
    (
        method_and_path,
        query,
        key,
        content_type,
        extra_headers,
        body,
    )
        .prop_map(
            |((method, path), query, key, content_type, extra_headers, body)| {
                let path = match query {
                    Some(query) => format!("{path}?{query}"),
                    None => path,
                };
                let mut headers = extra_headers;
                if let Some(key) = key {
                    headers.push(("authorization".into(), key));
                }
                if let Some(content_type) = content_type {
                    headers.push(("content-type".into(), content_type));
                }
                RandomRequest {
                    method,
                    path,
                    headers,
                    body,
                }
            },
        )
}

/// JSON bodies shaped like the API's, with wrong types and values mixed in.
fn json_body() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[ -~]{0,70}".prop_map(Value::from),
        prop::sample::select(vec![
            "EMERGENCY",
            "PAID",
            "FOLLOW_UP",
            "ONLINE",
            "WALK_IN",
            "D1-09",
            "D1",
            "09:00",
            "10:00",
            "2030-01-07"
        ])
        .prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    let field = prop::sample::select(vec![
        "patientId",
        "slotId",
        "source",
        "doctorId",
        "date",
        "startTime",
        "endTime",
        "capacity",
        "other",
    ]);
    prop::collection::btree_map(field, value, 0..7).prop_map(|map| {
        Value::Object(
            map.into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    })
}

#[test]
fn random_requests_never_get_5xx_and_4xx_is_always_problem_json() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app(keyed_config()));
    let tokens: Vec<String> = runtime.block_on(async {
        let mut tokens = Vec::new();
        for _ in 0..4 {
            tokens.push(app.d1_token().await);
        }
        tokens
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&random_request(tokens), |request| {
            let url = app.url(&request.path);
            let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
                return Ok(());
            };
            let mut builder = app.client.request(method.clone(), &url);
            for (name, value) in &request.headers {
                // Only what a client can put on the wire.
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    builder = builder.header(name, value);
                }
            }
            let builder = builder.body(request.body.clone());
            let response = runtime.block_on(async {
                let response = builder.send().await?;
                let status = response.status();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, content_type, body))
            });
            let (status, content_type, body) = match response {
                Ok(answer) => answer,
                // A request the client refuses to send (such as an invalid
                // URL) or a connection the server closed on a malformed
                // request says nothing about the API's answers.
                Err(error) if error.is_builder() => return Ok(()),
                Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
            };
            prop_assert!(
                !status.is_server_error(),
                "{} {} -> {status}: {}",
                request.method,
                request.path,
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                prop_assert!(
                    content_type.starts_with("application/problem+json"),
                    "{} {} -> {status} with content-type {content_type:?}",
                    request.method,
                    request.path
                );
                if method != Method::HEAD {
                    let problem: Value = serde_json::from_slice(&body).map_err(|error| {
                        TestCaseError::fail(format!("{status}: not JSON: {error}"))
                    })?;
                    prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
                    prop_assert!(problem["code"].is_string());
                }
            }
            Ok(())
        })
        .unwrap();
}
