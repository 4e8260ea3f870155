//! The NGSI-LD query language, once: parsers for q (4.9), geoQ (4.10), scopeQ (4.19) and type
//! expressions (4.17) into ASTs, and an in-memory evaluator over expanded entities. The evaluator
//! serves the embedded store and subscription matching, and is the reference the PostgreSQL
//! translation is checked against.

pub mod boolean;
pub mod geo;
pub mod json;
pub mod order;
pub mod q;

use crate::ld::ActiveContext;
use crate::model::Entity;
use crate::syntax::{ParseError, ParseResult};
use boolean::BoolExpr;
use regex::Regex;

/// One scopeQ atom (4.19): a scope path whose segments may be `+` (exactly one level) or end in
/// `#` (this level and everything below).
#[derive(Debug, Clone, PartialEq)]
pub struct ScopePattern(Vec<String>);

impl ScopePattern {
    /// Parses one scope pattern such as `/Madrid/+/Parks` or `/Madrid/#`; the error says why it
    /// is none.
    pub fn parse(text: &str) -> Result<ScopePattern, String> {
        let segments: Vec<String> = text
            .strip_prefix('/')
            .unwrap_or("")
            .split('/')
            .map(str::to_string)
            .collect();
        let valid = text.starts_with('/')
            && segments.iter().all(|s| !s.is_empty())
            && segments
                .iter()
                .enumerate()
                .all(|(i, s)| s != "#" || i == segments.len() - 1);
        if !valid {
            return Err(format!(
                "'{text}' is not a scope pattern such as /Madrid/Gardens, /Madrid/+ or /Madrid/#"
            ));
        }
        Ok(ScopePattern(segments))
    }

    /// Whether the pattern has wildcards (`+` or `#`), so that it names no single scope.
    pub fn is_wildcard(&self) -> bool {
        self.0.iter().any(|s| s == "+" || s == "#")
    }

    /// Whether a scope path matches the pattern.
    pub fn matches(&self, scope: &str) -> bool {
        let scope: Vec<&str> = scope
            .strip_prefix('/')
            .unwrap_or(scope)
            .split('/')
            .collect();
        let mut i = 0;
        for segment in &self.0 {
            match segment.as_str() {
                "#" => return true,
                "+" if i < scope.len() => {}
                s if i < scope.len() && scope[i] == s => {}
                _ => return false,
            }
            i += 1;
        }
        i == scope.len()
    }
}

/// Prints the pattern as scopeQ writes it (`/Madrid/+/Parks`).
impl std::fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.0 {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// One entity selector (EntitySelector, 5.2.33): ids, an id pattern and a type expression, all of
/// which must hold.
#[derive(Debug, Default, Clone)]
pub struct Selector {
    /// `id`: any of these ids (empty: any id).
    pub ids: Vec<String>,
    /// `idPattern`: a regular expression the id must match.
    pub id_pattern: Option<Regex>,
    /// `type`: a type expression over expanded type IRIs.
    pub types: Option<BoolExpr<String>>,
}

impl Selector {
    /// Whether the selector restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.ids.is_empty() || self.id_pattern.is_some() || self.types.is_some()
    }

    /// Whether an entity satisfies the selector.
    pub fn matches(&self, e: &Entity) -> bool {
        // An id list takes precedence over the id pattern (5.2.33).
        (self.ids.is_empty() || self.ids.contains(&e.id))
            && (!self.ids.is_empty() || self.id_pattern.as_ref().is_none_or(|r| r.is_match(&e.id)))
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.eval(&|ty: &String| e.types.contains(ty)))
    }
}

