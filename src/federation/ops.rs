//! The NGSI-LD operations a registration may offer (4.20, Table 4.20-1) and the groups that name
//! several at once, so that every distributed operation asks one question: does this
//! registration serve this operation?

/// One operation a context source can serve, by its name in a registration's `operations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateEntity,
    UpdateEntity,
    UpdateAttrs,
    AppendAttrs,
    DeleteAttrs,
    DeleteEntity,
    MergeEntity,
    ReplaceEntity,
    ReplaceAttrs,
    PurgeEntity,
    CreateBatch,
    UpsertBatch,
    UpdateBatch,
    DeleteBatch,
    MergeBatch,
    UpsertTemporal,
    AppendAttrsTemporal,
    DeleteAttrsTemporal,
    UpdateAttrsTemporal,
    DeleteAttrInstanceTemporal,
    DeleteTemporal,
    RetrieveEntity,
    QueryEntity,
    QueryBatch,
    RetrieveTemporal,
    QueryTemporal,
    RetrieveEntityTypes,
    RetrieveEntityTypeDetails,
    RetrieveEntityTypeInfo,
    RetrieveAttrTypes,
    RetrieveAttrTypeDetails,
    RetrieveAttrTypeInfo,
    CreateSubscription,
    UpdateSubscription,
    RetrieveSubscription,
    QuerySubscription,
    DeleteSubscription,
    RetrieveEntityMap,
    UpdateEntityMap,
    DeleteEntityMap,
}

use Operation as O;

/// Every operation with its name (Table 4.20-1).
const NAMES: &[(Operation, &str)] = &[
    (O::CreateEntity, "createEntity"),
    (O::UpdateEntity, "updateEntity"),
    (O::UpdateAttrs, "updateAttrs"),
    (O::AppendAttrs, "appendAttrs"),
    (O::DeleteAttrs, "deleteAttrs"),
    (O::DeleteEntity, "deleteEntity"),
    (O::MergeEntity, "mergeEntity"),
    (O::ReplaceEntity, "replaceEntity"),
    (O::ReplaceAttrs, "replaceAttrs"),
    (O::PurgeEntity, "purgeEntity"),
    (O::CreateBatch, "createBatch"),
    (O::UpsertBatch, "upsertBatch"),
    (O::UpdateBatch, "updateBatch"),
    (O::DeleteBatch, "deleteBatch"),
    (O::MergeBatch, "mergeBatch"),
    (O::UpsertTemporal, "upsertTemporal"),
    (O::AppendAttrsTemporal, "appendAttrsTemporal"),
    (O::DeleteAttrsTemporal, "deleteAttrsTemporal"),
    (O::UpdateAttrsTemporal, "updateAttrInstanceTemporal"),
    (O::DeleteAttrInstanceTemporal, "deleteAttrInstanceTemporal"),
    (O::DeleteTemporal, "deleteTemporal"),
    (O::RetrieveEntity, "retrieveEntity"),
    (O::QueryEntity, "queryEntity"),
    (O::QueryBatch, "queryBatch"),
    (O::RetrieveTemporal, "retrieveTemporal"),
    (O::QueryTemporal, "queryTemporal"),
    (O::RetrieveEntityTypes, "retrieveEntityTypes"),
    (O::RetrieveEntityTypeDetails, "retrieveEntityTypeDetails"),
    (O::RetrieveEntityTypeInfo, "retrieveEntityTypeInfo"),
    (O::RetrieveAttrTypes, "retrieveAttrTypes"),
    (O::RetrieveAttrTypeDetails, "retrieveAttrTypeDetails"),
    (O::RetrieveAttrTypeInfo, "retrieveAttrTypeInfo"),
    (O::CreateSubscription, "createSubscription"),
    (O::UpdateSubscription, "updateSubscription"),
    (O::RetrieveSubscription, "retrieveSubscription"),
    (O::QuerySubscription, "querySubscription"),
    (O::DeleteSubscription, "deleteSubscription"),
    (O::RetrieveEntityMap, "retrieveEntityMap"),
    (O::UpdateEntityMap, "updateEntityMap"),
    (O::DeleteEntityMap, "deleteEntityMap"),
];

/// Reads of entities in bulk, besides retrieveOps (part of associationOps).
const QUERY_BATCH: &[Operation] = &[O::QueryBatch];

/// Reads of entity types and attributes (part of associationOps and redirectionOps).
const TYPE_READS: &[Operation] = &[
    O::RetrieveEntityTypes,
    O::RetrieveEntityTypeDetails,
    O::RetrieveEntityTypeInfo,
    O::RetrieveAttrTypes,
    O::RetrieveAttrTypeDetails,
    O::RetrieveAttrTypeInfo,
];

