//! The limits that bound one slot's size, and so the size of its read:
//! emergencies beyond capacity (`--overbook-max`) here; the waitlist has
//! its own limit.

use crate::helpers::{
    allocated_patients, assert_problem, id_of, waitlist_patients, Backend, TestApp,
};

backend_tests!(emergencies_past_the_overbooking_limit_are_refused_and_change_nothing);

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
