//! Subscriptions and notifications (clause 5.8) below the service layer: what a subscription is
//! (`model`) and how it is read (`parse`), which change it notifies of and what the notification
//! holds (`notify`), which subscriptions a change can concern (`index`), delivery over HTTP and MQTT (`deliver`, `mqtt`), and the copies of
//! subscriptions held by context sources (`remote`). The registry of live subscriptions and the
//! consumer of the change feed that runs them is a service (`crate::service::notifier`).

pub mod deliver;
pub mod index;
pub mod model;
pub mod mqtt;
pub mod notify;
pub mod parse;
pub mod remote;
