//! Query translation: an `EntityQuery` as a WHERE clause over the `entities` table that PostgreSQL
//! can answer with its indexes. Every part of the query is pushed down; each condition selects a
//! SUPERSET of the entities the query evaluator (`EntityQuery::matches`, the reference semantics)
//! accepts, and `exact` says whether the whole clause selects exactly them. When it does, paging and
//! counting happen in SQL; otherwise the evaluator decides on every returned row, so a translation
//! can only make a query faster, never change its answer.
//!
//! What is exact (see docs/postgres.md for the full account):
//! * entity ids and type expressions (`id = ANY`, `types @> ARRAY[..]`, GIN), `attrs` (`?|`, GIN);
//! * scopeQ: exact paths as `scopes && ARRAY[..]` (GIN), `#` as prefix tests, `+` as a regex on
//!   each scope;
//! * q: existence, non-existence, and `==`, `!=`, `<`, `<=`, `>`, `>=`, ranges and value lists on
//!   numbers, strings and booleans, for every attribute kind, sub-attribute and compound member
//!   path: a `jsonb_path_exists` over `body -> 'attrs'` (lax mode, type-guarded so that it mirrors
//!   the evaluator's "any instance, any element" rule exactly) behind a GIN `?` on the attribute.
//!
//! What is a superset (the evaluator decides): idPattern (regex dialects differ); geoQ (a lon/lat
//! box against the GiST-indexed `location` — for `near` one that includes the great-circle bulge
//! of the query's edges — refined with PostGIS predicates for point locations, where they agree
//! with the evaluator, and always every entity with several `location` instances); q terms on
//! dates and times, `~=`/`!~=`, createdAt/modifiedAt values, and numeric operands beyond ±2^53
//! (where the evaluator's f64 rounding of stored integers matters): those become "the target
//! element exists". A term that is not exact is never negated: under `!attr` it becomes `true`.

use crate::query::boolean::BoolExpr;
use crate::query::geo::{near_box, GeoQuery, GeoRel, LOCATION};
use crate::query::q::{Op, Path, QExpr, QValue};
use crate::query::{EntityQuery, ScopePattern};
use geo::{BoundingRect, Geometry, Validation};
use serde_json::{Map, Number, Value};
use tokio_postgres::types::{ToSql, Type};

/// A parameter value of a translated query, which knows the PostgreSQL type it is sent as: the
/// query is sent typed, parsed and planned with its values each time (see `PgStore::query`).
pub trait SqlParam: ToSql + Sync + Send + 'static {
    /// The type the value is sent as.
    const TYPE: Type;
}

impl SqlParam for String {
    const TYPE: Type = Type::TEXT;
}

impl SqlParam for Vec<String> {
    const TYPE: Type = Type::TEXT_ARRAY;
}

impl SqlParam for Value {
    const TYPE: Type = Type::JSONB;
}

impl SqlParam for f64 {
    const TYPE: Type = Type::FLOAT8;
}

/// A WHERE clause with its parameters.
pub struct Translation {
    /// Conditions joined with AND (`$n` placeholders numbered from 2; `$1` is the tenant).
    pub conditions: Vec<String>,
    /// Parameter values for `$2...`, with their types.
    pub params: Vec<(Box<dyn ToSql + Sync + Send>, Type)>,
    /// Whether the conditions select exactly the matching entities (then paging and counting can
    /// happen in SQL).
    pub exact: bool,
}

impl Translation {
    fn param<P: SqlParam>(&mut self, value: P) -> String {
        self.params.push((Box::new(value), P::TYPE));
        format!("${}", self.params.len() + 1)
    }

    /// A condition that cannot be translated: everything (a superset), and the result inexact.
    fn anything(&mut self) -> String {
        self.exact = false;
        "true".to_string()
    }
}

