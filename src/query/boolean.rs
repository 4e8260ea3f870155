//! The small boolean grammar that type expressions (4.17) and scopeQ (4.19) share: atoms joined by
//! `;` (and), `|` or `,` (or), with parentheses; `;` binds tighter than `|`.

use crate::syntax::{ParseError, ParseResult};

/// A boolean combination of atoms.
#[derive(Debug, Clone, PartialEq)]
pub enum BoolExpr<T> {
    /// One atom.
    Atom(T),
    /// All must hold.
    And(Vec<BoolExpr<T>>),
    /// Any must hold.
    Or(Vec<BoolExpr<T>>),
}

impl<T> BoolExpr<T> {
    /// Evaluates the expression with `test` deciding each atom.
    pub fn eval(&self, test: &impl Fn(&T) -> bool) -> bool {
        match self {
            BoolExpr::Atom(a) => test(a),
            BoolExpr::And(items) => items.iter().all(|i| i.eval(test)),
            BoolExpr::Or(items) => items.iter().any(|i| i.eval(test)),
        }
    }

    /// Every atom, for callers that pre-filter (e.g. the types an index can look up).
    pub fn atoms(&self) -> Vec<&T> {
        match self {
            BoolExpr::Atom(a) => vec![a],
            BoolExpr::And(items) | BoolExpr::Or(items) => {
                items.iter().flat_map(|i| i.atoms()).collect()
            }
        }
    }
}

/// Prints the expression as `parse` reads it back: `;` for and, `|` for or, parentheses around a
/// nested group (a scopeQ or type expression forwarded to a context source).
impl<T: std::fmt::Display> std::fmt::Display for BoolExpr<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (items, separator) = match self {
            BoolExpr::Atom(a) => return write!(f, "{a}"),
            BoolExpr::And(items) => (items, ';'),
            BoolExpr::Or(items) => (items, '|'),
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                write!(f, "{separator}")?;
            }
            match item {
                BoolExpr::Atom(a) => write!(f, "{a}")?,
                group => write!(f, "({group})")?,
            }
        }
        Ok(())
    }
}

/// How deep parentheses may nest, so that a hostile expression cannot exhaust the stack (as in q).
const MAX_DEPTH: usize = 64;

/// Parses `text`, the value of `input`; `atom` turns each atom's text into a value or says what
/// is wrong with it, and the error then spans the atom.
pub fn parse<T>(
    text: &str,
    input: &'static str,
    atom: &dyn Fn(&str) -> Result<T, String>,
) -> ParseResult<BoolExpr<T>> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
        input,
        atom,
    };
    let expr = p.or()?;
    if p.pos < text.len() {
        return Err(p.unexpected("';', '|', ',' or the end of the expression"));
    }
    Ok(expr)
}

struct Parser<'a, T> {
    text: &'a str,
    pos: usize,
    /// The parentheses open at `pos`.
    depth: usize,
    input: &'static str,
    atom: &'a dyn Fn(&str) -> Result<T, String>,
}

impl<T> Parser<'_, T> {
    fn unexpected(&self, expected: &str) -> ParseError {
        ParseError::unexpected(self.input, self.text, self.pos, expected)
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn or(&mut self) -> ParseResult<BoolExpr<T>> {
        let mut items = vec![self.and()?];
        while matches!(self.peek(), Some('|') | Some(',')) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            BoolExpr::Or(items)
        })
    }

    fn and(&mut self) -> ParseResult<BoolExpr<T>> {
        let mut items = vec![self.primary()?];
        while self.peek() == Some(';') {
            self.pos += 1;
            items.push(self.primary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            BoolExpr::And(items)
        })
    }

    fn primary(&mut self) -> ParseResult<BoolExpr<T>> {
        if self.peek() == Some('(') {
            if self.depth == MAX_DEPTH {
                let at = self.pos;
                let problem = format!("parentheses nest deeper than {MAX_DEPTH}");
                return Err(ParseError::at(self.input, self.text, at..at + 1, problem));
            }
            self.pos += 1;
            self.depth += 1;
            let inner = self.or()?;
            self.depth -= 1;
            if self.peek() != Some(')') {
                return Err(self.unexpected("')'"));
            }
            self.pos += 1;
            return Ok(inner);
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, '|' | ',' | ';' | '(' | ')') {
                break;
            }
            self.pos += c.len_utf8();
        }
        let raw = &self.text[start..self.pos];
        let text = raw.trim();
        if text.is_empty() {
            return Err(self.unexpected("a value"));
        }
        let from = start + raw.len() - raw.trim_start().len();
        (self.atom)(text).map(BoolExpr::Atom).map_err(|problem| {
            ParseError::at(self.input, self.text, from..from + text.len(), problem)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> ParseResult<BoolExpr<String>> {
        parse(text, "type", &|a| Ok(a.to_string()))
    }

    #[test]
    fn precedence_parentheses_and_errors() {
        let a = |s: &str| BoolExpr::Atom(s.to_string());
        assert_eq!(p("A").unwrap(), a("A"));
        assert_eq!(p("A,B").unwrap(), BoolExpr::Or(vec![a("A"), a("B")]));
        assert_eq!(
            p("A|B;C").unwrap(),
            BoolExpr::Or(vec![a("A"), BoolExpr::And(vec![a("B"), a("C")])])
        );
        assert_eq!(
            p("(A|B);C").unwrap(),
            BoolExpr::And(vec![BoolExpr::Or(vec![a("A"), a("B")]), a("C")])
        );
        let span = |text: &str| p(text).unwrap_err().span;
        assert_eq!(span("(A|B"), 4..4);
        assert_eq!(
            p("(A|B").unwrap_err().to_string(),
            "type: unexpected end of input at position 5, expected ')'"
        );
        assert_eq!(span("A||B"), 2..3);
        assert_eq!(span("A)"), 1..2);
        assert_eq!(span(""), 0..0);
        // An atom refused by its own reader is the span.
        let e = parse("A; Bad |C", "type", &|a| {
            (a != "Bad")
                .then(|| a.to_string())
                .ok_or(format!("'{a}' is bad"))
        })
        .unwrap_err();
        assert_eq!(
            (e.span.clone(), e.to_string()),
            (3..6, "type: 'Bad' is bad at position 4".into())
        );
        let e = p("A|B;C").unwrap();
        assert!(e.eval(&|x: &String| x == "A"));
        assert!(!e.eval(&|x: &String| x == "B"));
        assert!(e.eval(&|x: &String| x == "B" || x == "C"));
    }

    /// Found in review for the fuzzing of issue 20: without a limit each '(' took three frames, and
    /// a type or scopeQ parameter of some thousand of them overflowed a worker's stack.
    #[test]
    fn deep_parentheses_are_refused_not_recursed() {
        let nested = |n: usize| format!("{}A{}", "(".repeat(n), ")".repeat(n));
        assert!(p(&nested(MAX_DEPTH)).is_ok());
        let e = p(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(
            (e.span.clone(), e.to_string()),
            (
                64..65,
                "type: parentheses nest deeper than 64 at position 65".into()
            )
        );
        // A small stack is enough however deep the input nests.
        let deep = nested(100_000);
        let e = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || p(&deep).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(e.span, 64..65);
    }

    #[test]
    fn printing_reads_back_to_the_same_expression() {
        for text in ["A", "A|B", "A|B;C", "(A|B);C", "A;(B|C;D)|E"] {
            let e = p(text).unwrap();
            assert_eq!(p(&e.to_string()).unwrap(), e, "{text} printed as {e}");
        }
        assert_eq!(p("(A|B);C").unwrap().to_string(), "(A|B);C");
    }
}
