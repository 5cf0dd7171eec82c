//! The FHIR R4 view under `/fhir`: the status mapping state by state, the
//! resources' content, the searches with their paging, the errors as
//! OperationOutcomes and who sees what, on every backend. CI validates
//! the same resources against the official FHIR R4 JSON schema and runs a
//! FHIR client library against the release binary
//! (scripts/fhir-check.sh).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{id_of, Backend, Reply, TestApp, TODAY};

const AT_0900: &str = "2030-01-15T09:00:00Z";
const NS: &str = "https://opd-token-engine.org/fhir";

backend_tests!(
    every_token_status_maps_to_an_appointment_status,
    an_appointment_carries_the_token_its_patient_doctor_slot_and_source,
    a_slot_is_free_busy_overbooked_or_closed_as_its_seats_are,
    slot_times_are_instants_in_the_clinics_zone,
    schedules_are_the_doctors_with_slots,
    slot_searches_filter_by_schedule_start_and_status,
    appointment_searches_filter_by_date_practitioner_status_patient_and_slot,
    searches_page_with_count_and_next_links,
    unknown_or_invalid_search_parameters_are_refused_as_operation_outcomes,
    errors_under_fhir_are_operation_outcomes_with_their_status_and_headers,
    a_doctor_key_sees_only_its_own_doctors_resources,
    the_capability_statement_lists_what_is_served,
    a_configured_base_url_names_resources_and_pages,
);

async fn fhir(app: &TestApp, path: &str) -> Reply {
    app.get(path).await
}

/// A 200 FHIR answer's body, checking the media type.
#[track_caller]
fn resource(reply: Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/fhir+json"));
    reply.body
}

async fn read(app: &TestApp, path: &str) -> Value {
    resource(fhir(app, path).await)
}

/// An OperationOutcome error with its status, FHIR issue type and the
/// project's code.
#[track_caller]
fn assert_outcome(reply: &Reply, status: u16, issue: &str, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/fhir+json"),
        "{}",
        reply.text
    );
    let body = &reply.body;
    assert_eq!(body["resourceType"], "OperationOutcome", "{}", reply.text);
    let issue_found = &body["issue"][0];
    assert_eq!(issue_found["severity"], "error");
    assert_eq!(issue_found["code"], issue, "{}", reply.text);
    assert_eq!(
        issue_found["details"]["coding"][0],
        json!({"system": format!("{NS}/CodeSystem/error"), "code": code}),
        "{}",
        reply.text
    );
    assert!(issue_found["details"]["text"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));
}

/// The value of an extension of the project's, by name.
fn extension(resource: &Value, name: &str) -> Value {
    let url = format!("{NS}/StructureDefinition/{name}");
    resource["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|extension| extension["url"] == url.as_str())
        .map(|extension| {
            let object = extension.as_object().unwrap();
            let (_, value) = object
                .iter()
                .find(|(key, _)| key.starts_with("value"))
                .expect("an extension has a value");
            value.clone()
        })
        .unwrap_or(Value::Null)
}

fn entries(bundle: &Value) -> Vec<Value> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            assert_eq!(entry["search"]["mode"], "match");
            let full_url = entry["fullUrl"].as_str().unwrap();
            let resource = entry["resource"].clone();
            assert!(
                full_url.ends_with(&format!(
                    "/fhir/{}/{}",
                    resource["resourceType"].as_str().unwrap(),
                    resource["id"].as_str().unwrap()
                )),
                "{full_url}"
            );
            resource
        })
        .collect()
}

fn ids(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .map(|resource| resource["id"].as_str().unwrap().to_owned())
        .collect()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|link| link["relation"] == relation)
        .map(|link| link["url"].as_str().unwrap().to_owned())
}

/// The path and query of an absolute link of this server.
fn local(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&app.address)
        .unwrap_or_else(|| panic!("{url} is not under {}", app.address))
        .to_owned()
}

