//! Slots: creating, listing, reading and changing capacity.

use serde_json::{json, Value};

use crate::helpers::{
    allocated_patients, assert_problem, assert_validation, change, id_of, slot_body, summary,
    waitlist_patients, Backend, SlotRef, TestApp, TestClock, T0, TODAY,
};

backend_tests!(
    creating_a_slot_returns_its_summary_and_location,
    a_slot_without_a_date_is_for_today_in_the_clinic_time_zone,
    the_demo_schedule_is_loaded_for_today_on_the_real_clock,
    creating_an_existing_slot_id_is_refused_with_slot_exists,
    a_doctor_slots_may_not_overlap_on_one_date,
    invalid_slot_fields_are_refused_naming_each_field,
    slot_boundary_values_are_accepted,
    slots_are_listed_by_date_then_start_time_then_id,
    slot_list_filters_select_by_doctor_and_date,
    invalid_slot_list_filters_are_refused,
    raising_capacity_promotes_the_waitlist_in_order,
    lowering_capacity_demotes_the_lowest_priority_latest_tokens,
    lowering_capacity_never_demotes_emergencies,
    raising_capacity_of_an_overbooked_slot_promotes_only_past_the_overbooking,
    an_invalid_capacity_change_is_refused_and_changes_nothing,
);

async fn creating_a_slot_returns_its_summary_and_location(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let reply = app
        .post_json(
            "/slots",
            &slot_body("EVE-1", "D7", Some("2030-01-20"), ("17:30", "18:15"), 12),
        )
        .await
        .expect_status(201);

    let expected = summary("EVE-1", "D7", "2030-01-20", ("17:30", "18:15"), (12, 0, 0));
    assert_eq!(reply.body, expected);
    assert_eq!(reply.header("location"), Some("/slots/EVE-1"));
    let mut detail = expected.clone();
    detail["allocated"] = json!([]);
    detail["waitlist"] = json!([]);
    assert_eq!(
        app.get("/slots/EVE-1").await.expect_status(200).body,
        detail
    );
    assert_eq!(app.slots("?date=2030-01-20").await, json!([expected]));
}

async fn a_slot_without_a_date_is_for_today_in_the_clinic_time_zone(backend: Backend) {
    // 20:00 UTC on the 15th is 01:30 on the 16th in India.
    let app = TestApp::with(backend)
        .clock(TestClock::at("2030-01-15T20:00:00Z"))
        .timezone("Asia/Kolkata")
        .spawn()
        .await;

    let created = app
        .create_slot(&slot_body("LATE-1", "D9", None, ("09:00", "10:00"), 1))
        .await;
    let explicit_null = app
        .create_slot(&json!({"slotId": "LATE-2", "doctorId": "D9", "date": null, "startTime": "10:00", "endTime": "11:00", "capacity": 1}))
        .await;

    assert_eq!(created["date"], "2030-01-16");
    assert_eq!(explicit_null["date"], "2030-01-16");
    assert_eq!(app.slot("D1-09").await["date"], "2030-01-16");
    let utc = TestApp::spawn(backend).await;
    assert_eq!(
        utc.create_slot(&slot_body("UTC-1", "D9", None, ("09:00", "10:00"), 1))
            .await["date"],
        TODAY
    );
}

async fn the_demo_schedule_is_loaded_for_today_on_the_real_clock(backend: Backend) {
    let today = || {
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .to_string()
    };
    let before = today();

    let app = TestApp::with(backend).real_clock().spawn().await;

    let detail = app.slot("D1-09").await;
    let after = today();
    let date = detail["date"].as_str().unwrap().to_owned();
    assert!(
        date == before || date == after,
        "D1-09 is on {date}, today is {before}"
    );
    let mut expected = summary("D1-09", "D1", &date, ("09:00", "10:00"), (3, 0, 0));
    expected["allocated"] = json!([]);
    expected["waitlist"] = json!([]);
    assert_eq!(detail, expected);
    let ids: Vec<Value> = app
        .slots(&format!("?date={date}"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| slot["slotId"].clone())
        .collect();
    assert!(
        ids.len() >= 12,
        "the demo schedule has slots for three doctors: {ids:?}"
    );
}

async fn creating_an_existing_slot_id_is_refused_with_slot_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.get("/slots").await.text;

    let reply = app
        .post_json(
            "/slots",
            &slot_body("D1-09", "D9", Some("2031-01-01"), ("18:00", "19:00"), 5),
        )
        .await;

    assert_problem(&reply, 409, "SLOT_EXISTS");
    assert_eq!(app.get("/slots").await.text, before);
}

