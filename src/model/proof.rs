//! Entity proofs (GS CIM 009 V1.9.1 clause 4.5.2.2, Annex C.11): the `ngsildproof` Property
//! carries a W3C Data Integrity proof as its value, stored and returned untouched, and the two
//! members that say what it seals, `entityIdSealed` and `entityTypeSealed`, which appear on no
//! other attribute. They are kept as sub-attributes under their core IRIs and shown as the bare
//! strings they were given (the type compacted, as the core @context coerces it with @vocab).
//! Verifying a proof is not done here; `docs/proofs.md` says what it would take.

use super::{AttrKind, Attribute};
use crate::syntax::body::{BodyError, BodyResult};

/// The expanded name of the proof Property.
pub const PROOF: &str = "https://uri.etsi.org/ngsi-ld/ngsildproof";

/// The id of the entity a proof seals.
pub const ENTITY_ID_SEALED: &str = "https://uri.etsi.org/ngsi-ld/entityIdSealed";

/// The type of the entity a proof seals (an expanded type name).
pub const ENTITY_TYPE_SEALED: &str = "https://uri.etsi.org/ngsi-ld/entityTypeSealed";

/// Whether a sub-attribute name is one of the sealed members, which are shown bare.
pub fn is_sealed_member(iri: &str) -> bool {
    iri == ENTITY_ID_SEALED || iri == ENTITY_TYPE_SEALED
}

/// Checks the rules of 4.5.2.2 on a parsed attribute named `name` (expanded `iri`): the sealed
/// members only on `ngsildproof`, which is a Property whose value is an object (the proof). An
/// error points into the attribute (at the sealed member, when that is the fault).
pub fn check(name: &str, iri: &str, attr: &Attribute) -> BodyResult<()> {
    if iri != PROOF {
        if let Some(member) = attr.sub.keys().find(|k| is_sealed_member(k)) {
            let member = member.rsplit('/').next().unwrap_or(member);
            return Err(BodyError::member(member, format!(
                "attribute '{name}' has a '{member}' member, which only the ngsildproof Property may have (4.5.2.2)"
            )));
        }
        return Ok(());
    }
    if attr.is_null() || attr.value.is_null() {
        return Ok(());
    }
    if attr.kind != AttrKind::Property || !attr.value.is_object() {
        return Err(BodyError::whole(format!(
            "'{name}' is the entity's proof: a Property whose value is a W3C Data Integrity proof object (4.5.2.2), not a {} with value {}",
            attr.kind.name(),
            attr.value
        )));
    }
    Ok(())
}
