//! [`JsonText`]: JSON serialized once and carried as text to the stores and back.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// JSON serialized once, straight to text (no `Value` tree), and kept as that text: an entity body
/// or a history record on its way to a store, a history record read back. It is parsed only when
/// something reads it. Equality is that of the JSON values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The JSON text of `value` (twinlink's model types always serialize: their maps have string
    /// keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> JsonText {
        JsonText(serde_json::value::to_raw_value(value).expect("model types serialise"))
    }

    /// Checks that `text` is JSON and keeps it as it is.
    pub fn from_text(text: String) -> Result<JsonText, serde_json::Error> {
        RawValue::from_string(text).map(JsonText)
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The record read as `T`; `None` when it is not one.
    pub fn parse<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.0.get()).ok()
    }

    /// The record as a JSON value.
    pub fn json(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.json() == other.json()
    }
}
