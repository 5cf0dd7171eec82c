//! The CapabilityStatement served at `/fhir/metadata`: exactly the
//! resources, interactions and search parameters the FHIR routes serve.

use serde_json::{json, Value};

use super::search::{COUNT_DEFAULT, COUNT_MAX};

/// When the capabilities below last changed; a client that caches the
/// statement compares it.
const CAPABILITIES_DATE: &str = "2026-12-01";

/// A search parameter as the statement lists it: name, type, the HL7
/// definition it follows, and what this server does with it.
struct SearchParameter {
    name: &'static str,
    kind: &'static str,
    definition: &'static str,
    documentation: &'static str,
}

/// A served resource type with its search parameters.
struct Served {
    kind: &'static str,
    documentation: &'static str,
    parameters: &'static [SearchParameter],
}

const SERVED: [Served; 3] = [
    Served {
        kind: "Schedule",
        documentation: "One per doctor with at least one slot; the id is the doctor id (see docs/fhir.md for ids with '.' or '_').",
        parameters: &[SearchParameter {
            name: "actor",
            kind: "reference",
            definition: "http://hl7.org/fhir/SearchParameter/Schedule-actor",
            documentation: "Practitioner/<doctor id>; comma-separated alternatives, at most 20.",
        }],
    },
    Served {
        kind: "Slot",
        documentation: "One per slot; free while a seat is free, busy when every seat is taken, busy-unavailable once closed; overbooked when emergencies took seats beyond the capacity.",
        parameters: &[
            SearchParameter {
                name: "schedule",
                kind: "reference",
                definition: "http://hl7.org/fhir/SearchParameter/Slot-schedule",
                documentation: "Schedule/<doctor id>; comma-separated alternatives, at most 20.",
            },
            SearchParameter {
                name: "start",
                kind: "date",
                definition: "http://hl7.org/fhir/SearchParameter/Slot-start",
                documentation: "Prefixes eq, ne, gt, lt, ge, le; a date or time without an offset is in the clinic's time zone.",
            },
            SearchParameter {
                name: "status",
                kind: "token",
                definition: "http://hl7.org/fhir/SearchParameter/Slot-status",
                documentation: "free, busy or busy-unavailable (a closed slot); comma-separated alternatives.",
            },
        ],
    },
    Served {
        kind: "Appointment",
        documentation: "One per token. Searches find tokens that hold a seat or wait for one; cancelled, no-show and expired tokens are read by id (see docs/fhir.md).",
        parameters: &[
            SearchParameter {
                name: "date",
                kind: "date",
                definition: "http://hl7.org/fhir/SearchParameter/Appointment-date",
                documentation: "The slot's start; prefixes eq, ne, gt, lt, ge, le; a date or time without an offset is in the clinic's time zone.",
            },
            SearchParameter {
                name: "practitioner",
                kind: "reference",
                definition: "http://hl7.org/fhir/SearchParameter/Appointment-practitioner",
                documentation: "Practitioner/<doctor id>; comma-separated alternatives, at most 20.",
            },
            SearchParameter {
                name: "status",
                kind: "token",
                definition: "http://hl7.org/fhir/SearchParameter/Appointment-status",
                documentation: "An appointment status (comma-separated alternatives); the mapping from token statuses is in docs/fhir.md.",
            },
            SearchParameter {
                name: "patient",
                kind: "reference",
                definition: "http://hl7.org/fhir/SearchParameter/Appointment-patient",
                documentation: "Only as patient:identifier=[system|]<patient id>; patients are known by identifier, not as resources.",
            },
            SearchParameter {
                name: "slot",
                kind: "reference",
                definition: "http://hl7.org/fhir/SearchParameter/Appointment-slot",
                documentation: "Slot/<slot id>; comma-separated alternatives, at most 20.",
            },
        ],
    },
];

/// The statement, naming the server by its base URL.
pub fn capability_statement(base: &str) -> Value {
    let resources: Vec<Value> = SERVED
        .iter()
        .map(|served| {
            json!({
                "type": served.kind,
                "documentation": served.documentation,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": served.parameters.iter().map(|parameter| json!({
                    "name": parameter.name,
                    "definition": parameter.definition,
                    "type": parameter.kind,
                    "documentation": parameter.documentation,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITIES_DATE,
        "publisher": "OPD Token Engine",
        "kind": "instance",
        "software": {"name": "OPD Token Engine", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "The OPD Token Engine's slots and tokens as FHIR R4 Schedule, Slot and Appointment, read-only",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": format!(
                "Read-only. Searches answer Bundles of type searchset with total and a next link; _count from 0 to {COUNT_MAX} (default {COUNT_DEFAULT}). Unknown parameters are refused unless the request has Prefer: handling=lenient. Errors are OperationOutcomes."
            ),
            "security": {
                "cors": false,
                "description": "API keys as Authorization: Bearer <key> (roles admin, front-desk, doctor:<id>, viewer); a doctor key sees only its own doctor's resources. This statement is public.",
            },
            "resource": resources,
        }],
    })
}
