//! Every error of API.md: status, problem+json shape, code, and which error
//! wins when several apply. A failed request changes nothing.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, assert_validation, booking, id_of, Backend, TestApp};

backend_tests!(
    an_unknown_route_is_not_found,
    a_wrong_method_on_a_known_path_is_405_with_an_allow_header,
    a_body_over_16_kib_is_refused_before_anything_else,
    a_body_of_exactly_16_kib_is_accepted,
    a_chunked_body_over_the_limit_is_refused,
    a_body_that_is_not_a_json_object_is_malformed,
    bad_json_in_a_field_a_booking_ignores_is_malformed,
    a_token_id_that_is_not_a_uuid_is_malformed,
    a_body_without_a_json_content_type_is_unsupported,
    invalid_booking_fields_are_refused_naming_each_field,
    unknown_slots_and_tokens_are_not_found,
    a_slot_id_that_is_not_utf8_names_no_slot,
    payload_too_large_wins_over_a_path_that_is_not_utf8,
    duplicate_bookings_and_forbidden_transitions_conflict,
    route_errors_win_over_body_errors,
    payload_too_large_wins_over_path_media_type_and_body_errors,
    media_type_errors_win_over_malformed_bodies,
    malformed_bodies_win_over_validation_errors,
    validation_errors_win_over_missing_slots_and_conflicts,
    failed_requests_change_nothing_and_consume_no_token_number,
    every_answer_carries_a_request_id,
);

const UNKNOWN_TOKEN: &str = "00000000-0000-4000-8000-000000000000";

/// A JSON object of `size` bytes whose fields make a valid booking.
fn padded_booking(patient: &str, slot: &str, size: usize) -> String {
    let body = booking(patient, slot, "ONLINE").to_string();
    let padding = size.checked_sub(body.len()).expect("room for the body");
    format!("{}{}}}", &body[..body.len() - 1], " ".repeat(padding))
}

async fn an_unknown_route_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/token"),
        (Method::GET, "/slots/D1-09/tokens"),
        (Method::POST, &format!("/tokens/{UNKNOWN_TOKEN}/archive")),
        (Method::GET, "/ui"),
        (Method::GET, "/ui/nothing.js"),
    ] {
        let reply = app.send(app.request(method.clone(), path)).await;
        assert_problem(&reply, 404, "NOT_FOUND");
    }
}

async fn a_wrong_method_on_a_known_path_is_405_with_an_allow_header(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let cases = [
        (Method::PUT, "/tokens".to_owned(), vec!["POST"]),
        (Method::GET, "/tokens".to_owned(), vec!["POST"]),
        (
            Method::DELETE,
            "/slots/D1-09".to_owned(),
            vec!["GET", "PATCH"],
        ),
        (
            Method::POST,
            "/slots/D1-09".to_owned(),
            vec!["GET", "PATCH"],
        ),
        (Method::DELETE, "/slots".to_owned(), vec!["GET", "POST"]),
        // The start page.
        (Method::DELETE, "/".to_owned(), vec!["GET"]),
        (Method::DELETE, format!("/tokens/{token}"), vec!["GET"]),
        (Method::GET, format!("/tokens/{token}/cancel"), vec!["POST"]),
        (
            Method::PATCH,
            format!("/tokens/{token}/no-show"),
            vec!["POST"],
        ),
    ];

    for (method, path, allowed) in cases {
        let reply = app.send(app.request(method.clone(), &path)).await;

        assert_problem(&reply, 405, "METHOD_NOT_ALLOWED");
        let allow: Vec<String> = reply
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path} has no Allow header"))
            .split(',')
            .map(|method| method.trim().to_owned())
            .collect();
        for method in allowed {
            assert!(
                allow.iter().any(|allowed| allowed == method),
                "Allow of {path} is {allow:?}"
            );
        }
    }
}

async fn a_body_over_16_kib_is_refused_before_anything_else(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let before = app.slot_text("D1-09").await;
    let body = padded_booking("P2", "D1-09", 16 * 1024 + 1);

    for (method, path) in [
        (Method::POST, "/tokens".to_owned()),
        (Method::POST, "/slots".to_owned()),
        (Method::PATCH, "/slots/D1-09".to_owned()),
        (Method::POST, format!("/tokens/{token}/cancel")),
        (Method::POST, format!("/tokens/{token}/no-show")),
    ] {
        let reply = app
            .raw(method, &path, Some("application/json"), body.clone())
            .await;
        assert_problem(&reply, 413, "PAYLOAD_TOO_LARGE");
    }
    assert_eq!(app.slot_text("D1-09").await, before);
}

