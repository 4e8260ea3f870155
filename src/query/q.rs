//! The q query language (GS CIM 009 V1.9.1 clause 4.9): a parser from the q string to an AST whose
//! names are expanded IRIs, an evaluator of that AST over one expanded entity, and a printer back to
//! a canonical q string. The evaluator defines what q means in twinlink: the embedded store and
//! subscription matching call it, and other stores' translations are checked against it.
//!
//! Beyond the ABNF of 4.9 the parser accepts whitespace between tokens, nested parentheses (example 6
//! of 4.9 nests them), `!attr` for non-existence, names written as compact or full IRIs (a name in
//! `<…>` is an IRI taken as is, for IRIs holding characters the grammar reserves), unquoted words
//! after `==`/`!=` and in value lists (example 12: `gender==Male`), and a regular expression in
//! double quotes (so that it may hold `;`, `|` or an unbalanced `)`). Linked-entity paths
//! (`sensor{humidity}`, clause 4.5.23) are refused: they need other entities than the one evaluated.

use crate::ld::active::ActiveContext;
use crate::model::{format_time, AttrKind, Attribute, Entity};
use crate::syntax::{ParseError, ParseResult};
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;

/// A parsed q expression; every attribute name in it is an expanded IRI.
#[derive(Debug, Clone, PartialEq)]
pub enum QExpr {
    /// Every member holds (`;`).
    And(Vec<QExpr>),
    /// At least one member holds (`|`).
    Or(Vec<QExpr>),
    /// The entity has the target element (`attr`).
    Exists(Path),
    /// The entity does not have the target element (`!attr`).
    NotExists(Path),
    /// Some instance of the attribute has a target value that compares as asked (`attr>=20`).
    Compare {
        /// The target element.
        path: Path,
        /// The comparison.
        op: Op,
        /// What the target value is compared with.
        value: QValue,
    },
}

/// The attribute path of a query term: which element of an entity the term looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The attribute, as an IRI.
    pub attr: String,
    /// The sub-attributes walked from it, as IRIs, outermost first. The last may instead be the
    /// NGSI-LD core IRI of observedAt, unitCode, datasetId, createdAt or modifiedAt, which targets
    /// that member of the attribute.
    pub sub: Vec<String>,
    /// Member names inside the target's compound value (`[a.b]`); for a LanguageProperty, one
    /// language tag or `*` (any language).
    pub compound: Vec<String>,
    /// A linked entity path (`managedBy{Building:name}`, 4.9): the attribute is a Relationship and
    /// the term applies to the entities it points to. The evaluator matches no such term: the
    /// query service resolves them into the target ids first.
    pub link: Option<Box<Link>>,
}

/// The part of a linked entity path inside `{…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The entity type hint (`Building:`), expanded: only targets of that type count.
    pub hint: Option<String>,
    /// The path within the target entity.
    pub path: Path,
}

/// The operators of 4.9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`: equal to the value, to any of a list, or within a range.
    Eq,
    /// `!=`: the negation of `==`, on an existing target element.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `~=`: a string target value matches the regular expression.
    Match,
    /// `!~=`: string target values exist and none matches the regular expression.
    NotMatch,
}

/// What a query term compares the target value with.
#[derive(Debug, Clone, PartialEq)]
pub enum QValue {
    /// A JSON number.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A quoted string, or an unquoted URI or term.
    Str(Text),
    /// A DateTime, as an instant (written with any offset, compared in UTC).
    DateTime(DateTime<Utc>),
    /// A Date.
    Date(NaiveDate),
    /// A Time.
    Time(NaiveTime),
    /// `lo..hi`, both included; the bounds are of one comparable kind.
    Range(Box<QValue>, Box<QValue>),
    /// `a,b,c`: equal to any of them.
    List(Vec<QValue>),
    /// The regular expression of `~=` and `!~=`.
    Regex(Pattern),
}

/// A string operand, as written and expanded as a vocabulary term: a VocabProperty holds expanded
/// IRIs, and 4.9 has the target value "expanded according to the @context" (`gender==Male`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The string as written.
    pub text: String,
    /// The string expanded with the request's @context.
    pub vocab: String,
}

/// A regular expression compiled once at parse time; two patterns are equal when written alike.
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// The expression as written, for stores that translate it to their own regex dialect.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Op {
    /// The operator as written in q.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Match => "~=",
            Op::NotMatch => "!~=",
        }
    }

    /// Whether an ordering of target value to operand satisfies this (ordering) operator.
    fn admits(self, order: Ordering) -> bool {
        match self {
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::Eq | Op::Ne | Op::Match | Op::NotMatch => false,
        }
    }
}

/// Where the NGSI-LD core vocabulary puts the attribute members a path may end with.
const CORE: &str = "https://uri.etsi.org/ngsi-ld/";
/// The attribute members a path may end with, by the name q writes them with.
const MEMBERS: [&str; 5] = [
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
];
/// Operators, longest first where one is a prefix of another.
const OPERATORS: [Op; 8] = [
    Op::Eq,
    Op::NotMatch,
    Op::Ne,
    Op::Match,
    Op::Ge,
    Op::Gt,
    Op::Le,
    Op::Lt,
];
/// How deep parentheses may nest, so that a hostile q cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Parses a q string (4.9), expanding attribute names and string operands with `ctx`. Errors
/// carry the span of the offending token.
pub fn parse(q: &str, ctx: &ActiveContext) -> ParseResult<QExpr> {
    let mut p = Parser {
        src: q,
        pos: 0,
        depth: 0,
        ctx,
    };
    p.skip_ws();
    if p.peek().is_none() {
        return Err(ParseError::whole("q", q, "the query is empty"));
    }
    let expr = p.disjunction()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(expr),
        Some(_) => Err(p.unexpected("';', '|' or the end of the query")),
    }
}

/// Parses a lone attribute path (as in orderBy, 4.23): names expanded with `ctx`, sub-attributes
/// and members after dots, a compound subitem in brackets.
pub fn parse_path(text: &str, ctx: &ActiveContext) -> ParseResult<Path> {
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
        ctx,
    };
    let path = p.path()?;
    match p.peek() {
        None => Ok(path),
        Some(_) => Err(p.unexpected("the end of the path")),
    }
}

