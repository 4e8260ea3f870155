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

/// Registers every route of the API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(BASE)
            .service(
                web::resource("/entities")
                    .route(web::post().to(entities::create))
                    .route(web::get().to(query::query))
                    .route(web::delete().to(entities::purge))
                    .default_service(web::to(response::method_not_allowed)),
            )
            // The paths of one entity first: each resource with a path parameter costs the router a
            // regular-expression match, and these carry most of the traffic (PATCH /attrs of IoT
            // agents, GET of dashboards).
            .service(
                web::resource("/entities/{id}/attrs")
                    .route(web::post().to(entities::append_attrs))
                    .route(web::patch().to(entities::update_attrs))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/entities/{id}")
                    .route(web::get().to(entities::retrieve))
                    .route(web::delete().to(entities::delete))
                    .route(web::patch().to(entities::merge))
                    .route(web::put().to(entities::replace))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/entities/{id}/attrs/{attr}")
                    .route(web::patch().to(entities::partial_update_attr))
                    .route(web::put().to(entities::replace_attr))
                    .route(web::delete().to(entities::delete_attr))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(web::resource("/types").route(web::get().to(discovery::types)))
            .service(web::resource("/types/{type}").route(web::get().to(discovery::type_info)))
            .service(web::resource("/attributes").route(web::get().to(discovery::attributes)))
            .service(
                web::resource("/attributes/{attr}").route(web::get().to(discovery::attribute_info)),
            )
            .service(web::resource("/entityOperations/create").route(web::post().to(batch::create)))
            .service(web::resource("/entityOperations/upsert").route(web::post().to(batch::upsert)))
            .service(web::resource("/entityOperations/update").route(web::post().to(batch::update)))
            .service(web::resource("/entityOperations/merge").route(web::post().to(batch::merge)))
            .service(web::resource("/entityOperations/delete").route(web::post().to(batch::delete)))
            .service(
                web::resource("/entityOperations/query")
                    .route(web::post().to(query::post_query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/subscriptions")
                    .route(web::post().to(subscriptions::create))
                    .route(web::get().to(subscriptions::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/subscriptions/{id}")
                    .route(web::get().to(subscriptions::retrieve))
                    .route(web::patch().to(subscriptions::update))
                    .route(web::delete().to(subscriptions::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/csourceSubscriptions")
                    .app_data(Collection::CsourceSubscriptions)
                    .route(web::post().to(subscriptions::create))
                    .route(web::get().to(subscriptions::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/csourceSubscriptions/{id}")
                    .app_data(Collection::CsourceSubscriptions)
                    .route(web::get().to(subscriptions::retrieve))
                    .route(web::patch().to(subscriptions::update))
                    .route(web::delete().to(subscriptions::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/info/sourceIdentity")
                    .route(web::get().to(identity::source_identity))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/csourceRegistrations")
                    .route(web::post().to(registrations::create))
                    .route(web::get().to(registrations::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/csourceRegistrations/{id}")
                    .route(web::get().to(registrations::retrieve))
                    .route(web::patch().to(registrations::update))
                    .route(web::delete().to(registrations::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entities")
                    .route(web::post().to(temporal::upsert))
                    .route(web::get().to(temporal::query))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entities/{id}")
                    .route(web::get().to(temporal::retrieve))
                    .route(web::delete().to(temporal::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entities/{id}/attrs")
                    .route(web::post().to(temporal::append_attrs))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entities/{id}/attrs/{attr}")
                    .route(web::delete().to(temporal::delete_attr))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entities/{id}/attrs/{attr}/{instanceId}")
                    .route(web::patch().to(temporal::patch_instance))
                    .route(web::delete().to(temporal::delete_instance))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/entityMaps")
                    .route(web::get().to(entity_maps::create))
                    .route(web::post().to(entity_maps::create_from_body))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/entityMaps/{id}")
                    .route(web::get().to(entity_maps::retrieve))
                    .route(web::patch().to(entity_maps::update))
                    .route(web::delete().to(entity_maps::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entityMaps")
                    .route(web::get().to(entity_maps::create_temporal))
                    .route(web::post().to(entity_maps::create_temporal_from_body))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/jsonldContexts")
                    .route(web::post().to(contexts::add))
                    .route(web::get().to(contexts::list))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/jsonldContexts/{id}")
                    .route(web::get().to(contexts::serve))
                    .route(web::delete().to(contexts::delete))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/temporal/entityOperations/query")
                    .route(web::post().to(temporal::post_query))
                    .default_service(web::to(response::method_not_allowed)),
            ),
    )
    .route(
        crate::subscription::remote::NOTIFY_PATH,
        web::post().to(subscriptions::remote_notify),
    )
    .service(
        web::resource(crate::service::data_models::PATH)
            .route(web::post().to(data_models::add))
            .route(web::get().to(data_models::list))
            .default_service(web::to(response::method_not_allowed)),
    )
    .service(
        web::resource(format!("{}/{{id}}", crate::service::data_models::PATH))
            .route(web::delete().to(data_models::delete))
            .default_service(web::to(response::method_not_allowed)),
    )
    .route(metrics::PATH, web::get().to(metrics::serve))
    .route("/health", web::get().to(response::health))
    .route("/ready", web::get().to(response::ready))
    .default_service(web::to(response::not_found));
}

/// 400 for API paths with an empty segment (`/entities//attrs`): an id or name is missing.
pub fn empty_segment(path: &str) -> bool {
    path.starts_with(BASE) && path[BASE.len()..].trim_end_matches('/').contains("//")
}