/// Translates the whole query.
pub fn translate(query: &EntityQuery) -> Translation {
    let mut t = Translation {
        conditions: Vec::new(),
        params: Vec::new(),
        exact: true,
    };
    if !query.selectors.is_empty() {
        let mut alternatives = Vec::new();
        for s in &query.selectors {
            let mut parts = Vec::new();
            if !s.ids.is_empty() {
                let p = t.param(s.ids.clone());
                parts.push(format!("id = ANY({p})"));
            } else if s.id_pattern.is_some() {
                // The regex dialects of Rust and PostgreSQL differ: the evaluator checks patterns.
                t.exact = false;
            }
            if let Some(types) = &s.types {
                parts.push(types_sql(&mut t, types));
            }
            alternatives.push(if parts.is_empty() {
                "true".to_string()
            } else {
                parts.join(" AND ")
            });
        }
        push(&mut t, format!("({})", alternatives.join(" OR ")));
    }
    if !query.attrs.is_empty() {
        let p = t.param(query.attrs.clone());
        t.conditions.push(format!("attr_names && {p}"));
    }
    if let Some(scope) = &query.scope {
        let c = scope_sql(&mut t, scope);
        push(&mut t, c);
    }
    if let Some(q) = &query.q {
        let (c, exact) = q_sql(&mut t, q);
        t.exact &= exact;
        push(&mut t, c);
    }
    if let Some(g) = &query.geo {
        let c = geo_sql(&mut t, g);
        t.exact = false;
        push(&mut t, c);
    }
    t
}

fn push(t: &mut Translation, condition: String) {
    if condition != "true" && condition != "(true)" {
        t.conditions.push(condition);
    }
}

/// Joins SQL conditions; `true` members vanish from an AND and absorb an OR.
fn join(items: Vec<String>, and: bool) -> String {
    if !and && items.iter().any(|i| i == "true") {
        return "true".into();
    }
    let items: Vec<String> = items.into_iter().filter(|i| i != "true").collect();
    match items.len() {
        0 => "true".into(),
        1 => items.into_iter().next().expect("one item"),
        _ => format!("({})", items.join(if and { " AND " } else { " OR " })),
    }
}

fn types_sql(t: &mut Translation, expr: &BoolExpr<String>) -> String {
    match expr {
        BoolExpr::Atom(ty) => {
            let p = t.param(vec![ty.clone()]);
            format!("types @> {p}")
        }
        BoolExpr::And(items) => format!(
            "({})",
            items
                .iter()
                .map(|i| types_sql(t, i))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        BoolExpr::Or(items) => format!(
            "({})",
            items
                .iter()
                .map(|i| types_sql(t, i))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
    }
}

// ---- scopeQ ----

/// The segments of a scope pattern (`/Madrid/+/#` gives `Madrid`, `+`, `#`). `ScopePattern` keeps
/// them private; its Debug form (`ScopePattern(["Madrid", "+", "#"])`) is read back and accepted
/// only if the path it spells parses to the same pattern, so a pattern this cannot read is not
/// pushed down (never mistranslated).
fn scope_segments(p: &ScopePattern) -> Option<Vec<String>> {
    let debug = format!("{p:?}");
    let inner = debug.strip_prefix("ScopePattern(")?.strip_suffix(')')?;
    let segments: Vec<String> = serde_json::from_str(inner).ok()?;
    let same = ScopePattern::parse(&format!("/{}", segments.join("/"))).ok()? == *p;
    (same && !segments.iter().any(|s| s.contains('\0'))).then_some(segments)
}

/// A pattern without `+` or `#`: the scope strings it matches exactly (the evaluator strips one
/// leading `/` before splitting, so `/a/b` and `a/b` both spell the path a/b).
fn exact_scope(p: &ScopePattern) -> Option<[String; 2]> {
    let segments = scope_segments(p)?;
    if segments.iter().any(|s| s == "+" || s == "#") {
        return None;
    }
    let path = segments.join("/");
    Some([format!("/{path}"), path])
}

fn scope_sql(t: &mut Translation, expr: &BoolExpr<ScopePattern>) -> String {
    match expr {
        BoolExpr::Atom(p) => scope_atom(t, p),
        BoolExpr::And(items) => {
            let parts = items.iter().map(|i| scope_sql(t, i)).collect();
            join(parts, true)
        }
        BoolExpr::Or(items) => {
            // The exact paths among the alternatives share one GIN lookup.
            let mut paths = Vec::new();
            let mut parts = Vec::new();
            for item in items {
                match item {
                    BoolExpr::Atom(p) if exact_scope(p).is_some() => {
                        paths.extend(exact_scope(p).into_iter().flatten());
                    }
                    other => parts.push(scope_sql(t, other)),
                }
            }
            if !paths.is_empty() {
                let p = t.param(paths);
                parts.insert(0, format!("scopes && {p}"));
            }
            join(parts, false)
        }
    }
}

fn scope_atom(t: &mut Translation, p: &ScopePattern) -> String {
    if let Some(paths) = exact_scope(p) {
        let p = t.param(paths.to_vec());
        return format!("scopes && {p}");
    }
    let Some(mut segments) = scope_segments(p) else {
        return t.anything();
    };
    let hash = segments.last().is_some_and(|s| s == "#");
    if hash {
        segments.pop();
    }
    if segments.is_empty() {
        // `/#`: every scope.
        return "cardinality(scopes) > 0".into();
    }
    if hash && !segments.iter().any(|s| s == "+") {
        // `/a/b/#`: the path a/b or anything below it.
        let path = segments.join("/");
        let exact = t.param(vec![format!("/{path}"), path.clone()]);
        let below = t.param(format!("/{path}/"));
        let below_bare = t.param(format!("{path}/"));
        return format!(
            "EXISTS (SELECT 1 FROM unnest(scopes) AS s(v) WHERE v = ANY({exact}) OR starts_with(v, {below}) OR starts_with(v, {below_bare}))"
        );
    }
    // `+` (any one segment, possibly empty): a regular expression on the scope without its
    // leading `/`.
    let mut re = String::from("^");
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            re.push('/');
        }
        if segment == "+" {
            re.push_str("[^/]*");
        } else {
            re.push_str(&are_literal(segment));
        }
    }
    if hash {
        re.push_str("(/.*)?");
    }
    re.push('$');
    let re = t.param(re);
    format!(
        "EXISTS (SELECT 1 FROM unnest(scopes) AS s(v) WHERE (CASE WHEN starts_with(v, '/') THEN substr(v, 2) ELSE v END) ~ {re})"
    )
}

