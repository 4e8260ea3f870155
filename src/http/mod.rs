//! The HTTP binding (clause 6): routes, content negotiation and error mapping. Handlers are thin:
//! they read the request into typed input, call one service operation and render the result.

pub mod entities;
pub mod negotiate;
pub mod response;

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
                web::resource("/entities/{id}/attrs")
                    .route(web::post().to(entities::append_attrs))
                    .route(web::patch().to(entities::update_attrs))
                    .default_service(web::to(response::method_not_allowed)),
            )
            .service(
                web::resource("/entities/{id}/attrs/{attr}")
                    .route(web::patch().to(entities::partial_update_attr))
                    .route(web::put().to(entities::replace_attr))
                    .route(web::delete().to(entities::delete_attr))
                    .default_service(web::to(response::method_not_allowed)),
            ),
    )
    .route("/health", web::get().to(response::health))
    .default_service(web::to(response::not_found));
}

/// 400 for API paths with an empty segment (`/entities//attrs`): an id or name is missing.
pub fn empty_segment(path: &str) -> bool {
    path.starts_with(BASE) && path[BASE.len()..].trim_end_matches('/').contains("//")
}
