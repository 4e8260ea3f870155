//! What a request or a subscription asks of linked entity retrieval (4.5.23): `join` and
//! `joinLevel`. Read here, below the services, so that the subscription model can hold it; the
//! retrieval itself is `crate::service::join`.

use crate::error::{NgsiError, NgsiResult};

/// How linked entities are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join {
    /// `join=flat` (else inline).
    pub flat: bool,
    /// `joinLevel`: how many links deep.
    pub level: u32,
}

impl Join {
    /// The join that `join` (inline, flat or @none) and `joinLevel` (a positive integer, 1 when
    /// absent) ask for; None for no join.
    pub fn of(join: Option<&str>, level: Option<&str>) -> NgsiResult<Option<Join>> {
        let level = match level {
            None => 1,
            Some(l) => l.parse::<u32>().ok().filter(|l| *l > 0).ok_or_else(|| {
                NgsiError::bad_data(format!("joinLevel={l} must be a positive integer"))
            })?,
        };
        match join {
            None | Some("@none") => Ok(None),
            Some("inline") => Ok(Some(Join { flat: false, level })),
            Some("flat") => Ok(Some(Join { flat: true, level })),
            Some(other) => Err(NgsiError::bad_data(format!(
                "join={other} must be inline, flat or @none"
            ))),
        }
    }
}