/// Subscriptions a source keeps for a federating broker (part of associationOps).
const SUBSCRIPTION_OPS: &[Operation] = &[
    O::CreateSubscription,
    O::UpdateSubscription,
    O::RetrieveSubscription,
    O::QuerySubscription,
    O::DeleteSubscription,
];

/// The entity-map operations (part of federationOps and redirectionOps).
const ENTITY_MAP_OPS: &[Operation] =
    &[O::RetrieveEntityMap, O::UpdateEntityMap, O::DeleteEntityMap];

/// Updates of existing entities (4.20: updateOps).
const UPDATE_OPS: &[Operation] = &[
    O::UpdateEntity,
    O::UpdateAttrs,
    O::ReplaceEntity,
    O::ReplaceAttrs,
];

/// Retrieval of entities (4.20: retrieveOps).
const RETRIEVE_OPS: &[Operation] = &[O::RetrieveEntity, O::QueryEntity];

/// The single-entity writes a broker passes on to a source that holds the data instead of it
/// (part of redirectionOps); batch and temporal operations are named one by one.
const REDIRECTED_WRITES: &[Operation] = &[
    O::CreateEntity,
    O::UpdateEntity,
    O::AppendAttrs,
    O::UpdateAttrs,
    O::DeleteAttrs,
    O::DeleteEntity,
    O::MergeEntity,
    O::ReplaceEntity,
    O::ReplaceAttrs,
    O::PurgeEntity,
];

/// The groups (4.20, Table 4.20-2) and the parts each is made of: associationOps (reads and
/// subscriptions a source serves to a federating broker), federationOps (the default of a
/// registration: associationOps and entity maps), updateOps, retrieveOps and redirectionOps.
const GROUPS: &[(&str, &[&[Operation]])] = &[
    (
        "associationOps",
        &[RETRIEVE_OPS, QUERY_BATCH, TYPE_READS, SUBSCRIPTION_OPS],
    ),
    (
        "federationOps",
        &[
            RETRIEVE_OPS,
            QUERY_BATCH,
            TYPE_READS,
            SUBSCRIPTION_OPS,
            ENTITY_MAP_OPS,
        ],
    ),
    ("updateOps", &[UPDATE_OPS]),
    ("retrieveOps", &[RETRIEVE_OPS]),
    (
        "redirectionOps",
        &[REDIRECTED_WRITES, RETRIEVE_OPS, TYPE_READS, ENTITY_MAP_OPS],
    ),
];

impl Operation {
    /// The operations a name in `operations` stands for: one, or a group's; None for an unknown
    /// name.
    pub fn expand(name: &str) -> Option<Vec<Operation>> {
        if let Some((_, parts)) = GROUPS.iter().find(|(n, _)| *n == name) {
            return Some(parts.concat());
        }
        NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(op, _)| vec![*op])
    }

    /// The operations of a registration without `operations`: federationOps (Table 5.2.9-1).
    pub fn default_set() -> Vec<Operation> {
        Operation::expand("federationOps").unwrap_or_default()
    }

    /// The operation's name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(op, _)| *op == self)
            .map_or("", |(_, n)| n)
    }

    /// Whether the operation only reads (auxiliary registrations offer nothing else).
    pub fn is_read(self) -> bool {
        self.name().starts_with("retrieve") || self.name().starts_with("query")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_name_and_groups_expand() {
        for (op, name) in NAMES {
            assert_eq!(op.name(), *name);
            assert_eq!(Operation::expand(name), Some(vec![*op]));
        }
        assert_eq!(
            Operation::expand("retrieveOps"),
            Some(vec![O::RetrieveEntity, O::QueryEntity])
        );
        assert!(Operation::expand("fly").is_none());
        assert!(O::QueryTemporal.is_read());
        assert!(!O::CreateSubscription.is_read());
        assert!(!O::MergeBatch.is_read());
        // Batch operations are named one by one; purge is a redirection (Table 4.20-2).
        let redirection = Operation::expand("redirectionOps").unwrap();
        assert!(redirection.contains(&O::PurgeEntity));
        assert!(!redirection.contains(&O::CreateBatch));
        assert!(!Operation::default_set().contains(&O::CreateEntity));
        let association = Operation::expand("associationOps").unwrap();
        assert!(
            association.contains(&O::QueryBatch) && association.contains(&O::CreateSubscription)
        );
        assert!(!association.contains(&O::RetrieveEntityMap));
        assert!(Operation::default_set().contains(&O::RetrieveEntityMap));
    }
}
