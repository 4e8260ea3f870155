//! Authorization: which operations a token may do on which tenant, as `[[grants]]` of the
//! configuration file give them. A grant names a claim value (a role, a group, a scope), the
//! tenants and the operation classes its holders get, and optionally the entity types they are
//! limited to.

use super::Principal;
use serde::Deserialize;
use serde_json::Value;

/// The classes of operation that access is granted by; every route belongs to one
/// (`http::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Reading entities, their history, types and attributes; queries and entity maps.
    Read,
    /// Creating, changing and deleting entities and their history.
    Write,
    /// Managing subscriptions (and receiving the notifications of context sources).
    Subscribe,
    /// Registrations of context sources, and the broker's own configuration.
    Admin,
}

impl Operation {
    /// The name used in the configuration and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Subscribe => "subscribe",
            Operation::Admin => "admin",
        }
    }
}

/// One `[[grants]]` entry of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grant {
    /// The claim looked at, a dotted path into the token's claims (`roles`,
    /// `realm_access.roles`, `scope`).
    pub claim: String,
    /// The value that grants: equal to the claim, one of its array items, or one of the
    /// space-separated words of a string claim (OAuth `scope`).
    pub value: String,
    /// The tenants granted: names, `""` for the default tenant, `"*"` for every tenant.
    pub tenants: Vec<String>,
    /// The operation classes granted.
    pub operations: Vec<Operation>,
    /// When given, the grant covers only requests that name their entity types in the `type`
    /// query parameter, every one of them in this list.
    #[serde(default)]
    pub entity_types: Option<Vec<String>>,
}

/// What a request asks for, as far as grants are concerned.
pub struct Request<'a> {
    /// The tenant (`NGSILD-Tenant`, "" for the default).
    pub tenant: &'a str,
    /// The route's operation class.
    pub operation: Operation,
    /// The entity types the request names in its `type` parameter (None when it has none).
    pub types: Option<Vec<&'a str>>,
}

/// The configured grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    grants: Vec<Grant>,
}

impl Grants {
    /// The grants of the configuration. Without any, every authenticated caller may do everything
    /// (authentication alone).
    pub fn new(grants: Vec<Grant>) -> Grants {
        Grants { grants }
    }

    /// Whether no grant is configured.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether some grant held by the principal covers the request.
    pub fn allow(&self, principal: &Principal, request: &Request) -> bool {
        self.grants.is_empty()
            || self
                .grants
                .iter()
                .any(|g| g.covers(request) && g.held_by(&principal.claims))
    }
}

impl Grant {
    fn covers(&self, request: &Request) -> bool {
        self.operations.contains(&request.operation)
            && self.tenants.iter().any(|t| t == "*" || t == request.tenant)
            && match (&self.entity_types, &request.types) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(allowed), Some(asked)) => {
                    asked.iter().all(|t| allowed.iter().any(|a| a == t))
                }
            }
    }

    fn held_by(&self, claims: &Value) -> bool {
        let claim = self
            .claim
            .split('.')
            .try_fold(claims, |value, key| value.get(key));
        match claim {
            Some(Value::String(s)) => s == &self.value || s.split(' ').any(|w| w == self.value),
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(&self.value)),
            Some(Value::Bool(b)) => b.to_string() == self.value,
            _ => false,
        }
    }
}

/// The entity types named by a `type` query parameter value: the names of a type expression
/// (`A,B`, `(A;B)|C`), as written.
pub fn type_names(expression: &str) -> Vec<&str> {
    expression
        .split([',', ';', '|', '(', ')'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(toml_text: &str) -> Grant {
        toml::from_str(toml_text).unwrap()
    }

    fn principal(claims: Value) -> Principal {
        Principal {
            subject: "s".into(),
            claims,
        }
    }

    #[test]
    fn a_grant_matches_its_claim_tenant_operation_and_types() {
        let grants = Grants::new(vec![grant(
            r#"claim = "realm_access.roles"
               value = "port-reader"
               tenants = ["port", ""]
               operations = ["read"]
               entity-types = ["Crane", "Vessel"]"#,
        )]);
        let reader = principal(json!({"realm_access": {"roles": ["x", "port-reader"]}}));
        let ask = |tenant, operation, types: Option<Vec<&'static str>>| Request {
            tenant,
            operation,
            types,
        };
        assert!(grants.allow(&reader, &ask("port", Operation::Read, Some(vec!["Crane"]))));
        assert!(grants.allow(
            &reader,
            &ask("", Operation::Read, Some(type_names("Crane|Vessel")))
        ));
        assert!(!grants.allow(
            &reader,
            &ask("port", Operation::Read, Some(vec!["Crane", "Car"]))
        ));
        assert!(!grants.allow(&reader, &ask("port", Operation::Read, None)));
        assert!(!grants.allow(&reader, &ask("city", Operation::Read, Some(vec!["Crane"]))));
        assert!(!grants.allow(&reader, &ask("port", Operation::Write, Some(vec!["Crane"]))));
        let other = principal(json!({"realm_access": {"roles": ["port-writer"]}}));
        assert!(!grants.allow(&other, &ask("port", Operation::Read, Some(vec!["Crane"]))));
    }

    #[test]
    fn scopes_are_words_and_no_grants_allow_everything() {
        let grants = Grants::new(vec![grant(
            r#"claim = "scope"
               value = "ngsi:write"
               tenants = ["*"]
               operations = ["write", "read"]"#,
        )]);
        let request = Request {
            tenant: "any",
            operation: Operation::Write,
            types: None,
        };
        assert!(grants.allow(&principal(json!({"scope": "openid ngsi:write"})), &request));
        assert!(!grants.allow(&principal(json!({"scope": "ngsi:writer"})), &request));
        assert!(Grants::default().allow(&principal(json!({})), &request));
    }
}
