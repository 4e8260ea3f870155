//! Entity maps (5.14, 5.2.39) as the stores keep them: per tenant and id, the candidate entities
//! of a query in the order its pages walk them, each with the places that hold it, and when the
//! map expires. Both stores keep the entries as one JSON array (`[[id, [place, ...]], ...]`)
//! beside the expiry, so that reading a map is one row and removing entries is one write.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One stored entity map.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityMap {
    /// The map's id (a URI).
    pub id: String,
    /// When the map stops being served.
    pub expires_at: DateTime<Utc>,
    /// The candidate entities in page order.
    pub entries: Vec<MapEntry>,
}

/// One candidate of a map: an entity id and where it is held, `@none` for this broker's own
/// store and otherwise the ids of the registrations whose sources hold (part of) it. Stored as
/// the JSON array `[id, [place, ...]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapEntry(pub String, pub Vec<String>);

impl MapEntry {
    /// The entity id.
    pub fn id(&self) -> &str {
        &self.0
    }

    /// The places that hold the entity.
    pub fn places(&self) -> &[String] {
        &self.1
    }
}
