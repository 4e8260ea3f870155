//! JSON Pointers (RFC 6901): where in a JSON body a member is. A body has no useful byte span once
//! parsed, so the body readers locate their errors with a pointer instead, built from the member
//! names as the client wrote them (compact terms, not expanded IRIs).

use std::fmt;

/// A JSON Pointer, kept as its unescaped reference tokens so that it can be built from the
/// innermost member outwards (an error is located where it is found, and every reader on the way
/// out puts its own member in front) and escaped once, when it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPointer {
    tokens: Vec<String>,
}

impl JsonPointer {
    /// The whole document (the empty pointer, "").
    pub fn root() -> JsonPointer {
        JsonPointer::default()
    }

    /// The pointer to the member or array index `token` of the document.
    pub fn to(token: impl ToString) -> JsonPointer {
        JsonPointer::root().under(token)
    }

    /// The pointer seen from the parent: `token` (a member name or an array index) in front.
    pub fn under(mut self, token: impl ToString) -> JsonPointer {
        self.tokens.insert(0, token.to_string());
        self
    }

    /// The pointer to `token` inside what this pointer names.
    pub fn child(mut self, token: impl ToString) -> JsonPointer {
        self.tokens.push(token.to_string());
        self
    }

    /// The pointer seen from further up: all of `parent`'s tokens in front.
    pub fn within(mut self, parent: &JsonPointer) -> JsonPointer {
        self.tokens.splice(0..0, parent.tokens.iter().cloned());
        self
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The unescaped reference tokens, outermost first.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

/// The pointer's text: each token after a `/`, `~` escaped as `~0` and `/` as `~1`.
impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            f.write_str("/")?;
            for c in token.chars() {
                match c {
                    '~' => f.write_str("~0")?,
                    '/' => f.write_str("~1")?,
                    c => write!(f, "{c}")?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_from_inside_out_and_escaped_per_rfc_6901() {
        assert_eq!(JsonPointer::root().to_string(), "");
        assert!(JsonPointer::root().is_root());
        let p = JsonPointer::to(1)
            .under("coordinates")
            .under("value")
            .under("location");
        assert_eq!(p.to_string(), "/location/value/coordinates/1");
        assert_eq!(JsonPointer::to("object").child(2).to_string(), "/object/2");
        let nested = JsonPointer::to("datasetId").within(&JsonPointer::to("temperature").child(1));
        assert_eq!(nested.to_string(), "/temperature/1/datasetId");
        // RFC 6901 section 3: `~` first, then `/`, so "~1" in a name stays a literal "~01".
        let odd = JsonPointer::to("a/b").under("m~n").child("~1").child("");
        assert_eq!(odd.to_string(), "/m~0n/a~1b/~01/");
        assert_eq!(odd.tokens(), ["m~n", "a/b", "~1", ""]);
        assert_eq!(
            JsonPointer::to("https://ex.org/temp").to_string(),
            "/https:~1~1ex.org~1temp"
        );
    }
}