/// A token of a new patient in `slot`, taken through `steps`.
async fn token(app: &TestApp, patient: &str, slot: &str, source: &str, steps: &[&str]) -> String {
    let id = id_of(&app.book(patient, slot, source).await);
    for step in steps {
        app.act(&id, step).await;
    }
    id
}

async fn appointment(app: &TestApp, token: &str) -> Value {
    read(app, &format!("/fhir/Appointment/{token}")).await
}

async fn every_token_status_maps_to_an_appointment_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let desk = app.new_slot(20).await;
    let slot = desk.id.as_str();
    let allocated = token(&app, "P1", slot, "ONLINE", &[]).await;
    let checked_in = token(&app, "P2", slot, "ONLINE", &["check-in"]).await;
    let skipped = token(&app, "P4", slot, "ONLINE", &["check-in", "call", "skip"]).await;
    let completed = token(
        &app,
        "P5",
        slot,
        "ONLINE",
        &["check-in", "call", "start", "complete"],
    )
    .await;
    let called = token(&app, "P3", slot, "ONLINE", &["check-in", "call"]).await;
    let cancelled = token(&app, "P6", slot, "ONLINE", &["cancel"]).await;
    let no_show = token(&app, "P7", slot, "ONLINE", &["no-show"]).await;
    let other_doctor = app.new_slot(20).await;
    let in_consultation = token(
        &app,
        "Q1",
        &other_doctor.id,
        "ONLINE",
        &["check-in", "call", "start"],
    )
    .await;
    let small = app.new_slot(1).await;
    let bumped = token(&app, "R1", &small.id, "ONLINE", &[]).await;
    let bumper = token(&app, "R2", &small.id, "PAID", &[]).await;
    let waiting = token(&app, "R3", &small.id, "WALK_IN", &[]).await;

    // (token, FHIR status, token status, reason of its last change)
    let mut expected = vec![
        (&allocated, "booked", "ALLOCATED", "ALLOCATED"),
        (&bumped, "waitlist", "WAITLISTED", "BUMPED"),
        (&waiting, "waitlist", "WAITLISTED", "WAITLISTED"),
        (&checked_in, "arrived", "CHECKED_IN", "CHECKED_IN"),
        (&called, "arrived", "CALLED", "CALLED"),
        (&in_consultation, "fulfilled", "IN_CONSULTATION", "STARTED"),
        (&skipped, "booked", "SKIPPED", "SKIPPED"),
        (&completed, "fulfilled", "COMPLETED", "COMPLETED"),
        (&cancelled, "cancelled", "CANCELLED", "CANCELLED"),
        (&no_show, "noshow", "NO_SHOW", "NO_SHOW"),
        (&bumper, "booked", "ALLOCATED", "BUMPED_LOWER"),
    ];
    // Closing the small slot: the allocated bumper did not come (NO_SHOW),
    // the waitlisted ones expire.
    let closing = app
        .send(app.request(Method::POST, &format!("/slots/{}/close", small.id)))
        .await;
    assert_eq!(closing.status, 200, "{}", closing.text);
    expected.truncate(expected.len() - 1);
    expected[1] = (&bumped, "cancelled", "EXPIRED", "SLOT_CLOSED");
    expected[2] = (&waiting, "cancelled", "EXPIRED", "SLOT_CLOSED");
    expected.push((&bumper, "noshow", "NO_SHOW", "NO_SHOW"));

    for (token, status, token_status, reason) in expected {
        let appointment = appointment(&app, token).await;
        assert_eq!(appointment["status"], status, "{token_status}");
        assert_eq!(extension(&appointment, "token-status"), token_status);
        assert_eq!(extension(&appointment, "token-status-reason"), reason);
        if status == "cancelled" {
            assert_eq!(
                appointment["cancelationReason"],
                json!({
                    "coding": [{"system": format!("{NS}/CodeSystem/token-reason"), "code": reason}],
                    "text": reason,
                }),
                "{token_status}"
            );
        } else {
            assert_eq!(
                appointment["cancelationReason"],
                Value::Null,
                "{token_status}"
            );
        }
    }

    // What only some statuses have: a place in the call queue and its
    // estimate, a waitlist position, a check-in time.
    let in_queue = appointment(&app, &checked_in).await;
    assert_eq!(extension(&in_queue, "queue-position"), 1);
    assert!(extension(&in_queue, "estimated-call-at").is_string());
    assert_eq!(extension(&in_queue, "checked-in-at"), AT_0900);
    let booked = appointment(&app, &allocated).await;
    for name in [
        "queue-position",
        "estimated-call-at",
        "checked-in-at",
        "waitlist-position",
    ] {
        assert_eq!(extension(&booked, name), Value::Null, "{name}");
    }
    let waitlisted = app.new_slot(0).await;
    let on_the_list = token(&app, "W1", &waitlisted.id, "ONLINE", &[]).await;
    let on_the_list = appointment(&app, &on_the_list).await;
    assert_eq!(on_the_list["status"], "waitlist");
    assert_eq!(extension(&on_the_list, "waitlist-position"), 1);
}