async fn a_body_of_exactly_16_kib_is_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = padded_booking("P1", "D1-09", 16 * 1024);
    assert_eq!(body.len(), 16_384);

    let reply = app
        .raw(Method::POST, "/tokens", Some("application/json"), body)
        .await;

    assert_eq!(reply.expect_status(201).body["token"]["patientId"], "P1");
}

async fn a_chunked_body_over_the_limit_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = padded_booking("P1", "D1-09", 20_000);
    let address = app.address.trim_start_matches("http://");
    let mut request = format!(
        "POST /tokens HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(4_000) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    // The server may close the connection right after answering, so read
    // what arrives and stop at the first error.
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        answer.extend_from_slice(&buffer[..read]);
    }

    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert_eq!(app.slot("D1-09").await["allocatedCount"], 0);
}

async fn a_body_that_is_not_a_json_object_is_malformed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bodies = [
        "{\"patientId\": \"P1\",",
        "[]",
        "[{\"patientId\": \"P1\"}]",
        "\"P1\"",
        "42",
        "null",
        "",
        "{\"a\": 1} {}",
        "{'patientId': 'P1'}",
    ];

    for body in bodies {
        for (method, path) in [
            (Method::POST, "/tokens"),
            (Method::POST, "/slots"),
            (Method::PATCH, "/slots/D1-09"),
        ] {
            let reply = app.raw(method, path, Some("application/json"), body).await;
            assert_problem(&reply, 400, "MALFORMED_REQUEST");
        }
    }
}

/// A booking's unknown fields are ignored, but they must still be valid
/// JSON: a plain booking body (no `Idempotency-Key`) is read by a quick
/// path that must not let bad JSON through.
async fn bad_json_in_a_field_a_booking_ignores_is_malformed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.slot_text("D1-09").await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let bad_notes: [&[u8]; 6] = [
        b"\"\xff\"",
        b"\"caf\xc3\"",
        br#""\ud800""#,
        br#""\udc00\ud800""#,
        b"1e999999",
        deep.as_bytes(),
    ];
    for (index, note) in bad_notes.into_iter().enumerate() {
        let fields =
            format!(r#"{{"patientId":"P-bad-{index}","slotId":"D1-09","source":"ONLINE","note":"#);
        let mut body = fields.into_bytes();
        body.extend_from_slice(note);
        body.push(b'}');
        let reply = app
            .raw(Method::POST, "/tokens", Some("application/json"), body)
            .await;
        assert_problem(&reply, 400, "MALFORMED_REQUEST");
    }
    assert_eq!(app.slot_text("D1-09").await, before);

    // Valid JSON there is still ignored.
    let deep_enough = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let good_notes = [
        r#""café""#,
        r#""\u00e9\ud83d\ude00""#,
        "1e300",
        "-0.5",
        deep_enough.as_str(),
        r#"{"a":[true,null]}"#,
    ];
    for (index, note) in good_notes.into_iter().enumerate() {
        let body = format!(
            r#"{{"patientId":"P-good-{index}","slotId":"D1-09","source":"ONLINE","note":{note}}}"#
        );
        let reply = app
            .raw(Method::POST, "/tokens", Some("application/json"), body)
            .await;
        assert_eq!(reply.status, 201, "{note}: {}", reply.text);
    }
}

async fn a_token_id_that_is_not_a_uuid_is_malformed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let bad_ids = [
        "not-a-uuid".to_owned(),
        "123".to_owned(),
        valid.replace('-', ""),
        format!("{{{valid}}}"),
        format!("urn:uuid:{valid}"),
        format!("{valid}0"),
        valid.replacen(|c: char| c.is_ascii_hexdigit(), "g", 1),
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".to_owned(),
    ];

    for bad in &bad_ids {
        assert_problem(
            &app.get(&format!("/tokens/{bad}")).await,
            400,
            "MALFORMED_REQUEST",
        );
        assert_problem(&app.try_cancel(bad).await, 400, "MALFORMED_REQUEST");
        assert_problem(&app.try_no_show(bad).await, 400, "MALFORMED_REQUEST");
    }
    assert_eq!(app.token(&valid).await["status"], "ALLOCATED");
}

