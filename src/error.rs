//! NGSI-LD errors as ProblemDetails (RFC 7807), the one error type every layer returns so that a
//! failure anywhere reaches the client with the right NGSI-LD error type, status and a readable detail.

use crate::syntax::pointer::JsonPointer;
use serde_json::{json, Value};
use std::fmt;

/// The NGSI-LD error types of GS CIM 009 clause 5.5.2 (plus the HTTP-level negotiation failures),
/// each tied to its status code so that no call site can pair them wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is syntactically wrong (malformed JSON, a bad header, a bad query parameter).
    InvalidRequest,
    /// The request is well formed but its data is not acceptable NGSI-LD.
    BadRequestData,
    /// The entity, attribute or other resource does not exist.
    ResourceNotFound,
    /// The resource to create exists already.
    AlreadyExists,
    /// The operation conflicts with the state of the broker or its registrations (4.3.6.3: an
    /// exclusive or redirect registration over data that is already held elsewhere).
    Conflict,
    /// The operation is not supported (e.g. a forbidden attribute type change).
    OperationNotSupported,
    /// The tenant named in `NGSILD-Tenant` does not exist.
    NonexistentTenant,
    /// A JSON-LD @context could not be retrieved.
    LdContextNotAvailable,
    /// The Accept header names no representation the broker offers (HTTP 406).
    NotAcceptable,
    /// The Content-Type is not one the operation takes (HTTP 415).
    UnsupportedMediaType,
    /// The request body is larger than the configured limit (HTTP 413).
    PayloadTooLarge,
    /// A write came without Content-Length (HTTP 411, clause 6.3.4); answered with no body.
    LengthRequired,
    /// A dependency (the database) is unavailable right now.
    ServiceUnavailable,
    /// A request came back to this broker through the context sources it was forwarded to, and
    /// only they hold what it addresses (6.3.18; HTTP 508).
    LoopDetected,
    /// A bug or an unexpected failure inside the broker.
    InternalError,
}

impl ErrorKind {
    /// The HTTP status code the NGSI-LD API binding (clause 6.3.2, V1.9.1) gives this error type.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::BadRequestData => 400,
            ErrorKind::ResourceNotFound | ErrorKind::NonexistentTenant => 404,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => 409,
            ErrorKind::OperationNotSupported => 422,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::LoopDetected => 508,
            // 504 since GS CIM 009 V1.8.1 (was 503 before).
            ErrorKind::LdContextNotAvailable => 504,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::LengthRequired => 411,
            ErrorKind::InternalError => 500,
        }
    }

    /// The short name used in the error type URI and as the title.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "InvalidRequest",
            ErrorKind::BadRequestData => "BadRequestData",
            ErrorKind::ResourceNotFound => "ResourceNotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::OperationNotSupported => "OperationNotSupported",
            ErrorKind::NonexistentTenant => "NonexistentTenant",
            ErrorKind::LdContextNotAvailable => "LdContextNotAvailable",
            ErrorKind::NotAcceptable => "NotAcceptable",
            ErrorKind::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorKind::PayloadTooLarge => "PayloadTooLarge",
            ErrorKind::LengthRequired => "LengthRequired",
            ErrorKind::ServiceUnavailable => "ServiceUnavailable",
            ErrorKind::LoopDetected => "LoopDetected",
            ErrorKind::InternalError => "InternalError",
        }
    }

    /// The error type URI of the ProblemDetails body.
    pub fn type_uri(self) -> String {
        // GS CIM 009 has no error type for an unavailable dependency: it is an InternalError
        // that the 503 status marks as temporary.
        let name = match self {
            ErrorKind::ServiceUnavailable => ErrorKind::InternalError.name(),
            other => other.name(),
        };
        format!("https://uri.etsi.org/ngsi-ld/errors/{name}")
    }
}

/// An NGSI-LD failure: what went wrong (kind) and a sentence a person can act on (detail).
#[derive(Debug, Clone, PartialEq)]
pub struct NgsiError {
    /// The NGSI-LD error type.
    pub kind: ErrorKind,
    /// What went wrong, naming the offending input.
    pub detail: String,
    /// NGSILD-Warning values (6.3.17) of the context sources that failed while the operation
    /// ran: a distributed retrieve can end in 404 because a source failed, and says so.
    pub warnings: Vec<String>,
    /// The member of the request body at fault (RFC 6901), when a body reader located it: shown
    /// in the ProblemDetails so that a client can find it in what it sent.
    pub pointer: Option<JsonPointer>,
}

impl NgsiError {
    /// Builds an error of any kind.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        NgsiError {
            kind,
            detail: detail.into(),
            warnings: Vec::new(),
            pointer: None,
        }
    }

    /// The error located at a member of the request body.
    pub fn with_pointer(mut self, pointer: JsonPointer) -> Self {
        self.pointer = Some(pointer);
        self
    }

    /// The error with the warnings of the context sources that failed meanwhile.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
    /// Shorthand for the most common error, invalid NGSI-LD data.
    pub fn bad_data(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequestData, detail)
    }
    /// Shorthand for a malformed request.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, detail)
    }
    /// Shorthand for a missing resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, detail)
    }
    /// Shorthand for an internal failure (storage I/O, a bug).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalError, detail)
    }

    /// The ProblemDetails body (RFC 7807) for this error; a located error has the extension
    /// member `pointer`, the JSON Pointer of the member at fault (the detail names it too).
    pub fn problem_details(&self) -> Value {
        let mut body = json!({
            "type": self.kind.type_uri(),
            "title": title(self.kind),
            "status": self.kind.status(),
            "detail": self.detail,
        });
        if let Some(pointer) = &self.pointer {
            body["pointer"] = Value::String(pointer.to_string());
        }
        body
    }
}

fn title(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "The request is malformed",
        ErrorKind::BadRequestData => "The request contains invalid NGSI-LD data",
        ErrorKind::ResourceNotFound => "The resource was not found",
        ErrorKind::AlreadyExists => "The resource already exists",
        ErrorKind::Conflict => "The operation conflicts with a registration or with data held here",
        ErrorKind::OperationNotSupported => "The operation is not supported",
        ErrorKind::NonexistentTenant => "The tenant does not exist",
        ErrorKind::LdContextNotAvailable => "A JSON-LD @context could not be retrieved",
        ErrorKind::NotAcceptable => "No acceptable representation",
        ErrorKind::UnsupportedMediaType => "Unsupported media type",
        ErrorKind::PayloadTooLarge => "The request body is too large",
        ErrorKind::LengthRequired => "Content-Length is required",
        ErrorKind::ServiceUnavailable => "The service is unavailable",
        ErrorKind::LoopDetected => "The request has looped back through the context sources",
        ErrorKind::InternalError => "Internal error",
    }
}

impl fmt::Display for NgsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

impl std::error::Error for NgsiError {}

/// The result type of every fallible operation that can reach a client.
pub type NgsiResult<T> = Result<T, NgsiError>;

/// An error with its causes ("error connecting to server: Connection refused ...").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
