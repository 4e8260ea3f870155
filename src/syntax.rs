//! The error of every parser of the query and request languages (q, geoQ, scopeQ, type
//! expressions, idPattern, ordering, temporal parameters): which input failed, where (a byte span
//! into it), what is wrong and what was expected. Parsers return it so that their callers and tests
//! can see the position as data; it becomes the NGSI-LD ProblemDetails error only at the edge, by
//! the one `From` conversion below, which the HTTP and service layers use through `?`.
//!
//! JSON bodies have their own error, [`body::BodyError`], located by a [`pointer::JsonPointer`]
//! instead of a span, and converted at the edge the same way.

pub mod body;
pub mod pointer;

use crate::error::{ErrorKind, NgsiError};
use std::fmt;
use std::ops::Range;

/// Why a text could not be read as the language of one input, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// The input, named as the client wrote it (`q`, `geoQ`, `georel`, `coordinates`, `scopeQ`,
    /// `type`, `timeAt`, ...).
    pub input: &'static str,
    /// The bytes of the input that failed (empty at the end of the input; the whole input when
    /// the problem is the value as a whole).
    pub span: Range<usize>,
    /// What is wrong, naming the offending fragment where it helps.
    pub problem: String,
    /// What the grammar expected at the span, when it knows.
    pub expected: Option<String>,
    /// The span's start counted in characters from 1, for people; `None` when the problem is the
    /// value as a whole.
    position: Option<usize>,
}

impl ParseError {
    /// A problem at `span` of `text`, the value of `input`.
    pub fn at(
        input: &'static str,
        text: &str,
        span: Range<usize>,
        problem: impl Into<String>,
    ) -> ParseError {
        let start = span.start.min(text.len());
        let position = text.get(..start).map_or(start, |t| t.chars().count()) + 1;
        ParseError {
            input,
            span,
            problem: problem.into(),
            expected: None,
            position: Some(position),
        }
    }

    /// A problem with the whole of `text`, the value of `input` (an unknown keyword, an empty
    /// value; an empty text for an input that is missing), where no position would help.
    pub fn whole(input: &'static str, text: &str, problem: impl Into<String>) -> ParseError {
        ParseError {
            input,
            span: 0..text.len(),
            problem: problem.into(),
            expected: None,
            position: None,
        }
    }

    /// "Unexpected ..." at byte `at` of `text`: the character found there (or the end of the
    /// input) is the span, and `expected` says what the grammar wanted instead.
    pub fn unexpected(
        input: &'static str,
        text: &str,
        at: usize,
        expected: impl Into<String>,
    ) -> ParseError {
        let found = text.get(at..).and_then(|rest| rest.chars().next());
        let (end, problem) = match found {
            Some(c) => (at + c.len_utf8(), format!("unexpected '{c}'")),
            None => (at, "unexpected end of input".to_string()),
        };
        ParseError::at(input, text, at..end, problem).expecting(expected)
    }

    /// The error with what the grammar expected.
    pub fn expecting(mut self, expected: impl Into<String>) -> ParseError {
        self.expected = Some(expected.into());
        self
    }

    /// The error as one of another input that shares the grammar (csf is written in q).
    pub fn for_input(mut self, input: &'static str) -> ParseError {
        self.input = input;
        self
    }

    /// The span's start in characters counted from 1, if the error points into the input.
    pub fn position(&self) -> Option<usize> {
        self.position
    }
}

/// `q: unexpected ')' at position 5, expected ';', '|' or the end of the query`: the input, then
/// [`ParseError::message`].
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.input, self.message())
    }
}

impl ParseError {
    /// The problem (quoting the fragment), the position of the span and what was expected,
    /// without the input's name: what a JSON body shows after the pointer to the member that
    /// held the text (`/geoQ/georel: ...`).
    pub fn message(&self) -> String {
        let mut text = self.problem.clone();
        if let Some(position) = self.position {
            text.push_str(&format!(" at position {position}"));
        }
        if let Some(expected) = &self.expected {
            text.push_str(&format!(", expected {expected}"));
        }
        text
    }
}

impl std::error::Error for ParseError {}

/// The edge: a parse error reaches the client as BadRequestData (400), the NGSI-LD error every
/// one of these inputs has always answered with, its detail the message above.
impl From<ParseError> for NgsiError {
    fn from(e: ParseError) -> NgsiError {
        NgsiError::new(ErrorKind::BadRequestData, e.to_string())
    }
}

/// The result of a parser.
pub type ParseResult<T> = Result<T, ParseError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_points_at_the_span_and_converts_to_bad_request_data() {
        let e = ParseError::unexpected("q", "é==1)", 5, "the end of the query");
        assert_eq!(e.span, 5..6);
        assert_eq!(e.position(), Some(5));
        assert_eq!(
            e.to_string(),
            "q: unexpected ')' at position 5, expected the end of the query"
        );
        let end = ParseError::unexpected("q", "a==", 3, "a value");
        assert_eq!(
            (end.span, end.problem.as_str()),
            (3..3, "unexpected end of input")
        );
        let whole = ParseError::whole("georel", "nearby", "'nearby' is not known");
        assert_eq!(whole.span, 0..6);
        assert_eq!(whole.to_string(), "georel: 'nearby' is not known");
        let ngsi = NgsiError::from(e.for_input("csf"));
        assert_eq!(ngsi.kind, ErrorKind::BadRequestData);
        assert_eq!(
            ngsi.detail,
            "csf: unexpected ')' at position 5, expected the end of the query"
        );
    }
}