async fn an_appointment_carries_the_token_its_patient_doctor_slot_and_source(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(3).await;
    id_of(&app.book("P-first", &slot.id, "ONLINE").await);
    let booking = app.book("P-42", &slot.id, "FOLLOW_UP").await;
    let id = id_of(&booking);
    let token = &booking["token"];

    let appointment = appointment(&app, &id).await;

    assert_eq!(appointment["resourceType"], "Appointment");
    assert_eq!(appointment["id"], id.as_str());
    assert_eq!(
        appointment["identifier"],
        json!([
            {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{id}")},
            {
                "system": format!("{NS}/sid/token-number"),
                "value": "2",
                "period": {"start": TODAY, "end": TODAY},
            },
        ])
    );
    assert_eq!(appointment["priority"], 3);
    assert_eq!(
        appointment["appointmentType"]["coding"],
        json!([
            {"system": format!("{NS}/CodeSystem/source"), "code": "FOLLOW_UP"},
            {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0276",
                "code": "FOLLOWUP",
                "display": "A follow up visit from a previous appointment",
            },
        ])
    );
    assert_eq!(appointment["start"], format!("{TODAY}T09:00:00+00:00"));
    assert_eq!(appointment["end"], format!("{TODAY}T10:00:00+00:00"));
    assert_eq!(
        appointment["slot"],
        json!([{"reference": format!("Slot/{}", slot.id)}])
    );
    assert_eq!(appointment["created"], token["createdAt"]);
    assert_eq!(appointment["meta"]["lastUpdated"], token["updatedAt"]);
    assert_eq!(
        appointment["participant"],
        json!([
            {
                "actor": {
                    "type": "Patient",
                    "identifier": {"system": format!("{NS}/sid/patient-id"), "value": "P-42"},
                },
                "required": "required",
                "status": "accepted",
            },
            {
                "actor": {
                    "reference": format!("Practitioner/{}", slot.doctor),
                    "type": "Practitioner",
                    "identifier": {"system": format!("{NS}/sid/doctor-id"), "value": slot.doctor},
                },
                "required": "required",
                "status": "accepted",
            },
        ])
    );

    // Each source keeps its own code; v2's table names the nearest kind.
    for (source, v2) in [
        ("EMERGENCY", "EMERGENCY"),
        ("PAID", "ROUTINE"),
        ("ONLINE", "ROUTINE"),
        ("WALK_IN", "WALKIN"),
    ] {
        let id = id_of(&app.book(&format!("P-{source}"), &slot.id, source).await);
        let appointment = self::appointment(&app, &id).await;
        assert_eq!(appointment["appointmentType"]["coding"][0]["code"], source);
        assert_eq!(appointment["appointmentType"]["coding"][1]["code"], v2);
    }
}

async fn a_slot_is_free_busy_overbooked_or_closed_as_its_seats_are(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let path = format!("/fhir/Slot/{}", slot.id);
    let first = read(&app, &path).await;
    assert_eq!(first["resourceType"], "Slot");
    assert_eq!(first["id"], slot.id.as_str());
    assert_eq!(
        first["identifier"],
        json!([{"system": format!("{NS}/sid/slot-id"), "value": slot.id}])
    );
    assert_eq!(
        first["schedule"],
        json!({"reference": format!("Schedule/{}", slot.doctor)})
    );
    assert_eq!(first["status"], "free");
    assert_eq!(first["overbooked"], false);
    assert_eq!(extension(&first, "slot-capacity"), 1);
    assert_eq!(extension(&first, "slot-allocated"), 0);

    app.book("P1", &slot.id, "ONLINE").await;
    app.book("P2", &slot.id, "WALK_IN").await;
    let full = read(&app, &path).await;
    assert_eq!(full["status"], "busy");
    assert_eq!(full["overbooked"], false);
    assert_eq!(extension(&full, "slot-waitlisted"), 1);

    app.book("P3", &slot.id, "EMERGENCY").await;
    let overbooked = read(&app, &path).await;
    assert_eq!(overbooked["status"], "busy");
    assert_eq!(overbooked["overbooked"], true);
    assert_eq!(extension(&overbooked, "slot-allocated"), 2);

    let roomy = app.new_slot(5).await;
    let closing = app
        .send(app.request(Method::POST, &format!("/slots/{}/close", roomy.id)))
        .await;
    assert_eq!(closing.status, 200);
    let closed = read(&app, &format!("/fhir/Slot/{}", roomy.id)).await;
    assert_eq!(closed["status"], "busy-unavailable");
    assert_eq!(
        extension(&closed, "slot-closes-at"),
        closing.body["slot"]["closesAt"]
    );
}

async fn slot_times_are_instants_in_the_clinics_zone(backend: Backend) {
    let app = TestApp::with(backend)
        .timezone("Asia/Kolkata")
        .spawn()
        .await;
    let slot = read(&app, "/fhir/Slot/D1-09").await;
    let date = app.slot("D1-09").await["date"].as_str().unwrap().to_owned();
    assert_eq!(slot["start"], format!("{date}T09:00:00+05:30"));
    assert_eq!(slot["end"], format!("{date}T10:00:00+05:30"));
    // A day, and a time without an offset, are the clinic's.
    let on_the_day = read(&app, &format!("/fhir/Slot?schedule=D1&start={date}")).await;
    assert_eq!(on_the_day["total"], 4);
    let from_ten = read(
        &app,
        &format!("/fhir/Slot?schedule=D1&start=ge{date}T10:00"),
    )
    .await;
    assert_eq!(ids(&entries(&from_ten)), ["D1-10", "D1-11", "D1-12"]);
    let utc = read(
        &app,
        &format!("/fhir/Slot?schedule=D1&start=lt{date}T04:30:00Z"),
    )
    .await;
    assert_eq!(ids(&entries(&utc)), ["D1-09"]);
}

async fn schedules_are_the_doctors_with_slots(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let schedule = read(&app, "/fhir/Schedule/D1").await;
    let identifier = json!({"system": format!("{NS}/sid/doctor-id"), "value": "D1"});
    assert_eq!(
        schedule,
        json!({
            "resourceType": "Schedule",
            "id": "D1",
            "identifier": [identifier],
            "active": true,
            "actor": [{"reference": "Practitioner/D1", "type": "Practitioner", "identifier": identifier}],
        })
    );
    let reply = fhir(&app, "/fhir/Schedule/D9").await;
    assert_outcome(&reply, 404, "not-found", "DOCTOR_NOT_FOUND");

    let all = read(&app, "/fhir/Schedule").await;
    assert_eq!(ids(&entries(&all)), ["D1", "D2", "D3"]);
    assert_eq!(all["total"], 3);
    let one = read(&app, "/fhir/Schedule?actor=Practitioner/D2").await;
    assert_eq!(ids(&entries(&one)), ["D2"]);
    let either = read(&app, "/fhir/Schedule?actor=D3,Practitioner/D9,D1").await;
    assert_eq!(ids(&entries(&either)), ["D1", "D3"]);

    // A doctor id with '.' and '_' has a FHIR id with them escaped.
    app.create_slot(&json!({
        "slotId": "dr_rao.09", "doctorId": "Dr.Rao_2", "startTime": "09:00", "endTime": "10:00", "capacity": 1
    }))
    .await;
    let escaped = read(&app, "/fhir/Schedule/Dr..Rao.-2").await;
    assert_eq!(escaped["identifier"][0]["value"], "Dr.Rao_2");
    let slot = read(&app, "/fhir/Slot/dr.-rao..09").await;
    assert_eq!(slot["schedule"]["reference"], "Schedule/Dr..Rao.-2");
    let found = read(&app, "/fhir/Slot?schedule=Schedule/Dr..Rao.-2").await;
    assert_eq!(ids(&entries(&found)), ["dr.-rao..09"]);
}

async fn slot_searches_filter_by_schedule_start_and_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let all = read(&app, "/fhir/Slot?schedule=Schedule/D1").await;
    assert_eq!(ids(&entries(&all)), ["D1-09", "D1-10", "D1-11", "D1-12"]);
    assert_eq!(all["total"], 4);
    let window = read(
        &app,
        &format!("/fhir/Slot?schedule=D1&start=ge{TODAY}T10:00:00Z&start=lt{TODAY}T12:00:00Z"),
    )
    .await;
    assert_eq!(ids(&entries(&window)), ["D1-10", "D1-11"]);
    let other_day = read(&app, "/fhir/Slot?start=2030-01-16").await;
    assert_eq!(other_day["total"], 0);
    assert_eq!(other_day["entry"], Value::Null);

    for patient in ["P1", "P2", "P3"] {
        app.book(patient, "D1-09", "ONLINE").await;
    }
    let busy = read(&app, "/fhir/Slot?status=busy").await;
    assert_eq!(ids(&entries(&busy)), ["D1-09"]);
    let free = read(&app, "/fhir/Slot?schedule=Schedule/D1&status=free").await;
    assert_eq!(ids(&entries(&free)), ["D1-10", "D1-11", "D1-12"]);
    let every_doctor = read(&app, &format!("/fhir/Slot?start={TODAY}&_count=0")).await;
    assert_eq!(every_doctor["total"], 12);
    assert_eq!(every_doctor["entry"], Value::Null);
}

