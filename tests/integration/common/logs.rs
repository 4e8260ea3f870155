//! Captures the broker's tracing events in the test process, with the fields of the spans they
//! were emitted in, for tests of what it logs (request ids, the audit log).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One event as logged.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Its target (e.g. `twinlink::audit`).
    pub target: String,
    /// Its fields, `message` included; strings without quotes, other values as Debug.
    pub fields: HashMap<String, String>,
    /// The fields of the spans it was emitted in (e.g. `request_id`).
    pub spans: HashMap<String, String>,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

struct Capture(Arc<Mutex<Vec<Logged>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !target.starts_with("twinlink") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut spans = HashMap::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(f) = span.extensions().get::<Fields>() {
                    spans.extend(f.0.clone());
                }
            }
        }
        self.0.lock().unwrap().push(Logged {
            target: target.to_string(),
            fields: fields.0,
            spans,
        });
    }
}

/// The events of twinlink logged in this process from now on (the capture is installed as the
/// global subscriber once; every test binary process that calls it shares it).
pub fn capture() -> Arc<Mutex<Vec<Logged>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<Logged>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(log.clone()));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the test process");
        log
    })
    .clone()
}
