//! The one table that gives every route its guard for authorization, so that no handler decides
//! on access itself and a new route is classified where all the others are. The router
//! (`super::routes`) registers its resources through this table: a resource it lacks cannot be
//! registered (configuring the server panics, and a unit test configures it), and a path it
//! lacks is never passed on to a handler (see [`Route::Unrouted`]).

use crate::auth::grants::Operation;
use actix_web::http::Method;

/// How a request is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Served to anyone: the liveness and readiness probes.
    Open,
    /// Needs a token that grants this operation class on the request's tenant.
    Guarded(Operation),
    /// `/metrics`: open, or the admin class, as configured (`--metrics-access`).
    Metrics,
    /// A path no route of the table matches. It fails closed: under `--auth jwt` it needs a valid
    /// token like any API path (401 without one, so that an anonymous caller learns nothing of
    /// the path space), and is then answered 404 (400 for an empty segment) by the middleware
    /// itself, never passed on to the router. Why 404 to every valid token rather than the admin
    /// class: a client that mistypes a path needs "there is no resource here", not a 403 that
    /// sends it to check its grants; and a route someone registers without classifying it is
    /// then unreachable for everyone instead of open to read-only tokens.
    Unrouted,
}

use Operation::{Admin, Read, Subscribe, Write};

const READ: Route = Route::Guarded(Read);
const WRITE: Route = Route::Guarded(Write);
const SUBSCRIBE: Route = Route::Guarded(Subscribe);
const ADMIN: Route = Route::Guarded(Admin);

/// Every route the server registers, as the router writes its path (`{name}` is one non-empty
/// segment): the guard of GET and HEAD, the guard of the other methods (those a resource does not
/// offer are answered 405 once past the guard). Public so that the black-box tests walk every
/// route of it.
pub const ROUTES: &[(&str, Route, Route)] = &[
    ("/health", Route::Open, Route::Open),
    ("/ready", Route::Open, Route::Open),
    ("/metrics", Route::Metrics, Route::Metrics),
    ("/ngsi-ld/v1/entities", READ, WRITE),
    ("/ngsi-ld/v1/entities/{id}/attrs", READ, WRITE),
    ("/ngsi-ld/v1/entities/{id}", READ, WRITE),
    ("/ngsi-ld/v1/entities/{id}/attrs/{attr}", READ, WRITE),
    ("/ngsi-ld/v1/types", READ, READ),
    ("/ngsi-ld/v1/types/{type}", READ, READ),
    ("/ngsi-ld/v1/attributes", READ, READ),
    ("/ngsi-ld/v1/attributes/{attr}", READ, READ),
    ("/ngsi-ld/v1/entityOperations/create", READ, WRITE),
    ("/ngsi-ld/v1/entityOperations/upsert", READ, WRITE),
    ("/ngsi-ld/v1/entityOperations/update", READ, WRITE),
    ("/ngsi-ld/v1/entityOperations/merge", READ, WRITE),
    ("/ngsi-ld/v1/entityOperations/delete", READ, WRITE),
    // Queries with their parameters in a body.
    ("/ngsi-ld/v1/entityOperations/query", READ, READ),
    ("/ngsi-ld/v1/temporal/entityOperations/query", READ, READ),
    ("/ngsi-ld/v1/subscriptions", SUBSCRIBE, SUBSCRIBE),
    ("/ngsi-ld/v1/subscriptions/{id}", SUBSCRIBE, SUBSCRIBE),
    ("/ngsi-ld/v1/csourceSubscriptions", SUBSCRIBE, SUBSCRIBE),
    (
        "/ngsi-ld/v1/csourceSubscriptions/{id}",
        SUBSCRIBE,
        SUBSCRIBE,
    ),
    ("/ngsi-ld/v1/info/sourceIdentity", READ, READ),
    ("/ngsi-ld/v1/csourceRegistrations", ADMIN, ADMIN),
    ("/ngsi-ld/v1/csourceRegistrations/{id}", ADMIN, ADMIN),
    ("/ngsi-ld/v1/temporal/entities", READ, WRITE),
    ("/ngsi-ld/v1/temporal/entities/{id}", READ, WRITE),
    ("/ngsi-ld/v1/temporal/entities/{id}/attrs", READ, WRITE),
    (
        "/ngsi-ld/v1/temporal/entities/{id}/attrs/{attr}",
        READ,
        WRITE,
    ),
    (
        "/ngsi-ld/v1/temporal/entities/{id}/attrs/{attr}/{instanceId}",
        READ,
        WRITE,
    ),
    // Making an entity map is a query (POST carries it in a body); changing or deleting one
    // is not.
    ("/ngsi-ld/v1/entityMaps", READ, READ),
    ("/ngsi-ld/v1/entityMaps/{id}", READ, WRITE),
    ("/ngsi-ld/v1/temporal/entityMaps", READ, READ),
    // Adding and deleting @contexts changes what every client's terms mean.
    ("/ngsi-ld/v1/jsonldContexts", READ, ADMIN),
    ("/ngsi-ld/v1/jsonldContexts/{id}", READ, ADMIN),
    // Context sources notifying this broker of their copies of subscriptions.
    ("/ngsi-ld/ex/remote-notify", SUBSCRIBE, SUBSCRIBE),
    // Data-model bindings decide which writes are refused.
    ("/ngsi-ld/ex/dataModels", READ, ADMIN),
    ("/ngsi-ld/ex/dataModels/{id}", READ, ADMIN),
];

