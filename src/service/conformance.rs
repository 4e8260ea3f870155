//! The data-model and space-time checks of every write: the one door each entity a service
//! writes passes before the store commits it, whatever the transport (HTTP single and batch writes, MQTT
//! ingestion, temporal provision). A finding of a `reject` binding fails the entity's write
//! with 400 BadRequestData; those of `flag` bindings are recorded on the entity (the
//! [`FINDINGS_IRI`] attribute) and counted in `twinlink_data_model_findings_total`.

use super::AppState;
use crate::config::Settings;
use crate::error::{NgsiError, NgsiResult};
use crate::model::conformance::rules::{self, ModelRules};
use crate::model::conformance::schema::UserSchema;
use crate::model::conformance::spacetime::Territory;
use crate::model::conformance::{check_instances, check_model, Binding, Finding, Mode, Scope};
use crate::model::{AttrKind, Attribute, Entity};
use crate::store::history::InstanceChange;
use crate::store::{Decide, Decision, Step, Write};
use chrono::Utc;
use serde_json::Value;
use std::sync::{Arc, RwLock};

/// The attribute a flagged entity carries its findings in (a Property whose value lists them),
/// so that `q=dataModelFindings` finds the flagged entities.
pub const FINDINGS_IRI: &str = "https://uri.etsi.org/ngsi-ld/default-context/dataModelFindings";

/// A bundled model: its name and rules.
type Model = (&'static str, &'static ModelRules);

/// What a configured check runs.
#[derive(Debug)]
enum Check {
    /// The rules of a bundled model.
    Model(Model),
    /// A user's JSON Schema, with the bundled model whose terms name the attributes, if any.
    Schema(Option<Model>, UserSchema),
    /// The space-time checks.
    Territory(Territory),
}

impl Check {
    fn entity(&self, entity: &Entity, scope: Scope, out: &mut Vec<Finding>) {
        match self {
            Check::Model((name, rules)) => check_model(name, rules, entity, scope, out),
            // A schema judges the whole entity: its rules may tie attributes together.
            Check::Schema(model, schema) => schema.check(*model, entity, out),
            Check::Territory(t) => t.check(entity, scope, Utc::now(), out),
        }
    }

    /// The finding on one attribute instance recorded in the history (a schema describes
    /// whole entities and judges none).
    fn instance(&self, iri: &str, instance: &Attribute) -> Option<Finding> {
        let one = std::slice::from_ref(instance);
        match self {
            Check::Model((name, rules)) => check_instances(name, rules, iri, one),
            Check::Schema(..) => None,
            Check::Territory(t) => t.check_instances(iri, one, Utc::now()),
        }
    }
}

/// A configured check and the entities it applies to.
#[derive(Debug)]
struct Bound {
    tenant: String,
    /// The expanded type checked; `None`: every entity.
    type_iri: Option<String>,
    check: Check,
    mode: Mode,
}

impl Bound {
    /// The checks of a binding of `tenant` (its model's rules, its schema, its territory, in
    /// that order); `owner` names the binding in the findings of an inline schema. An error
    /// says why the binding cannot be used.
    fn all(tenant: &str, b: &Binding, owner: &str) -> Result<Vec<Bound>, String> {
        let model = b.model.as_deref().map(rules::find).transpose()?;
        if model.is_none() && b.schema.is_none() && b.territory.is_none() {
            return Err("a binding names a model, a schema or a territory to check".into());
        }
        let type_iri = b
            .type_iri
            .clone()
            .or_else(|| model.map(|(_, rules)| rules.type_iri.clone()));
        if b.schema.is_some() && type_iri.is_none() {
            return Err("a binding with a schema and no model names the type it checks".into());
        }
        let mut checks = Vec::new();
        checks.extend(model.map(Check::Model));
        if let Some(source) = &b.schema {
            checks.push(Check::Schema(model, UserSchema::load(source, owner)?));
        }
        if let Some(area) = &b.territory {
            checks.push(Check::Territory(Territory::new(area)?));
        }
        Ok(checks
            .into_iter()
            .map(|check| Bound {
                tenant: tenant.to_string(),
                type_iri: type_iri.clone(),
                check,
                mode: b.mode,
            })
            .collect())
    }

    fn applies(&self, tenant: &str, entity: &Entity) -> bool {
        (self.tenant == "*" || self.tenant == tenant)
            && self
                .type_iri
                .as_ref()
                .is_none_or(|t| entity.types.contains(t))
    }
}

/// The bindings set through the admin API, as last read from the store.
#[derive(Debug, Default)]
struct Stored {
    /// The records, by tenant, as read (to tell whether a reload changed anything).
    records: Vec<(String, Value)>,
    bounds: Vec<Bound>,
}

/// Every check: those of the configuration, resolved once at start, and those of the admin API,
/// reloaded from the store.
#[derive(Debug, Default)]
pub struct Checks {
    configured: Vec<Bound>,
    stored: RwLock<Arc<Stored>>,
}

