//! The API documentation: the OpenAPI document lists every route of the
//! contract, and the interactive docs load with no network, every asset
//! served by the binary itself.

use crate::helpers::{Backend, TestApp};

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_contract() {
    let app = TestApp::spawn(Backend::Memory).await;

    let document = app.get("/openapi.json").await;

    assert_eq!(document.status, 200);
    assert!(document.body["openapi"]
        .as_str()
        .unwrap()
        .starts_with("3.1"));
    let paths = &document.body["paths"];
    for (path, method) in [
        ("/tokens", "post"),
        ("/tokens/{tokenId}", "get"),
        ("/tokens/{tokenId}/cancel", "post"),
        ("/tokens/{tokenId}/no-show", "post"),
        ("/slots", "get"),
        ("/slots", "post"),
        ("/slots/{slotId}", "get"),
        ("/slots/{slotId}", "patch"),
        ("/doctors/{doctorId}/absences", "post"),
        ("/healthz", "get"),
        ("/admin/backups", "post"),
        ("/fhir/metadata", "get"),
        ("/fhir/Schedule", "get"),
        ("/fhir/Schedule/{id}", "get"),
        ("/fhir/Slot", "get"),
        ("/fhir/Slot/{id}", "get"),
        ("/fhir/Appointment", "get"),
        ("/fhir/Appointment/{id}", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_interactive_docs_load_every_asset_from_the_server() {
    let app = TestApp::spawn(Backend::Memory).await;

    let page = app.get("/docs/").await;

    assert_eq!(page.status, 200);
    let assets: Vec<&str> = page
        .text
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .collect();
    assert!(
        assets.len() >= 4,
        "the page names its scripts and styles: {assets:?}"
    );
    for asset in assets {
        assert!(
            !asset.contains("://"),
            "{asset} would be fetched from the network"
        );
        let served = app
            .get(&format!("/docs/{}", asset.trim_start_matches("./")))
            .await;
        assert_eq!(served.status, 200, "{asset}");
        assert!(!served.text.is_empty(), "{asset} is empty");
    }
    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert!(initializer.text.contains("\"url\": \"/openapi.json\""));
    app.stop().await;
}
