//! The limits that bound what one read returns: emergencies beyond a
//! slot's capacity (`--overbook-max`), which bound `GET /slots/{slotId}`
//! with the waitlist limit, and the pages of `GET /slots`
//! (`--slots-page-max`).

use serde_json::Value;

use crate::helpers::{
    allocated_patients, assert_problem, assert_validation, id_of, slot_body, waitlist_patients,
    Backend, Reply, TestApp, TODAY,
};

backend_tests!(
    emergencies_past_the_overbooking_limit_are_refused_and_change_nothing,
    slots_are_listed_in_pages_linked_by_a_cursor,
    invalid_slot_paging_is_refused,
);

async fn emergencies_past_the_overbooking_limit_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.overbook_max = 2)
        .spawn()
        .await;
    let slot = app.new_slot(1).await;
    let walk_in = app.book("W1", &slot.id, "WALK_IN").await;
    app.book("E1", &slot.id, "EMERGENCY").await;
    let second = app.book("E2", &slot.id, "EMERGENCY").await;
    assert_eq!(second["slot"]["overbookedBy"], 2);
    let before = app.slot_text(&slot.id).await;

    let refused = app.try_book("E3", &slot.id, "EMERGENCY").await;
    assert_problem(&refused, 409, "OVERBOOK_FULL");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&slot.id)
            && detail.contains("maximum of 2 emergencies beyond its capacity"),
        "the detail names the slot and the limit: {detail}"
    );
    assert_eq!(
        app.slot_text(&slot.id).await,
        before,
        "a refusal changes nothing"
    );

    // A duplicate is reported as such, ahead of the limit.
    let duplicate = app.try_book("E1", &slot.id, "EMERGENCY").await;
    assert_problem(&duplicate, 409, "DUPLICATE_BOOKING");

    // Others still wait, and the refusals consumed no token number.
    let waiting = app.book("W2", &slot.id, "WALK_IN").await;
    assert_eq!(waiting["decision"], "WAITLISTED");
    assert_eq!(waiting["token"]["tokenNumber"], 4);

    // A freed seat absorbs overbooking, which makes room for one more.
    app.cancel(&id_of(&walk_in)).await;
    let admitted = app.book("E3", &slot.id, "EMERGENCY").await;
    assert_eq!(admitted["decision"], "OVERBOOKED");
    assert_eq!(admitted["slot"], slot.summary(1, 3, 1));
    assert_problem(
        &app.try_book("E4", &slot.id, "EMERGENCY").await,
        409,
        "OVERBOOK_FULL",
    );
    let detail = app.slot(&slot.id).await;
    assert_eq!(allocated_patients(&detail), ["E1", "E2", "E3"]);
    assert_eq!(waitlist_patients(&detail), [("W2".into(), 1)]);
}

/// The URL of the next page from a `Link: <url>; rel="next"` header.
fn next_page(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    let url = link
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix(r#">; rel="next""#))
        .unwrap_or_else(|| panic!("a Link to the next page: {link}"));
    Some(url.to_owned())
}

/// Follows `Link` headers from `first`; each page's slot ids.
async fn pages(app: &TestApp, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = Some(first.to_owned());
    while let Some(next) = url {
        let reply = app.get(&next).await.expect_status(200);
        pages.push(slot_ids(&reply.body));
        url = next_page(&reply);
        assert!(pages.len() <= 20, "the pages end");
    }
    pages
}

fn slot_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a page is a list of slots")
        .iter()
        .map(|slot| slot["slotId"].as_str().unwrap().to_owned())
        .collect()
}

async fn slots_are_listed_in_pages_linked_by_a_cursor(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.slots_page_max = 5)
        .spawn()
        .await;
    app.create_slot(&slot_body(
        "Y",
        "LB",
        Some("2030-01-14"),
        ("23:00", "23:59"),
        2,
    ))
    .await;
    app.create_slot(&slot_body(
        "Z",
        "D1",
        Some("2030-01-16"),
        ("08:00", "09:00"),
        2,
    ))
    .await;
    // The demo schedule: D1–D3, hourly 09:00–13:00, today.
    let mut demo = Vec::new();
    for hour in 9..13 {
        for doctor in ["D1", "D2", "D3"] {
            demo.push(format!("{doctor}-{hour:02}"));
        }
    }

    let all = pages(&app, "/slots").await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 4]);
    let mut expected = vec!["Y".to_owned()];
    expected.extend(demo.iter().cloned());
    expected.push("Z".into());
    assert_eq!(all.concat(), expected, "every slot once, in listing order");
    let first = app.get("/slots").await;
    assert_eq!(
        first.header("link"),
        Some(r#"</slots?limit=5&after=D1-10>; rel="next""#)
    );

    // Filters and a smaller page size are kept from page to page; a page
    // that ends exactly at the last slot has no link.
    assert_eq!(
        pages(&app, "/slots?doctorId=D1&limit=2").await,
        [vec!["D1-09", "D1-10"], vec!["D1-11", "D1-12"], vec!["Z"]]
    );
    assert_eq!(
        pages(&app, &format!("/slots?date={TODAY}&limit=3")).await,
        demo.chunks(3).map(<[String]>::to_vec).collect::<Vec<_>>()
    );
    let last_page = app
        .get("/slots?doctorId=D3&limit=4")
        .await
        .expect_status(200);
    assert_eq!(
        slot_ids(&last_page.body),
        ["D3-09", "D3-10", "D3-11", "D3-12"]
    );
    assert_eq!(last_page.header("link"), None);
    // A cursor need not match the filters: it is a place in listing order.
    assert_eq!(
        pages(&app, "/slots?doctorId=D3&after=D1-11").await,
        [vec!["D3-11", "D3-12"]]
    );
    assert_eq!(pages(&app, "/slots?after=Z").await, [Vec::<String>::new()]);
}

async fn invalid_slot_paging_is_refused(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.slots_page_max = 5)
        .spawn()
        .await;
    let cases = [
        ("?limit=0", vec!["limit"]),
        ("?limit=6", vec!["limit"]),
        ("?limit=-1", vec!["limit"]),
        ("?limit=two", vec!["limit"]),
        ("?limit=", vec!["limit"]),
        ("?after=", vec!["after"]),
        ("?after=bad%20id", vec!["after"]),
        ("?after=NO-SUCH-SLOT", vec!["after"]),
        (
            "?limit=0&after=bad%2Fid&date=x",
            vec!["limit", "after", "date"],
        ),
    ];
    for (query, fields) in cases {
        let reply = app.get(&format!("/slots{query}")).await;
        assert_validation(&reply, &fields);
    }
    let largest = app.get("/slots?limit=5").await.expect_status(200);
    assert_eq!(slot_ids(&largest.body).len(), 5);
}

#[test]
fn the_limits_have_generous_defaults_and_refuse_nonsense() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        opd::Config::try_parse_from(["opd-token-engine", "--in-memory"].iter().chain(args))
    };
    let defaults = parse(&[]).unwrap();
    assert_eq!(defaults.overbook_max, 200);
    assert_eq!(defaults.slots_page_max, 500);
    // Without room for one emergency past capacity, a full slot would
    // turn every emergency away.
    assert!(parse(&["--overbook-max", "0"]).is_err());
    assert!(parse(&["--slots-page-max", "0"]).is_err());
    assert!(parse(&["--slots-page-max", "10001"]).is_err());
    assert_eq!(parse(&["--overbook-max", "1"]).unwrap().overbook_max, 1);
}