/// A recursive-descent parser over the q string; `pos` is a byte offset.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    ctx: &'a ActiveContext,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token);
        if found {
            self.pos += token.len();
        }
        found
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes characters up to the first for which `stop` (given it and the text from it) holds.
    fn take(&mut self, mut stop: impl FnMut(char, &str) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| stop(c, &rest[i..]))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += len;
        &rest[..len]
    }

    /// An error about the bytes `span` of the query.
    fn error(&self, span: Range<usize>, what: impl fmt::Display) -> ParseError {
        ParseError::at("q", self.src, span, what.to_string())
    }

    /// An error about the text from `at` to the current position.
    fn error_since(&self, at: usize, what: impl fmt::Display) -> ParseError {
        self.error(at..self.pos, what)
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        ParseError::unexpected("q", self.src, self.pos, expected)
    }

    /// `a|b|…`, where `;` binds tighter.
    fn disjunction(&mut self) -> ParseResult<QExpr> {
        self.sequence('|', Self::conjunction, QExpr::Or)
    }

    /// `a;b;…`.
    fn conjunction(&mut self) -> ParseResult<QExpr> {
        self.sequence(';', Self::primary, QExpr::And)
    }

    fn sequence(
        &mut self,
        separator: char,
        item: fn(&mut Self) -> ParseResult<QExpr>,
        group: fn(Vec<QExpr>) -> QExpr,
    ) -> ParseResult<QExpr> {
        let mut items = vec![item(self)?];
        loop {
            self.skip_ws();
            if self.peek() != Some(separator) {
                break;
            }
            self.pos += 1;
            items.push(item(self)?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            group(items)
        })
    }

    /// A query term or a parenthesised expression.
    fn primary(&mut self) -> ParseResult<QExpr> {
        self.skip_ws();
        let open = self.pos;
        if !self.eat("(") {
            return self.term();
        }
        if self.depth == MAX_DEPTH {
            return Err(self.error(
                open..open + 1,
                format_args!("parentheses nest deeper than {MAX_DEPTH}"),
            ));
        }
        self.depth += 1;
        let inner = self.disjunction()?;
        self.depth -= 1;
        self.skip_ws();
        if self.eat(")") {
            Ok(inner)
        } else if self.peek().is_none() {
            Err(self.error(open..open + 1, "unclosed '('"))
        } else {
            Err(self.unexpected("';', '|' or ')'"))
        }
    }

    fn term(&mut self) -> ParseResult<QExpr> {
        let negated = self.eat("!");
        let path = self.path()?;
        self.skip_ws();
        let at = self.pos;
        let Some(op) = OPERATORS.into_iter().find(|op| self.eat(op.symbol())) else {
            return Ok(if negated {
                QExpr::NotExists(path)
            } else {
                QExpr::Exists(path)
            });
        };
        if negated {
            return Err(self.error_since(
                at,
                format_args!("'{op}' cannot follow a non-existence test ('!')"),
            ));
        }
        self.skip_ws();
        let value = match op {
            Op::Eq | Op::Ne => self.equality_operand()?,
            Op::Match | Op::NotMatch => self.regex()?,
            Op::Gt | Op::Ge | Op::Lt | Op::Le => self.ordered_operand(op)?,
        };
        Ok(QExpr::Compare { path, op, value })
    }

    fn path(&mut self) -> ParseResult<Path> {
        let mut names = self.names()?;
        let attr = names.remove(0);
        let compound = if self.peek() == Some('[') {
            self.compound()?
        } else {
            Vec::new()
        };
        let link = if compound.is_empty() && self.peek() == Some('{') {
            Some(Box::new(self.link()?))
        } else {
            None
        };
        Ok(Path {
            attr,
            sub: names,
            compound,
            link,
        })
    }

    /// `{[Type:]path}` after a Relationship name.
    fn link(&mut self) -> ParseResult<Link> {
        let open = self.pos;
        self.pos += 1;
        if self.depth == MAX_DEPTH {
            return Err(self.error(
                open..open + 1,
                format_args!("linked entity paths nest deeper than {MAX_DEPTH}"),
            ));
        }
        let rest = self.rest();
        let hint_len = rest
            .find(|c: char| !is_name_char(c) || c == ':')
            .filter(|&i| i > 0 && rest[i..].starts_with(':') && !rest[i..].starts_with("://"));
        let hint = hint_len.map(|i| {
            let name = &rest[..i];
            self.pos += i + 1;
            self.ctx.expand(name).into_owned()
        });
        self.depth += 1;
        let path = self.path()?;
        self.depth -= 1;
        if !self.eat("}") {
            return Err(self.error(open..open + 1, "unclosed '{'"));
        }
        Ok(Link { hint, path })
    }

    /// A dot-separated list of one or more names, each bare (expanded with the context) or in `<…>`
    /// (taken as is).
    fn names(&mut self) -> ParseResult<Vec<String>> {
        let mut names = Vec::new();
        loop {
            let name = if self.peek() == Some('<') {
                self.bracketed()?
            } else {
                let bare = self
                    .take(|c, rest| !(is_name_char(c) || (c == '.' && slash_follows(&rest[1..]))));
                if bare.is_empty() {
                    return Err(self.unexpected("an attribute name"));
                }
                self.expand_name(bare, names.is_empty())
            };
            names.push(name);
            if !self.eat(".") {
                return Ok(names);
            }
        }
    }

    fn bracketed(&mut self) -> ParseResult<String> {
        let open = self.pos;
        self.pos += 1;
        let iri = self.take(|c, _| c == '>');
        if iri.is_empty() || !self.eat(">") {
            return Err(self.error_since(open, "unclosed or empty '<…>'"));
        }
        Ok(iri.to_string())
    }

    /// A sub-attribute written as observedAt, unitCode, … names that member; anything else expands.
    fn expand_name(&self, bare: &str, first: bool) -> String {
        if MEMBERS.contains(&bare) && !first {
            format!("{CORE}{bare}")
        } else {
            self.ctx.expand(bare).into_owned()
        }
    }

    /// `[a.b]`: member names, taken as written (compound values are not expanded).
    fn compound(&mut self) -> ParseResult<Vec<String>> {
        let open = self.pos;
        self.pos += 1;
        let inner = self.take(|c, _| c == ']');
        if !self.eat("]") {
            return Err(self.error(open..open + 1, "unclosed '['"));
        }
        if inner.split('.').any(str::is_empty) {
            return Err(self.error_since(open, format_args!("empty member name in '[{inner}]'")));
        }
        Ok(inner.split('.').map(str::to_string).collect())
    }

    /// After `==` or `!=`: a value, a range `lo..hi` or a list `a,b,c`.
    fn equality_operand(&mut self) -> ParseResult<QValue> {
        let at = self.pos;
        let (first, first_word) = self.scalar()?;
        self.skip_ws();
        if self.eat("..") {
            self.skip_ws();
            let (last, last_word) = self.scalar()?;
            let same_kind = std::mem::discriminant(&first) == std::mem::discriminant(&last);
            if first_word || last_word || !same_kind || !comparable(&first) {
                return Err(self.error_since(
                    at,
                    format_args!(
                        "the range '{}' needs two numbers, quoted strings, dates or times of one kind",
                        &self.src[at..self.pos]
                    ),
                ));
            }
            return Ok(QValue::Range(Box::new(first), Box::new(last)));
        }
        if self.peek() != Some(',') {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(",") {
            self.skip_ws();
            items.push(self.scalar()?.0);
            self.skip_ws();
        }
        Ok(QValue::List(items))
    }

    /// After `>`, `>=`, `<` or `<=`: one number, quoted string, date or time.
    fn ordered_operand(&mut self, op: Op) -> ParseResult<QValue> {
        let at = self.pos;
        let (value, word) = self.scalar()?;
        if word || !comparable(&value) {
            return Err(self.error_since(
                at,
                format_args!(
                    "'{op}' compares with a number, a quoted string, a date or a time, not '{}'",
                    &self.src[at..self.pos]
                ),
            ));
        }
        Ok(value)
    }

    /// One value; the flag tells an unquoted word (a URI or term) from the rest.
    fn scalar(&mut self) -> ParseResult<(QValue, bool)> {
        let at = self.pos;
        if self.peek() == Some('"') {
            let text = self.quoted()?;
            return Ok((QValue::Str(self.text(text)), false));
        }
        let word = self.take(|c, rest| {
            c.is_whitespace() || matches!(c, ';' | '|' | ')' | ',' | '"') || rest.starts_with("..")
        });
        match word.chars().next() {
            None => Err(self.unexpected("a value")),
            Some(_) if word == "true" || word == "false" => {
                Ok((QValue::Bool(word == "true"), false))
            }
            Some(c) if c.is_alphabetic() => Ok((QValue::Str(self.text(word.to_string())), true)),
            Some(_) => literal(word).map(|v| (v, false)).ok_or_else(|| {
                self.error_since(
                    at,
                    format_args!("'{word}' is not a number, date, time or quoted string"),
                )
            }),
        }
    }

    fn text(&self, text: String) -> Text {
        Text {
            vocab: self.ctx.expand(&text).into_owned(),
            text,
        }
    }

    /// A JSON string (RFC 8259 escapes).
    fn quoted(&mut self) -> ParseResult<String> {
        let open = self.pos;
        let mut escaped = false;
        let end = self.rest()[1..].char_indices().find(|&(_, c)| {
            let closing = !escaped && c == '"';
            escaped = !escaped && c == '\\';
            closing
        });
        let Some((end, _)) = end else {
            return Err(self.error(open..self.src.len(), "unterminated string"));
        };
        let literal = &self.src[open..open + end + 2];
        self.pos = open + literal.len();
        serde_json::from_str(literal)
            .map_err(|e| self.error_since(open, format_args!("invalid string {literal} ({e})")))
    }

    /// After `~=` or `!~=`: a quoted string, or the text up to a `;`, `|` or `)` outside the
    /// expression's own groups and classes.
    fn regex(&mut self) -> ParseResult<QValue> {
        let at = self.pos;
        let source = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            let (mut depth, mut class, mut escaped) = (0usize, false, false);
            let raw = self.take(|c, _| {
                let stop = !escaped && !class && depth == 0 && matches!(c, ';' | '|' | ')');
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '[' => class = true,
                    ']' => class = false,
                    '(' if !class => depth += 1,
                    ')' if !class => depth = depth.saturating_sub(1),
                    _ => {}
                }
                stop
            });
            let trimmed = raw.trim_end();
            self.pos -= raw.len() - trimmed.len();
            if trimmed.is_empty() {
                return Err(self.unexpected("a regular expression"));
            }
            trimmed.to_string()
        };
        Regex::new(&source)
            .map(|r| QValue::Regex(Pattern(r)))
            .map_err(|e| {
                let reason = e
                    .to_string()
                    .lines()
                    .next_back()
                    .unwrap_or_default()
                    .to_string();
                self.error_since(
                    at,
                    format_args!("invalid regular expression {source:?} ({reason})"),
                )
            })
    }
}