/// Everything that selects entities in a query (5.7.2 / 5.7.3), with names already expanded.
#[derive(Debug, Default, Clone)]
pub struct EntityQuery {
    /// Entity selectors, any of which may match (empty: every entity).
    pub selectors: Vec<Selector>,
    /// `attrs`: the entity must have at least one of these attributes.
    pub attrs: Vec<String>,
    /// `q`.
    pub q: Option<q::QExpr>,
    /// `geoQ`.
    pub geo: Option<geo::GeoQuery>,
    /// `scopeQ`.
    pub scope: Option<BoolExpr<ScopePattern>>,
    /// Entity ordering (4.23); `None`: id order.
    pub order: Option<order::Ordering>,
}

impl EntityQuery {
    /// Whether the query narrows the entities enough to be run without `local=true` (5.7.2: a type,
    /// attrs other than system ones, q on other than system attributes, geoQ or scopeQ; ids alone
    /// do not).
    pub fn is_restricted(&self) -> bool {
        self.is_restricted_without_scope() || self.scope.is_some()
    }

    /// Whether the query narrows the entities by a type, attrs other than system ones, q on other
    /// than system attributes or a geoQ: what a purge needs unless it is local (5.6.21.4, where a
    /// scopeQ alone is "too wide").
    pub fn is_restricted_without_scope(&self) -> bool {
        self.selectors.iter().any(|s| s.types.is_some())
            || self
                .attrs
                .iter()
                .any(|a| !SYSTEM_ATTRIBUTES.contains(&a.as_str()))
            || self.q.as_ref().is_some_and(|q| {
                q.attributes()
                    .iter()
                    .any(|a| !SYSTEM_ATTRIBUTES.contains(a))
            })
            || self.geo.is_some()
    }

    /// Whether an entity satisfies every selector.
    pub fn matches(&self, e: &Entity) -> bool {
        self.matches_except_geo(e) && self.geo.as_ref().is_none_or(|g| g.matches(e))
    }

    /// A page `[offset, offset+limit)` of `matches` (every match, in id order) in the query's order,
    /// and how many matches there are; both stores page ordered queries with it.
    pub fn ordered_page<E: std::borrow::Borrow<Entity>>(
        &self,
        matches: Vec<E>,
        offset: usize,
        limit: usize,
    ) -> (Vec<E>, usize) {
        let total = matches.len();
        let sorted = match &self.order {
            Some(order) => order.sort(matches),
            None => matches,
        };
        (sorted.into_iter().skip(offset).take(limit).collect(), total)
    }

    /// Every selector but the geoQ, for stores that decided the geoQ with an index.
    pub fn matches_except_geo(&self, e: &Entity) -> bool {
        (self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(e)))
            && (self.attrs.is_empty() || self.attrs.iter().any(|a| e.attrs.contains_key(a)))
            && self.scope.as_ref().is_none_or(|s| {
                e.scope.as_ref().is_some_and(|scopes| {
                    s.eval(&|p: &ScopePattern| scopes.iter().any(|sc| p.matches(sc)))
                })
            })
            && self.q.as_ref().is_none_or(|q| q.matches(e))
    }
}

/// System attributes, which alone do not narrow a query.
const SYSTEM_ATTRIBUTES: [&str; 3] = [
    "https://uri.etsi.org/ngsi-ld/createdAt",
    "https://uri.etsi.org/ngsi-ld/modifiedAt",
    "https://uri.etsi.org/ngsi-ld/deletedAt",
];

/// Parses a type expression (4.17) with names expanded by the context; `*` (every type) gives None.
pub fn parse_types(text: &str, ctx: &ActiveContext) -> ParseResult<Option<BoolExpr<String>>> {
    if text.trim() == "*" {
        return Ok(None);
    }
    type_expression(text, ctx).map(Some)
}

fn type_expression(text: &str, ctx: &ActiveContext) -> ParseResult<BoolExpr<String>> {
    boolean::parse(text, "type", &|name| {
        crate::model::validate::name("entity type", name).map_err(|e| e.detail)?;
        Ok(ctx.expand(name).into_owned())
    })
}