async fn a_body_without_a_json_content_type_is_unsupported(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid_booking = booking("P1", "D1-09", "ONLINE").to_string();
    let valid_slot = json!({"slotId": "X-1", "doctorId": "DX", "startTime": "09:00", "endTime": "10:00", "capacity": 1}).to_string();
    let valid_capacity = json!({"capacity": 5}).to_string();
    let before = app.get("/slots").await.text;

    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
    ] {
        for (method, path, body) in [
            (Method::POST, "/tokens", &valid_booking),
            (Method::POST, "/slots", &valid_slot),
            (Method::PATCH, "/slots/D1-09", &valid_capacity),
        ] {
            let reply = app.raw(method, path, content_type, body.clone()).await;
            assert_problem(&reply, 415, "UNSUPPORTED_MEDIA_TYPE");
        }
    }
    assert_eq!(app.get("/slots").await.text, before);
    // Parameters and letter case of the media type do not matter.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let body = booking(&format!("P-{}", content_type.len()), "D1-09", "ONLINE").to_string();
        app.raw(Method::POST, "/tokens", Some(content_type), body)
            .await
            .expect_status(201);
    }
}

async fn invalid_booking_fields_are_refused_naming_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.slot_text("D1-09").await;
    let valid = booking("P1", "D1-09", "ONLINE");
    let mut cases: Vec<(Value, Vec<&str>)> = Vec::new();
    for field in ["patientId", "slotId", "source"] {
        let mut missing = valid.clone();
        missing.as_object_mut().unwrap().remove(field);
        cases.push((missing, vec![field]));
        let mut null = valid.clone();
        null[field] = Value::Null;
        cases.push((null, vec![field]));
        let mut number = valid.clone();
        number[field] = json!(4);
        cases.push((number, vec![field]));
    }
    for source in ["online", "Online", "VIP", "", "WALKIN", " ONLINE"] {
        cases.push((booking("P1", "D1-09", source), vec!["source"]));
    }
    for bad in [
        String::new(),
        "P".repeat(65),
        "P 1".into(),
        "P/1".into(),
        "Ü".into(),
        "P1\n".into(),
        "P1;".into(),
    ] {
        cases.push((booking(&bad, "D1-09", "ONLINE"), vec!["patientId"]));
        cases.push((booking("P1", &bad, "ONLINE"), vec!["slotId"]));
    }
    cases.push((json!({}), vec!["patientId", "slotId", "source"]));
    cases.push((
        booking("", "", "NOPE"),
        vec!["patientId", "slotId", "source"],
    ));

    for (body, fields) in &cases {
        let reply = app.post_json("/tokens", body).await;
        assert_validation(&reply, fields);
    }
    assert_eq!(app.slot_text("D1-09").await, before);
    // The longest valid id is accepted, and unknown fields are ignored.
    let longest = format!("{}._-9", "p".repeat(60));
    let mut body = booking(&longest, "D1-09", "ONLINE");
    body["note"] = json!("ignored");
    let reply = app.post_json("/tokens", &body).await.expect_status(201);
    assert_eq!(reply.body["token"]["patientId"], json!(longest));
}

async fn unknown_slots_and_tokens_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    assert_problem(
        &app.try_book("P1", "D9-09", "ONLINE").await,
        404,
        "SLOT_NOT_FOUND",
    );
    assert_problem(&app.get("/slots/D9-09").await, 404, "SLOT_NOT_FOUND");
    assert_problem(
        &app.get("/slots/not%20an%20id").await,
        404,
        "SLOT_NOT_FOUND",
    );
    assert_problem(
        &app.get(&format!("/slots/{}", "s".repeat(65))).await,
        404,
        "SLOT_NOT_FOUND",
    );
    assert_problem(
        &app.try_set_capacity("D9-09", json!(3)).await,
        404,
        "SLOT_NOT_FOUND",
    );
    assert_problem(
        &app.get(&format!("/tokens/{UNKNOWN_TOKEN}")).await,
        404,
        "TOKEN_NOT_FOUND",
    );
    assert_problem(&app.try_cancel(UNKNOWN_TOKEN).await, 404, "TOKEN_NOT_FOUND");
    assert_problem(
        &app.try_no_show(&UNKNOWN_TOKEN.to_uppercase()).await,
        404,
        "TOKEN_NOT_FOUND",
    );
}

/// API.md reserves 400 for bodies and token ids; a slot id in the path
/// that does not decode to text is just an unknown slot.
async fn a_slot_id_that_is_not_utf8_names_no_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let read = app.get("/slots/%FF").await;
    let patched = app.try_set_capacity("%FF", json!(3)).await;
    let patched_invalid = app.try_set_capacity("%C3%28", json!("3")).await;

    assert_problem(&read, 404, "SLOT_NOT_FOUND");
    assert_problem(&patched, 404, "SLOT_NOT_FOUND");
    assert_validation(&patched_invalid, &["capacity"]);
}

