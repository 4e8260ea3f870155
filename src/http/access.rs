//! The one table that gives every route its operation class for authorization, so that no
//! handler decides on access itself and a new route is classified where all the others are.

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
}

use Operation::{Admin, Read, Subscribe, Write};

/// Path patterns, first match wins: the class of GET and HEAD, the class of the other methods.
/// `*` matches one segment, a trailing `**` the rest of the path (nothing included). Public so
/// that the black-box tests walk every route of it.
pub const ROUTES: &[(&str, Operation, Operation)] = &[
    // A query with its parameters in a body.
    ("/ngsi-ld/v1/entityOperations/query", Read, Read),
    ("/ngsi-ld/v1/temporal/entityOperations/query", Read, Read),
    ("/ngsi-ld/v1/entityOperations/**", Read, Write),
    ("/ngsi-ld/v1/entities/**", Read, Write),
    ("/ngsi-ld/v1/temporal/entities/**", Read, Write),
    // Making an entity map is a query (POST carries it in a body); changing or deleting one
    // is not.
    ("/ngsi-ld/v1/entityMaps", Read, Read),
    ("/ngsi-ld/v1/temporal/entityMaps", Read, Read),
    ("/ngsi-ld/v1/entityMaps/**", Read, Write),
    ("/ngsi-ld/v1/types/**", Read, Read),
    ("/ngsi-ld/v1/attributes/**", Read, Read),
    ("/ngsi-ld/v1/info/**", Read, Read),
    ("/ngsi-ld/v1/subscriptions/**", Subscribe, Subscribe),
    ("/ngsi-ld/v1/csourceSubscriptions/**", Subscribe, Subscribe),
    ("/ngsi-ld/v1/csourceRegistrations/**", Admin, Admin),
    // Adding and deleting @contexts changes what every client's terms mean.
    ("/ngsi-ld/v1/jsonldContexts/**", Read, Admin),
    // Data-model bindings decide which writes are refused.
    ("/ngsi-ld/ex/dataModels/**", Read, Admin),
    // Context sources notifying this broker of their copies of subscriptions.
    (
        crate::subscription::remote::NOTIFY_PATH,
        Subscribe,
        Subscribe,
    ),
];

/// The guard of a request. Paths outside the table (which only answer 404 or 405) need read
/// access, so that they tell an anonymous caller nothing either.
pub fn classify(method: &Method, path: &str) -> Route {
    match path {
        "/health" | "/ready" => return Route::Open,
        super::metrics::PATH => return Route::Metrics,
        _ => {}
    }
    let reading = method == Method::GET || method == Method::HEAD;
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .find(|(pattern, _, _)| matches(pattern, path))
        .map_or(Route::Guarded(Read), |&(_, get, other)| {
            Route::Guarded(if reading { get } else { other })
        })
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
        if expected == "**" {
            return true;
        }
        match segments.next() {
            Some(s) if expected == "*" || s == expected => {}
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
            (Method::GET, "/ngsi-ld/v1/nothing-here", g(Read)),
            (Method::POST, "/ngsi-ld/v1/entitiesX", g(Read)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(class(method.clone(), path), expected, "{method} {path}");
        }
    }
}