async fn a_doctor_slots_may_not_overlap_on_one_date(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.get("/slots").await.text;

    // The demo gives D1 09:00–13:00 today in hourly slots.
    for (id, times) in [
        ("O-1", ("09:30", "10:30")),
        ("O-2", ("08:00", "13:30")),
        ("O-3", ("12:59", "13:30")),
        ("O-4", ("09:00", "10:00")),
        ("O-5", ("10:15", "10:45")),
    ] {
        let reply = app
            .post_json("/slots", &slot_body(id, "D1", Some(TODAY), times, 1))
            .await;
        assert_problem(&reply, 409, "SLOT_OVERLAP");
    }
    assert_eq!(app.get("/slots").await.text, before);

    // Touching ends, another doctor, or another date are fine.
    app.create_slot(&slot_body("A-1", "D1", Some(TODAY), ("08:00", "09:00"), 1))
        .await;
    app.create_slot(&slot_body("A-2", "D1", None, ("13:00", "14:00"), 1))
        .await;
    app.create_slot(&slot_body("A-3", "D4", Some(TODAY), ("09:00", "10:00"), 1))
        .await;
    app.create_slot(&slot_body(
        "A-4",
        "D1",
        Some("2030-01-16"),
        ("09:30", "10:30"),
        1,
    ))
    .await;
}

async fn invalid_slot_fields_are_refused_naming_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.get("/slots").await.text;
    let valid = slot_body("V-1", "DV", Some(TODAY), ("09:00", "10:00"), 3);
    let mut cases: Vec<(Value, Vec<&str>)> = Vec::new();
    let mut case = |field: &str, value: Option<Value>, fields: &[&'static str]| {
        let mut body = valid.clone();
        match value {
            Some(value) => body[field] = value,
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
        }
        cases.push((body, fields.to_vec()));
    };
    for bad in [
        "9:00", "24:00", "09:60", "0900", "09:00:00", "", "09:0a", " 09:00",
    ] {
        case("startTime", Some(json!(bad)), &["startTime"]);
    }
    case("startTime", Some(json!(900)), &["startTime"]);
    case("startTime", None, &["startTime"]);
    case("endTime", Some(json!("25:00")), &["endTime"]);
    case("endTime", Some(json!("08:59")), &["endTime"]);
    case("endTime", Some(json!("09:00")), &["endTime"]);
    for bad in [
        json!(1.0),
        json!(true),
        json!("3"),
        json!(-1),
        json!(10001),
        json!(2.5),
        json!(null),
        json!([3]),
    ] {
        case("capacity", Some(bad), &["capacity"]);
    }
    case("capacity", None, &["capacity"]);
    for bad in [
        json!("2030-02-30"),
        json!("15-01-2030"),
        json!("2030/01/15"),
        json!(20300115),
        json!("2030-01-15T00:00:00Z"),
        json!(""),
    ] {
        case("date", Some(bad), &["date"]);
    }
    for bad in [
        json!(""),
        json!("a".repeat(65)),
        json!("a b"),
        json!("a/b"),
        json!("é"),
        json!(7),
    ] {
        case("slotId", Some(bad.clone()), &["slotId"]);
        case("doctorId", Some(bad), &["doctorId"]);
    }
    case("slotId", None, &["slotId"]);
    case("doctorId", None, &["doctorId"]);
    let mut both = valid.clone();
    both["slotId"] = json!("");
    both["capacity"] = json!(-1);
    cases.push((both, vec!["slotId", "capacity"]));

    for (body, fields) in &cases {
        let reply = app.post_json("/slots", body).await;
        assert_validation(&reply, fields);
    }
    assert_eq!(app.get("/slots").await.text, before);
}

async fn slot_boundary_values_are_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_id = format!("{}.Z_9-", "a".repeat(59));
    assert_eq!(long_id.len(), 64);

    let empty = app
        .create_slot(&slot_body(
            "B.0_-",
            "Dz",
            Some("2030-12-31"),
            ("00:00", "00:01"),
            0,
        ))
        .await;
    let large = app
        .create_slot(&slot_body(
            &long_id,
            &long_id,
            Some("2030-12-31"),
            ("23:58", "23:59"),
            10_000,
        ))
        .await;

    assert_eq!(
        empty,
        summary("B.0_-", "Dz", "2030-12-31", ("00:00", "00:01"), (0, 0, 0))
    );
    assert_eq!(
        large,
        summary(
            &long_id,
            &long_id,
            "2030-12-31",
            ("23:58", "23:59"),
            (10_000, 0, 0)
        )
    );
    assert_eq!(app.slot(&long_id).await["capacity"], 10_000);
}

