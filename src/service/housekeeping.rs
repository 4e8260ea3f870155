//! The broker's background chores, run on every instance until the broker is dropped: expired
//! entity maps are swept, expired registrations deleted (5.9.2.4), and what transient entities
//! and attributes (4.22) left behind after their expiry is reaped from the current state, and the
//! stored @contexts (5.13) are reloaded for the context loader, the stored data-model bindings for
//! the checks. Each chore is a store operation
//! that is safe to run on several instances sharing one database at once.

use super::AppState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Entities one reaping step takes on; a tick repeats steps until nothing is due.
const REAP_CHUNK: usize = 500;

/// Runs `chore` every `period` while the broker lives; logs what it did (a count) or why it
/// failed under `what`. Needs a running Tokio runtime.
fn every<F, Fut>(broker: &Arc<AppState>, period: Duration, what: &'static str, chore: F)
where
    F: Fn(Arc<AppState>) -> Fut + Send + 'static,
    Fut: Future<Output = crate::error::NgsiResult<usize>> + Send,
{
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        // Not before the store answers: a database still being reached (or migrated) at
        // start-up is not a chore failing.
        loop {
            let Some(broker) = weak.upgrade() else {
                return;
            };
            if broker.store().ready().await {
                break;
            }
            drop(broker);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(broker) = weak.upgrade() else {
                return;
            };
            match chore(broker).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(count = n, "{what}"),
                Err(e) => tracing::warn!(error = %e, "{what}: failed"),
            }
        }
    });
}

/// Starts every chore.
pub fn start(broker: &Arc<AppState>) {
    every(
        broker,
        broker.settings.reap_every,
        "stored @contexts changed",
        |b| async move { b.reload_stored_contexts().await },
    );
    every(
        broker,
        broker.settings.reap_every,
        "stored data-model bindings changed",
        |b| async move { b.reload_data_model_bindings().await },
    );
    every(
        broker,
        super::entity_maps::SWEEP_EVERY,
        "expired entity maps removed",
        |b| async move { b.store.sweep_entity_maps(chrono::Utc::now()).await },
    );
    every(
        broker,
        broker.settings.reap_every,
        "expired registrations deleted",
        |b| async move { b.delete_expired_registrations().await },
    );
    every(
        broker,
        broker.settings.reap_every,
        "expired entities and attributes reaped",
        |b| async move {
            let mut reaped = 0;
            loop {
                let n = b.store.reap(REAP_CHUNK).await?;
                reaped += n;
                if n < REAP_CHUNK {
                    return Ok(reaped);
                }
            }
        },
    );
}