/// Characters of a bare name, besides `.`: what the grammar does not reserve.
fn is_name_char(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || "=!<>~;|()[]{},\".".contains(c))
}

/// Whether a `/` comes before the end of the bare name run starting at `rest`: a `.` followed by one
/// is inside an IRI (`https://example.org/ns/temp`), a `.` after the run's last `/` separates names.
fn slash_follows(rest: &str) -> bool {
    rest.chars()
        .take_while(|&c| is_name_char(c) || c == '.')
        .any(|c| c == '/')
}

fn comparable(v: &QValue) -> bool {
    matches!(
        v,
        QValue::Number(_)
            | QValue::Str(_)
            | QValue::DateTime(_)
            | QValue::Date(_)
            | QValue::Time(_)
    )
}

/// An unquoted literal other than a word: a number, DateTime, Date or Time.
fn literal(word: &str) -> Option<QValue> {
    if is_json_number(word) {
        return word
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .map(QValue::Number);
    }
    parse_date_time(word)
        .map(QValue::DateTime)
        .or_else(|| parse_date(word).map(QValue::Date))
        .or_else(|| parse_time(word).map(QValue::Time))
}

/// The `number` production of RFC 8259.
fn is_json_number(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s).as_bytes();
    let digits = |from: usize| {
        from + b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut end = digits(0);
    if end == 0 || (b[0] == b'0' && end > 1) {
        return false;
    }
    if b.get(end) == Some(&b'.') {
        let frac = digits(end + 1);
        if frac == end + 1 {
            return false;
        }
        end = frac;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let sign = end + 1 + usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
        end = digits(sign);
        if end == sign {
            return false;
        }
    }
    end == b.len()
}

/// Whether `s` has the shape of `pattern`, where `d` stands for an ASCII digit.
fn shaped(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| {
            if p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

/// A Date, `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    if !shaped(s, "dddd-dd-dd") {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A DateTime, `YYYY-MM-DDThh:mm:ss[.s…]` with `Z` or an offset.
fn parse_date_time(s: &str) -> Option<DateTime<Utc>> {
    if !shaped(s.get(..11)?, "dddd-dd-ddT") {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A Time, `hh:mm:ss[.s…][Z]`.
fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    if !shaped(s.get(..8)?, "dd:dd:dd") {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f").ok()
}

impl QExpr {
    /// Applies `expandValues` (6.4.3.2): string operands of terms on these attributes (IRIs)
    /// compare only in their expanded form, every other string operand only as written.
    pub fn expand_values(&mut self, attrs: &[String]) {
        fn fix(value: &mut QValue, expand: bool) {
            match value {
                QValue::Str(t) if expand => t.text = t.vocab.clone(),
                QValue::Str(t) => t.vocab = t.text.clone(),
                QValue::List(items) => items.iter_mut().for_each(|i| fix(i, expand)),
                QValue::Range(lo, hi) => {
                    fix(lo, expand);
                    fix(hi, expand);
                }
                _ => {}
            }
        }
        match self {
            QExpr::And(items) | QExpr::Or(items) => {
                items.iter_mut().for_each(|i| i.expand_values(attrs))
            }
            QExpr::Compare { path, value, .. } => fix(value, attrs.contains(&path.attr)),
            QExpr::Exists(_) | QExpr::NotExists(_) => {}
        }
    }

    /// How many linked entity paths deep the expression reaches (0: none).
    pub fn link_depth(&self) -> u32 {
        fn depth(path: &Path) -> u32 {
            path.link.as_ref().map_or(0, |l| 1 + depth(&l.path))
        }
        match self {
            QExpr::And(items) | QExpr::Or(items) => {
                items.iter().map(QExpr::link_depth).max().unwrap_or(0)
            }
            QExpr::Exists(path) | QExpr::NotExists(path) | QExpr::Compare { path, .. } => {
                depth(path)
            }
        }
    }

    /// The attributes (IRIs) the expression's terms start from.
    pub fn attributes(&self) -> Vec<&str> {
        match self {
            QExpr::And(items) | QExpr::Or(items) => {
                items.iter().flat_map(QExpr::attributes).collect()
            }
            QExpr::Exists(path) | QExpr::NotExists(path) | QExpr::Compare { path, .. } => {
                vec![path.attr.as_str()]
            }
        }
    }

    /// Whether `e` matches (4.9): a comparison holds when any instance of the attribute (any
    /// datasetId) has a target value satisfying it; without the target element nothing compares,
    /// not even `!=`; values of different data types are unequal and unordered; Relationships and
    /// ListRelationships only take `==` and `!=`. `~=` searches (`^…$` anchors) string values.
    pub fn matches(&self, e: &Entity) -> bool {
        match self {
            QExpr::And(items) => items.iter().all(|i| i.matches(e)),
            QExpr::Or(items) => items.iter().any(|i| i.matches(e)),
            QExpr::Exists(path) => path.targets(e).next().is_some(),
            QExpr::NotExists(path) => path.targets(e).next().is_none(),
            QExpr::Compare { path, op, value } => path.targets(e).any(|t| t.satisfies(*op, value)),
        }
    }
}

/// What one attribute instance offers a query term.
struct Target<'e> {
    /// The values compared: the elements of an array, the texts of a languageMap, the objects of a
    /// ListRelationship, or the one value.
    values: Vec<Cow<'e, Value>>,
    /// The element is a Relationship or ListRelationship.
    link: bool,
    /// The element is a VocabProperty (string operands also compare expanded).
    vocab: bool,
}

impl Path {
    /// The target of each instance of the attribute that has the target element.
    fn targets<'e>(&'e self, e: &'e Entity) -> impl Iterator<Item = Target<'e>> + 'e {
        e.attrs
            .get(&self.attr)
            .filter(|_| self.link.is_none())
            .into_iter()
            .flatten()
            .filter_map(|i| self.target(i))
    }

    /// The target values of the entity's first instance that has any (for ordering): the
    /// elements of an array, the texts of a languageMap, or the one value.
    pub fn first_values<'e>(&'e self, e: &'e Entity) -> Option<Vec<Cow<'e, Value>>> {
        self.targets(e)
            .map(|t| t.values)
            .find(|values| !values.is_empty())
    }

    fn target<'e>(&self, instance: &'e Attribute) -> Option<Target<'e>> {
        let mut attr = instance;
        for (i, name) in self.sub.iter().enumerate() {
            if let Some(member) = name.strip_prefix(CORE).filter(|m| MEMBERS.contains(m)) {
                let last = i + 1 == self.sub.len() && self.compound.is_empty();
                let value = member_value(attr, member).filter(|_| last)?;
                return Some(Target {
                    values: vec![Cow::Owned(Value::String(value))],
                    link: false,
                    vocab: false,
                });
            }
            attr = attr.sub.get(name)?;
        }
        let values = match attr.kind {
            AttrKind::LanguageProperty => language_texts(&attr.value, &self.compound)?,
            kind => {
                let value = self
                    .compound
                    .iter()
                    .try_fold(&attr.value, |v, key| v.get(key.as_str()))?;
                elements(value)
                    .iter()
                    .map(|v| Cow::Borrowed(unwrap(kind, v)))
                    .collect()
            }
        };
        Some(Target {
            values,
            link: matches!(
                attr.kind,
                AttrKind::Relationship | AttrKind::ListRelationship
            ),
            vocab: attr.kind == AttrKind::VocabProperty,
        })
    }
}

fn member_value(attr: &Attribute, member: &str) -> Option<String> {
    match member {
        "observedAt" => attr.observed_at.clone(),
        "unitCode" => attr.unit_code.clone(),
        "datasetId" => attr.dataset_id.clone(),
        "createdAt" => Some(format_time(&attr.created_at)),
        "modifiedAt" => Some(format_time(&attr.modified_at)),
        _ => None,
    }
}

/// The texts of a languageMap in the language asked for (a tag, compared case-insensitively), or in
/// any language (no tag, or `*`); `None` when that language is absent.
fn language_texts<'e>(map: &'e Value, compound: &[String]) -> Option<Vec<Cow<'e, Value>>> {
    let lang = match compound {
        [] => None,
        [tag] if tag == "*" => None,
        [tag] => Some(tag),
        _ => return None,
    };
    let texts: Vec<_> = map
        .as_object()?
        .iter()
        .filter(|(key, _)| lang.is_none_or(|l| key.eq_ignore_ascii_case(l)))
        .flat_map(|(_, text)| elements(text))
        .map(Cow::Borrowed)
        .collect();
    (lang.is_none() || !texts.is_empty()).then_some(texts)
}