async fn payload_too_large_wins_over_a_path_that_is_not_utf8(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = padded_booking("P1", "D1-09", 20_000);

    let cancel = app
        .raw(
            Method::POST,
            "/tokens/%FF/cancel",
            Some("application/json"),
            huge.clone(),
        )
        .await;
    let no_show = app
        .raw(Method::POST, "/tokens/%FF/no-show", None, huge.clone())
        .await;
    let patch = app
        .raw(Method::PATCH, "/slots/%FF", Some("application/json"), huge)
        .await;

    for reply in [cancel, no_show, patch] {
        assert_problem(&reply, 413, "PAYLOAD_TOO_LARGE");
    }
}

async fn duplicate_bookings_and_forbidden_transitions_conflict(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = id_of(&app.book("P1", "D1-09", "ONLINE").await);

    let duplicate = app.try_book("P1", "D1-09", "PAID").await;
    app.cancel(&first).await;
    let again = app.try_cancel(&first).await;

    assert_problem(&duplicate, 409, "DUPLICATE_BOOKING");
    assert_eq!(duplicate.body["existingTokenId"], json!(first));
    assert_problem(&again, 409, "INVALID_TRANSITION");
}

async fn route_errors_win_over_body_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = "x".repeat(20_000);

    let unknown = app
        .raw(
            Method::POST,
            "/tokenz",
            Some("application/json"),
            "{not json",
        )
        .await;
    let unknown_huge = app
        .raw(Method::POST, "/nope", Some("text/plain"), huge.clone())
        .await;
    let wrong_method = app
        .raw(Method::PUT, "/tokens", Some("text/plain"), huge)
        .await;
    let wrong_method_bad_id = app
        .raw(Method::DELETE, "/tokens/not-a-uuid/cancel", None, "")
        .await;

    assert_problem(&unknown, 404, "NOT_FOUND");
    assert_problem(&unknown_huge, 404, "NOT_FOUND");
    assert_problem(&wrong_method, 405, "METHOD_NOT_ALLOWED");
    assert_problem(&wrong_method_bad_id, 405, "METHOD_NOT_ALLOWED");
}

async fn payload_too_large_wins_over_path_media_type_and_body_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = format!("[{}]", "1,".repeat(10_000) + "1");

    let bad_token_id = app
        .raw(
            Method::POST,
            "/tokens/not-a-uuid/cancel",
            Some("application/json"),
            huge.clone(),
        )
        .await;
    let bad_no_show_id = app
        .raw(Method::POST, "/tokens/123/no-show", None, huge.clone())
        .await;
    let wrong_media_type = app
        .raw(Method::POST, "/tokens", Some("text/plain"), huge.clone())
        .await;
    let not_an_object = app
        .raw(
            Method::PATCH,
            "/slots/NO-SUCH-SLOT",
            Some("application/json"),
            huge,
        )
        .await;

    for reply in [
        bad_token_id,
        bad_no_show_id,
        wrong_media_type,
        not_an_object,
    ] {
        assert_problem(&reply, 413, "PAYLOAD_TOO_LARGE");
    }
}

async fn media_type_errors_win_over_malformed_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let booking = app
        .raw(Method::POST, "/tokens", Some("text/plain"), "{not json")
        .await;
    let slot = app.raw(Method::POST, "/slots", None, "[]").await;
    let capacity = app
        .raw(
            Method::PATCH,
            "/slots/NO-SUCH-SLOT",
            Some("text/csv"),
            "capacity,3",
        )
        .await;

    for reply in [booking, slot, capacity] {
        assert_problem(&reply, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
}

async fn malformed_bodies_win_over_validation_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let keyed_array = app
        .send(
            app.request(Method::POST, "/tokens")
                .header("idempotency-key", "")
                .json(&json!([1])),
        )
        .await;
    let truncated = app
        .raw(
            Method::POST,
            "/slots",
            Some("application/json"),
            r#"{"slotId": "", "capacity": -1"#,
        )
        .await;
    let unknown_slot = app
        .raw(
            Method::PATCH,
            "/slots/NO-SUCH-SLOT",
            Some("application/json"),
            "[3]",
        )
        .await;

    for reply in [keyed_array, truncated, unknown_slot] {
        assert_problem(&reply, 400, "MALFORMED_REQUEST");
    }
}