async fn appointment_searches_filter_by_date_practitioner_status_patient_and_slot(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(2).await;
    let practitioner = format!("Practitioner/{}", slot.doctor);
    let arrived = token(&app, "P1", &slot.id, "ONLINE", &["check-in"]).await;
    let booked = token(&app, "P2", &slot.id, "ONLINE", &[]).await;
    let waiting = token(&app, "P3", &slot.id, "WALK_IN", &[]).await;
    let gone = token(&app, "P4", &slot.id, "WALK_IN", &["cancel"]).await;
    let elsewhere = app.new_slot(2).await;
    let other = token(&app, "P1", &elsewhere.id, "ONLINE", &[]).await;

    let search = |query: String| {
        let app = &app;
        async move {
            ids(&entries(
                &read(app, &format!("/fhir/Appointment?{query}")).await,
            ))
        }
    };
    assert_eq!(
        search(format!("practitioner={practitioner}")).await,
        [
            arrived.as_str(),
            booked.as_str(),
            waiting.as_str(),
            gone.as_str()
        ]
    );
    assert_eq!(
        search(format!(
            "practitioner={practitioner}&status=booked,waitlist"
        ))
        .await,
        [booked.as_str(), waiting.as_str()]
    );
    // Two slots at the same time come in slot id order.
    let mut both = vec![arrived.as_str(), other.as_str()];
    if elsewhere.id < slot.id {
        both.reverse();
    }
    assert_eq!(
        search(format!("patient:identifier=P1&date={TODAY}")).await,
        both
    );
    assert_eq!(
        search(format!(
            "patient:identifier={NS}/sid/patient-id|P1&practitioner={practitioner}"
        ))
        .await,
        [arrived.as_str()]
    );
    assert!(search("patient:identifier=other-system|P1".into())
        .await
        .is_empty());
    assert_eq!(
        search(format!("slot=Slot/{}", elsewhere.id)).await,
        [other.as_str()]
    );
    assert_eq!(
        search(format!(
            "practitioner={practitioner}&date=ge{TODAY}T09:00:00Z&date=lt{TODAY}T09:00:01Z"
        ))
        .await,
        [
            arrived.as_str(),
            booked.as_str(),
            waiting.as_str(),
            gone.as_str()
        ]
    );
    assert!(
        search(format!("practitioner={practitioner}&date=2030-01-16"))
            .await
            .is_empty()
    );
    // A token that ended without a seat is still an appointment.
    assert_eq!(
        search(format!("practitioner={practitioner}&status=cancelled")).await,
        [gone.as_str()]
    );
    assert_eq!(appointment(&app, &gone).await["status"], "cancelled");
}

