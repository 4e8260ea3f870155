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
pub mod notifier;
pub mod query;
pub mod registrations;
pub mod remote_subscriptions;
pub mod source_context;
pub mod subscriptions;
pub mod temporal;
pub mod temporal_sources;
pub mod watermarks;

use crate::config::Settings;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::ld::ContextLoader;
use crate::store::Store;

/// The application state: everything an operation needs, built once at start-up
/// (`crate::server::app_state`). The services are `impl AppState` blocks in this module's
/// children, which see its fields; every other layer goes through the accessors, so that what
/// the state holds can change without reaching into its callers.
pub struct AppState {
    store: Store,
    contexts: ContextLoader,
    settings: Settings,
    notifier: crate::service::notifier::Notifier,
    registry: crate::federation::Registry,
    sources: crate::federation::forward::Sources,
    public_url: std::sync::OnceLock<String>,
    audit_table: Option<crate::telemetry::audit::Table>,
    checks: std::sync::Arc<conformance::Checks>,
}

impl AppState {
    /// The state over an opened store and context loader: the notifier, the registry of
    /// context sources and the outbound client to them start empty.
    pub fn new(
        store: Store,
        contexts: ContextLoader,
        settings: Settings,
        audit_table: Option<crate::telemetry::audit::Table>,
        checks: std::sync::Arc<conformance::Checks>,
    ) -> AppState {
        AppState {
            checks,
            notifier: crate::service::notifier::Notifier::new(
                &settings.outbound,
                settings.notification_concurrency,
            ),
            sources: crate::federation::forward::Sources::new(&settings),
            registry: Default::default(),
            public_url: Default::default(),
            audit_table,
            store,
            contexts,
            settings,
        }
    }

    /// Where entities live.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where @contexts come from.
    pub fn contexts(&self) -> &ContextLoader {
        &self.contexts
    }

    /// The effective configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Subscriptions and their notifications.
    pub fn notifier(&self) -> &crate::service::notifier::Notifier {
        &self.notifier
    }

    /// The context source registrations of every tenant (federation).
    pub fn registry(&self) -> &crate::federation::Registry {
        &self.registry
    }

    /// The outbound client to context sources.
    pub fn sources(&self) -> &crate::federation::forward::Sources {
        &self.sources
    }

    /// The base URL sources reach this broker at ([`Settings::public_url_for`]), once the
    /// listener is bound (the port may be picked then).
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.get().map(String::as_str)
    }

    /// Records the base URL once the listener is bound (the first call wins).
    pub fn set_public_url(&self, url: String) {
        let _ = self.public_url.set(url);
    }

    /// The audit table, with `--audit-table true`.
    pub fn audit_table(&self) -> Option<&crate::telemetry::audit::Table> {
        self.audit_table.as_ref()
    }

    /// The data-model checks every write passes.
    pub fn checks(&self) -> &conformance::Checks {
        &self.checks
    }
}

impl AppState {
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
