//! The data-model checks of every write: the one door each entity a service writes passes
//! before the store commits it, whatever the transport (HTTP single and batch writes, MQTT
//! ingestion, temporal provision). A finding of a `reject` binding fails the entity's write
//! with 400 BadRequestData; those of `flag` bindings are recorded on the entity (the
//! [`FINDINGS_IRI`] attribute) and counted in `twinlink_data_model_findings_total`.

use super::Broker;
use crate::config::Settings;
use crate::error::{NgsiError, NgsiResult};
use crate::model::conformance::rules::{self, ModelRules};
use crate::model::conformance::{check_instances, check_model, Finding, Mode, Scope};
use crate::model::{AttrKind, Attribute, Entity};
use crate::store::history::InstanceChange;
use crate::store::{Decide, Decision, Step, Write};
use serde_json::Value;

/// The attribute a flagged entity carries its findings in (a Property whose value lists them),
/// so that `q=dataModelFindings` finds the flagged entities.
pub const FINDINGS_IRI: &str = "https://uri.etsi.org/ngsi-ld/default-context/dataModelFindings";

/// A configured binding, its model looked up.
#[derive(Debug)]
struct Bound {
    tenant: String,
    model: &'static str,
    rules: &'static ModelRules,
    type_iri: String,
    mode: Mode,
}

/// Every check configured, resolved once at start.
#[derive(Debug, Default)]
pub struct Checks {
    bindings: Vec<Bound>,
}

impl Checks {
    /// The checks the settings configure; an error names a binding whose model is unknown.
    pub fn new(settings: &Settings) -> Result<Checks, String> {
        let bindings = settings
            .data_models
            .iter()
            .map(|b| {
                let (model, rules) = rules::find(&b.model)?;
                Ok(Bound {
                    tenant: b.tenant.clone(),
                    model,
                    rules,
                    type_iri: b.type_iri.clone().unwrap_or_else(|| rules.type_iri.clone()),
                    mode: b.mode,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Checks { bindings })
    }

    fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Checks an entity about to be written over `before` (the stored state, if any): fails
    /// with the findings of `reject` bindings, which judge what the write changes; records the
    /// findings of `flag` bindings, which judge the whole entity, on it (or removes a record no
    /// longer true).
    /// Instances recorded in the history besides the entity (`recorded`, temporal provision)
    /// are judged by the `reject` bindings too.
    fn apply(
        &self,
        tenant: &str,
        before: Option<&Entity>,
        entity: &mut Entity,
        recorded: &[InstanceChange],
    ) -> NgsiResult<()> {
        let scope = before.map_or(Scope::Whole, Scope::ChangedSince);
        let (mut refused, mut flagged, mut flagging) = (Vec::new(), Vec::new(), false);
        for b in self.bindings.iter().filter(|b| {
            (b.tenant == "*" || b.tenant == tenant) && entity.types.contains(&b.type_iri)
        }) {
            match b.mode {
                Mode::Reject => {
                    check_model(b.model, b.rules, entity, scope, &mut refused);
                    refused.extend(recorded_findings(b, recorded));
                }
                Mode::Flag => {
                    flagging = true;
                    check_model(b.model, b.rules, entity, Scope::Whole, &mut flagged);
                }
            }
        }
        count(&refused, "reject");
        count(&flagged, "flag");
        if !refused.is_empty() {
            let messages: Vec<String> = refused.iter().map(Finding::message).collect();
            return Err(NgsiError::bad_data(messages.join("; ")));
        }
        if flagging {
            record(entity, &flagged);
        }
        Ok(())
    }
}

/// The findings of a binding on the attribute instances of history records.
fn recorded_findings<'a>(
    b: &'a Bound,
    recorded: &'a [InstanceChange],
) -> impl Iterator<Item = Finding> + 'a {
    recorded.iter().filter_map(move |r| {
        let (iri, text) = (r.attr.as_deref()?, r.value.as_ref()?);
        let instance: Attribute = serde_json::from_str(text.text()).ok()?;
        check_instances(b.model, b.rules, iri, std::slice::from_ref(&instance))
    })
}

fn count(findings: &[Finding], mode: &str) {
    for f in findings {
        crate::telemetry::metrics::data_model_finding(&f.model, f.rule.name(), mode);
    }
}

/// Puts the findings on the entity, observed at the write's time, or takes an old record off.
fn record(entity: &mut Entity, findings: &[Finding]) {
    if findings.is_empty() {
        entity.attrs.shift_remove(FINDINGS_IRI);
        return;
    }
    let list = findings.iter().map(Finding::record).collect();
    let mut a = Attribute::bare(AttrKind::Property, Value::Array(list), entity.modified_at);
    a.observed_at = Some(crate::model::format_time(&entity.modified_at));
    let created = entity.attrs.get(FINDINGS_IRI).and_then(|l| l.first());
    a.created_at = created.map_or(entity.modified_at, |old| old.created_at);
    entity.attrs.insert(FINDINGS_IRI.to_string(), vec![a]);
}

impl Broker {
    /// The steps with the checks wrapped around their decisions: an entity a step puts is
    /// checked before the store sees it.
    fn checked<R: Send + 'static>(&self, tenant: &str, steps: Vec<Step<R>>) -> Vec<Step<R>> {
        if self.checks.is_empty() {
            return steps;
        }
        let guard = |decide: Decide<R>| -> Decide<R> {
            let (checks, tenant) = (std::sync::Arc::clone(&self.checks), tenant.to_string());
            Box::new(move |current| {
                let mut decision = decide(current)?;
                if let Write::Put(entity) = &mut decision.write {
                    let recorded = decision.records.as_deref().unwrap_or_default();
                    checks.apply(&tenant, current, entity, recorded)?;
                }
                Ok(decision)
            })
        };
        steps
            .into_iter()
            .map(|(id, decide)| (id, guard(decide)))
            .collect()
    }

    /// [`crate::store::Store::modify_many`] through the checks: how every service writes
    /// several entities.
    pub(crate) async fn write_many<R: Send + 'static>(
        &self,
        tenant: &str,
        steps: Vec<Step<R>>,
    ) -> NgsiResult<Vec<NgsiResult<R>>> {
        self.store
            .modify_many(tenant, self.checked(tenant, steps))
            .await
    }

    /// [`crate::store::Store::modify_recorded`] through the checks: how every service writes
    /// one entity.
    pub(crate) async fn write_one<R, F>(&self, tenant: &str, id: &str, decide: F) -> NgsiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Option<&Entity>) -> NgsiResult<Decision<R>> + Send + 'static,
    {
        let mut results = self
            .write_many(tenant, vec![(id.to_string(), Box::new(decide))])
            .await?;
        results.pop().unwrap_or_else(|| {
            Err(NgsiError::internal(
                "the store answered a write without a result",
            ))
        })
    }
}