async fn searches_page_with_count_and_next_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(10).await;
    let mut tokens = Vec::new();
    for n in 0..7 {
        tokens.push(token(&app, &format!("P{n}"), &slot.id, "ONLINE", &[]).await);
    }
    let first = read(
        &app,
        &format!(
            "/fhir/Appointment?status=booked&slot=Slot/{}&_count=3",
            slot.id
        ),
    )
    .await;
    assert_eq!(first["total"], 7);
    assert_eq!(ids(&entries(&first)), tokens[..3]);
    assert_eq!(
        link(&first, "self").unwrap(),
        format!(
            "{}/fhir/Appointment?status=booked&slot=Slot/{}&_count=3",
            app.address, slot.id
        )
    );
    // Paging is by position, not by offset: a token that stops matching
    // between two pages (cancelled, it is no longer booked) leaves the
    // next page where it was.
    app.cancel(&tokens[1]).await;
    let second = read(&app, &local(&app, &link(&first, "next").unwrap())).await;
    assert_eq!(second["total"], 6);
    assert_eq!(ids(&entries(&second)), tokens[3..6]);
    let third = read(&app, &local(&app, &link(&second, "next").unwrap())).await;
    assert_eq!(ids(&entries(&third)), tokens[6..]);
    assert_eq!(link(&third, "next"), None);

    let mut seen = Vec::new();
    let mut next = Some("/fhir/Slot?_count=5".to_owned());
    let mut total = None;
    while let Some(path) = next {
        let page = read(&app, &path).await;
        total = page["total"].as_u64();
        seen.extend(ids(&entries(&page)));
        next = link(&page, "next").map(|url| local(&app, &url));
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen, "no slot comes twice");
    assert_eq!(Some(seen.len() as u64), total);
    assert_eq!(seen.len(), 13);
}

