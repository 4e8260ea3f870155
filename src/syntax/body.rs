//! The error of the JSON body readers (entities, attributes, GeoJSON geometries, the JSON geoQ):
//! what is wrong and where, as a JSON Pointer to the member at fault. It is the body's analogue of
//! [`ParseError`]: readers return it so that callers and tests see the location as data, each
//! reader putting its own member in front on the way out, and it becomes the NGSI-LD
//! ProblemDetails error only at the edge, by the one `From` conversion below.

use super::pointer::JsonPointer;
use super::ParseError;
use crate::error::{ErrorKind, NgsiError};
use std::fmt;

/// Why a JSON body could not be read as NGSI-LD, and which member is at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError {
    /// The NGSI-LD error type: BadRequestData, or InvalidRequest when the body is not even the
    /// JSON shape the operation takes.
    pub kind: ErrorKind,
    /// The member at fault (or that is missing), relative to the JSON the reader was given.
    pub pointer: JsonPointer,
    /// What is wrong, naming the offending value where it helps.
    pub problem: String,
}

impl BodyError {
    /// Invalid NGSI-LD data at `pointer`.
    pub fn at(pointer: JsonPointer, problem: impl Into<String>) -> BodyError {
        BodyError {
            kind: ErrorKind::BadRequestData,
            pointer,
            problem: problem.into(),
        }
    }

    /// Invalid NGSI-LD data in the member `token` of the JSON being read.
    pub fn member(token: impl ToString, problem: impl Into<String>) -> BodyError {
        BodyError::at(JsonPointer::to(token), problem)
    }

    /// Invalid NGSI-LD data that is the JSON being read as a whole.
    pub fn whole(problem: impl Into<String>) -> BodyError {
        BodyError::at(JsonPointer::root(), problem)
    }

    /// A failure of a shared rule (a URI, a name, a DateTime, which know nothing of bodies) at
    /// `pointer`, keeping its error type and detail.
    pub fn located(pointer: JsonPointer, e: NgsiError) -> BodyError {
        BodyError {
            kind: e.kind,
            pointer,
            problem: e.detail,
        }
    }

    /// A text member `token` (a q, a georel, coordinates as text) that its language refused: the
    /// parse error's message, at the member.
    pub fn parsing(token: impl ToString, e: &ParseError) -> BodyError {
        BodyError::member(token, e.message())
    }

    /// The error seen from the parent: `token` (the member or index read) in front.
    pub fn under(mut self, token: impl ToString) -> BodyError {
        self.pointer = self.pointer.under(token);
        self
    }

    /// The error seen from further up: all of `parent` in front.
    pub fn within(mut self, parent: &JsonPointer) -> BodyError {
        self.pointer = self.pointer.within(parent);
        self
    }

    /// The error with another error type (a body that is not a JSON object is InvalidRequest).
    pub fn of_kind(mut self, kind: ErrorKind) -> BodyError {
        self.kind = kind;
        self
    }
}

/// `/temperature/value: a null inside a value is not allowed`: the pointer first, as a parse
/// error names its input first, then the problem; a problem with the whole JSON has no prefix.
impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.pointer.is_root() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for BodyError {}

/// The edge: the error type as read, the detail the message above, and the pointer kept for the
/// ProblemDetails' `pointer` member.
impl From<BodyError> for NgsiError {
    fn from(e: BodyError) -> NgsiError {
        let detail = e.to_string();
        NgsiError::new(e.kind, detail).with_pointer(e.pointer)
    }
}

/// The result of a body reader.
pub type BodyResult<T> = Result<T, BodyError>;

/// Locates the failure of a shared rule at a member of the body being read: `.at("datasetId")`.
pub trait Locate<T> {
    /// The result with its error at the member or index `token` of the JSON being read (the
    /// pointer is only built on failure).
    fn at(self, token: impl ToString) -> BodyResult<T>;
    /// The result with its error at `pointer`.
    fn at_pointer(self, pointer: impl FnOnce() -> JsonPointer) -> BodyResult<T>;
}

impl<T> Locate<T> for Result<T, NgsiError> {
    fn at(self, token: impl ToString) -> BodyResult<T> {
        self.map_err(|e| BodyError::located(JsonPointer::to(token), e))
    }

    fn at_pointer(self, pointer: impl FnOnce() -> JsonPointer) -> BodyResult<T> {
        self.map_err(|e| BodyError::located(pointer(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_pointer_and_converts_with_it() {
        let e =
            BodyError::member("value", "a null inside a value is not allowed").under("temperature");
        assert_eq!(
            e.to_string(),
            "/temperature/value: a null inside a value is not allowed"
        );
        let ngsi = NgsiError::from(e);
        assert_eq!(ngsi.kind, ErrorKind::BadRequestData);
        assert_eq!(
            ngsi.detail,
            "/temperature/value: a null inside a value is not allowed"
        );
        let details = ngsi.problem_details();
        assert_eq!(details["pointer"], "/temperature/value");
        assert_eq!(
            details["title"],
            "The request contains invalid NGSI-LD data"
        );
        let whole =
            BodyError::whole("the entity must be a JSON object").of_kind(ErrorKind::InvalidRequest);
        assert_eq!(whole.to_string(), "the entity must be a JSON object");
        let whole = NgsiError::from(whole).problem_details();
        assert_eq!(
            (whole["status"].as_u64(), &whole["pointer"]),
            (Some(400), &serde_json::json!(""))
        );
        let shared: Result<(), NgsiError> = Err(NgsiError::bad_data("'x' is not a valid URI"));
        let located = shared
            .at("datasetId")
            .unwrap_err()
            .under(1)
            .under("temperature");
        assert_eq!(located.pointer.to_string(), "/temperature/1/datasetId");
    }
}