const LISTED: [(&str, &str, &str, (&str, &str)); 6] = [
    ("ZZ-1", "LA", "2030-01-17", ("09:00", "10:00")),
    ("B-2", "LB", "2030-01-16", ("14:00", "15:00")),
    ("B-1", "LC", "2030-01-16", ("14:00", "15:00")),
    ("A-9", "LA", "2030-01-16", ("15:00", "16:00")),
    ("C-1", "LA", "2030-01-16", ("08:00", "09:00")),
    ("Y", "LB", "2030-01-14", ("23:00", "23:59")),
];

async fn create_listed_slots(app: &TestApp) {
    for (id, doctor, date, times) in LISTED {
        app.create_slot(&slot_body(id, doctor, Some(date), times, 2))
            .await;
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of slots")
        .iter()
        .map(|slot| slot["slotId"].as_str().unwrap().to_owned())
        .collect()
}

async fn slots_are_listed_by_date_then_start_time_then_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create_listed_slots(&app).await;

    let listed = app.slots("").await;

    let mut expected = vec!["Y".to_owned()];
    for hour in 9..13 {
        for doctor in ["D1", "D2", "D3"] {
            expected.push(format!("{doctor}-{hour:02}"));
        }
    }
    expected.extend(["C-1", "B-1", "B-2", "A-9", "ZZ-1"].map(String::from));
    assert_eq!(ids(&listed), expected);
    // Yesterday's slot closed as it was created.
    let mut yesterday = summary("Y", "LB", "2030-01-14", ("23:00", "23:59"), (2, 0, 0));
    yesterday["closed"] = json!(true);
    yesterday["closesAt"] = json!(T0);
    assert_eq!(listed[0], yesterday);
    assert_eq!(listed[1], SlotRef::d1_09().summary(3, 0, 0));
}

async fn slot_list_filters_select_by_doctor_and_date(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create_listed_slots(&app).await;

    assert_eq!(
        ids(&app.slots("?doctorId=LA").await),
        ["C-1", "A-9", "ZZ-1"]
    );
    assert_eq!(
        ids(&app.slots("?date=2030-01-16").await),
        ["C-1", "B-1", "B-2", "A-9"]
    );
    assert_eq!(
        ids(&app.slots("?doctorId=LA&date=2030-01-16").await),
        ["C-1", "A-9"]
    );
    assert_eq!(
        ids(&app.slots(&format!("?date={TODAY}&doctorId=D2")).await),
        ["D2-09", "D2-10", "D2-11", "D2-12"]
    );
    assert_eq!(app.slots("?doctorId=NOBODY").await, json!([]));
    assert_eq!(app.slots("?date=2031-01-01").await, json!([]));
    assert_eq!(app.slots("?doctorId=LB&date=2030-01-17").await, json!([]));
}

async fn invalid_slot_list_filters_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = "a".repeat(65);
    let cases = [
        ("?date=2030-1-16".to_owned(), vec!["date"]),
        ("?date=tomorrow".to_owned(), vec!["date"]),
        ("?date=2030-02-30".to_owned(), vec!["date"]),
        ("?date=".to_owned(), vec!["date"]),
        ("?doctorId=".to_owned(), vec!["doctorId"]),
        ("?doctorId=bad%20id".to_owned(), vec!["doctorId"]),
        (format!("?doctorId={long}"), vec!["doctorId"]),
        (
            "?doctorId=a%2Fb&date=x".to_owned(),
            vec!["doctorId", "date"],
        ),
    ];

    for (query, fields) in cases {
        let reply = app.get(&format!("/slots{query}")).await;
        assert_validation(&reply, &fields);
    }
}

