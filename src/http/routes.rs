//! Route registration: every documented route is registered here together
//! with its OpenAPI operation and its [`Access`], so that a reader sees a
//! route and who may call it in one place, and the access table the gate
//! applies is collected from the same registrations as the router and the
//! document.

use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::auth::{Access, AccessRules};
use super::AppState;

/// Routes with their OpenAPI operations and access rules.
pub struct Routes {
    router: OpenApiRouter<AppState>,
    rules: AccessRules,
}

impl Routes {
    /// No routes yet, in a document of their own, to be merged into the
    /// API's.
    pub fn new() -> Routes {
        Routes {
            router: OpenApiRouter::new(),
            rules: AccessRules::default(),
        }
    }

    /// No routes yet, in `document`.
    pub fn with_openapi(document: OpenApi) -> Routes {
        Routes {
            router: OpenApiRouter::with_openapi(document),
            rules: AccessRules::default(),
        }
    }

    /// Registers a handler's route, as `utoipa_axum::routes!(handler)`
    /// gives it, for callers with `access`: every method its operation
    /// documents gets this access.
    pub fn route(mut self, route: UtoipaMethodRouter<AppState>, access: Access) -> Routes {
        for (template, item) in &route.1.paths {
            for method in methods(item) {
                self.rules.add(method, template, access);
            }
        }
        self.router = self.router.routes(route);
        self
    }

    /// Registers a route that is not an operation of the API (a web page
    /// or one of its files), so the document does not list it: anyone may
    /// `GET` (and `HEAD`) it, with or without a key. Such a route must
    /// serve nothing but files built into the binary.
    pub fn page(mut self, template: &str, handler: MethodRouter<AppState>) -> Routes {
        self.rules.add(Method::GET, template, Access::Public);
        self.router = self.router.route(template, handler);
        self
    }

    /// Adds `other`'s routes to these.
    pub fn merge(mut self, other: Routes) -> Routes {
        for (method, template, access) in other.rules.rules() {
            self.rules.add(method.clone(), template, *access);
        }
        self.router = self.router.merge(other.router);
        self
    }

    /// The router, the document that lists its operations, and the access
    /// rules of its routes.
    pub fn split(self) -> (Router<AppState>, OpenApi, AccessRules) {
        let (router, document) = self.router.split_for_parts();
        (router, document, self.rules)
    }
}

impl Default for Routes {
    fn default() -> Routes {
        Routes::new()
    }
}

/// The methods of the operations a path item documents.
pub fn methods(item: &PathItem) -> Vec<Method> {
    [
        (Method::GET, &item.get),
        (Method::POST, &item.post),
        (Method::PUT, &item.put),
        (Method::PATCH, &item.patch),
        (Method::DELETE, &item.delete),
        (Method::HEAD, &item.head),
        (Method::OPTIONS, &item.options),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter(|(_, operation)| operation.is_some())
    .map(|(method, _)| method)
    .collect()
}