/// Parses scopeQ (4.19). A space cannot occur in a scope pattern, so one is read as the `+`
/// wildcard that form-decoding of a hand-written `scopeQ=/Madrid/+` turned into a space.
pub fn parse_scope(text: &str) -> ParseResult<BoolExpr<ScopePattern>> {
    let text = text.replace(' ', "+");
    boolean::parse(&text, "scopeQ", &ScopePattern::parse)
}

/// Compiles idPattern (a regular expression, 5.7.2). A quantifier directly after another (`a**`) is
/// refused as in POSIX EREs, though the regex crate would read it as nested repetition.
pub fn parse_id_pattern(text: &str) -> ParseResult<Regex> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let stacked = chars.windows(2).enumerate().find(|&(i, w)| {
        let escaped = i > 0 && chars[i - 1].1 == '\\';
        !escaped && matches!(w[0].1, '*' | '+' | '?') && matches!(w[1].1, '*' | '+')
    });
    if let Some((_, w)) = stacked {
        let (at, quantifier) = w[1];
        return Err(ParseError::at(
            "idPattern",
            text,
            at..at + 1,
            format!("'{text}' repeats a quantifier ('{quantifier}')"),
        ));
    }
    Regex::new(text).map_err(|e| {
        ParseError::whole(
            "idPattern",
            text,
            format!("'{text}' is not a valid regular expression: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_patterns() {
        let p = |t: &str| ScopePattern::parse(t).unwrap();
        assert!(p("/Madrid").matches("/Madrid"));
        assert!(!p("/Madrid").matches("/Madrid/Gardens"));
        assert!(p("/Madrid/#").matches("/Madrid"));
        assert!(p("/Madrid/#").matches("/Madrid/Gardens/North"));
        assert!(!p("/Madrid/#").matches("/Sevilla"));
        assert!(p("/Madrid/+").matches("/Madrid/Gardens"));
        assert!(!p("/Madrid/+").matches("/Madrid"));
        assert!(!p("/Madrid/+").matches("/Madrid/Gardens/North"));
        assert!(p("/+/Gardens").matches("/Madrid/Gardens"));
        assert!(p("/#").matches("/Anything/At/All"));
        assert!(ScopePattern::parse("Madrid").is_err());
        assert!(ScopePattern::parse("/Madrid//x").is_err());
        assert!(ScopePattern::parse("/#/x").is_err());
        let e = parse_scope("/Madrid/#;Gardens").unwrap_err();
        assert_eq!((e.input, e.span.clone()), ("scopeQ", 10..17));
        assert_eq!(
            e.to_string(),
            "scopeQ: 'Gardens' is not a scope pattern such as /Madrid/Gardens, /Madrid/+ or /Madrid/# at position 11"
        );
        let expr = parse_scope("/Madrid/#;/Madrid/Gardens,/Sevilla").unwrap();
        let has =
            |scopes: &[&str]| expr.eval(&|p: &ScopePattern| scopes.iter().any(|s| p.matches(s)));
        assert!(has(&["/Madrid/Gardens"]));
        assert!(has(&["/Sevilla"]));
        assert!(!has(&["/Madrid/Parks"]));
        // Printed as scopeQ, it reads back the same (a source gets it forwarded).
        assert_eq!(parse_scope(&expr.to_string()).unwrap(), expr);
    }

    #[test]
    fn type_and_id_pattern_errors_span_the_offending_part() {
        let ctx = ActiveContext::default();
        let e = parse_types("Building;(Sensor|Bad Type)", &ctx).unwrap_err();
        assert_eq!((e.input, e.span.clone()), ("type", 17..25));
        assert!(e.to_string().ends_with("at position 18"), "{e}");
        assert_eq!(parse_types("Building|", &ctx).unwrap_err().span, 9..9);
        let e = parse_id_pattern("urn:a.**").unwrap_err();
        assert_eq!((e.input, e.span), ("idPattern", 7..8));
        assert_eq!(parse_id_pattern("urn:(").unwrap_err().span, 0..5);
    }
}
