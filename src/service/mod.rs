//! The NGSI-LD operations, each written once and used by every transport (HTTP today, MQTT and
//! batch later). Services take parsed, expanded input and return expanded results; they know
//! nothing of HTTP.

pub mod batch;
pub mod catalogue;
pub mod conformance;
pub mod contexts;
pub mod data_models;
pub mod distributed;
pub mod entities;
pub mod entity_maps;
pub mod forwarding;
pub mod housekeeping;
pub mod join;
pub mod query;
pub mod registrations;
pub mod remote_subscriptions;
pub mod source_context;
pub mod subscriptions;
pub mod temporal;
pub mod temporal_sources;

use crate::config::Settings;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::ContextLoader;
use crate::store::Store;

/// Everything an operation needs: the store, the context loader and the settings.
pub struct Broker {
    /// Where entities live.
    pub store: Store,
    /// Where @contexts come from.
    pub contexts: ContextLoader,
    /// The effective configuration.
    pub settings: Settings,
    /// Subscriptions and their notifications.
    pub notifier: crate::subscription::Notifier,
    /// The context source registrations of every tenant (federation).
    pub registry: crate::federation::Registry,
    /// The outbound client to context sources.
    pub sources: crate::federation::forward::Sources,
    /// The base URL sources reach this broker at ([`crate::config::Settings::public_url_for`]),
    /// known once the listener is bound (the port may be picked then).
    pub public_url: std::sync::OnceLock<String>,
    /// The data-model checks every write passes.
    pub checks: std::sync::Arc<conformance::Checks>,
    /// The audit table, with `--audit-table true`.
    pub audit_table: Option<crate::telemetry::audit::Table>,
}

impl Broker {
    /// Fails with NonexistentTenant unless the tenant exists (reads never create tenants).
    pub async fn require_tenant(&self, tenant: &str) -> NgsiResult<()> {
        if self.store.tenant_exists(tenant).await? {
            Ok(())
        } else {
            Err(NgsiError::new(
                ErrorKind::NonexistentTenant,
                format!(
                    "the tenant '{tenant}' does not exist (it is created by the first write to it)"
                ),
            ))
        }
    }
}
