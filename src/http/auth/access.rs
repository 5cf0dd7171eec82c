//! Who may use a route: the roles a key can have, each route's [`Access`],
//! the table of every served route's access ([`AccessRules`]), and the
//! [`Caller`] a request acts as once admitted.
//!
//! A route's access is declared where the route is registered (see
//! [`Routes`](crate::http::routes::Routes)); the table is collected from
//! those registrations, so it holds exactly the served routes.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, Method};

use crate::engine::{Actor, DoctorId};

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything, including creating slots and changing capacity.
    Admin,
    /// Book, every action on a token, call-next, and every read.
    FrontDesk,
    /// This doctor's consultations (call, start, complete, skip,
    /// call-next), reads of this doctor's slots, tokens and queue, and the
    /// board.
    Doctor(DoctorId),
    /// Every read.
    Viewer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::FrontDesk => f.write_str("front-desk"),
            Role::Doctor(doctor) => write!(f, "doctor:{doctor}"),
            Role::Viewer => f.write_str("viewer"),
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text.split_once(':') {
            None => match text {
                "admin" => Ok(Role::Admin),
                "front-desk" => Ok(Role::FrontDesk),
                "viewer" => Ok(Role::Viewer),
                "doctor" => Err("the doctor role needs a doctor id: doctor:<doctorId>".into()),
                _ => Err(format!("unknown role {text:?}; expected admin, front-desk, doctor:<doctorId> or viewer")),
            },
            Some(("doctor", doctor)) => DoctorId::parse(doctor)
                .map(Role::Doctor)
                .ok_or_else(|| format!("doctor id {doctor:?} is not 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'")),
            Some((role, _)) => Err(format!("only the doctor role takes a doctor id, not {role:?}")),
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a key.
    Public,
    /// Anyone, with or without a key; requests spend a rate budget of
    /// their own per address (see
    /// [`Client::health_check`](crate::http::rate_limit::Client::health_check)),
    /// so that a flood of other requests from the address leaves health
    /// checks answerable.
    HealthCheck,
    /// Every role. A doctor key only for its own doctor's data, found as
    /// the scope says.
    Read(DoctorScope),
    /// Admin and front-desk keys.
    FrontDesk,
    /// The doctor's own work (call, start, complete, skip, call-next):
    /// admin and front-desk keys, and a doctor key for its own doctor,
    /// found as the scope says.
    Clinical(DoctorScope),
    /// Admin keys only.
    Admin,
    /// Admin and viewer keys: the metrics and the day reports, for those
    /// who keep the service up and those who oversee the clinic.
    Monitoring,
}

impl Access {
    /// Whether `role` may use a route with this access, before any doctor
    /// scope is checked.
    pub fn permits(self, role: &Role) -> bool {
        match self {
            Access::Public | Access::HealthCheck => true,
            Access::Read(_) => true,
            Access::FrontDesk => matches!(role, Role::Admin | Role::FrontDesk),
            Access::Clinical(_) => {
                matches!(role, Role::Admin | Role::FrontDesk | Role::Doctor(_))
            }
            Access::Admin => matches!(role, Role::Admin),
            Access::Monitoring => matches!(role, Role::Admin | Role::Viewer),
        }
    }

    /// Whether a request needs no key.
    pub fn is_public(self) -> bool {
        matches!(self, Access::Public | Access::HealthCheck)
    }
}

/// How a doctor key's access to a read or clinical route is narrowed to
/// its doctor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorScope {
    /// A slot list: a doctor gets its own doctor's slots only, and asking
    /// for another doctor's is 403.
    SlotList,
    /// The slot in the path parameter `slotId` must be the doctor's.
    SlotInPath,
    /// The token in the path parameter `tokenId` must be the doctor's.
    TokenInPath,
    /// The doctor in the path parameter `doctorId` must be the doctor.
    DoctorInPath,
    /// Any doctor's: the waiting-hall board, which carries no patient ids.
    AnyDoctor,
    /// An event stream: as a slot list, and a `slotId` filter in the query
    /// must be one of the doctor's slots.
    EventFilters,
    /// A FHIR Schedule: the FHIR id in the path parameter `id` must be the
    /// doctor's.
    FhirSchedule,
    /// A FHIR Slot: the slot whose FHIR id is the path parameter `id` must
    /// be the doctor's.
    FhirSlot,
    /// A FHIR Appointment: the token in the path parameter `id` must be
    /// the doctor's.
    FhirAppointment,
    /// A FHIR search: every reference of the query's `parameter` must name
    /// the doctor (as a `target` resource), and the gate adds one naming
    /// the doctor when there is none, so that the search and its `self`
    /// link hold only the doctor's resources; every `slot` reference must
    /// name one of the doctor's slots.
    FhirSearch {
        parameter: &'static str,
        target: &'static str,
    },
}

/// The access of every served route, one rule per (method, route
/// template) in the order the routes were registered. `HEAD` follows the
/// `GET` rule.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    rules: Vec<(Method, String, Access)>,
}

impl AccessRules {
    /// Adds the rule for `method` on `template`, as the route is
    /// registered.
    pub fn add(&mut self, method: Method, template: &str, access: Access) {
        self.rules.push((method, template.to_owned(), access));
    }

    /// Every rule, in registration order.
    pub fn rules(&self) -> &[(Method, String, Access)] {
        &self.rules
    }

    /// The rule for a method on a route template, if there is one.
    pub fn rule(&self, method: &Method, template: &str) -> Option<Access> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.rules
            .iter()
            .find(|(rule_method, rule_template, _)| {
                rule_method == method && rule_template == template
            })
            .map(|(_, _, access)| *access)
    }
}

/// Who is calling, as resolved by authentication; `anonymous` when the
/// server runs without API keys.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        // One shared name rather than an allocation per request.
        static ANONYMOUS: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("anonymous"));
        Caller {
            name: ANONYMOUS.clone(),
        }
    }

    pub fn actor(&self) -> Actor {
        self.name.clone()
    }

    /// The caller that authentication recorded on a request; anonymous
    /// when it recorded none (open mode, public routes).
    pub fn of(extensions: &Extensions) -> Caller {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Infallible> {
        Ok(Caller::of(&parts.extensions))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_rule_is_unique_and_heads_follow_gets() {
        let rules = crate::http::openapi::access_rules();
        let mut seen = HashSet::new();
        for (method, route, _) in rules.rules() {
            assert!(
                seen.insert((method.clone(), route.clone())),
                "{method} {route} twice"
            );
        }
        assert_eq!(
            rules.rule(&Method::HEAD, "/slots"),
            rules.rule(&Method::GET, "/slots")
        );
        assert_eq!(rules.rule(&Method::DELETE, "/slots"), None);
    }
}