async fn unknown_or_invalid_search_parameters_are_refused_as_operation_outcomes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A malformed cursor is refused even where the search finds nothing.
    let bad_cursor = app
        .get("/fhir/Schedule?actor=Practitioner/NOBODY&_cursor=%C2%9F")
        .await;
    assert_eq!(bad_cursor.status, 400, "{}", bad_cursor.text);
    let unknown = fhir(&app, "/fhir/Appointment?patient=Patient/P1").await;
    assert_outcome(&unknown, 400, "not-supported", "UNKNOWN_SEARCH_PARAMETER");
    let lenient = app
        .send(
            app.request(Method::GET, "/fhir/Slot?colour=blue&schedule=D2")
                .header("prefer", "handling=lenient"),
        )
        .await;
    let lenient = resource(lenient);
    assert_eq!(lenient["total"], 4);
    assert_eq!(
        link(&lenient, "self").unwrap(),
        format!("{}/fhir/Slot?schedule=D2&_count=50", app.address)
    );
    for query in [
        "Slot?start=2030-02-30",
        "Slot?start=sa2030-01-15",
        "Slot?status=open",
        "Slot?schedule=Patient/P1",
        "Slot?_count=101",
        "Slot?_count=-1",
        "Slot?_count=1&_count=2",
        "Slot?_cursor=no-such-slot",
        "Slot?status=",
        "Appointment?status=done",
        "Appointment?_cursor=D1-09",
        "Schedule?_total=some",
    ] {
        let reply = fhir(&app, &format!("/fhir/{query}")).await;
        assert_outcome(&reply, 400, "invalid", "INVALID_SEARCH");
    }
    let many = vec!["D1"; 21].join(",");
    let reply = fhir(&app, &format!("/fhir/Schedule?actor={many}")).await;
    assert_outcome(&reply, 400, "invalid", "INVALID_SEARCH");
    let xml = fhir(&app, "/fhir/Slot?_format=xml").await;
    assert_outcome(&xml, 406, "not-supported", "NOT_ACCEPTABLE");
    let json_format = fhir(&app, "/fhir/Slot?_format=json&_total=accurate").await;
    assert_eq!(json_format.status, 200);
}