/// Text matching itself in a PostgreSQL advanced regular expression: every ASCII character that
/// is not a letter or digit is escaped (`\` before a non-alphanumeric character means it literally).
fn are_literal(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---- q ----

/// The NGSI-LD core vocabulary, where the attribute members a path may end with live.
const CORE: &str = "https://uri.etsi.org/ngsi-ld/";

/// Operands with a larger magnitude are compared with a margin: the evaluator compares stored
/// integers as f64, which rounds beyond 2^53.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// A jsonpath predicate and whether it is exactly the evaluator's.
struct Cond {
    text: String,
    exact: bool,
}

fn cond(text: String, exact: bool) -> Cond {
    Cond { text, exact }
}

/// The variables (`$v0`, ...) of one jsonpath.
#[derive(Default)]
struct Vars(Map<String, Value>);

impl Vars {
    fn var(&mut self, value: Value) -> String {
        if let Some((name, _)) = self.0.iter().find(|(_, v)| **v == value) {
            return format!("${name}");
        }
        let name = format!("v{}", self.0.len());
        self.0.insert(name.clone(), value);
        format!("${name}")
    }
}

/// A jsonpath string literal (key names and like_regex patterns); None for text holding NUL,
/// which PostgreSQL text cannot carry.
fn jp_string(text: &str) -> Option<String> {
    if text.contains('\0') {
        return None;
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

fn q_sql(t: &mut Translation, expr: &QExpr) -> (String, bool) {
    match expr {
        QExpr::And(items) | QExpr::Or(items) => {
            let and = matches!(expr, QExpr::And(_));
            let mut parts = Vec::new();
            let mut exact = true;
            for item in items {
                let (c, e) = q_sql(t, item);
                exact &= e;
                parts.push(c);
            }
            (join(parts, and), exact)
        }
        QExpr::Exists(path) => term_sql(t, path, None),
        QExpr::NotExists(path) => match term_sql(t, path, None) {
            // Only an exact test may be negated: the negation of a superset is no superset.
            (c, true) => (format!("NOT {c}"), true),
            (_, false) => ("true".into(), false),
        },
        QExpr::Compare { path, op, value } => term_sql(t, path, Some((*op, value))),
    }
}

/// One q term: existence (`compare` None) or a comparison, as a test of the GIN-indexed attribute
/// names and a jsonpath over the attribute's instances in `body` (read in place: `body -> 'attrs'`
/// would copy the attributes for every row); existence of a whole attribute is the name test alone.
fn term_sql(t: &mut Translation, path: &Path, compare: Option<(Op, &QValue)>) -> (String, bool) {
    if path.link.is_some() {
        // Unresolved linked entity paths match nothing in the evaluator; select a superset.
        return ("true".into(), false);
    }
    let Some(mut jsonpath) = jp_string(&path.attr).map(|a| format!("lax $.attrs.{a}[*]")) else {
        return ("true".into(), false);
    };
    let mut vars = Vars::default();
    let mut member = None;
    for (i, name) in path.sub.iter().enumerate() {
        if let Some(m) = name
            .strip_prefix(CORE)
            .and_then(|m| member_field(m).map(|f| (m, f)))
        {
            if i + 1 != path.sub.len() || !path.compound.is_empty() {
                // A member of an attribute has nothing below it: no instance has this target.
                return ("false".into(), true);
            }
            member = Some(m);
            break;
        }
        let Some(name) = jp_string(name) else {
            return ("true".into(), false);
        };
        jsonpath.push_str(&format!(".sub.{name}"));
    }
    let predicate = match member {
        Some((member, field)) => member_predicate(member, field, compare, &mut vars),
        None => attribute_predicate(path, compare, &mut vars),
    };
    let Some(predicate) = predicate else {
        return ("true".into(), false);
    };
    if predicate.text == "false" {
        return ("false".into(), predicate.exact);
    }
    let key = t.param(path.attr.clone());
    if predicate.text == "true" && path.sub.is_empty() {
        return (format!("attr_names @> ARRAY[{key}::text]"), predicate.exact);
    }
    if predicate.text != "true" {
        jsonpath.push_str(&format!(" ? ({})", predicate.text));
    }
    let jsonpath = t.param(jsonpath);
    let vars = t.param(Value::Object(vars.0));
    (
        format!(
            "(attr_names @> ARRAY[{key}::text] AND coalesce(jsonb_path_exists(body, {jsonpath}::text::jsonpath, {vars}::jsonb, true), false))"
        ),
        predicate.exact,
    )
}

/// The body field of an attribute member that q may target (`observedAt`, ...).
fn member_field(member: &str) -> Option<&'static str> {
    Some(match member {
        "observedAt" => "observed_at",
        "unitCode" => "unit_code",
        "datasetId" => "dataset_id",
        "createdAt" => "created_at",
        "modifiedAt" => "modified_at",
        _ => return None,
    })
}

/// A term on a member (`temperature.observedAt`): its one value is that member's string. The
/// evaluator formats createdAt/modifiedAt itself, so only their existence (always) is exact.
fn member_predicate(
    member: &str,
    field: &str,
    compare: Option<(Op, &QValue)>,
    vars: &mut Vars,
) -> Option<Cond> {
    let exists = format!("exists(@.{field})");
    let Some((op, value)) = compare else {
        return Some(cond(exists, true));
    };
    let formatted_by_evaluator = matches!(member, "createdAt" | "modifiedAt");
    let test = if formatted_by_evaluator {
        None
    } else {
        value_test(op, value, vars, "@")
    };
    Some(match (op, test) {
        (_, None) => cond(exists, false),
        (Op::Ne, Some(eq)) if eq.exact => cond(
            format!("{exists} && !exists(@.{field} ? ({}))", eq.text),
            true,
        ),
        (Op::Ne, Some(_)) => cond(exists, false),
        (_, Some(c)) => cond(format!("exists(@.{field} ? ({}))", c.text), c.exact),
    })
}

/// The predicate on one attribute instance (or sub-attribute) `@`: it has the target element and,
/// for a comparison, the target values satisfy it (for `!=`: none equals).
///
/// It leans on what parsing guarantees of stored attributes (src/model/parse.rs): a
/// LanguageProperty's value is an object of language tags (never `@value`) to strings or arrays of
/// strings; VocabProperty and Relationship values are strings or arrays of strings; a
/// ListRelationship's value is an array of `{"object": URI}`; every instance has a value. Hence
/// numbers and booleans only ever match Property, GeoProperty, ListProperty and JsonProperty
/// values, and a target without compound members always exists.
///
/// SQL/JSON comparisons of different types are `unknown` (the filter drops the item), but lax mode
/// unwraps an array operand of a comparison and of a member accessor: the `type()` tests keep
/// nested arrays (`[[25]]`, `{"@value": [25]}`) from comparing, as they do not in the evaluator.
fn attribute_predicate(
    path: &Path,
    compare: Option<(Op, &QValue)>,
    vars: &mut Vars,
) -> Option<Cond> {
    // The target of every kind but LanguageProperty: the value, then the compound members, each
    // step an object.
    let mut target = "@.value".to_string();
    let mut guards = Vec::new();
    for member in &path.compound {
        guards.push(format!("{target}.type() == \"object\""));
        target.push('.');
        target.push_str(&jp_string(member)?);
    }
    let folded = (!guards.is_empty()).then(|| {
        guards.push(format!("exists({target})"));
        guards.join(" && ")
    });
    // A LanguageProperty's texts: in one language (ASCII case-insensitive), or any (no compound
    // member, or `*`); none for a longer compound path.
    let texts = match path.compound.as_slice() {
        [] => Some("@.value.*".to_string()),
        [tag] if tag == "*" => Some("@.value.*".to_string()),
        [tag] => Some(format!(
            "@.value.keyvalue() ? (@.key like_regex {}).value",
            jp_string(&tag_regex(tag))?
        )),
        _ => None,
    };
    let exists = match (&folded, path.compound.as_slice()) {
        (None, _) => "true".to_string(),
        (Some(f), [tag]) if tag == "*" => format!("@.kind == \"LanguageProperty\" || ({f})"),
        (Some(f), [_]) => format!(
            "(@.kind == \"LanguageProperty\" && exists({}[*])) || (@.kind != \"LanguageProperty\" && {f})",
            texts.as_deref().expect("one language")
        ),
        // Language texts are no objects: a longer path never reaches through them.
        (Some(f), _) => f.clone(),
    };
    let Some((op, value)) = compare else {
        return Some(cond(exists, true));
    };
    let eq_op = if op == Op::Ne { Op::Eq } else { op };
    let Some(plain) = value_test(eq_op, value, vars, "@") else {
        // Dates, times, regular expressions: the evaluator decides among the instances with a target.
        return Some(cond(exists, false));
    };
    let wrapped = value_test(eq_op, value, vars, "@.\"@value\"")
        .expect("translatable, as the plain test was");
    let strings = has_string(value);
    let equality = eq_op == Op::Eq;
    // Every kind but LanguageProperty, with JSON-LD value objects unwrapped; JsonProperty content
    // is data (an object with "@value" there does not compare) and Relationships are not ordered.
    let values = |test: &str| match &folded {
        None => format!("exists({target} ? ({test}))"),
        Some(f) => format!("{f} && exists({target} ? ({test}))"),
    };
    let mut generic = format!(
        "{} && (@.kind != \"JsonProperty\" || exists({target} ? ({})))",
        values(&format!(
            "({}) || (@.type() == \"object\" && ({}))",
            plain.text, wrapped.text
        )),
        plain.text
    );
    if folded.is_none() {
        // A scalar value (the common case) is decided by the plain test alone: the filters above
        // only matter for arrays and objects, and they cost several times more per row.
        let scalar =
            value_test(eq_op, value, vars, "@.value").expect("translatable, as the plain test was");
        generic = format!(
            "({}) || ((@.value.type() == \"object\" || @.value.type() == \"array\") && {generic})",
            scalar.text
        );
    }
    if strings && !equality {
        generic = format!("({generic}) && @.kind != \"Relationship\"");
    }
    let mut branches = vec![generic];
    if strings && folded.is_none() && equality {
        // A VocabProperty also holds a string operand expanded with the @context.
        if let Some(vocab) = vocab_test(value, vars)? {
            branches.push(format!(
                "@.kind == \"VocabProperty\" && exists(@.value ? ({vocab}))"
            ));
        }
        // A ListRelationship compares the object of each member.
        let object = value_test(eq_op, value, vars, "@.object")
            .expect("translatable, as the plain test was");
        branches.push(format!(
            "@.kind == \"ListRelationship\" && exists(@.value ? (@.type() == \"object\" && ({})))",
            object.text
        ));
    }
    if let (true, Some(texts)) = (strings, &texts) {
        branches.push(format!(
            "@.kind == \"LanguageProperty\" && exists({texts} ? ({}))",
            plain.text
        ));
    }
    // Parenthesised as a whole: it is negated for `!=`.
    let positive = format!("(({}))", branches.join(") || ("));
    let exact = plain.exact && wrapped.exact;
    Some(match op {
        Op::Ne if exact && exists == "true" => cond(format!("!{positive}"), true),
        Op::Ne if exact => cond(format!("({exists}) && !{positive}"), true),
        Op::Ne => cond(exists, false),
        _ => cond(positive, exact),
    })
}

/// Whether the operand is or holds a string (which attributes of every kind may hold).
fn has_string(value: &QValue) -> bool {
    match value {
        QValue::Str(_) => true,
        QValue::Range(lo, _) => has_string(lo),
        QValue::List(items) => items.iter().any(has_string),
        _ => false,
    }
}

/// The test of a VocabProperty value `@` against the expanded forms of the string operands that
/// differ from their text (the text itself is tested as for every kind): Some(None) when there is
/// none, None when one cannot be pushed down (it holds NUL).
fn vocab_test(value: &QValue, vars: &mut Vars) -> Option<Option<String>> {
    let items: Vec<&QValue> = match value {
        QValue::List(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut tests = Vec::new();
    for item in items {
        if let QValue::Str(s) = item {
            if s.vocab != s.text {
                tests.push(format!("@ == {}", vars.var(string(&s.vocab)?)));
            }
        }
    }
    Some((!tests.is_empty()).then(|| format!("@.type() == \"string\" && ({})", tests.join(" || "))))
}

/// A regular expression matching a language tag compared ASCII case-insensitively, as the evaluator
/// does (`en` gives `^[eE][nN]$`), without PostgreSQL's Unicode case folding.
fn tag_regex(tag: &str) -> String {
    let mut re = String::from("^");
    for c in tag.chars() {
        if c.is_ascii_alphabetic() {
            re.push_str(&format!(
                "[{}{}]",
                c.to_ascii_lowercase(),
                c.to_ascii_uppercase()
            ));
        } else {
            re.push_str(&are_literal(&c.to_string()));
        }
    }
    re.push('$');
    re
}

/// The test of one target value `x` against a comparison (for `!=`, the `==` test, negated by
/// the caller); None when it cannot be pushed down (dates and times, regular expressions, NUL).
fn value_test(op: Op, value: &QValue, vars: &mut Vars, x: &str) -> Option<Cond> {
    match op {
        Op::Eq | Op::Ne => equality(value, vars, x),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => ordering(op, value, vars, x),
        Op::Match | Op::NotMatch => None,
    }
}

fn number(n: f64) -> Option<Value> {
    Number::from_f64(n).map(Value::Number)
}

/// The margin by which a numeric operand is widened so that the SQL is a superset of the
/// evaluator's f64 comparison of stored integers (0 where that comparison is exact).
fn margin(n: f64) -> f64 {
    if n.abs() < EXACT_INTEGERS {
        0.0
    } else {
        n.abs() / 1e12 + 4096.0
    }
}

fn string(text: &str) -> Option<Value> {
    (!text.contains('\0')).then(|| Value::String(text.to_string()))
}

fn equality(value: &QValue, vars: &mut Vars, x: &str) -> Option<Cond> {
    Some(match value {
        QValue::Number(n) if margin(*n) == 0.0 => cond(
            format!(
                "{x}.type() == \"number\" && {x} == {}",
                vars.var(number(*n)?)
            ),
            true,
        ),
        QValue::Number(n) => cond(
            format!(
                "{x}.type() == \"number\" && {x} >= {} && {x} <= {}",
                vars.var(number(n - margin(*n))?),
                vars.var(number(n + margin(*n))?)
            ),
            false,
        ),
        QValue::Bool(b) => cond(
            format!(
                "{x}.type() == \"boolean\" && {x} == {}",
                vars.var(Value::Bool(*b))
            ),
            true,
        ),
        QValue::Str(s) => cond(
            format!(
                "{x}.type() == \"string\" && {x} == {}",
                vars.var(string(&s.text)?)
            ),
            true,
        ),
        QValue::Range(lo, hi) => {
            let lo = ordering(Op::Ge, lo, vars, x)?;
            let hi = ordering(Op::Le, hi, vars, x)?;
            cond(format!("{} && {}", lo.text, hi.text), lo.exact && hi.exact)
        }
        QValue::List(items) if items.is_empty() => cond("1 == 0".into(), true),
        QValue::List(items) => {
            let mut tests = Vec::new();
            let mut exact = true;
            for item in items {
                let c = equality(item, vars, x)?;
                exact &= c.exact;
                tests.push(format!("({})", c.text));
            }
            cond(tests.join(" || "), exact)
        }
        QValue::DateTime(_) | QValue::Date(_) | QValue::Time(_) | QValue::Regex(_) => return None,
    })
}

fn ordering(op: Op, value: &QValue, vars: &mut Vars, x: &str) -> Option<Cond> {
    let symbol = match op {
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        _ => return None,
    };
    Some(match value {
        QValue::Number(n) if margin(*n) == 0.0 => cond(
            format!(
                "{x}.type() == \"number\" && {x} {symbol} {}",
                vars.var(number(*n)?)
            ),
            true,
        ),
        QValue::Number(n) => {
            // Widened: x > n as f64 implies x >= n - margin exactly.
            let (symbol, bound) = match op {
                Op::Gt | Op::Ge => (">=", n - margin(*n)),
                _ => ("<=", n + margin(*n)),
            };
            cond(
                format!(
                    "{x}.type() == \"number\" && {x} {symbol} {}",
                    vars.var(number(bound)?)
                ),
                false,
            )
        }
        QValue::Str(s) => cond(
            format!(
                "{x}.type() == \"string\" && {x} {symbol} {}",
                vars.var(string(&s.text)?)
            ),
            true,
        ),
        _ => return None,
    })
}

// ---- geoQ ----

/// The geo-query on `location` as a superset: a GiST-indexed bounding-box test (the query's
/// envelope for the DE-9IM relations, which the evaluator decides in the lon/lat plane;
/// [`near_box`] for `near`), refined with the PostGIS predicate for point locations (where PostGIS
/// and the evaluator agree, on a valid query geometry), always OR-ing the entities with several
/// `location` instances (their column is NULL; the evaluator looks at every instance). Another
/// geoproperty: the entities that have it.
fn geo_sql(t: &mut Translation, g: &GeoQuery) -> String {
    if g.geoproperty != LOCATION {
        if g.geoproperty.contains('\0') {
            return t.anything();
        }
        let p = t.param(g.geoproperty.clone());
        return format!("attr_names @> ARRAY[{p}::text]");
    }
    let bbox = match g.rel {
        GeoRel::Near { max_distance, .. } => max_distance.and_then(|m| near_box(&g.geometry, m)),
        GeoRel::Disjoint => None,
        _ => g
            .geometry
            .bounding_rect()
            .map(|r| [r.min().x, r.min().y, r.max().x, r.max().y]),
    };
    let envelope = bbox.map(|b| {
        format!(
            "ST_MakeEnvelope({}, {}, {}, {}, 4326)",
            t.param(b[0]),
            t.param(b[1]),
            t.param(b[2]),
            t.param(b[3])
        )
    });
    // PostGIS predicates only on a valid query geometry (GEOS may fail or differ on invalid ones).
    let valid = g.geometry.is_valid();
    // The query geometry, as a parameter only where used (an unused one has no type).
    let mut query_param = None;
    let mut query = |t: &mut Translation| {
        let p = query_param.get_or_insert_with(|| t.param(g.geojson.to_string()));
        format!("ST_SetSRID(ST_GeomFromGeoJSON({p}::text), 4326)")
    };
    let on_points = |test: String| {
        format!("(CASE WHEN GeometryType(location) = 'POINT' THEN {test} ELSE true END)")
    };
    let mut parts = vec!["location IS NOT NULL".to_string()];
    match g.rel {
        GeoRel::Near {
            max_distance,
            min_distance,
        } => {
            if let Some(e) = &envelope {
                parts.push(format!("location && {e}"));
            }
            // Point to point, PostGIS's sphere (radius 6371008.77 m) and the evaluator's haversine
            // (6371008.8 m) agree far within the margin of 0.1 % + 1 m.
            let point = matches!(g.geometry, Geometry::Point(_));
            let geography =
                "ST_X(location) BETWEEN -180 AND 180 AND ST_Y(location) BETWEEN -90 AND 90";
            if let (Some(max), true) = (max_distance, point) {
                let m = t.param(max * 1.001 + 1.0);
                let query = query(t);
                parts.push(format!(
                    "(CASE WHEN GeometryType(location) = 'POINT' AND {geography} THEN ST_DWithin(location::geography, {query}::geography, {m}, false) ELSE true END)"
                ));
            }
            if let (Some(min), true) = (min_distance, point) {
                let reduced = min * 0.999 - 1.0;
                if reduced > 0.0 {
                    let m = t.param(reduced);
                    let query = query(t);
                    parts.push(format!(
                        "(CASE WHEN GeometryType(location) = 'POINT' AND {geography} THEN NOT ST_DWithin(location::geography, {query}::geography, {m}, false) ELSE true END)"
                    ));
                }
            }
        }
        rel => {
            let (bbox_op, predicate) = match rel {
                GeoRel::Within => (Some("@"), "ST_Within"),
                GeoRel::Contains => (Some("~"), "ST_Contains"),
                GeoRel::Intersects => (Some("&&"), "ST_Intersects"),
                GeoRel::Overlaps => (Some("&&"), "ST_Overlaps"),
                GeoRel::Equals => (Some("~="), "ST_Equals"),
                GeoRel::Disjoint => (None, "ST_Disjoint"),
                GeoRel::Near { .. } => unreachable!("near is handled above"),
            };
            if let (Some(op), Some(e)) = (bbox_op, &envelope) {
                parts.push(format!("location {op} {e}"));
            }
            if valid {
                let query = query(t);
                parts.push(on_points(format!("{predicate}(location, {query})")));
            }
        }
    }
    format!(
        "(({}) OR (location IS NULL AND location_multi))",
        parts.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ld::ActiveContext;
    use crate::query::geo::arc_latitudes;
    use crate::query::{parse_scope, q};
    use geo::Coord;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn ctx() -> ActiveContext {
        let c = json!({"@vocab": "https://example.org/", "Male": "https://example.org/vocab/Male"});
        ActiveContext::build(&[&c], &HashMap::<String, Arc<Value>>::new()).unwrap()
    }

    fn with_q(text: &str) -> Translation {
        translate(&EntityQuery {
            q: Some(q::parse(text, &ctx()).unwrap()),
            ..EntityQuery::default()
        })
    }

    #[test]
    fn arcs_bulge_poleward() {
        let c = |x: f64, y: f64| Coord { x, y };
        // Two points at 45°N, 10° of longitude apart: the arc peaks at atan(tan 45° / cos 5°).
        let (lo, hi) = arc_latitudes(c(0.0, 45.0), c(10.0, 45.0));
        let peak = (1.0f64 / 5f64.to_radians().cos()).atan().to_degrees();
        assert!(
            (hi - peak).abs() < 1e-6 && (lo - 45.0).abs() < 1e-6,
            "{lo} {hi} {peak}"
        );
        let (lo, hi) = arc_latitudes(c(0.0, -45.0), c(10.0, -45.0));
        assert!((lo + peak).abs() < 1e-6 && (hi + 45.0).abs() < 1e-6);
        // A meridian does not bulge; the query box of a polygon includes its edges' bulge.
        let (lo, hi) = arc_latitudes(c(3.0, 10.0), c(3.0, 20.0));
        assert!((lo - 10.0).abs() < 1e-6 && (hi - 20.0).abs() < 1e-6);
        let square = geo::Geometry::Polygon(geo::Polygon::new(
            geo::LineString::from(vec![
                (0.0, 40.0),
                (10.0, 40.0),
                (10.0, 45.0),
                (0.0, 45.0),
                (0.0, 40.0),
            ]),
            vec![],
        ));
        let b = near_box(&square, 1.0).unwrap();
        assert!(
            b[3] > peak - 1e-6 && b[1] < 40.0 && b[0] < 0.0 && b[2] > 10.0,
            "{b:?}"
        );
    }

    #[test]
    fn scope_segments_read_back() {
        for text in [
            "/Madrid",
            "/Madrid/+/Parks",
            "/a b/\"q\"/#",
            "/#",
            "/é/ü\\x",
        ] {
            let p = ScopePattern::parse(text).unwrap();
            let segments = scope_segments(&p).unwrap();
            assert_eq!(format!("/{}", segments.join("/")), text);
        }
    }

    #[test]
    fn scope_translation_is_exact_and_indexed_for_paths() {
        let t = translate(&EntityQuery {
            scope: Some(parse_scope("/Madrid/Gardens,/Sevilla|/x/+/#").unwrap()),
            ..EntityQuery::default()
        });
        assert!(t.exact);
        assert_eq!(t.conditions.len(), 1);
        assert!(
            t.conditions[0].starts_with("(scopes && $3 OR EXISTS"),
            "{}",
            t.conditions[0]
        );
        assert_eq!(are_literal("a.b-c/é"), "a\\.b\\-c\\/é");
    }

    #[test]
    fn q_pushdown_exactness() {
        for (text, exact) in [
            ("temperature>20;status==\"ok\"", true),
            ("temperature==20..30|flag==true", true),
            ("!temperature", true),
            ("temperature!=1,2,3", true),
            ("name[en]==\"x\"", true),
            ("temperature.observedAt==\"2020\"", true),
            ("temperature.observedAt>=2020-01-01T00:00:00Z", false),
            ("!temperature.createdAt", true),
            ("temperature.createdAt==\"x\"", false),
            ("status~=\"^o\"", false),
            ("temperature>9007199254740993", false),
            ("gender==Male", true),
        ] {
            let t = with_q(text);
            assert_eq!(t.exact, exact, "{text}");
            assert_eq!(t.conditions.len(), 1, "{text}: {:?}", t.conditions);
        }
        // A term whose inner test is a superset is not negated.
        let t = with_q("!a.observedAt.unitCode");
        assert!(t.exact, "no target at all: NOT false");
        assert_eq!(
            jp_string("a\"b\\c\n"),
            Some("\"a\\\"b\\\\c\\u000a\"".into())
        );
        assert_eq!(tag_regex("en-GB"), "^[eE][nN]\\-[gG][bB]$");
    }
}