async fn raising_capacity_promotes_the_waitlist_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let online_1 = app.book("O1", &slot.id, "ONLINE").await;
    let walk_in = app.book("W1", &slot.id, "WALK_IN").await;
    let online_2 = app.book("O2", &slot.id, "ONLINE").await;
    app.book("F", &slot.id, "FOLLOW_UP").await; // bumps O1
    assert_eq!(
        waitlist_patients(&app.slot(&slot.id).await),
        [("O1".into(), 1), ("O2".into(), 2), ("W1".into(), 3)]
    );

    let grown = app.set_capacity(&slot.id, 3).await;

    assert_eq!(
        grown,
        json!({
            "slot": slot.summary(3, 3, 1),
            "changes": [
                change(&online_1, "WAITLISTED", "ALLOCATED", "PROMOTED"),
                change(&online_2, "WAITLISTED", "ALLOCATED", "PROMOTED"),
            ],
        })
    );
    assert_eq!(
        app.set_capacity(&slot.id, 10).await,
        json!({"slot": slot.summary(10, 4, 0), "changes": [change(&walk_in, "WAITLISTED", "ALLOCATED", "PROMOTED")]})
    );
    assert_eq!(
        app.set_capacity(&slot.id, 10).await,
        json!({"slot": slot.summary(10, 4, 0), "changes": []})
    );
    assert_eq!(
        allocated_patients(&app.slot(&slot.id).await),
        ["F", "O1", "O2", "W1"]
    );
}

async fn lowering_capacity_demotes_the_lowest_priority_latest_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(4).await;
    app.book("P", &slot.id, "PAID").await;
    let online_1 = app.book("O1", &slot.id, "ONLINE").await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;
    let online_2 = app.book("O2", &slot.id, "ONLINE").await;

    let cut = app.set_capacity(&slot.id, 1).await;

    assert_eq!(
        cut,
        json!({
            "slot": slot.summary(1, 1, 3),
            "changes": [
                change(&walk_in, "ALLOCATED", "WAITLISTED", "CAPACITY_REDUCED"),
                change(&online_2, "ALLOCATED", "WAITLISTED", "CAPACITY_REDUCED"),
                change(&online_1, "ALLOCATED", "WAITLISTED", "CAPACITY_REDUCED"),
            ],
        })
    );
    let detail = app.slot(&slot.id).await;
    assert_eq!(allocated_patients(&detail), ["P"]);
    assert_eq!(
        waitlist_patients(&detail),
        [("O1".into(), 1), ("O2".into(), 2), ("W".into(), 3)]
    );
    let history = app.token(&id_of(&walk_in)).await["history"].clone();
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["reason"],
        "CAPACITY_REDUCED"
    );
}

async fn lowering_capacity_never_demotes_emergencies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(3).await;
    app.book("E1", &slot.id, "EMERGENCY").await;
    app.book("E2", &slot.id, "EMERGENCY").await;
    let online = app.book("O", &slot.id, "ONLINE").await;

    let cut = app.set_capacity(&slot.id, 1).await;
    let closed = app.set_capacity(&slot.id, 0).await;

    assert_eq!(
        cut,
        json!({"slot": slot.summary(1, 2, 1), "changes": [change(&online, "ALLOCATED", "WAITLISTED", "CAPACITY_REDUCED")]})
    );
    assert_eq!(cut["slot"]["overbookedBy"], 1);
    assert_eq!(
        closed,
        json!({"slot": slot.summary(0, 2, 1), "changes": []})
    );
    assert_eq!(allocated_patients(&app.slot(&slot.id).await), ["E1", "E2"]);
}

async fn raising_capacity_of_an_overbooked_slot_promotes_only_past_the_overbooking(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    app.book("O", &slot.id, "ONLINE").await;
    app.book("E", &slot.id, "EMERGENCY").await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;

    let absorbed = app.set_capacity(&slot.id, 2).await;
    let grown = app.set_capacity(&slot.id, 3).await;

    assert_eq!(
        absorbed,
        json!({"slot": slot.summary(2, 2, 1), "changes": []})
    );
    assert_eq!(
        grown,
        json!({"slot": slot.summary(3, 3, 0), "changes": [change(&walk_in, "WAITLISTED", "ALLOCATED", "PROMOTED")]})
    );
}

async fn an_invalid_capacity_change_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    app.book("O", &slot.id, "ONLINE").await;
    app.book("W", &slot.id, "WALK_IN").await;
    let before = app.slot_text(&slot.id).await;

    for bad in [
        json!(1.0),
        json!(true),
        json!("3"),
        json!(-1),
        json!(10_001),
        json!(null),
        json!(0.5),
    ] {
        let reply = app.try_set_capacity(&slot.id, bad).await;
        assert_validation(&reply, &["capacity"]);
    }
    let missing = app
        .patch_json(&format!("/slots/{}", slot.id), &json!({}))
        .await;
    assert_validation(&missing, &["capacity"]);
    assert_problem(
        &app.try_set_capacity("NO-SUCH-SLOT", json!(2)).await,
        404,
        "SLOT_NOT_FOUND",
    );

    assert_eq!(app.slot_text(&slot.id).await, before);
}
