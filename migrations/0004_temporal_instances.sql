-- twinlink schema, version 4: the temporal API addresses single history records by instanceId
-- (PATCH and DELETE /temporal/entities/{id}/attrs/{attrId}/{instanceId}).
CREATE INDEX IF NOT EXISTS attribute_instances_instance_idx
    ON attribute_instances (tenant, entity_id, instance_id);
