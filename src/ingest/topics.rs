//! The MQTT ingestion topic scheme: what a topic addresses (tenant, entities or one entity's
//! attributes) and which default @context its payloads get.

use crate::store::DEFAULT_TENANT;
use percent_encoding::percent_decode_str;

/// What a message on an ingestion topic is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `<prefix>/entities`: an entity or an array of entities, upserted.
    Entities,
    /// `<prefix>/entities/<id>/attrs`: attributes of this entity, appended (updated when present).
    Attrs(String),
}

/// A topic read against the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The tenant (`""` for the default one).
    pub tenant: String,
    /// What the message does.
    pub target: Target,
    /// The @context for payloads that carry none (`None`: the core context).
    pub context: Option<String>,
}

/// The topic prefixes twinlink listens on, each with its default @context.
#[derive(Debug, Clone)]
pub struct Scheme {
    prefixes: Vec<(String, Option<String>)>,
}

impl Scheme {
    /// The main prefix (core context) and further prefixes with their default contexts.
    pub fn new(prefix: &str, contexts: &[(String, String)]) -> Scheme {
        let mut prefixes = vec![(prefix.trim_end_matches('/').to_string(), None)];
        for (p, c) in contexts {
            let p = p.trim_end_matches('/').to_string();
            prefixes.retain(|(q, _)| *q != p);
            prefixes.push((p, Some(c.clone())));
        }
        Scheme { prefixes }
    }

    /// The MQTT topic filters to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (p, _) in &self.prefixes {
            for tail in [
                "entities",
                "entities/+/attrs",
                "tenants/+/entities",
                "tenants/+/entities/+/attrs",
            ] {
                out.push(format!("{p}/{tail}"));
            }
        }
        out
    }

    /// What a topic addresses; `None` when it is not one of the scheme's. Entity ids and tenants
    /// may be percent-encoded in topics (an id holding `/` must be).
    pub fn route(&self, topic: &str) -> Option<Route> {
        let (rest, context) = self
            .prefixes
            .iter()
            .filter_map(|(p, c)| Some((topic.strip_prefix(p.as_str())?.strip_prefix('/')?, c)))
            .max_by_key(|(rest, _)| std::cmp::Reverse(rest.len()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (tenant, parts) = match parts.as_slice() {
            ["tenants", tenant, tail @ ..] if !tenant.is_empty() => (decode(tenant)?, tail),
            tail => (DEFAULT_TENANT.to_string(), tail),
        };
        let target = match parts {
            ["entities"] => Target::Entities,
            ["entities", id, "attrs"] if !id.is_empty() => Target::Attrs(decode(id)?),
            _ => return None,
        };
        Some(Route {
            tenant,
            target,
            context: context.clone(),
        })
    }
}

fn decode(part: &str) -> Option<String> {
    percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme() -> Scheme {
        Scheme::new(
            "ngsi-ld",
            &[("city/sensors".into(), "http://ctx.example/c.jsonld".into())],
        )
    }

    #[test]
    fn topics_route_to_tenant_target_and_context() {
        let s = scheme();
        let r = s.route("ngsi-ld/entities").unwrap();
        assert_eq!(
            (r.tenant.as_str(), r.target, r.context),
            ("", Target::Entities, None)
        );
        let r = s
            .route("ngsi-ld/tenants/port/entities/urn:a:b/attrs")
            .unwrap();
        assert_eq!(r.tenant, "port");
        assert_eq!(r.target, Target::Attrs("urn:a:b".into()));
        let r = s.route("city/sensors/entities/urn%3Ax%2Fy/attrs").unwrap();
        assert_eq!(r.target, Target::Attrs("urn:x/y".into()));
        assert_eq!(r.context.as_deref(), Some("http://ctx.example/c.jsonld"));
        for bad in [
            "ngsi-ld",
            "ngsi-ld/entity",
            "ngsi-ld/entities/x",
            "ngsi-ld/entities//attrs",
            "ngsi-ld/tenants//entities",
            "other/entities",
            "ngsi-ldx/entities",
        ] {
            assert_eq!(s.route(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_prefix_has_the_four_filters() {
        let f = scheme().filters();
        assert_eq!(f.len(), 8);
        assert!(f.contains(&"city/sensors/tenants/+/entities/+/attrs".to_string()));
        // every filter's own shape routes
        for filter in f {
            let topic = filter.replace('+', "x");
            assert!(scheme().route(&topic).is_some(), "{topic}");
        }
    }
}