/// The guard of a request: that of the first route of [`ROUTES`] matching its path (one trailing
/// slash ignored), [`Route::Unrouted`] when none does.
pub fn classify(method: &Method, path: &str) -> Route {
    let reading = method == Method::GET || method == Method::HEAD;
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .find(|(pattern, _, _)| matches(pattern, path))
        .map_or(
            Route::Unrouted,
            |&(_, get, other)| {
                if reading {
                    get
                } else {
                    other
                }
            },
        )
}

/// Whether the router may register `pattern`: it is a route of [`ROUTES`], written the same.
/// The router asserts it for each resource it registers.
pub fn is_classified(pattern: &str) -> bool {
    ROUTES.iter().any(|(p, _, _)| *p == pattern)
}

/// The tenant a request addresses, as the grants and the audit log see it: its `NGSILD-Tenant`
/// header, trimmed as the handlers read it (`negotiate`), "" for the default tenant.
pub fn tenant(headers: &actix_web::http::header::HeaderMap) -> &str {
    headers
        .get("NGSILD-Tenant")
        .and_then(|v| v.to_str().ok())
        .map_or(crate::store::DEFAULT_TENANT, str::trim)
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    for expected in pattern.split('/') {
        match segments.next() {
            Some(s) if s == expected || (expected.starts_with('{') && !s.is_empty()) => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: Method, path: &str) -> Route {
        classify(&method, path)
    }

    #[test]
    fn every_kind_of_route_has_its_class() {
        let g = Route::Guarded;
        let cases = [
            (Method::GET, "/health", Route::Open),
            (Method::GET, "/ready", Route::Open),
            (Method::GET, "/metrics", Route::Metrics),
            (Method::GET, "/ngsi-ld/v1/entities", g(Read)),
            (Method::POST, "/ngsi-ld/v1/entities/", g(Write)),
            (Method::DELETE, "/ngsi-ld/v1/entities", g(Write)),
            (Method::GET, "/ngsi-ld/v1/entities/urn:x/attrs/a", g(Read)),
            (
                Method::PATCH,
                "/ngsi-ld/v1/entities/urn:x/attrs/a",
                g(Write),
            ),
            (
                Method::POST,
                "/ngsi-ld/v1/entityOperations/upsert",
                g(Write),
            ),
            (Method::POST, "/ngsi-ld/v1/entityOperations/query", g(Read)),
            (
                Method::POST,
                "/ngsi-ld/v1/temporal/entityOperations/query",
                g(Read),
            ),
            (Method::POST, "/ngsi-ld/v1/temporal/entities", g(Write)),
            (Method::GET, "/ngsi-ld/v1/temporal/entities/urn:x", g(Read)),
            (Method::POST, "/ngsi-ld/v1/entityMaps", g(Read)),
            (Method::DELETE, "/ngsi-ld/v1/entityMaps/urn:m", g(Write)),
            (Method::GET, "/ngsi-ld/v1/types/Building", g(Read)),
            (Method::GET, "/ngsi-ld/v1/attributes", g(Read)),
            (Method::GET, "/ngsi-ld/v1/info/sourceIdentity", g(Read)),
            (Method::GET, "/ngsi-ld/v1/subscriptions", g(Subscribe)),
            (
                Method::DELETE,
                "/ngsi-ld/v1/csourceSubscriptions/urn:s",
                g(Subscribe),
            ),
            (Method::GET, "/ngsi-ld/v1/csourceRegistrations", g(Admin)),
            (Method::GET, "/ngsi-ld/v1/jsonldContexts", g(Read)),
            (Method::GET, "/ngsi-ld/v1/jsonldContexts/urn:c", g(Read)),
            (Method::POST, "/ngsi-ld/v1/jsonldContexts", g(Admin)),
            (Method::DELETE, "/ngsi-ld/v1/jsonldContexts/urn:c", g(Admin)),
            (Method::POST, "/ngsi-ld/ex/remote-notify", g(Subscribe)),
            (Method::POST, "/ngsi-ld/ex/dataModels", g(Admin)),
            (Method::DELETE, "/ngsi-ld/ex/dataModels/urn:d", g(Admin)),
            (Method::GET, "/ngsi-ld/ex/dataModels", g(Read)),
            // Paths of no route fail closed, whatever their method.
            (Method::GET, "/ngsi-ld/v1/nothing-here", Route::Unrouted),
            (Method::POST, "/ngsi-ld/v1/entitiesX", Route::Unrouted),
            (Method::POST, "/ngsi-ld/v1/entities//attrs", Route::Unrouted),
            (
                Method::PATCH,
                "/ngsi-ld/v1/entities/urn:x/attrs/a/b",
                Route::Unrouted,
            ),
            (Method::DELETE, "/ngsi-ld/ex/other", Route::Unrouted),
        ];
        for (method, path, expected) in cases {
            assert_eq!(class(method.clone(), path), expected, "{method} {path}");
        }
    }
}