async fn errors_under_fhir_are_operation_outcomes_with_their_status_and_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unknown_type = fhir(&app, "/fhir/Patient/P1").await;
    assert_outcome(&unknown_type, 404, "not-found", "NOT_FOUND");
    let wrong_method = app
        .send(app.request(Method::POST, "/fhir/Appointment"))
        .await;
    assert_outcome(&wrong_method, 405, "not-supported", "METHOD_NOT_ALLOWED");
    assert_eq!(wrong_method.header("allow"), Some("GET,HEAD"));
    for (path, code) in [
        ("/fhir/Slot/no-such-slot", "SLOT_NOT_FOUND"),
        ("/fhir/Slot/a_b", "SLOT_NOT_FOUND"),
        ("/fhir/Schedule/D.x", "DOCTOR_NOT_FOUND"),
        ("/fhir/Appointment/not-a-uuid", "TOKEN_NOT_FOUND"),
        (
            "/fhir/Appointment/00000000-0000-4000-8000-000000000000",
            "TOKEN_NOT_FOUND",
        ),
    ] {
        assert_outcome(&fhir(&app, path).await, 404, "not-found", code);
    }
    // The rest of the API keeps problem+json.
    let outside = app.get("/slots/no-such-slot").await;
    assert_eq!(
        outside.header("content-type"),
        Some("application/problem+json")
    );
}

async fn a_doctor_key_sees_only_its_own_doctors_resources(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| {
            config.api_keys = Some(
                "root admin admin-key-0123456789abcdef; dr-two doctor:D2 doctor-d2-key-0123456789; watcher viewer viewer-key-0123456789abcdef"
                    .parse()
                    .unwrap(),
            );
        })
        .spawn()
        .await;
    let as_key = |key: &'static str, path: String| {
        let app = &app;
        async move {
            app.send(
                app.request(Method::GET, &path)
                    .header("authorization", format!("Bearer {key}")),
            )
            .await
        }
    };
    const ADMIN: &str = "admin-key-0123456789abcdef";
    const DOCTOR_D2: &str = "doctor-d2-key-0123456789";
    const VIEWER: &str = "viewer-key-0123456789abcdef";
    let booking = app
        .send(
            app.request(Method::POST, "/tokens")
                .header("authorization", format!("Bearer {ADMIN}"))
                .json(&json!({"patientId": "P1", "slotId": "D1-09", "source": "ONLINE"})),
        )
        .await;
    let d1_token = id_of(&booking.body);

    let without_key = fhir(&app, "/fhir/Slot").await;
    assert_outcome(&without_key, 401, "login", "UNAUTHORIZED");
    assert_eq!(without_key.header("www-authenticate"), Some("Bearer"));
    let metadata = fhir(&app, "/fhir/metadata").await;
    assert_eq!(metadata.status, 200, "the capability statement is public");

    for path in [
        "/fhir/Slot/D1-09".to_owned(),
        "/fhir/Schedule/D1".to_owned(),
        format!("/fhir/Appointment/{d1_token}"),
        "/fhir/Slot?schedule=Schedule/D1".to_owned(),
        "/fhir/Slot?schedule=D2,D1".to_owned(),
        "/fhir/Schedule?actor=Practitioner/D1".to_owned(),
        "/fhir/Appointment?practitioner=Practitioner/D1".to_owned(),
        "/fhir/Appointment?slot=Slot/D1-09".to_owned(),
    ] {
        let reply = as_key(DOCTOR_D2, path.clone()).await;
        assert_outcome(&reply, 403, "forbidden", "FORBIDDEN");
    }
    let own = resource(as_key(DOCTOR_D2, "/fhir/Slot".into()).await);
    assert_eq!(ids(&entries(&own)), ["D2-09", "D2-10", "D2-11", "D2-12"]);
    assert_eq!(
        link(&own, "self").unwrap(),
        format!("{}/fhir/Slot?schedule=Schedule/D2&_count=50", app.address)
    );
    let schedules = resource(as_key(DOCTOR_D2, "/fhir/Schedule".into()).await);
    assert_eq!(ids(&entries(&schedules)), ["D2"]);
    let appointments = resource(as_key(DOCTOR_D2, "/fhir/Appointment".into()).await);
    assert_eq!(appointments["total"], 0);
    assert_eq!(
        resource(as_key(DOCTOR_D2, "/fhir/Slot/D2-09".into()).await)["id"],
        "D2-09"
    );

    let everything = resource(as_key(VIEWER, "/fhir/Appointment".into()).await);
    assert_eq!(ids(&entries(&everything)), [d1_token.as_str()]);
    let read_by_viewer = as_key(VIEWER, format!("/fhir/Appointment/{d1_token}")).await;
    assert_eq!(read_by_viewer.status, 200);
}

