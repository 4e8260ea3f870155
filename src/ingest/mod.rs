//! Ingestion from message brokers: entities and attribute updates that devices and IoT agents
//! publish, written through the same batch service as `/entityOperations` over HTTP.

pub mod mqtt;
pub mod topics;