async fn validation_errors_win_over_missing_slots_and_conflicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.book("P1", "D1-09", "ONLINE").await;

    let unknown_slot_bad_source = app.try_book("P1", "NO-SUCH-SLOT", "VIP").await;
    let unknown_slot_bad_capacity = app.try_set_capacity("NO-SUCH-SLOT", json!("3")).await;
    let duplicate_bad_key = app
        .book_keyed(&"k".repeat(129), &booking("P1", "D1-09", "ONLINE"))
        .await;
    let existing_slot_bad_capacity = app
        .post_json("/slots", &json!({"slotId": "D1-09", "doctorId": "D1", "startTime": "09:00", "endTime": "10:00", "capacity": 1.0}))
        .await;
    let existing_slot_end_before_start = app
        .post_json("/slots", &json!({"slotId": "D1-09", "doctorId": "D1", "startTime": "10:00", "endTime": "09:00", "capacity": 1}))
        .await;

    assert_validation(&unknown_slot_bad_source, &["source"]);
    assert_validation(&unknown_slot_bad_capacity, &["capacity"]);
    assert_validation(&duplicate_bad_key, &["Idempotency-Key"]);
    assert_validation(&existing_slot_bad_capacity, &["capacity"]);
    assert_validation(&existing_slot_end_before_start, &["endTime"]);
}

async fn failed_requests_change_nothing_and_consume_no_token_number(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let first = id_of(&app.book("P1", &slot.id, "ONLINE").await);
    let waiting = id_of(&app.book("P2", &slot.id, "WALK_IN").await);
    let before_slot = app.slot_text(&slot.id).await;
    let before_tokens = (app.token(&first).await, app.token(&waiting).await);
    let before_list = app.get("/slots").await.text;

    let failures = [
        app.try_book("P1", &slot.id, "EMERGENCY").await,
        app.try_book("P2", &slot.id, "PAID").await,
        app.try_book("P3", &slot.id, "VIP").await,
        app.try_book("", &slot.id, "ONLINE").await,
        app.try_book("P3", "NO-SUCH-SLOT", "ONLINE").await,
        app.raw(Method::POST, "/tokens", Some("application/json"), "{").await,
        app.raw(Method::POST, "/tokens", Some("text/plain"), booking("P3", &slot.id, "ONLINE").to_string()).await,
        app.raw(Method::POST, "/tokens", Some("application/json"), padded_booking("P3", &slot.id, 20_000)).await,
        app.book_keyed("", &booking("P3", &slot.id, "ONLINE")).await,
        app.try_no_show(&waiting).await,
        app.try_cancel(UNKNOWN_TOKEN).await,
        app.try_set_capacity(&slot.id, json!(-1)).await,
        app.post_json("/slots", &json!({"slotId": slot.id, "doctorId": "X", "startTime": "09:00", "endTime": "10:00", "capacity": 1})).await,
        app.post_json("/slots", &json!({"slotId": "NEW", "doctorId": slot.doctor, "startTime": "09:30", "endTime": "10:30", "capacity": 1})).await,
    ];

    for reply in &failures {
        assert!(
            (400..500).contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text
        );
    }
    assert_eq!(app.slot_text(&slot.id).await, before_slot);
    assert_eq!(
        (app.token(&first).await, app.token(&waiting).await),
        before_tokens
    );
    assert_eq!(app.get("/slots").await.text, before_list);
    let next = app.book("P3", &slot.id, "WALK_IN").await;
    assert_eq!(next["token"]["tokenNumber"], 3);
    assert_eq!(next["token"]["waitlistPosition"], 2);
}

/// Successes and errors alike carry `x-request-id`: the client's own when
/// it sent one, else a fresh UUID per request.
async fn every_answer_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut generated = Vec::new();
    for reply in [
        app.try_book("P1", "D1-09", "ONLINE").await,
        app.try_book("P1", "D1-09", "ONLINE").await,
        app.get("/nope").await,
        app.send(app.request(Method::PUT, "/tokens")).await,
    ] {
        let id = reply
            .headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on a {} answer", reply.status));
        let id = id.to_str().unwrap().to_owned();
        assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
        generated.push(id);
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4, "request ids repeat: {generated:?}");

    let reply = app
        .send(
            app.request(Method::POST, "/tokens")
                .header("x-request-id", "desk-7-0001")
                .json(&booking("P2", "D1-09", "WALK_IN")),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.headers["x-request-id"], "desk-7-0001");
}