fn elements(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        v => std::slice::from_ref(v),
    }
}

/// The comparable part of one element: the object of a ListRelationship member, the `@value` of a
/// JSON-LD value object (`{"@type": "DateTime", "@value": …}`), JsonProperty content as is.
fn unwrap(kind: AttrKind, v: &Value) -> &Value {
    let key = match kind {
        AttrKind::ListRelationship => "object",
        AttrKind::JsonProperty => return v,
        _ => "@value",
    };
    v.get(key).unwrap_or(v)
}

impl Target<'_> {
    fn satisfies(&self, op: Op, operand: &QValue) -> bool {
        match op {
            Op::Eq => self.includes(operand),
            Op::Ne => !self.includes(operand),
            _ if self.link => false,
            Op::Match | Op::NotMatch => {
                let QValue::Regex(pattern) = operand else {
                    return false;
                };
                let mut texts = self.values.iter().filter_map(|v| v.as_str()).peekable();
                match op {
                    Op::Match => texts.any(|t| pattern.0.is_match(t)),
                    _ => texts.peek().is_some() && !texts.any(|t| pattern.0.is_match(t)),
                }
            }
            _ => self
                .values
                .iter()
                .any(|v| order(v, operand).is_some_and(|o| op.admits(o))),
        }
    }

    fn includes(&self, operand: &QValue) -> bool {
        self.values.iter().any(|v| self.equals(v, operand))
    }

    fn equals(&self, v: &Value, operand: &QValue) -> bool {
        match operand {
            QValue::List(items) => items.iter().any(|i| self.equals(v, i)),
            QValue::Range(lo, hi) => {
                order(v, lo).is_some_and(Ordering::is_ge)
                    && order(v, hi).is_some_and(Ordering::is_le)
            }
            QValue::Str(t) if self.vocab => v.as_str().is_some_and(|s| s == t.text || s == t.vocab),
            scalar => order(v, scalar) == Some(Ordering::Equal),
        }
    }
}

/// How a target value orders against a scalar operand; `None` when their data types differ.
fn order(v: &Value, operand: &QValue) -> Option<Ordering> {
    match operand {
        QValue::Number(n) => v.as_f64()?.partial_cmp(n),
        QValue::Bool(b) => Some(v.as_bool()?.cmp(b)),
        QValue::Str(t) => Some(v.as_str()?.cmp(t.text.as_str())),
        QValue::DateTime(t) => Some(parse_date_time(v.as_str()?)?.cmp(t)),
        QValue::Date(d) => Some(parse_date(v.as_str()?)?.cmp(d)),
        QValue::Time(t) => Some(parse_time(v.as_str()?)?.cmp(t)),
        QValue::Range(..) | QValue::List(_) | QValue::Regex(_) => None,
    }
}

/// Prints the canonical q: full IRIs (bare when they read back unchanged, else in `<…>`), members by
/// their short names, strings and regular expressions quoted, and parentheses only where `;` and `|`
/// need them, so that `parse` with any context gives back an equal expression (string operands
/// re-expand with that context). What `parse` cannot produce may not print back: groups of fewer
/// than two members, empty names, IRIs holding `>`, member names holding `.` or `]`.
impl fmt::Display for QExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Printed(self, None).fmt(f)
    }
}

impl QExpr {
    /// The q as a caller holding `ctx` writes it: attribute names compacted to their terms where
    /// a term reads back to the same IRI, as the canonical form (`Display`) otherwise. A context
    /// source that receives the same @context parses it back to an equal expression, and sees the
    /// names it knows (4.3.6.5).
    pub fn compacted<'a>(&'a self, ctx: &'a ActiveContext) -> impl fmt::Display + 'a {
        Printed(self, Some(ctx))
    }
}

/// A q expression printed with or without a context to compact names with.
struct Printed<'a>(&'a QExpr, Option<&'a ActiveContext>);

impl fmt::Display for Printed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ctx = self.1;
        match self.0 {
            QExpr::And(items) => write_group(f, items, ';', ctx, |i| {
                matches!(i, QExpr::And(_) | QExpr::Or(_))
            }),
            QExpr::Or(items) => write_group(f, items, '|', ctx, |i| matches!(i, QExpr::Or(_))),
            QExpr::Exists(path) => write_path(f, path, ctx),
            QExpr::NotExists(path) => {
                f.write_str("!")?;
                write_path(f, path, ctx)
            }
            QExpr::Compare { path, op, value } => {
                write_path(f, path, ctx)?;
                write!(f, "{op}{value}")
            }
        }
    }
}

fn write_group(
    f: &mut fmt::Formatter<'_>,
    items: &[QExpr],
    separator: char,
    ctx: Option<&ActiveContext>,
    nested: fn(&QExpr) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            write!(f, "{separator}")?;
        }
        if nested(item) {
            write!(f, "({})", Printed(item, ctx))?;
        } else {
            write!(f, "{}", Printed(item, ctx))?;
        }
    }
    Ok(())
}

/// Prints the path as q writes it (see the `Display` of `QExpr`).
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, self, None)
    }
}

/// An attribute name: its term under `ctx` when that is a plain q name, else the IRI (bare when
/// `bare` allows and it reads back unchanged, else in `<…>`).
fn write_name(
    f: &mut fmt::Formatter<'_>,
    iri: &str,
    ctx: Option<&ActiveContext>,
    bare: bool,
) -> fmt::Result {
    if let Some(term) = ctx.map(|c| c.compact(iri)) {
        if term != iri && !term.is_empty() && !term.contains(':') && term.chars().all(is_name_char)
        {
            return f.write_str(&term);
        }
    }
    if bare && reads_back_bare(iri) {
        f.write_str(iri)
    } else {
        write!(f, "<{iri}>")
    }
}

fn write_path(f: &mut fmt::Formatter<'_>, path: &Path, ctx: Option<&ActiveContext>) -> fmt::Result {
    write_name(f, &path.attr, ctx, true)?;
    for sub in &path.sub {
        match sub.strip_prefix(CORE).filter(|m| MEMBERS.contains(m)) {
            Some(member) => write!(f, ".{member}")?,
            None => {
                f.write_str(".")?;
                write_name(f, sub, ctx, false)?;
            }
        }
    }
    if !path.compound.is_empty() {
        write!(f, "[{}]", path.compound.join("."))?;
    }
    if let Some(link) = &path.link {
        f.write_str("{")?;
        if let Some(hint) = &link.hint {
            write!(f, "{hint}:")?;
        }
        write!(f, "{}}}", link.path)?;
    }
    Ok(())
}

/// Whether an attribute IRI printed bare parses back to itself under any context: an absolute IRI
/// (`scheme://…`, which expansion leaves alone) of name characters with no `.` after its last `/`.
fn reads_back_bare(iri: &str) -> bool {
    iri.split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with("//"))
        && iri.chars().all(|c| is_name_char(c) || c == '.')
        && iri
            .rsplit('/')
            .next()
            .is_some_and(|last| !last.contains('.'))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Prints the operand as q writes it (see the `Display` of `QExpr`).
