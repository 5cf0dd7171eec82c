//! The OpenAPI 3.1 document, generated from the route annotations and DTO
//! types, served at `/openapi.json`, with Swagger UI at `/docs` from assets
//! embedded in the binary (no network needed to read the docs). Also the
//! one place where the API's routes come together, each with its access
//! rule (see [`api`]).

use axum::http::Method;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::auth::{Access, AccessRules};
use super::routes::Routes;
use super::{
    backups, doctors, dto, error::FieldError, events, fhir, health, me, metrics, pages, reports,
    slots, tokens, AppState,
};

/// An RFC 9457 problem, as every error is answered.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// A URN naming the code, e.g. `urn:opd:problem:slot-not-found`.
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// Machine-readable, e.g. `SLOT_NOT_FOUND`.
    code: String,
    /// Present on VALIDATION_FAILED.
    errors: Option<Vec<FieldError>>,
    /// Present on DUPLICATE_BOOKING.
    #[schema(rename = "existingTokenId")]
    existing_token_id: Option<uuid::Uuid>,
    /// Present on DOCTOR_BUSY: the token with the doctor.
    #[schema(rename = "currentTokenId")]
    current_token_id: Option<uuid::Uuid>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OPD Token Engine",
        description = "Hands out out-patient department tokens for doctors' time slots: \
            priority bumping, emergency overbooking, waitlists and promotion.",
    ),
    components(schemas(
        Problem,
        FieldError,
        dto::TokenDto,
        dto::TokenDetailDto,
        dto::HistoryDto,
        dto::BookingDto,
        dto::ActionDto,
        dto::ChangeDto,
        dto::SlotSummaryDto,
        dto::SlotDetailDto,
        dto::CapacityChangeDto,
        dto::StatusDto,
        dto::ReasonDto,
        dto::DoctorQueueDto,
        dto::BoardDto,
        dto::BoardDoctorDto,
        dto::NowServingDto,
        fhir::FhirResourceDoc,
        fhir::FhirDateSearchDoc,
        me::MeDto,
        backups::BackupDto,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "tokens", description = "Book and read tokens, and take them through the OPD day"),
        (name = "doctors", description = "The doctor's call queue and the waiting-hall board"),
        (name = "slots", description = "Doctors' time slots and their queues"),
        (name = "fhir", description = "A read-only HL7 FHIR R4 view: Schedule (a doctor), Slot, Appointment (a token); see docs/fhir.md. Errors under /fhir are OperationOutcomes"),
        (name = "reports", description = "Day reports for the clinic: waits, outcomes, load per doctor"),
        (name = "operations", description = "Health, metrics, backups, and who a key is"),
    )
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer <key>` scheme used when API keys
/// are configured.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "apiKey",
            Vec::<String>::new(),
        )]);
    }
}

/// Documents the answers of the access middleware (see `auth`): 401, 403
/// and 429 on operations that need a key, 429 on public ones.
struct AccessResponses;

impl Modify for AccessResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, Type};

        // Under /fhir the same refusals are OperationOutcomes.
        let refusal = |description: &str, under_fhir: bool| {
            let (media_type, schema) = if under_fhir {
                (fhir::FHIR_JSON, "FhirResource")
            } else {
                (super::error::PROBLEM_JSON, "Problem")
            };
            ResponseBuilder::new().description(description).content(
                media_type,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
        };
        let string_header = |description: &str| {
            HeaderBuilder::new()
                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build()
        };
        let integer_header = |description: &str| {
            HeaderBuilder::new()
                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some(description))
                .build()
        };
        let public = Some(vec![
            utoipa::openapi::security::SecurityRequirement::default(),
        ]);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let under_fhir = fhir::is_fhir_path(path);
            let problem = |description: &str| refusal(description, under_fhir);
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if operation.security != public {
                    responses.insert(
                        "401".into(),
                        problem("UNAUTHORIZED: no key, or an unknown one")
                            .header("WWW-Authenticate", string_header("`Bearer`"))
                            .build()
                            .into(),
                    );
                    responses.insert(
                        "403".into(),
                        problem("FORBIDDEN: the key's role may not do this")
                            .build()
                            .into(),
                    );
                }
                // An operation with 429s of its own documents them itself.
                responses.entry("429".into()).or_insert_with(|| {
                    problem("RATE_LIMITED: this key (or address) sent too many requests")
                        .header("Retry-After", integer_header("Seconds to wait"))
                        .build()
                        .into()
                });
            }
        }
    }
}

/// Where the document is served.
const DOCUMENT_PATH: &str = "/openapi.json";

/// Where the Swagger UI is served.
const DOCS_PATH: &str = "/docs";

/// Every API route together with its OpenAPI operation and its access
/// rule, and the document with the Swagger UI. Routes are registered only
/// through [`Routes`], each with the operation that documents it and who
/// may call it, so the document lists exactly what the router serves and
/// the access rules cover exactly that. An `open` server (no API keys)
/// gets a document without the key requirement, so that it describes the
/// server that serves it.
pub fn api(open: bool) -> (Router<AppState>, utoipa::openapi::OpenApi, AccessRules) {
    let (router, mut document, mut rules) = Routes::with_openapi(ApiDoc::openapi())
        .merge(tokens::router())
        .merge(slots::router())
        .merge(doctors::router())
        .merge(events::router())
        .merge(fhir::router())
        .merge(me::router())
        .merge(metrics::router())
        .merge(reports::router())
        .merge(backups::router())
        // The web pages: public routes that the document does not list,
        // since they are not operations of the API.
        .merge(pages::router())
        .route(routes!(health::healthz), Access::HealthCheck)
        .split();
    AccessResponses.modify(&mut document);
    if open {
        document.security = None;
    }
    // The document and the Swagger UI are public. They are not operations
    // of the API, so the document does not list them; these are the
    // routes the Swagger UI registers.
    let docs = SwaggerUi::new(DOCS_PATH).url(DOCUMENT_PATH, document.clone());
    for template in [
        DOCUMENT_PATH.to_owned(),
        DOCS_PATH.to_owned(),
        format!("{DOCS_PATH}/"),
        format!("{DOCS_PATH}/{{*rest}}"),
    ] {
        rules.add(Method::GET, &template, Access::Public);
    }
    (router.merge(docs), document, rules)
}

/// The document of a server with API keys.
pub fn document() -> utoipa::openapi::OpenApi {
    api(false).1
}

/// The access rules of every route a server serves.
pub fn access_rules() -> AccessRules {
    api(false).2
}
