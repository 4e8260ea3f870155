//! The admin API of the data-model bindings (`/ngsi-ld/ex/dataModels`): which entity type of a
//! tenant is checked against which bundled Smart Data Model, user JSON Schema or territory (the
//! space-time checks), set at run time beside those of the configuration file. Bindings are `Collection::DataModels` records of the tenant, so that
//! every instance on one database applies them: each reloads them with its housekeeping chores
//! (and at once after a change it made).

use super::conformance::{stored_binding, usable};
use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::model::conformance::{rules, schema};
use crate::store::Collection;
use serde_json::{json, Value};

/// Where the API lives (outside `/ngsi-ld/v1`: it is twinlink's own).
pub const PATH: &str = "/ngsi-ld/ex/dataModels";

impl AppState {
    /// Adds a binding to the tenant from a body `{"mode", "type"?, "model"?, "schema"?,
    /// "territory"?}` (at least one of the last three; the schema a JSON object); its id.
    pub async fn add_data_model_binding(&self, tenant: &str, body: Value) -> NgsiResult<String> {
        let mut record = match body {
            Value::Object(fields) => fields,
            _ => return Err(NgsiError::bad_data("a data-model binding is a JSON object")),
        };
        for member in ["id", "tenant"] {
            if record.contains_key(member) {
                return Err(NgsiError::bad_data(format!(
                    "a data-model binding set through the API has no '{member}' (the tenant is \
                     the request's)"
                )));
            }
        }
        let binding = stored_binding(&Value::Object(record.clone()))
            .map_err(|e| NgsiError::bad_data(format!("not a data-model binding: {e}")))?;
        if let Some(schema::Source::File(_)) = binding.schema {
            return Err(NgsiError::bad_data(
                "the schema of a binding set through the API is the JSON Schema itself, an \
                 object (schema files are named in the configuration file)",
            ));
        }
        if let Some(t) = &binding.type_iri {
            crate::model::validate::uri("the binding's type", t)?;
        }
        let id = format!(
            "urn:ngsi-ld:DataModelBinding:{}",
            uuid::Uuid::new_v4().simple()
        );
        usable(&binding, &id).map_err(NgsiError::bad_data)?;
        if let Some(name) = &binding.model {
            let (model, _) = rules::find(name).map_err(NgsiError::bad_data)?;
            record.insert("model".into(), Value::from(model));
        }
        record.insert("id".into(), Value::from(id.as_str()));
        self.store
            .put_record(
                Collection::DataModels,
                tenant,
                &id,
                &Value::Object(record),
                true,
            )
            .await?;
        self.reload_data_model_bindings().await?;
        Ok(id)
    }

    /// The bindings that apply to the tenant: those of the configuration (`"source":
    /// "configuration"`, no id) and its stored ones (`"source": "api"`).
    pub async fn data_model_bindings(&self, tenant: &str) -> NgsiResult<Vec<Value>> {
        let configured = self
            .settings
            .data_models
            .iter()
            .filter(|b| b.tenant == tenant || b.tenant == "*")
            .map(|b| {
                let mut shown = json!(b);
                shown["source"] = json!("configuration");
                shown
            });
        let mut out: Vec<Value> = configured.collect();
        for (t, mut record) in self.store.records(Collection::DataModels).await? {
            if t == tenant {
                record["source"] = json!("api");
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Deletes a stored binding of the tenant; NotFound when there is none with this id.
    pub async fn delete_data_model_binding(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        if !self
            .store
            .delete_record(Collection::DataModels, tenant, id)
            .await?
        {
            return Err(NgsiError::not_found(format!(
                "there is no data-model binding '{id}' (bindings of the configuration file are \
                 changed there)"
            )));
        }
        self.reload_data_model_bindings().await?;
        Ok(())
    }

    /// Reads the stored bindings of every tenant into the checks; 1 when they changed.
    pub async fn reload_data_model_bindings(&self) -> NgsiResult<usize> {
        let records = self.store.records(Collection::DataModels).await?;
        Ok(usize::from(self.checks.reload(records)))
    }
}
