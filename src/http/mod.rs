//! The HTTP binding (clause 6): routes, content negotiation and error mapping. Handlers are thin:
//! they read the request into typed input, call one service operation and render the result.

pub mod access;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod contexts;
pub mod data_models;
pub mod discovery;
pub mod entities;
pub mod entity_maps;
pub mod identity;
pub mod join;
pub mod metrics;
pub mod negotiate;
pub mod query;
pub mod registrations;
pub mod request_id;
pub mod response;
pub mod subscriptions;
pub mod temporal;
pub mod version;

use crate::store::Collection;
use actix_web::web;

/// The base path of the NGSI-LD API.
pub const BASE: &str = "/ngsi-ld/v1";

/// Registers every route of the API, each through [`api`] or [`resource`], which hold it to its
/// entry in the access table (`access::ROUTES`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(BASE)
            .service(
                api("/entities")
                    .route(web::post().to(entities::create))
                    .route(web::get().to(query::query))
                    .route(web::delete().to(entities::purge))
                    .default_service(web::to(response::method_not_allowed)),
            )
            // The paths of one entity first: each resource with a path parameter costs the router a
            // regular-expression match, and these carry most of the traffic (PATCH /attrs of IoT
            // agents, GET of dashboards).
            .service(
                api("/entities/{id}/attrs")
                    .route(web::post().to(entities::append_attrs))
                    .route(web::patch().to(entities::update_attrs))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/entities/{id}")
                    .route(web::get().to(entities::retrieve))
                    .route(web::delete().to(entities::delete))
                    .route(web::patch().to(entities::merge))
                    .route(web::put().to(entities::replace))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/entities/{id}/attrs/{attr}")
                    .route(web::patch().to(entities::partial_update_attr))
                    .route(web::put().to(entities::replace_attr))
                    .route(web::delete().to(entities::delete_attr))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(api("/types").route(web::get().to(discovery::types)))
            .service(api("/types/{type}").route(web::get().to(discovery::type_info)))
            .service(api("/attributes").route(web::get().to(discovery::attributes)))
            .service(api("/attributes/{attr}").route(web::get().to(discovery::attribute_info)))
            .service(api("/entityOperations/create").route(web::post().to(batch::create)))
            .service(api("/entityOperations/upsert").route(web::post().to(batch::upsert)))
            .service(api("/entityOperations/update").route(web::post().to(batch::update)))
            .service(api("/entityOperations/merge").route(web::post().to(batch::merge)))
            .service(api("/entityOperations/delete").route(web::post().to(batch::delete)))
            .service(
                api("/entityOperations/query")
                    .route(web::post().to(query::post_query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/subscriptions")
                    .route(web::post().to(subscriptions::create))
                    .route(web::get().to(subscriptions::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/subscriptions/{id}")
                    .route(web::get().to(subscriptions::retrieve))
                    .route(web::patch().to(subscriptions::update))
                    .route(web::delete().to(subscriptions::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/csourceSubscriptions")
                    .app_data(Collection::CsourceSubscriptions)
                    .route(web::post().to(subscriptions::create))
                    .route(web::get().to(subscriptions::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/csourceSubscriptions/{id}")
                    .app_data(Collection::CsourceSubscriptions)
                    .route(web::get().to(subscriptions::retrieve))
                    .route(web::patch().to(subscriptions::update))
                    .route(web::delete().to(subscriptions::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/info/sourceIdentity")
                    .route(web::get().to(identity::source_identity))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/csourceRegistrations")
                    .route(web::post().to(registrations::create))
                    .route(web::get().to(registrations::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/csourceRegistrations/{id}")
                    .route(web::get().to(registrations::retrieve))
                    .route(web::patch().to(registrations::update))
                    .route(web::delete().to(registrations::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entities")
                    .route(web::post().to(temporal::upsert))
                    .route(web::get().to(temporal::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entities/{id}")
                    .route(web::get().to(temporal::retrieve))
                    .route(web::delete().to(temporal::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entities/{id}/attrs")
                    .route(web::post().to(temporal::append_attrs))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entities/{id}/attrs/{attr}")
                    .route(web::delete().to(temporal::delete_attr))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entities/{id}/attrs/{attr}/{instanceId}")
                    .route(web::patch().to(temporal::patch_instance))
                    .route(web::delete().to(temporal::delete_instance))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/entityMaps")
                    .route(web::get().to(entity_maps::create))
                    .route(web::post().to(entity_maps::create_from_body))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/entityMaps/{id}")
                    .route(web::get().to(entity_maps::retrieve))
                    .route(web::patch().to(entity_maps::update))
                    .route(web::delete().to(entity_maps::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entityMaps")
                    .route(web::get().to(entity_maps::create_temporal))
                    .route(web::post().to(entity_maps::create_temporal_from_body))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/jsonldContexts")
                    .route(web::post().to(contexts::add))
                    .route(web::get().to(contexts::list))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/jsonldContexts/{id}")
                    .route(web::get().to(contexts::serve))
                    .route(web::delete().to(contexts::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                api("/temporal/entityOperations/query")
                    .route(web::post().to(temporal::post_query))
                    .default_service(web::to(response::method_not_allowed)),
            ),
    )
    .service(
        resource(crate::subscription::remote::NOTIFY_PATH)
            .route(web::post().to(subscriptions::remote_notify)),
    )
    .service(
        resource(crate::service::data_models::PATH)
            .route(web::post().to(data_models::add))
            .route(web::get().to(data_models::list))
            .default_service(web::to(response::method_not_allowed)),
    )
    .service(
        resource(&format!("{}/{{id}}", crate::service::data_models::PATH))
            .route(web::delete().to(data_models::delete))
            .default_service(web::to(response::method_not_allowed)),
    )
    .service(resource(metrics::PATH).route(web::get().to(metrics::serve)))
    .service(resource("/health").route(web::get().to(response::health)))
    .service(resource("/ready").route(web::get().to(response::ready)))
    .default_service(web::to(response::not_found));
}

/// A resource of the API at `path` below [`BASE`] (the scope the router registers it in); see
/// [`resource`].
fn api(path: &str) -> actix_web::Resource {
    guarded(&format!("{BASE}{path}"));
    web::resource(path)
}

/// A resource at `path`, which must be a route of the access table (`access::ROUTES`), so that
/// the router and the table cannot diverge: registering a route the table does not classify
/// panics when the server is configured (the unit test below configures it), rather than leaving
/// the route to the guard of unknown paths.
fn resource(path: &str) -> actix_web::Resource {
    guarded(path);
    web::resource(path)
}

fn guarded(path: &str) {
    assert!(
        access::is_classified(path),
        "the route {path} has no guard in http::access::ROUTES"
    );
}

/// 400 for API paths with an empty segment (`/entities//attrs`): an id or name is missing.
pub fn empty_segment(path: &str) -> bool {
    path.starts_with(BASE) && path[BASE.len()..].trim_end_matches('/').contains("//")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};

    /// `path` with each `{name}` segment given a value.
    fn concrete(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every route the router registers has its guard (configuring the app asserts it), and
    /// every route of the access table is one the router serves: a method no resource offers
    /// (TRACE) is answered 405 there, where a path of no resource gets 404.
    #[actix_web::test]
    async fn the_router_and_the_access_table_name_the_same_routes() {
        let app = init_service(actix_web::App::new().configure(routes)).await;
        for &(pattern, _, _) in access::ROUTES {
            let path = concrete(pattern);
            assert_ne!(
                access::classify(&actix_web::http::Method::GET, &path),
                access::Route::Unrouted,
                "{pattern}"
            );
            let request = TestRequest::default()
                .method(actix_web::http::Method::TRACE)
                .uri(&path)
                .to_request();
            let status = call_service(&app, request).await.status();
            assert_eq!(status, 405, "{pattern} of the access table is not routed");
        }
        let request = TestRequest::default()
            .method(actix_web::http::Method::TRACE)
            .uri("/ngsi-ld/v1/nothing-here")
            .to_request();
        assert_eq!(call_service(&app, request).await.status(), 404);
    }
}