async fn the_capability_statement_lists_what_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let statement = read(&app, "/fhir/metadata").await;
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    assert_eq!(statement["kind"], "instance");
    assert_eq!(
        statement["implementation"]["url"],
        format!("{}/fhir", app.address)
    );
    let served: Vec<(String, Vec<String>, Vec<String>)> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| {
            let names = |field: &str, key: &str| -> Vec<String> {
                resource[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item[key].as_str().unwrap().to_owned())
                    .collect()
            };
            (
                resource["type"].as_str().unwrap().to_owned(),
                names("interaction", "code"),
                names("searchParam", "name"),
            )
        })
        .collect();
    let strings = |items: &[&str]| {
        items
            .iter()
            .map(|item| item.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        served,
        vec![
            (
                "Schedule".into(),
                strings(&["read", "search-type"]),
                strings(&["actor"])
            ),
            (
                "Slot".into(),
                strings(&["read", "search-type"]),
                strings(&["schedule", "start", "status"])
            ),
            (
                "Appointment".into(),
                strings(&["read", "search-type"]),
                strings(&["date", "practitioner", "status", "patient", "slot"])
            ),
        ]
    );
    // Every listed search parameter is one the server takes.
    for (kind, _, parameters) in &served {
        for parameter in parameters {
            let name = if parameter == "patient" {
                "patient:identifier"
            } else {
                parameter
            };
            let value = match name {
                "start" | "date" => TODAY,
                "status" if kind == "Slot" => "free",
                "status" => "booked",
                _ => "x",
            };
            let reply = fhir(&app, &format!("/fhir/{kind}?{name}={value}")).await;
            assert_eq!(reply.status, 200, "{kind}?{name}: {}", reply.text);
        }
    }
}

async fn a_configured_base_url_names_resources_and_pages(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.fhir_base_url = Some("https://opd.example.org/fhir".into()))
        .spawn()
        .await;
    let page = read(&app, "/fhir/Slot?_count=1").await;
    assert_eq!(
        link(&page, "self").unwrap(),
        "https://opd.example.org/fhir/Slot?_count=1"
    );
    assert_eq!(
        link(&page, "next").unwrap(),
        "https://opd.example.org/fhir/Slot?_count=1&_cursor=D1-09"
    );
    assert_eq!(
        page["entry"][0]["fullUrl"],
        "https://opd.example.org/fhir/Slot/D1-09"
    );
    assert_eq!(
        read(&app, "/fhir/metadata").await["implementation"]["url"],
        "https://opd.example.org/fhir"
    );
}