impl fmt::Display for QValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |text: &str| serde_json::to_string(text).map_err(|_| fmt::Error);
        match self {
            QValue::Number(n) => write!(f, "{n}"),
            QValue::Bool(b) => write!(f, "{b}"),
            QValue::Str(t) => f.write_str(&quoted(&t.text)?),
            QValue::DateTime(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            QValue::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            QValue::Time(t) => write!(f, "{}", t.format("%H:%M:%S%.fZ")),
            QValue::Range(lo, hi) => write!(f, "{lo}..{hi}"),
            QValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
            QValue::Regex(p) => f.write_str(&quoted(p.as_str())?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock};

    const NS: &str = "https://example.org/ns/";

    static CTX: LazyLock<ActiveContext> = LazyLock::new(|| {
        let ctx = json!({
            "@vocab": NS,
            "ex": NS,
            "name": "https://schema.org/name",
            "Male": "https://example.org/vocab/Male"
        });
        ActiveContext::build(&[&ctx], &HashMap::<String, Arc<Value>>::new()).unwrap()
    });

    fn q(s: &str) -> QExpr {
        parse(s, &CTX).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse(s, &CTX).expect_err(s).to_string()
    }

    /// The text the error's span covers.
    fn fragment(s: &str) -> &str {
        let e = parse(s, &CTX).expect_err(s);
        &s[e.span]
    }

    fn t0() -> DateTime<Utc> {
        parse_date_time("2024-01-01T00:00:00Z").unwrap()
    }

    fn attr(kind: AttrKind, value: Value) -> Attribute {
        Attribute {
            kind,
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            object_type: None,
            created_at: t0(),
            modified_at: t0(),
            expires_at: None,
            sub: crate::model::NameMap::default(),
        }
    }

    fn prop(value: Value) -> Attribute {
        attr(AttrKind::Property, value)
    }

    fn entity(attrs: Vec<(&str, Vec<Attribute>)>) -> Entity {
        Entity {
            id: "urn:ngsi-ld:Thing:1".into(),
            types: vec![format!("{NS}Thing")],
            scope: None,
            attrs: attrs
                .into_iter()
                .map(|(n, a)| (CTX.expand(n).into_owned(), a))
                .collect(),
            created_at: t0(),
            modified_at: t0(),
            expires_at: None,
        }
    }

    /// Checks each (query, expected) pair against `e`.
    fn check(e: &Entity, cases: &[(&str, bool)]) {
        for (query, expected) in cases {
            assert_eq!(q(query).matches(e), *expected, "{query}");
        }
    }

    fn path(attr: &str) -> Path {
        Path {
            attr: format!("{NS}{attr}"),
            sub: vec![],
            compound: vec![],
            link: None,
        }
    }

    fn eq(attr: &str, n: f64) -> QExpr {
        QExpr::Compare {
            path: path(attr),
            op: Op::Eq,
            value: QValue::Number(n),
        }
    }

    fn text(s: &str) -> QValue {
        QValue::Str(Text {
            text: s.into(),
            vocab: CTX.expand(s).into_owned(),
        })
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        use QExpr::{And, Exists, Or};
        assert_eq!(
            q("a==1|b==2;c==3"),
            Or(vec![eq("a", 1.0), And(vec![eq("b", 2.0), eq("c", 3.0)])])
        );
        assert_eq!(
            q("a==1;b==2|c==3"),
            Or(vec![And(vec![eq("a", 1.0), eq("b", 2.0)]), eq("c", 3.0)])
        );
        assert_eq!(
            q("(a==1|b==2);c==3"),
            And(vec![Or(vec![eq("a", 1.0), eq("b", 2.0)]), eq("c", 3.0)])
        );
        assert_eq!(
            q("((a==1|b==2);c==3)|d"),
            Or(vec![
                And(vec![Or(vec![eq("a", 1.0), eq("b", 2.0)]), eq("c", 3.0)]),
                Exists(path("d"))
            ])
        );
        assert_eq!(
            q(" a == 1 ; ( b ) "),
            And(vec![eq("a", 1.0), Exists(path("b"))])
        );
        assert_eq!(
            q("a;b;c"),
            And(vec![
                Exists(path("a")),
                Exists(path("b")),
                Exists(path("c"))
            ])
        );
        assert_eq!(q("!a"), QExpr::NotExists(path("a")));
        let e = entity(vec![
            ("a", vec![prop(json!(1))]),
            ("c", vec![prop(json!(3))]),
        ]);
        check(
            &e,
            &[
                ("a==1|b==2;c==3", true),
                ("a==2|b==2;c==3", false),
                ("(a==2|c==3);a==1", true),
                ("(a==2|b);c==3", false),
                ("((a==1))", true),
            ],
        );
    }

    #[test]
    fn every_operator_on_numbers() {
        let e = entity(vec![("temperature", vec![prop(json!(20))])]);
        check(
            &e,
            &[
                ("temperature==20", true),
                ("temperature==20.0", true),
                ("temperature==2e1", true),
                ("temperature==21", false),
                ("temperature!=20", false),
                ("temperature!=21", true),
                ("temperature>19.5", true),
                ("temperature>20", false),
                ("temperature>=20", true),
                ("temperature>=21", false),
                ("temperature<21", true),
                ("temperature<20", false),
                ("temperature<=20", true),
                ("temperature<=-20", false),
                ("temperature~=2", false),
                ("temperature!~=2", false),
            ],
        );
    }

    #[test]
    fn literal_values() {
        let value = |s: &str| match q(&format!("a=={s}")) {
            QExpr::Compare { value, .. } => value,
            other => panic!("{other:?}"),
        };
        assert_eq!(value("-1.5e3"), QValue::Number(-1500.0));
        assert_eq!(value("0"), QValue::Number(0.0));
        assert_eq!(value("2E-2"), QValue::Number(0.02));
        assert_eq!(value("true"), QValue::Bool(true));
        assert_eq!(value("false"), QValue::Bool(false));
        assert_eq!(
            value(r#""tab\t \"q\" \\ \u00e9""#),
            text("tab\t \"q\" \\ é")
        );
        assert_eq!(value(r#""true""#), text("true"));
        assert_eq!(
            value("2018-12-04T12:00:00Z"),
            QValue::DateTime(parse_date_time("2018-12-04T12:00:00Z").unwrap())
        );
        assert_eq!(
            value("2018-12-04T13:00:00.000+01:00"),
            value("2018-12-04T12:00:00Z")
        );
        assert_eq!(
            value("2018-12-04"),
            QValue::Date(NaiveDate::from_ymd_opt(2018, 12, 4).unwrap())
        );
        assert_eq!(
            value("12:30:00Z"),
            QValue::Time(NaiveTime::from_hms_opt(12, 30, 0).unwrap())
        );
        assert_eq!(
            value("12:30:00.5"),
            QValue::Time(NaiveTime::from_hms_milli_opt(12, 30, 0, 500).unwrap())
        );
        assert_eq!(
            value("urn:ngsi-ld:Building:1"),
            text("urn:ngsi-ld:Building:1")
        );
        assert_eq!(
            value("Male"),
            QValue::Str(Text {
                text: "Male".into(),
                vocab: "https://example.org/vocab/Male".into()
            })
        );
        assert_eq!(
            value("1,\"a\",true"),
            QValue::List(vec![QValue::Number(1.0), text("a"), QValue::Bool(true)])
        );
        assert_eq!(
            value("1..2.5"),
            QValue::Range(Box::new(QValue::Number(1.0)), Box::new(QValue::Number(2.5)))
        );
    }

    #[test]
    fn strings_booleans_and_type_mismatches() {
        let e = entity(vec![
            ("brandName", vec![prop(json!("Mercedes"))]),
            ("count", vec![prop(json!(5))]),
            ("flag", vec![prop(json!(true))]),
        ]);
        check(
            &e,
            &[
                ("brandName==\"Mercedes\"", true),
                ("brandName==Mercedes", true),
                ("brandName!=\"Mercedes\"", false),
                ("brandName!=\"BMW\"", true),
                ("brandName>\"Audi\"", true),
                ("brandName<\"Audi\"", false),
                ("brandName==5", false),
                ("brandName!=5", true),
                ("count==\"5\"", false),
                ("count!=\"5\"", true),
                ("count>\"1\"", false),
                ("count<=\"9\"", false),
                ("flag==true", true),
                ("flag==false", false),
                ("flag!=false", true),
                ("flag==\"true\"", false),
            ],
        );
    }

    #[test]
    fn existence_and_missing_attributes() {
        let e = entity(vec![("brandName", vec![prop(json!("Mercedes"))])]);
        check(
            &e,
            &[
                ("brandName", true),
                ("!brandName", false),
                ("missing", false),
                ("!missing", true),
                ("missing==1", false),
                ("missing!=1", false),
                ("missing!~=x", false),
                ("!missing;brandName", true),
            ],
        );
    }

    #[test]
    fn ranges_are_inclusive() {
        let e = entity(vec![
            ("temperature", vec![prop(json!(20))]),
            ("day", vec![prop(json!("2018-06-01"))]),
            ("brandName", vec![prop(json!("Mercedes"))]),
        ]);
        check(
            &e,
            &[
                ("temperature==10..20", true),
                ("temperature==20..30", true),
                ("temperature==21..30", false),
                ("temperature!=10..20", false),
                ("temperature!=21..30", true),
                ("day==2018-01-01..2018-12-31", true),
                ("day==2019-01-01..2019-12-31", false),
                ("day==2018-06-01..2018-06-01", true),
                ("brandName==\"A\"..\"N\"", true),
                ("brandName==\"N\"..\"Z\"", false),
                ("brandName==10..20", false),
                ("brandName!=10..20", true),
            ],
        );
    }

    #[test]
    fn value_lists_and_array_targets() {
        let e = entity(vec![
            ("brandName", vec![prop(json!("Mercedes"))]),
            ("colors", vec![prop(json!(["blue", "red"]))]),
            ("temperature", vec![prop(json!(20))]),
            (
                "scores",
                vec![attr(AttrKind::ListProperty, json!([1, 2, 3]))],
            ),
        ]);
        check(
            &e,
            &[
                ("brandName==\"BMW\",\"Mercedes\"", true),
                ("brandName==\"BMW\", \"Audi\"", false),
                ("brandName!=\"BMW\",\"Mercedes\"", false),
                ("brandName!=\"BMW\",\"Audi\"", true),
                ("colors==\"red\"", true),
                ("colors!=\"red\"", false),
                ("colors!=\"black\"", true),
                ("colors==\"black\",\"red\"", true),
                ("colors!=\"black\",\"yellow\"", true),
                ("colors!=\"black\",\"blue\"", false),
                ("temperature==1,20,3", true),
                ("temperature!=1,20,3", false),
                ("scores==2", true),
                ("scores!=2", false),
                ("scores!=4", true),
                ("scores>2", true),
                ("scores>3", false),
            ],
        );
    }

    #[test]
    fn regular_expressions() {
        let e = entity(vec![
            ("brandName", vec![prop(json!("Mercedes"))]),
            ("count", vec![prop(json!(5))]),
            ("tags", vec![prop(json!(["alpha", "beta"]))]),
        ]);
        check(
            &e,
            &[
                ("brandName~=Merc", true),
                ("brandName~=^merc", false),
                ("brandName~=(?i)^merc", true),
                ("brandName~=^(BMW|Merc)edes$", true),
                ("(brandName~=(Audi|BMW))|count==5", true),
                ("brandName~=[)|;]|count==5", true),
                ("brandName~=\"^M.*s$|^X\"", true),
                ("brandName~=^M.*s$;count==5", true),
                ("brandName~=^M.*s$ ; count==6", false),
                ("brandName!~=BMW", true),
                ("brandName!~=Merc", false),
                ("count~=5", false),
                ("count!~=5", false),
                ("tags~=^b", true),
                ("tags!~=^b", false),
                ("tags!~=^g", true),
            ],
        );
        let QExpr::Compare {
            value: QValue::Regex(p),
            ..
        } = q("a~=x\\)y ")
        else {
            panic!()
        };
        assert_eq!(p.as_str(), "x\\)y");
    }

    #[test]
    fn dates_times_and_system_members() {
        let mut temperature = prop(json!(20));
        temperature.observed_at = Some("2017-12-24T12:00:00Z".into());
        let e = entity(vec![
            ("temperature", vec![temperature]),
            ("opens", vec![prop(json!("08:30:00Z"))]),
            (
                "birth",
                vec![prop(
                    json!({"@type": "DateTime", "@value": "2000-01-01T00:00:00Z"}),
                )],
            ),
            ("label", vec![prop(json!("2000-01-01T00:00:00Z"))]),
        ]);
        check(
            &e,
            &[
                ("temperature.observedAt>=2017-12-24T12:00:00Z", true),
                ("temperature.observedAt>2017-12-24T12:00:00Z", false),
                ("temperature.observedAt==2017-12-24T13:00:00+01:00", true),
                ("temperature.observedAt<2018-01-01", false),
                ("temperature.observedAt", true),
                ("temperature.createdAt==2024-01-01T00:00:00Z", true),
                ("temperature.modifiedAt<2025-01-01T00:00:00Z", true),
                ("temperature.unitCode", false),
                ("opens<09:00:00Z", true),
                ("opens>09:00:00", false),
                ("opens==08:00:00..09:00:00", true),
                ("birth<2001-01-01T00:00:00Z", true),
                ("birth==2000-01-01T00:00:00Z", true),
                ("label==2000-01-01T00:00:00.000Z", true),
                ("label==\"2000-01-01T00:00:00.000Z\"", false),
            ],
        );
    }

    #[test]
    fn sub_attributes_members_and_instances() {
        let mut rawdata = prop(json!({"airquality": {"particulate": 40, "PM20": 85}}));
        rawdata.unit_code = Some("GQ".into());
        let mut sensor = prop(json!(40));
        sensor.sub.insert(format!("{NS}rawdata"), rawdata);
        let mut first = prop(json!(20));
        first.unit_code = Some("CEL".into());
        first.sub.insert(format!("{NS}accuracy"), prop(json!(0.5)));
        first.sub.insert(format!("{NS}sensor"), sensor);
        let mut second = prop(json!(30));
        second.dataset_id = Some("urn:ngsi-ld:Dataset:b".into());
        let e = entity(vec![("temperature", vec![first, second])]);
        check(
            &e,
            &[
                ("temperature==20", true),
                ("temperature==30", true),
                ("temperature!=20", true),
                ("temperature>25;temperature<25", true),
                ("temperature==25..29", false),
                ("temperature.unitCode==\"CEL\"", true),
                ("temperature.unitCode!=\"CEL\"", false),
                ("temperature.datasetId==urn:ngsi-ld:Dataset:b", true),
                ("temperature.datasetId==urn:ngsi-ld:Dataset:c", false),
                ("temperature.accuracy<1", true),
                ("temperature.accuracy", true),
                ("temperature.missing", false),
                ("!temperature.missing", true),
                (
                    "temperature.sensor.rawdata[airquality.particulate]==40",
                    true,
                ),
                ("temperature.sensor.rawdata[airquality.PM20]>40", true),
                ("temperature.sensor.rawdata[airquality.PM10]", false),
                ("temperature.sensor.rawdata.unitCode==\"GQ\"", true),
                ("temperature.unitCode[x]", false),
                ("temperature.observedAt.accuracy", false),
            ],
        );
        assert_eq!(
            q("temperature.sensor.rawdata[airquality.particulate]"),
            QExpr::Exists(Path {
                attr: format!("{NS}temperature"),
                sub: vec![format!("{NS}sensor"), format!("{NS}rawdata")],
                compound: vec!["airquality".into(), "particulate".into()],
                link: None,
            })
        );
    }

    #[test]
    fn compound_values_and_json_properties() {
        let e = entity(vec![
            (
                "address",
                vec![prop(json!({"city": "Berlin", "street": "Ulrich Strasse"}))],
            ),
            (
                "parkingTickets",
                vec![attr(
                    AttrKind::JsonProperty,
                    json!({"id": "85a6", "value": "Overstay 60 minutes"}),
                )],
            ),
        ]);
        check(
            &e,
            &[
                ("address[city]==\"Berlin\"", true),
                ("address[city]!=\"Berlin\"", false),
                ("address[city]~=^Ber", true),
                ("address[zip]", false),
                ("address[zip]!=\"1\"", false),
                ("address[city.name]", false),
                ("address==\"Berlin\"", false),
                ("parkingTickets[value]==\"Overstay 60 minutes\"", true),
                ("parkingTickets[id]!=\"85a6\"", false),
            ],
        );
    }

    #[test]
    fn language_properties() {
        let e = entity(vec![(
            "label",
            vec![attr(
                AttrKind::LanguageProperty,
                json!({"fr": "rouge", "en": "red", "de": ["rot", "Rote"]}),
            )],
        )]);
        check(
            &e,
            &[
                ("label[en]==\"red\"", true),
                ("label[EN]==\"red\"", true),
                ("label[fr]==\"red\"", false),
                ("label[*]==\"rouge\"", true),
                ("label==\"rouge\"", true),
                ("label[de]==\"Rote\"", true),
                ("label[en]!=\"red\"", false),
                ("label[en]!=\"black\"", true),
                ("label[*]!=\"red\"", false),
                ("label!=\"noir\"", true),
                ("label[de]!=\"rot\"", false),
                ("label[it]", false),
                ("label[it]==\"red\"", false),
                ("label[it]!=\"red\"", false),
                ("label[en]~=^r", true),
                ("label[en.x]", false),
            ],
        );
    }

    #[test]
    fn relationships_and_vocabulary() {
        let e = entity(vec![
            (
                "isParked",
                vec![attr(
                    AttrKind::Relationship,
                    json!("urn:ngsi-ld:OffStreetParking:Downtown1"),
                )],
            ),
            (
                "owners",
                vec![attr(
                    AttrKind::Relationship,
                    json!(["urn:ngsi-ld:P:1", "urn:ngsi-ld:P:2"]),
                )],
            ),
            (
                "followers",
                vec![attr(
                    AttrKind::ListRelationship,
                    json!([{"object": "urn:a"}, {"object": "urn:b"}]),
                )],
            ),
            (
                "gender",
                vec![attr(
                    AttrKind::VocabProperty,
                    json!("https://example.org/vocab/Male"),
                )],
            ),
            (
                "category",
                vec![attr(
                    AttrKind::VocabProperty,
                    json!([format!("{NS}shop"), format!("{NS}cafe")]),
                )],
            ),
        ]);
        check(
            &e,
            &[
                ("isParked==urn:ngsi-ld:OffStreetParking:Downtown1", true),
                ("isParked==\"urn:ngsi-ld:OffStreetParking:Downtown1\"", true),
                ("isParked!=urn:ngsi-ld:OffStreetParking:Downtown1", false),
                ("isParked!=urn:ngsi-ld:OffStreetParking:Other", true),
                ("isParked>\"urn\"", false),
                ("isParked~=Downtown", false),
                ("isParked!~=Uptown", false),
                ("owners==urn:ngsi-ld:P:2", true),
                ("owners!=urn:ngsi-ld:P:2", false),
                ("owners==urn:ngsi-ld:P:3,urn:ngsi-ld:P:1", true),
                ("followers==urn:b", true),
                ("followers!=urn:b", false),
                ("followers!=urn:c", true),
                ("gender==Male", true),
                ("gender==\"Male\"", true),
                ("gender==https://example.org/vocab/Male", true),
                ("gender==Female", false),
                ("gender!=Male", false),
                ("gender!=Female,Other", true),
                ("category==cafe", true),
                ("category==ex:shop", true),
                ("category!=cafe", false),
            ],
        );
    }

    #[test]
    fn names_as_terms_compact_iris_and_full_iris() {
        let e = entity(vec![
            ("temperature", vec![prop(json!(20))]),
            ("name", vec![prop(json!("x"))]),
        ]);
        check(
            &e,
            &[
                ("ex:temperature==20", true),
                ("https://example.org/ns/temperature==20", true),
                ("<https://example.org/ns/temperature>==20", true),
                ("https://example.org/ns/temperature.createdAt", true),
                ("name==\"x\"", true),
                ("https://schema.org/name", true),
                ("<name>", false),
            ],
        );
        assert_eq!(
            e.attrs.keys().nth(1).map(String::as_str),
            Some("https://schema.org/name")
        );
        let QExpr::Exists(p) = q("https://ex.com.au/v1.2/t.unitCode") else {
            panic!()
        };
        assert_eq!(
            (p.attr.as_str(), p.sub),
            ("https://ex.com.au/v1.2/t", vec![format!("{CORE}unitCode")])
        );
        let QExpr::Exists(p) = q("urn:ngsi-ld:a.b.<urn:x.y>.observedAt") else {
            panic!()
        };
        assert_eq!(p.attr, "urn:ngsi-ld:a");
        assert_eq!(
            p.sub,
            vec![
                format!("{NS}b"),
                "urn:x.y".into(),
                format!("{CORE}observedAt")
            ]
        );
        let QExpr::Exists(p) = q("observedAt.<observedAt>") else {
            panic!()
        };
        assert_eq!(
            (p.attr, p.sub),
            (format!("{NS}observedAt"), vec!["observedAt".to_string()])
        );
    }

    #[test]
    fn errors_name_the_token_and_position() {
        let cases = [
            ("", "q: the query is empty"),
            ("  ", "q: the query is empty"),
            ("a==1)", "q: unexpected ')' at position 5, expected ';', '|' or the end of the query"),
            ("(a==1", "q: unclosed '(' at position 1"),
            ("(a==1 b", "q: unexpected 'b' at position 7, expected ';', '|' or ')'"),
            ("a==1 b", "q: unexpected 'b' at position 6, expected ';', '|' or the end of the query"),
            ("a==", "q: unexpected end of input at position 4, expected a value"),
            ("a==;b", "q: unexpected ';' at position 4, expected a value"),
            ("a;;b", "q: unexpected ';' at position 3, expected an attribute name"),
            ("a|", "q: unexpected end of input at position 3, expected an attribute name"),
            ("()", "q: unexpected ')' at position 2, expected an attribute name"),
            ("==1", "q: unexpected '=' at position 1, expected an attribute name"),
            ("a=1", "q: unexpected '=' at position 2, expected ';', '|' or the end of the query"),
            ("a..b==1", "q: unexpected '.' at position 3, expected an attribute name"),
            ("a.==1", "q: unexpected '=' at position 3, expected an attribute name"),
            ("!a==1", "q: '==' cannot follow a non-existence test ('!') at position 3"),
            ("a>true", "q: '>' compares with a number, a quoted string, a date or a time, not 'true' at position 3"),
            ("a<=abc", "q: '<=' compares with a number, a quoted string, a date or a time, not 'abc' at position 4"),
            ("a>1,2", "q: unexpected ',' at position 4, expected ';', '|' or the end of the query"),
            ("a==1..\"z\"", "q: the range '1..\"z\"' needs two numbers, quoted strings, dates or times of one kind at position 4"),
            ("a==x..y", "q: the range 'x..y' needs two numbers, quoted strings, dates or times of one kind at position 4"),
            ("a==true..false", "q: the range 'true..false' needs two numbers, quoted strings, dates or times of one kind at position 4"),
            ("a==\"abc", "q: unterminated string at position 4"),
            ("a==2018-13-01", "q: '2018-13-01' is not a number, date, time or quoted string at position 4"),
            ("a==01", "q: '01' is not a number, date, time or quoted string at position 4"),
            ("a==1e999", "q: '1e999' is not a number, date, time or quoted string at position 4"),
            ("a==1.", "q: '1.' is not a number, date, time or quoted string at position 4"),
            ("a==+1", "q: '+1' is not a number, date, time or quoted string at position 4"),
            ("a==2018-12-04T12:00:00", "q: '2018-12-04T12:00:00' is not a number, date, time or quoted string at position 4"),
            ("a==25:00:00Z", "q: '25:00:00Z' is not a number, date, time or quoted string at position 4"),
            ("a[b==1", "q: unclosed '[' at position 2"),
            ("a[]==1", "q: empty member name in '[]' at position 2"),
            ("a[b..c]==1", "q: empty member name in '[b..c]' at position 2"),
            ("a[b].c==1", "q: unexpected '.' at position 5, expected ';', '|' or the end of the query"),
            ("sensor{humidity==40", "q: unclosed '{' at position 7"),
            ("sensor{}==40", "q: unexpected '}' at position 8, expected an attribute name"),
            ("<urn:a", "q: unclosed or empty '<…>' at position 1"),
            ("<>==1", "q: unclosed or empty '<…>' at position 1"),
            ("a~=", "q: unexpected end of input at position 4, expected a regular expression"),
            ("a~= ;b", "q: unexpected ';' at position 5, expected a regular expression"),
            ("é==\"ü\")", "q: unexpected ')' at position 7, expected ';', '|' or the end of the query"),
        ];
        for (query, expected) in cases {
            assert_eq!(err(query), expected, "{query}");
        }
        // A linked entity path parses into the Relationship, the type hint and the inner path.
        let QExpr::Compare { path, .. } = q("sensor{Device:humidity.unitCode}==\"P1\"") else {
            panic!("a comparison");
        };
        let link = path.link.expect("a linked path");
        assert_eq!(path.attr, format!("{NS}sensor"));
        assert_eq!(link.hint.as_deref(), Some(format!("{NS}Device").as_str()));
        assert_eq!(link.path.attr, format!("{NS}humidity"));
        assert_eq!(link.path.sub, [format!("{CORE}unitCode")]);
        assert_eq!(q("a{b{c}}").link_depth(), 2);
        let invalid = err("a~=(x");
        assert!(
            invalid.starts_with("q: invalid regular expression \"(x\" (")
                && invalid.ends_with("at position 4"),
            "{invalid}"
        );
        let escape = err(r#"a=="\x""#);
        assert!(
            escape.starts_with(r#"q: invalid string "\x" ("#) && escape.ends_with("at position 4"),
            "{escape}"
        );
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(
            err(&deep),
            "q: parentheses nest deeper than 64 at position 65"
        );
        assert!(parse(&format!("{}a{}", "(".repeat(64), ")".repeat(64)), &CTX).is_ok());
    }

    #[test]
    fn error_spans_cover_the_offending_token() {
        let cases = [
            ("temperature>>3", ">3"),
            ("a==1)", ")"),
            ("a==", ""),
            ("(a==1", "("),
            ("!a==1", "=="),
            ("a<=abc", "abc"),
            ("a==1..\"z\"", "1..\"z\""),
            ("a==\"abc", "\"abc"),
            ("a[]==1", "[]"),
            ("sensor{humidity==40", "{"),
            ("<urn:a", "<urn:a"),
            ("a~=(x", "(x"),
            ("é==\"ü\")", ")"),
            ("  ", "  "),
        ];
        for (query, expected) in cases {
            assert_eq!(fragment(query), expected, "{query}");
        }
        let e = parse("temperature>>3", &CTX).unwrap_err();
        assert_eq!(
            (e.input, e.span.clone(), e.position()),
            ("q", 12..14, Some(13))
        );
        // Positions count characters, spans bytes.
        let e = parse("é==\"ü\")", &CTX).unwrap_err();
        assert_eq!((e.span.clone(), e.position()), (8..9, Some(7)));
    }

    #[test]
    fn display_prints_canonical_full_iris() {
        let cases = [
            (
                "temperature>=20;(a|b)",
                "https://example.org/ns/temperature>=20;(https://example.org/ns/a|https://example.org/ns/b)",
            ),
            (
                "a==1|b==2;c==3",
                "https://example.org/ns/a==1|https://example.org/ns/b==2;https://example.org/ns/c==3",
            ),
            (
                "(a;b);c",
                "(https://example.org/ns/a;https://example.org/ns/b);https://example.org/ns/c",
            ),
            ("!t.observedAt", "!https://example.org/ns/t.observedAt"),
            (
                "t.accuracy[x.y]!=1,\"a\",true",
                "https://example.org/ns/t.<https://example.org/ns/accuracy>[x.y]!=1,\"a\",true",
            ),
            ("gender==Male", "https://example.org/ns/gender==\"Male\""),
            ("urn:x:a~=(a|b)c", "<urn:x:a>~=\"(a|b)c\""),
            ("d==2018-01-01..2018-12-31T00:00:00Z", ""),
            (
                "d==2018-01-01T00:00:00.5+01:00..2018-12-31T00:00:00Z",
                "https://example.org/ns/d==2017-12-31T23:00:00.500Z..2018-12-31T00:00:00Z",
            ),
            (
                "t==12:00:00..13:00:00.25",
                "https://example.org/ns/t==12:00:00Z..13:00:00.250Z",
            ),
            ("n==-1.5e3", "https://example.org/ns/n==-1500"),
            (
                "https://ex.org/v1.2/t.sub==1",
                "https://ex.org/v1.2/t.<https://example.org/ns/sub>==1",
            ),
            ("<https://ex.org/t.x>==1", "<https://ex.org/t.x>==1"),
        ];
        // Compacted, names read as the caller wrote them.
        assert_eq!(
            q("temperature>20;name==\"x\"|a.b")
                .compacted(&CTX)
                .to_string(),
            "temperature>20;name==\"x\"|a.b"
        );
        for (query, printed) in cases {
            let Ok(expr) = parse(query, &CTX) else {
                assert!(printed.is_empty(), "{query} should parse");
                continue;
            };
            assert_eq!(expr.to_string(), printed, "{query}");
            assert_eq!(q(printed), expr, "{printed}");
        }
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-zA-Z0-9_]{0,6}".prop_map(|s| format!("{NS}{s}")),
            Just("https://example.org/a.b/c".to_string()),
            Just("https://example.org/v1.2".to_string()),
            Just("urn:ngsi-ld:attr:x.y".to_string()),
            Just("http://example.org/with,comma".to_string()),
            Just("observedAt".to_string()),
            Just(format!("{CORE}unitCode")),
        ]
    }

    fn arb_path() -> impl Strategy<Value = Path> {
        let sub = prop_oneof![
            arb_name(),
            prop::sample::select(MEMBERS.to_vec()).prop_map(|m| format!("{CORE}{m}"))
        ];
        (
            arb_name(),
            prop::collection::vec(sub, 0..3),
            prop::collection::vec("[a-zA-Z0-9_*é -]{1,4}", 0..3),
        )
            .prop_map(|(attr, sub, compound)| Path {
                attr,
                sub,
                compound,
                link: None,
            })
    }

    fn arb_number() -> impl Strategy<Value = QValue> {
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(QValue::Number)
    }

    fn arb_text() -> impl Strategy<Value = QValue> {
        any::<String>().prop_map(|s| text(&s))
    }

    fn arb_date_time() -> impl Strategy<Value = QValue> {
        (0i64..253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(s, n)| QValue::DateTime(DateTime::from_timestamp(s, n).unwrap()))
    }

    fn arb_date() -> impl Strategy<Value = QValue> {
        (0i32..=9999, 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| QValue::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap()))
    }

    fn arb_time() -> impl Strategy<Value = QValue> {
        (0u32..86_400, 0u32..1_000_000_000).prop_map(|(s, n)| {
            QValue::Time(NaiveTime::from_num_seconds_from_midnight_opt(s, n).unwrap())
        })
    }

    fn arb_comparable() -> BoxedStrategy<QValue> {
        prop_oneof![
            arb_number(),
            arb_text(),
            arb_date_time(),
            arb_date(),
            arb_time()
        ]
        .boxed()
    }

    fn arb_range() -> impl Strategy<Value = QValue> {
        let range = |lo: QValue, hi: QValue| QValue::Range(Box::new(lo), Box::new(hi));
        prop_oneof![
            (arb_number(), arb_number()).prop_map(move |(a, b)| range(a, b)),
            (arb_text(), arb_text()).prop_map(move |(a, b)| range(a, b)),
            (arb_date_time(), arb_date_time()).prop_map(move |(a, b)| range(a, b)),
            (arb_date(), arb_date()).prop_map(move |(a, b)| range(a, b)),
            (arb_time(), arb_time()).prop_map(move |(a, b)| range(a, b)),
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = QExpr> {
        let scalar = prop_oneof![arb_comparable(), any::<bool>().prop_map(QValue::Bool)];
        let equality = prop_oneof![
            scalar.clone(),
            prop::collection::vec(scalar, 2..4).prop_map(QValue::List),
            arb_range(),
        ];
        let pattern =
            prop::sample::select(vec!["^a.*b$", "(x|y)+", "[)|;]", "a\\.b\"", "", "é\\d{2}"])
                .prop_map(|s| QValue::Regex(Pattern(Regex::new(s).unwrap())));
        let compare = |(path, op, value)| QExpr::Compare { path, op, value };
        let ops = |ops: &[Op]| prop::sample::select(ops.to_vec());
        prop_oneof![
            arb_path().prop_map(QExpr::Exists),
            arb_path().prop_map(QExpr::NotExists),
            (arb_path(), ops(&[Op::Eq, Op::Ne]), equality).prop_map(compare),
            (
                arb_path(),
                ops(&[Op::Gt, Op::Ge, Op::Lt, Op::Le]),
                arb_comparable()
            )
                .prop_map(compare),
            (arb_path(), ops(&[Op::Match, Op::NotMatch]), pattern).prop_map(compare),
        ]
    }

    fn arb_expr() -> impl Strategy<Value = QExpr> {
        arb_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(QExpr::And),
                prop::collection::vec(inner, 2..4).prop_map(QExpr::Or),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_input_parses_or_fails_cleanly(input in "[a-z0-9.\\[\\]<>(){}=!~;|,\"\\\\ :/+TZé*-]{0,24}") {
            let e = entity(vec![
                ("a", vec![prop(json!({"b": [1, "x"]}))]),
                ("b", vec![attr(AttrKind::LanguageProperty, json!({"en": "x"}))]),
            ]);
            match parse(&input, &CTX) {
                Ok(expr) => {
                    expr.matches(&e);
                    prop_assert_eq!(parse(&expr.to_string(), &CTX), Ok(expr));
                }
                // The span is a range of whole characters of the input.
                Err(error) => prop_assert!(input.get(error.span).is_some()),
            }
        }

        #[test]
        fn display_parses_back_to_the_same_expression(expr in arb_expr()) {
            let printed = expr.to_string();
            prop_assert_eq!(parse(&printed, &CTX), Ok(expr), "printed: {}", printed);
        }

        #[test]
        fn compacted_parses_back_under_its_context(expr in arb_expr()) {
            let printed = expr.compacted(&CTX).to_string();
            prop_assert_eq!(parse(&printed, &CTX), Ok(expr), "printed: {}", printed);
        }
    }
}
