//! The small boolean grammar that type expressions (4.17) and scopeQ (4.19) share: atoms joined by
//! `;` (and), `|` or `,` (or), with parentheses; `;` binds tighter than `|`.

use crate::error::{NgsiError, NgsiResult};

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

/// Parses `text`; `atom` turns each atom's text into a value (or an error naming it). `what` names
/// the parameter in error messages.
pub fn parse<T>(
    text: &str,
    what: &str,
    atom: &dyn Fn(&str) -> NgsiResult<T>,
) -> NgsiResult<BoolExpr<T>> {
    let mut p = Parser {
        text,
        pos: 0,
        what,
        atom,
    };
    let expr = p.or()?;
    if p.pos < text.len() {
        return Err(p.error("unexpected character"));
    }
    Ok(expr)
}

struct Parser<'a, T> {
    text: &'a str,
    pos: usize,
    what: &'a str,
    atom: &'a dyn Fn(&str) -> NgsiResult<T>,
}

impl<T> Parser<'_, T> {
    fn error(&self, why: &str) -> NgsiError {
        let rest: String = self.text[self.pos..].chars().take(12).collect();
        NgsiError::bad_data(format!(
            "{}: {why} at position {} ('{rest}') in '{}'",
            self.what, self.pos, self.text
        ))
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn or(&mut self) -> NgsiResult<BoolExpr<T>> {
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

    fn and(&mut self) -> NgsiResult<BoolExpr<T>> {
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

    fn primary(&mut self) -> NgsiResult<BoolExpr<T>> {
        if self.peek() == Some('(') {
            self.pos += 1;
            let inner = self.or()?;
            if self.peek() != Some(')') {
                return Err(self.error("expected ')'"));
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
        let text = self.text[start..self.pos].trim();
        if text.is_empty() {
            return Err(self.error("expected a value"));
        }
        Ok(BoolExpr::Atom((self.atom)(text)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> NgsiResult<BoolExpr<String>> {
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
        assert!(p("(A|B").unwrap_err().detail.contains("expected ')'"));
        assert!(p("A||B").is_err());
        assert!(p("A)").is_err());
        assert!(p("").is_err());
        let e = p("A|B;C").unwrap();
        assert!(e.eval(&|x: &String| x == "A"));
        assert!(!e.eval(&|x: &String| x == "B"));
        assert!(e.eval(&|x: &String| x == "B" || x == "C"));
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