impl Checks {
    /// The checks the settings configure; an error names a binding whose model is unknown or
    /// a territory that is not one.
    pub fn new(settings: &Settings) -> Result<Checks, String> {
        let mut configured = Vec::new();
        for (i, b) in settings.data_models.iter().enumerate() {
            let owner = format!("[[data-models]] table {}", i + 1);
            configured.extend(Bound::all(&b.tenant, b, &owner)?);
        }
        for t in &settings.territory {
            configured.push(Bound {
                tenant: t.tenant.clone(),
                type_iri: t.type_iri.clone(),
                check: Check::Territory(Territory::new(&t.area())?),
                mode: t.mode,
            });
        }
        Ok(Checks {
            configured,
            stored: RwLock::default(),
        })
    }

    fn stored(&self) -> Arc<Stored> {
        // A poisoned lock still holds a whole snapshot: writers only swap the Arc.
        let guard = self.stored.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&guard)
    }

    /// Takes the stored bindings' records (tenant, record) as the API bindings; false when they
    /// are those in force already. A record that no longer binds (its model unknown) is left
    /// out, with a warning.
    pub(crate) fn reload(&self, records: Vec<(String, Value)>) -> bool {
        if self.stored().records == records {
            return false;
        }
        let bounds = records
            .iter()
            .filter_map(|(tenant, record)| {
                let owner = record["id"].as_str().unwrap_or_default();
                let bound = stored_binding(record).and_then(|b| Bound::all(tenant, &b, owner));
                bound
                    .inspect_err(
                        |e| tracing::warn!(%tenant, %record, "data-model binding left out: {e}"),
                    )
                    .ok()
            })
            .flatten()
            .collect();
        let fresh = Arc::new(Stored { records, bounds });
        *self.stored.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        true
    }

    fn is_empty(&self) -> bool {
        self.configured.is_empty() && self.stored().bounds.is_empty()
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
        let stored = self.stored();
        let bindings = self.configured.iter().chain(&stored.bounds);
        for b in bindings.filter(|b| b.applies(tenant, entity)) {
            match b.mode {
                Mode::Reject => {
                    b.check.entity(entity, scope, &mut refused);
                    refused.extend(recorded_findings(b, recorded));
                }
                Mode::Flag => {
                    flagging = true;
                    b.check.entity(entity, Scope::Whole, &mut flagged);
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

/// The binding of a stored record (`{"id": ..., "model": ..., "mode": ...}`); its tenant is the
/// record's.
pub(crate) fn stored_binding(record: &Value) -> Result<Binding, String> {
    let mut fields = record.as_object().cloned().unwrap_or_default();
    fields.remove("id");
    serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
}

/// Fails with the reason when a binding cannot be used (an unknown model, a schema that does
/// not compile or is too large, a territory that is not one, nothing to check), so that the
/// admin API refuses it rather than storing it.
pub(crate) fn usable(binding: &Binding, owner: &str) -> Result<(), String> {
    Bound::all("", binding, owner).map(|_| ())
}

/// The findings of a binding on the attribute instances of history records.
fn recorded_findings<'a>(
    b: &'a Bound,
    recorded: &'a [InstanceChange],
) -> impl Iterator<Item = Finding> + 'a {
    recorded.iter().filter_map(move |r| {
        let (iri, text) = (r.attr.as_deref()?, r.value.as_ref()?);
        let instance: Attribute = serde_json::from_str(text.text()).ok()?;
        b.check.instance(iri, &instance)
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

impl AppState {
    /// The steps with the checks wrapped around their decisions: an entity a step puts is
    /// checked before the store sees it.
    fn checked<R: Send + 'static>(&self, tenant: &str, steps: Vec<Step<R>>) -> Vec<Step<R>> {
        if self.checks.is_empty() {
            return steps;
        }
        let guard = |decide: Decide<R>| -> Decide<R> {
            let (checks, tenant) = (Arc::clone(&self.checks), tenant.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_model_or_a_bad_territory_stops_the_start() {
        let unknown = Settings {
            data_models: vec![toml::from_str("model = \"NoSuchModel\"\nmode = \"reject\"").unwrap()],
            ..Settings::default()
        };
        let e = Checks::new(&unknown).unwrap_err();
        assert!(e.contains("NoSuchModel"), "{e}");
        let bad = Settings {
            territory: vec![toml::from_str("polygon = [[0.0, 0.0]]\nmode = \"flag\"").unwrap()],
            ..Settings::default()
        };
        assert!(Checks::new(&bad).unwrap_err().contains("polygon"));
    }

    #[test]
    fn stored_bindings_are_taken_once_and_a_bad_one_left_out() {
        let checks = Checks::default();
        assert!(checks.is_empty());
        let good = json!({"id": "urn:b:1", "model": "AirQualityObserved", "mode": "reject"});
        let bad = json!({"id": "urn:b:2", "model": "NoSuchModel", "mode": "reject"});
        let records = vec![("t".to_string(), good), ("t".to_string(), bad)];
        assert!(checks.reload(records.clone()));
        assert!(!checks.reload(records));
        assert_eq!(checks.stored().bounds.len(), 1);
        assert!(!checks.is_empty());
    }
}
