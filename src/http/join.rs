//! The `join` and `joinLevel` parameters of retrievals and queries (4.5.23); the joining itself
//! is `service::join`.

use super::negotiate::RequestInfo;
use crate::error::NgsiResult;
pub use crate::service::join::{render, Join};

/// Reads `join` and `joinLevel`; None when no join is asked for.
pub fn parse(info: &RequestInfo) -> NgsiResult<Option<Join>> {
    Join::of(info.param("join"), info.param("joinLevel"))
}
