//! Discovery (5.7.5–5.7.10): GET /types, /types/{type}, /attributes, /attributes/{attrId}, every name
//! compacted with the caller's context; what registered sources hold is included
//! (`service::catalogue`) unless `local=true`.

use super::negotiate::{Accepted, RequestInfo};
use super::response::{add_warnings, json_body};
use crate::error::{NgsiError, NgsiResult};
use crate::service::catalogue::Ask;
use crate::service::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

type Data = web::Data<AppState>;

const OFFERS: &[Accepted] = &[Accepted::Json, Accepted::JsonLd];

/// The response, with an NGSILD-Warning for each source that failed.
fn answer(info: &RequestInfo, body: Value, warnings: &[String]) -> HttpResponse {
    let mut response = json_body(info, body);
    add_warnings(&mut response, warnings);
    response
}

fn list_id(kind: &str) -> String {
    format!("urn:ngsi-ld:{kind}:{}", uuid::Uuid::new_v4())
}

/// GET /types (5.7.5 and, with details=true, 5.7.6).
pub async fn types(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["details", "local", "via"])?;
    let ctx = info.context(&broker).await?;
    let details = info.flag("details")?;
    let ask = if details { Ask::Details } else { Ask::List };
    let merged = broker
        .entity_types_distributed(&info.tenant, ask, &info.reach())
        .await?;
    let types = &merged.entries;
    let body = if details {
        Value::Array(
            types
                .iter()
                .map(|(iri, t)| {
                    json!({
                        "id": iri,
                        "type": "EntityType",
                        "typeName": ctx.compact(iri),
                        "attributeNames": t.attributes.keys().map(|a| ctx.compact(a).into_owned()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    } else {
        json!({
            "id": list_id("EntityTypeList"),
            "type": "EntityTypeList",
            "typeList": types.keys().map(|t| ctx.compact(t).into_owned()).collect::<Vec<_>>(),
        })
    };
    Ok(answer(&info, body, &merged.warnings))
}

/// GET /types/{type} (5.7.7).
pub async fn type_info(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["local", "via"])?;
    let ctx = info.context(&broker).await?;
    let name = &super::entities::segment(&req, "type");
    let iri = ctx.expand(name).into_owned();
    let merged = broker
        .entity_types_distributed(&info.tenant, Ask::One(&iri), &info.reach())
        .await?;
    let t = merged.entries.get(&iri).ok_or_else(|| {
        NgsiError::not_found(format!("no entity has the type '{name}'"))
            .with_warnings(merged.warnings.clone())
    })?;
    let body = json!({
        "id": iri,
        "type": "EntityTypeInfo",
        "typeName": ctx.compact(&iri),
        "entityCount": t.entity_count,
        "attributeDetails": t.attributes.iter().map(|(a, kinds)| json!({
            "id": a,
            "type": "Attribute",
            "attributeName": ctx.compact(a),
            "attributeTypes": kinds,
        })).collect::<Vec<_>>(),
    });
    Ok(answer(&info, body, &merged.warnings))
}

/// GET /attributes (5.7.8 and, with details=true, 5.7.9).
pub async fn attributes(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["details", "local", "via"])?;
    let ctx = info.context(&broker).await?;
    let details = info.flag("details")?;
    let ask = if details { Ask::Details } else { Ask::List };
    let merged = broker
        .attributes_distributed(&info.tenant, ask, &info.reach())
        .await?;
    let attrs = &merged.entries;
    let body = if details {
        Value::Array(
            attrs
                .iter()
                .map(|(iri, a)| attribute_body(&ctx, iri, a))
                .collect(),
        )
    } else {
        json!({
            "id": list_id("AttributeList"),
            "type": "AttributeList",
            "attributeList": attrs.keys().map(|a| ctx.compact(a).into_owned()).collect::<Vec<_>>(),
        })
    };
    Ok(answer(&info, body, &merged.warnings))
}

fn attribute_body(
    ctx: &crate::ld::ActiveContext,
    iri: &str,
    a: &crate::service::query::AttributeInfo,
) -> Value {
    json!({
        "id": iri,
        "type": "Attribute",
        "attributeName": ctx.compact(iri),
        "attributeCount": a.instance_count,
        "attributeTypes": a.kinds,
        "typeNames": a.types.iter().map(|t| ctx.compact(t).into_owned()).collect::<Vec<_>>(),
    })
}

/// GET /attributes/{attrId} (5.7.10).
pub async fn attribute_info(req: HttpRequest, broker: Data) -> NgsiResult<HttpResponse> {
    let info = RequestInfo::read(&req, OFFERS, &["local", "via"])?;
    let ctx = info.context(&broker).await?;
    let name = &super::entities::segment(&req, "attr");
    let iri = ctx.expand(name).into_owned();
    let merged = broker
        .attributes_distributed(&info.tenant, Ask::One(&iri), &info.reach())
        .await?;
    let a = merged.entries.get(&iri).ok_or_else(|| {
        NgsiError::not_found(format!("no entity has the attribute '{name}'"))
            .with_warnings(merged.warnings.clone())
    })?;
    Ok(answer(
        &info,
        attribute_body(&ctx, &iri, a),
        &merged.warnings,
    ))
}
