//! Distributed writes (4.3.6.2, 4.3.6.3 and the "distributed" paragraphs of 5.6): a write to an
//! entity is split between this broker and the context sources registered for it. Each source
//! gets the part it covers, in one request; an inclusive registration gets a copy of what is also
//! written here, exclusive and redirect ones take their part away from this broker, auxiliary ones
//! never get writes. A proxied part whose registration does not offer the operation is a
//! Conflict, and is not sent. What failed, here or at a source, is reported per leg. A purge
//! (5.6.21) selects entities by a query rather than by id: it goes as it came to every source
//! registered for what the query may select.

use super::batch::{BatchItem, BatchOp, BatchResult};
use super::entities::{Purged, Target, UpdateResult};
use super::AppState;
use crate::error::{ErrorKind, NgsiError, NgsiResult};
use crate::federation::forward::{Answer, Call, Failure, Reach};
use crate::federation::ops::Operation;
use crate::federation::registration::Mode;
use crate::federation::Registration;
use crate::ld::ActiveContext;
use crate::model::parse::EntityInput;
use crate::model::Entity;
use crate::query::EntityQuery;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// A part of a distributed write that failed: here (no registration) or at a source.
#[derive(Debug, Clone)]
pub struct LegFailure {
    /// The registration whose source failed; None for this broker's own part.
    pub registration: Option<String>,
    /// The (expanded) attributes of the failed part; empty for the whole entity.
    pub attrs: Vec<String>,
    /// Why, as the ProblemDetails of the 207 body.
    pub error: NgsiError,
    /// The status the source answered with, when it differs from the error's.
    pub status: Option<u16>,
    /// The source's 207 body, when it answered so.
    pub partial: Option<Value>,
}

impl LegFailure {
    /// The ProblemDetails of the failure, with the source's own status where it gave one.
    pub fn problem(&self) -> Value {
        let mut p = self.error.problem_details();
        if let Some(status) = self.status {
            p["status"] = json!(status);
        }
        p
    }
}

/// What a distributed write did: the result of this broker's part (None when nothing of it
/// stayed here), the attributes sources took, and the parts that failed.
#[derive(Debug)]
pub struct Spread<T> {
    /// This broker's own result.
    pub local: Option<T>,
    /// Expanded names of the attributes a source accepted.
    pub forwarded: Vec<String>,
    /// Whether some source accepted its part.
    pub reached: bool,
    /// Whether anything was tried: a part here, or a request to a source.
    pub attempted: bool,
    /// The parts that failed.
    pub failures: Vec<LegFailure>,
}

impl<T> Spread<T> {
    /// A write no source took part in.
    fn local(result: T) -> Spread<T> {
        Spread {
            local: Some(result),
            forwarded: Vec::new(),
            reached: false,
            attempted: true,
            failures: Vec::new(),
        }
    }

    /// The error to answer with when nothing could even be tried (every part belongs to a
    /// proxied registration that does not offer the operation); None otherwise, when failures
    /// are reported per part (207).
    pub fn refusal(&self) -> Option<NgsiError> {
        if self.attempted {
            return None;
        }
        self.failures.first().map(|f| f.error.clone())
    }
}

/// What proxied registrations take away from this broker in a write, for its own part to leave
/// out.
pub struct Taken {
    /// The (expanded) attributes only sources get.
    pub attrs: HashSet<String>,
    /// Whether an exclusive or redirect registration takes part.
    pub proxied: bool,
}

impl Taken {
    /// Whether this broker still has a part when `remaining` attributes are left to it: always
    /// without a proxied registration, else only when something is left.
    pub fn leaves_local(&self, remaining: usize) -> bool {
        !self.proxied || remaining > 0
    }
}

/// How a write is split: the sources that get a part, the proxied parts that cannot be sent
/// (their registration does not offer the operation), and what proxied registrations take away.
#[derive(Default)]
struct Plan {
    legs: Vec<(Arc<Registration>, Vec<String>)>,
    /// Registrations that name the entity's type only, while its type is unknown here: their
    /// source may not hold it, and saying so is no failure.
    speculative: HashSet<String>,
    refused: Vec<(Arc<Registration>, Vec<String>)>,
    taken: HashSet<String>,
    proxied: bool,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.legs.is_empty() && self.refused.is_empty()
    }
}

/// One request to a source, owned.
struct Leg {
    registration: Arc<Registration>,
    attrs: Vec<String>,
    method: reqwest::Method,
    path: Vec<String>,
    params: Vec<(String, String)>,
    body: Option<Value>,
}

/// What a single-entity write sends to its sources.
pub enum Shape<'a> {
    /// The entity's attributes (create, replace, merge, append, update): each source gets those
    /// it covers, compacted with the caller's context. `with_id` puts id and type in the body.
    Attributes {
        input: &'a EntityInput,
        with_id: bool,
    },
    /// The body as the caller sent it (one attribute's operations).
    Verbatim(&'a Value),
    /// No body (deletes).
    Empty,
}

impl AppState {
    /// Whether a write of the tenant may concern a source: it has registrations and the request
    /// is not local. Otherwise the local operation runs as it is, with no plan and no copies.
    fn federates(&self, tenant: &str, reach: &Reach) -> bool {
        !reach.local && !self.registry.of(tenant).is_empty()
    }

    /// Splits a write of these attributes (`names`, expanded) of the target between this broker
    /// and its sources. `whole`: the operation addresses the entity itself, so a source holding
    /// whole entities like it takes part even if no attribute is named. A request that has looped
    /// back here is answered locally, or with LoopDetected when only sources hold what it
    /// addresses.
    fn plan(
        &self,
        target: &Target,
        op: Operation,
        names: &[String],
        whole: bool,
        reach: &Reach,
    ) -> NgsiResult<Plan> {
        let mut plan = Plan::default();
        let all = self.registry.of(&target.tenant);
        if all.is_empty() || reach.local {
            return Ok(plan);
        }
        let now = Utc::now();
        for r in all.iter().filter(|r| {
            r.mode != Mode::Auxiliary && r.is_live(now) && r.may_hold(&target.id, &target.types)
        }) {
            let covered: Vec<String> = names
                .iter()
                .filter(|n| r.covers(&target.id, &target.types, n))
                .cloned()
                .collect();
            let takes_part = !covered.is_empty()
                || (whole
                    && (matches!(op, Operation::DeleteEntity | Operation::DeleteBatch)
                        || r.holds_whole(&target.id, &target.types)));
            if !takes_part {
                continue;
            }
            let proxied = matches!(r.mode, Mode::Exclusive | Mode::Redirect);
            if proxied {
                plan.proxied = true;
                plan.taken.extend(covered.iter().cloned());
            }
            if target.types.is_empty() && !r.names_id(&target.id) {
                plan.speculative.insert(r.record.id.clone());
            }
            if r.serves(op) {
                plan.legs.push((r.clone(), covered));
            } else if proxied {
                plan.refused.push((r.clone(), covered));
            }
        }
        if self.sources.looped(reach) {
            if plan.proxied {
                return Err(NgsiError::new(
                    ErrorKind::LoopDetected,
                    format!(
                        "the request has come back to this broker (Via: {}) and entity '{}' is held by the context sources it was forwarded to",
                        reach.via.as_deref().unwrap_or_default(),
                        target.id
                    ),
                ));
            }
            return Ok(Plan::default());
        }
        Ok(plan)
    }

    /// Sends each leg to its source in parallel; returns the attributes accepted, whether any
    /// source accepted its part, and the failures (a 404 of a `speculative` registration is
    /// none).
    async fn send_legs(
        &self,
        legs: Vec<Leg>,
        speculative: &HashSet<String>,
        reach: &Reach,
    ) -> (Vec<String>, bool, Vec<LegFailure>) {
        let sends = legs.iter().map(|leg| async move {
            let path: Vec<&str> = leg.path.iter().map(String::as_str).collect();
            let call = Call {
                method: leg.method.clone(),
                path: &path,
                params: &leg.params,
                body: leg.body.as_ref(),
            };
            self.send_to_source(&leg.registration, call, reach).await
        });
        let outcomes = join_all(sends).await;
        let mut forwarded = Vec::new();
        let mut reached = false;
        let mut failures = Vec::new();
        for (leg, outcome) in legs.into_iter().zip(outcomes) {
            let failure = match outcome {
                Ok(Answer::Json { .. }) => {
                    reached = true;
                    forwarded.extend(leg.attrs);
                    continue;
                }
                Ok(Answer::NotFound) if speculative.contains(&leg.registration.record.id) => {
                    continue
                }
                Ok(Answer::NotFound) => LegFailure {
                    error: NgsiError::not_found(format!(
                        "the context source {} does not hold what was sent to it",
                        leg.registration.endpoint()
                    )),
                    status: None,
                    partial: None,
                    registration: Some(leg.registration.record.id.clone()),
                    attrs: leg.attrs,
                },
                Err(e) => source_failure(&leg.registration, leg.attrs, e),
            };
            failures.push(failure);
        }
        (forwarded, reached, failures)
    }

    /// The legs of a single-entity write: `method` on `path` (below the NGSI-LD base) at each
    /// source of the plan, with the body `shape` gives for its attributes.
    fn legs(
        &self,
        plan: &Plan,
        target: &Target,
        (method, path, params): (reqwest::Method, Vec<String>, Vec<(String, String)>),
        shape: &Shape<'_>,
        ctx: &ActiveContext,
    ) -> Vec<Leg> {
        plan.legs
            .iter()
            .map(|(r, attrs)| Leg {
                registration: r.clone(),
                attrs: attrs.clone(),
                method: method.clone(),
                path: path.clone(),
                params: params.clone(),
                body: match shape {
                    Shape::Attributes { input, with_id } => {
                        let names: Vec<String> = if attrs.is_empty() {
                            input.attrs.keys().cloned().collect()
                        } else {
                            attrs.clone()
                        };
                        Some(fragment(&target.id, input, &names, *with_id, ctx))
                    }
                    Shape::Verbatim(body) => Some((*body).clone()),
                    Shape::Empty => None,
                },
            })
            .collect()
    }

    /// Runs a single-entity write here and at its sources: `op` and the attributes it names
    /// decide the plan, `request` and `shape` what each source is sent, and `local` runs this
    /// broker's part with the attributes left to it (it is skipped when a proxied registration
    /// took everything). `local_missing_ok`: this broker not holding the entity is no failure
    /// when sources took part (a redirect or exclusive delete).
    #[allow(clippy::too_many_arguments)]
    pub async fn spread_write<T, F, Fut>(
        &self,
        target: &Target,
        op: Operation,
        names: Vec<String>,
        whole: bool,
        request: (reqwest::Method, Vec<String>, Vec<(String, String)>),
        shape: Shape<'_>,
        reach: &Reach,
        local: F,
    ) -> NgsiResult<Spread<T>>
    where
        F: FnOnce(Taken) -> Option<Fut>,
        Fut: std::future::Future<Output = NgsiResult<T>>,
    {
        let known;
        let target = if target.types.is_empty()
            && !reach.local
            && !self.registry.of(&target.tenant).is_empty()
        {
            // Registrations name entities by type: an entity held here tells its types.
            known = Target {
                types: match self.store.get(&target.tenant, &target.id).await? {
                    Some(e) => e.types.clone(),
                    None => Vec::new(),
                },
                ..target.clone()
            };
            &known
        } else {
            target
        };
        let plan = self.plan(target, op, &names, whole, reach)?;
        let taken = Taken {
            attrs: plan.taken.clone(),
            proxied: plan.proxied,
        };
        if plan.is_empty() {
            return match local(taken) {
                Some(run) => Ok(Spread::local(run.await?)),
                None => Err(NgsiError::internal("a local write was expected")),
            };
        }
        let ctx = self
            .contexts
            .active(reach.context.clone().map(Value::String).as_ref())
            .await?;
        let legs = self.legs(&plan, target, request, &shape, &ctx);
        self.run_plan(plan, legs, op, local(taken), reach).await
    }

    /// Runs a planned write: this broker's part (`local`, None when nothing of it stays here)
    /// while each leg goes to its source; the parts the plan refused and every part that failed
    /// are reported per leg.
    async fn run_plan<T, Fut>(
        &self,
        plan: Plan,
        legs: Vec<Leg>,
        op: Operation,
        local: Option<Fut>,
        reach: &Reach,
    ) -> NgsiResult<Spread<T>>
    where
        Fut: std::future::Future<Output = NgsiResult<T>>,
    {
        let attempted = local.is_some() || !legs.is_empty();
        let run_local = async {
            match local {
                Some(run) => Some(run.await),
                None => None,
            }
        };
        let (local_result, (forwarded, reached, mut failures)) =
            tokio::join!(run_local, self.send_legs(legs, &plan.speculative, reach));
        for (r, attrs) in plan.refused {
            failures.push(LegFailure {
                error: refusal(&r, op),
                status: None,
                partial: None,
                registration: Some(r.record.id.clone()),
                attrs,
            });
        }
        let local = match local_result {
            None => None,
            Some(Ok(result)) => Some(result),
            Some(Err(e)) if e.kind == ErrorKind::ResourceNotFound && plan.proxied && reached => {
                None
            }
            Some(Err(e))
                if matches!(
                    e.kind,
                    ErrorKind::ResourceNotFound | ErrorKind::AlreadyExists
                ) =>
            {
                failures.insert(
                    0,
                    LegFailure {
                        registration: None,
                        attrs: Vec::new(),
                        error: e,
                        status: None,
                        partial: None,
                    },
                );
                None
            }
            Some(Err(e)) => return Err(e),
        };
        Ok(Spread {
            local,
            forwarded,
            reached,
            attempted,
            failures,
        })
    }

    /// Purges entities (5.6.21) here and at the sources registered for entities its query may
    /// select (and, for `drop`, for one of the attributes it drops): each source whose
    /// registration offers purgeEntity gets the caller's purge as it is (`params`, the caller's
    /// query parameters less `local`), in one request; an inclusive source purges its copies, an
    /// exclusive or redirect one its part; a proxied registration without purgeEntity is a
    /// Conflict and is not sent. A source may hold none of what the purge selects, so its 404 is
    /// no failure.
    pub async fn purge_distributed(
        &self,
        tenant: &str,
        query: EntityQuery,
        purged: Purged,
        params: Vec<(String, String)>,
        reach: &Reach,
    ) -> NgsiResult<Spread<()>> {
        let now = Utc::now();
        if !self.federates(tenant, reach) || self.sources.looped(reach) {
            self.purge_entities(tenant, query, purged, now).await?;
            return Ok(Spread::local(()));
        }
        let mut plan = Plan::default();
        let dropped = match &purged {
            Purged::Attrs(names) => Some(names),
            _ => None,
        };
        for r in self.registry.of(tenant).iter().filter(|r| {
            r.mode != Mode::Auxiliary
                && r.is_live(now)
                && r.names(&query.selectors, &query.attrs)
                && dropped.is_none_or(|names| r.names(&query.selectors, names))
        }) {
            plan.speculative.insert(r.record.id.clone());
            let proxied = matches!(r.mode, Mode::Exclusive | Mode::Redirect);
            plan.proxied |= proxied;
            if r.serves(Operation::PurgeEntity) {
                plan.legs.push((r.clone(), Vec::new()));
            } else if proxied {
                plan.refused.push((r.clone(), Vec::new()));
            }
        }
        let legs = plan
            .legs
            .iter()
            .map(|(r, _)| {
                let mut params = params.clone();
                if r.local_only() {
                    params.push(("local".to_string(), "true".to_string()));
                }
                Leg {
                    registration: r.clone(),
                    attrs: Vec::new(),
                    method: reqwest::Method::DELETE,
                    path: vec!["entities".into()],
                    params,
                    body: None,
                }
            })
            .collect();
        let local = self.purge_entities(tenant, query, purged, now);
        self.run_plan(plan, legs, Operation::PurgeEntity, Some(local), reach)
            .await
    }

    /// Updates (5.6.2) or appends (5.6.3) attributes here and at the sources that hold them; what
    /// failed anywhere is reported per attribute (207). An attribute a source updated counts as
    /// updated even if this broker does not hold it.
    pub async fn change_attrs_distributed(
        &self,
        target: &Target,
        input: EntityInput,
        append: Option<bool>,
        now: DateTime<Utc>,
        reach: &Reach,
    ) -> NgsiResult<UpdateResult> {
        if !self.federates(&target.tenant, reach) {
            return self.change_attrs_here(target, input, append, now).await;
        }
        let names: Vec<String> = input.attrs.keys().cloned().collect();
        let (op, method, params) = match append {
            None => (Operation::UpdateAttrs, reqwest::Method::PATCH, Vec::new()),
            Some(no_overwrite) => (
                Operation::AppendAttrs,
                reqwest::Method::POST,
                if no_overwrite {
                    vec![("options".to_string(), "noOverwrite".to_string())]
                } else {
                    Vec::new()
                },
            ),
        };
        let shape_input = input.clone();
        let spread = self
            .spread_write(
                target,
                op,
                names.clone(),
                false,
                (method, attrs_path(target), params),
                Shape::Attributes {
                    input: &shape_input,
                    with_id: false,
                },
                reach,
                |taken| {
                    let mut input = input;
                    input.attrs.retain(|n, _| !taken.attrs.contains(n));
                    let left = input.attrs.len() + usize::from(input.scope.is_some());
                    taken
                        .leaves_local(left)
                        .then(|| self.change_attrs_here(target, input, append, now))
                },
            )
            .await?;
        if let Some(e) = spread.refusal() {
            return Err(e);
        }
        let mut result = spread.local.unwrap_or_default();
        result
            .not_updated
            .retain(|(n, _)| !spread.forwarded.contains(n));
        result.updated.extend(spread.forwarded.iter().cloned());
        for failure in spread.failures {
            let here = failure.registration.is_none();
            let names = if failure.attrs.is_empty() {
                names.clone()
            } else {
                failure.attrs.clone()
            };
            for n in names {
                // This broker's own part failing is reported even for attributes a source
                // updated: an inclusive registration's copy is only half of the write.
                let reported = result.not_updated.iter().any(|(x, _)| *x == n);
                if !reported && (here || !result.updated.contains(&n)) {
                    result.not_updated.push((n, failure.error.detail.clone()));
                }
            }
        }
        Ok(result)
    }
}

impl AppState {
    /// Creates an entity (5.6.1) here and at the sources registered for it: each gets the
    /// attributes it covers (all, when it holds whole entities); this broker keeps what no
    /// proxied registration takes.
    pub async fn create_entity_distributed(
        &self,
        tenant: &str,
        input: EntityInput,
        now: DateTime<Utc>,
        reach: &Reach,
    ) -> NgsiResult<Spread<String>> {
        if !self.federates(tenant, reach) {
            return Ok(Spread::local(self.create_entity(tenant, input, now).await?));
        }
        let target = Target {
            tenant: tenant.to_string(),
            id: input.id.clone().unwrap_or_default(),
            types: input.types.clone(),
        };
        let names: Vec<String> = input.attrs.keys().cloned().collect();
        let sent = input.clone();
        self.spread_write(
            &target,
            Operation::CreateEntity,
            names,
            true,
            (reqwest::Method::POST, vec!["entities".into()], Vec::new()),
            Shape::Attributes {
                input: &sent,
                with_id: true,
            },
            reach,
            |taken| {
                let mut input = input;
                input.attrs.retain(|n, _| !taken.attrs.contains(n));
                taken
                    .leaves_local(input.attrs.len())
                    .then(|| self.create_entity(tenant, input, now))
            },
        )
        .await
    }

    /// This broker's part of an update (`append` None) or append of attributes.
    async fn change_attrs_here(
        &self,
        target: &Target,
        input: EntityInput,
        append: Option<bool>,
        now: DateTime<Utc>,
    ) -> NgsiResult<UpdateResult> {
        match append {
            None => self.update_attrs(target, input, now).await,
            Some(no_overwrite) => self.append_attrs(target, input, no_overwrite, now).await,
        }
    }

    /// This broker's part of a merge or replace of an entity.
    async fn rewrite_here(
        &self,
        target: &Target,
        input: EntityInput,
        merge: bool,
        now: DateTime<Utc>,
    ) -> NgsiResult<()> {
        if merge {
            self.merge_entity(target, input, now).await
        } else {
            self.replace_entity(target, input, now).await
        }
    }

    /// Deletes an entity (5.6.6) here and at every source registered for it.
    pub async fn delete_entity_distributed(
        &self,
        target: &Target,
        reach: &Reach,
    ) -> NgsiResult<Spread<()>> {
        self.spread_write(
            target,
            Operation::DeleteEntity,
            Vec::new(),
            true,
            (
                reqwest::Method::DELETE,
                vec!["entities".into(), target.id.clone()],
                Vec::new(),
            ),
            Shape::Empty,
            reach,
            |_| Some(self.delete_entity(target)),
        )
        .await
    }

    /// Replaces (5.6.18, `merge` false) or merges into (5.6.17) an entity here and at the sources
    /// that hold its attributes.
    pub async fn rewrite_entity_distributed(
        &self,
        target: &Target,
        input: EntityInput,
        merge: bool,
        now: DateTime<Utc>,
        reach: &Reach,
    ) -> NgsiResult<Spread<()>> {
        if !self.federates(&target.tenant, reach) {
            return Ok(Spread::local(
                self.rewrite_here(target, input, merge, now).await?,
            ));
        }
        let names: Vec<String> = input.attrs.keys().cloned().collect();
        let sent = input.clone();
        let (op, method) = if merge {
            (Operation::MergeEntity, reqwest::Method::PATCH)
        } else {
            (Operation::ReplaceEntity, reqwest::Method::PUT)
        };
        self.spread_write(
            target,
            op,
            names,
            true,
            (
                method,
                vec!["entities".into(), target.id.clone()],
                Vec::new(),
            ),
            Shape::Attributes {
                input: &sent,
                with_id: !merge,
            },
            reach,
            |taken| {
                let mut input = input;
                input.attrs.retain(|n, _| !taken.attrs.contains(n));
                taken
                    .leaves_local(input.attrs.len())
                    .then(|| self.rewrite_here(target, input, merge, now))
            },
        )
        .await
    }

    /// An operation on one attribute (delete 5.6.5, replace 5.6.19, partial update 5.6.4) here
    /// and at the sources that hold it: `op` and `request` say what each source is sent, with
    /// the caller's `body`; `local` is this broker's part, run unless a proxied registration
    /// takes the attribute.
    #[allow(clippy::too_many_arguments)]
    pub async fn attribute_write_distributed<Fut>(
        &self,
        target: &Target,
        op: Operation,
        (iri, name): (&str, &str),
        method: reqwest::Method,
        params: Vec<(String, String)>,
        body: Option<&Value>,
        reach: &Reach,
        local: Fut,
    ) -> NgsiResult<Spread<()>>
    where
        Fut: std::future::Future<Output = NgsiResult<()>>,
    {
        let mut path = attrs_path(target);
        path.push(name.to_string());
        self.spread_write(
            target,
            op,
            vec![iri.to_string()],
            false,
            (method, path, params),
            body.map_or(Shape::Empty, Shape::Verbatim),
            reach,
            |taken| (!taken.attrs.contains(iri)).then_some(local),
        )
        .await
    }
}

/// The entities of a batch each source gets, in one request.
struct SourceBatch {
    registration: Arc<Registration>,
    bodies: Vec<Value>,
    ids: Vec<String>,
    /// The ids sent only because the entity's type is unknown here (see `Plan::speculative`).
    speculative: HashSet<String>,
}

impl SourceBatch {
    /// Adds an entity's part to the source's batch (a new batch for the first).
    fn add(
        batches: &mut Vec<SourceBatch>,
        r: &Arc<Registration>,
        id: &str,
        body: Value,
        plan: &Plan,
    ) {
        let index = match batches
            .iter()
            .position(|b| b.registration.record.id == r.record.id)
        {
            Some(i) => i,
            None => {
                batches.push(SourceBatch {
                    registration: r.clone(),
                    bodies: Vec::new(),
                    ids: Vec::new(),
                    speculative: HashSet::new(),
                });
                batches.len() - 1
            }
        };
        let batch = &mut batches[index];
        batch.bodies.push(body);
        batch.ids.push(id.to_string());
        if plan.speculative.contains(&r.record.id) {
            batch.speculative.insert(id.to_string());
        }
    }
}

impl AppState {
    /// The target of a batch entity, its types learnt from the local copy when the body names
    /// none (see [`AppState::spread_write`]).
    async fn batch_target(&self, tenant: &str, id: &str, types: &[String]) -> Target {
        let mut target = Target {
            tenant: tenant.to_string(),
            id: id.to_string(),
            types: types.to_vec(),
        };
        if target.types.is_empty() {
            if let Ok(Some(e)) = self.store.get(tenant, id).await {
                target.types = e.types.clone();
            }
        }
        target
    }

    /// A batch (5.6.7-5.6.9, 5.6.20) here and at the sources registered for its entities: each
    /// source gets, in one request to its `/entityOperations/{name}` with the caller's `options`,
    /// the part of every entity it covers; this broker runs the batch with what proxied
    /// registrations leave to it. An entity fails when its part failed anywhere.
    pub async fn batch_distributed(
        &self,
        tenant: &str,
        op: BatchOp,
        items: Vec<BatchItem>,
        options: Vec<(String, String)>,
        now: DateTime<Utc>,
        reach: &Reach,
    ) -> BatchResult {
        if !self.federates(tenant, reach) {
            return self.batch(tenant, op, items, now).await;
        }
        let (operation, name, whole) = match op {
            BatchOp::Create => (Operation::CreateBatch, "create", true),
            BatchOp::Upsert(_) => (Operation::UpsertBatch, "upsert", true),
            BatchOp::Update { .. } => (Operation::UpdateBatch, "update", false),
            BatchOp::Merge => (Operation::MergeBatch, "merge", false),
        };
        let ctx = match self
            .contexts
            .active(reach.context.clone().map(Value::String).as_ref())
            .await
        {
            Ok(ctx) => ctx,
            Err(e) => {
                return BatchResult {
                    errors: items.into_iter().map(|(id, _)| (id, e.clone())).collect(),
                    ..BatchResult::default()
                }
            }
        };
        let mut sources: Vec<SourceBatch> = Vec::new();
        let mut local = Vec::new();
        let mut errors: Vec<(String, NgsiError)> = Vec::new();
        let mut away: HashSet<String> = HashSet::new();
        for (id, parsed) in items {
            let Ok(mut input) = parsed else {
                local.push((id, parsed));
                continue;
            };
            let target = self.batch_target(tenant, &id, &input.types).await;
            let names: Vec<String> = input.attrs.keys().cloned().collect();
            let plan = match self.plan(&target, operation, &names, whole, reach) {
                Ok(plan) => plan,
                Err(e) => {
                    errors.push((id, e));
                    continue;
                }
            };
            for (r, covered) in &plan.legs {
                let names = if covered.is_empty() { &names } else { covered };
                let body = fragment(&id, &input, names, true, &ctx);
                SourceBatch::add(&mut sources, r, &id, body, &plan);
            }
            for (r, _) in &plan.refused {
                errors.push((id.clone(), refusal(r, operation)));
            }
            let taken = Taken {
                attrs: plan.taken.clone(),
                proxied: plan.proxied,
            };
            input.attrs.retain(|n, _| !taken.attrs.contains(n));
            if taken.leaves_local(input.attrs.len()) {
                local.push((id, Ok(input)));
            } else {
                away.insert(id);
            }
        }
        self.finish_batch(
            sources,
            (name, options),
            away,
            errors,
            self.batch(tenant, op, local, now),
            reach,
        )
        .await
    }

    /// Deletes a batch of entities (5.6.10) here and at every source registered for them (one
    /// request per source); an entity only sources held is no failure here.
    pub async fn batch_delete_distributed(
        &self,
        tenant: &str,
        ids: Vec<String>,
        reach: &Reach,
    ) -> BatchResult {
        if !self.federates(tenant, reach) {
            return self.batch_delete(tenant, ids).await;
        }
        let mut sources: Vec<SourceBatch> = Vec::new();
        let mut errors = Vec::new();
        let mut away = HashSet::new();
        for id in &ids {
            let target = self.batch_target(tenant, id, &[]).await;
            let plan = match self.plan(&target, Operation::DeleteBatch, &[], true, reach) {
                Ok(plan) => plan,
                Err(e) => {
                    errors.push((id.clone(), e));
                    continue;
                }
            };
            for (r, _) in &plan.legs {
                SourceBatch::add(&mut sources, r, id, json!(id), &plan);
            }
            for (r, _) in &plan.refused {
                errors.push((id.clone(), refusal(r, Operation::DeleteBatch)));
            }
            if plan.proxied {
                away.insert(id.clone());
            }
        }
        self.finish_batch(
            sources,
            ("delete", Vec::new()),
            away,
            errors,
            self.batch_delete(tenant, ids),
            reach,
        )
        .await
    }

    /// Sends each source its batch while `local` runs, and reports per entity: a failed source
    /// fails every entity it was sent; an entity a proxied registration took away (`away`)
    /// succeeds when its sources did, whatever this broker says of it.
    async fn finish_batch(
        &self,
        sources: Vec<SourceBatch>,
        (name, options): (&str, Vec<(String, String)>),
        away: HashSet<String>,
        mut errors: Vec<(String, NgsiError)>,
        local: impl std::future::Future<Output = BatchResult>,
        reach: &Reach,
    ) -> BatchResult {
        let mut sent_ids = Vec::new();
        let legs: Vec<Leg> = sources
            .into_iter()
            .map(|batch| {
                sent_ids.push((
                    batch.registration.record.id.clone(),
                    batch.ids,
                    batch.speculative,
                ));
                Leg {
                    registration: batch.registration,
                    attrs: Vec::new(),
                    method: reqwest::Method::POST,
                    path: vec!["entityOperations".into(), name.to_string()],
                    params: options.clone(),
                    body: Some(Value::Array(batch.bodies)),
                }
            })
            .collect();
        let none = HashSet::new();
        let (mut result, (_, _, failures)) =
            tokio::join!(local, self.send_legs(legs, &none, reach));
        for failure in failures {
            let Some((_, ids, speculative)) = sent_ids
                .iter()
                .find(|(r, _, _)| Some(r) == failure.registration.as_ref())
            else {
                continue;
            };
            errors.extend(batch_failures(&failure, ids, speculative));
        }
        // What this broker could not find of an entity sources took is theirs to report.
        result
            .errors
            .retain(|(id, e)| !(away.contains(id) && e.kind == ErrorKind::ResourceNotFound));
        let failed: HashSet<String> = errors.iter().map(|(id, _)| id.clone()).collect();
        for (_, ids, _) in &sent_ids {
            for id in ids {
                if away.contains(id) && !result.success.contains(id) {
                    result.success.push(id.clone());
                }
            }
        }
        result.success.retain(|id| !failed.contains(id));
        result.errors.extend(errors);
        result
    }
}

/// The entities a source's failed batch fails: those its 207 body names (less a 404 for an
/// entity sent only in case it held it), or every entity sent when it gave no such body.
fn batch_failures(
    failure: &LegFailure,
    ids: &[String],
    speculative: &HashSet<String>,
) -> Vec<(String, NgsiError)> {
    let listed = failure
        .partial
        .as_ref()
        .and_then(|body| body.get("errors")?.as_array().cloned());
    let Some(listed) = listed else {
        return ids
            .iter()
            .map(|id| (id.clone(), failure.error.clone()))
            .collect();
    };
    listed
        .iter()
        .filter_map(|e| {
            let id = e.get("entityId")?.as_str()?.to_string();
            let status = e
                .get("error")
                .and_then(|p| p.get("status"))
                .and_then(Value::as_u64);
            if !ids.contains(&id) || (status == Some(404) && speculative.contains(&id)) {
                return None;
            }
            let detail = e
                .get("error")
                .and_then(|p| p.get("detail"))
                .and_then(Value::as_str)
                .unwrap_or("the context source reported a failure");
            let kind = match status {
                Some(404) => ErrorKind::ResourceNotFound,
                Some(409) => ErrorKind::AlreadyExists,
                Some(400) => ErrorKind::BadRequestData,
                _ => ErrorKind::ServiceUnavailable,
            };
            Some((
                id,
                NgsiError::new(kind, format!("the context source failed: {detail}")),
            ))
        })
        .collect()
}

/// The Conflict of a proxied registration that holds an entity's data but does not offer the
/// operation.
fn refusal(r: &Registration, op: Operation) -> NgsiError {
    NgsiError::new(
        ErrorKind::Conflict,
        format!(
            "the {} registration {} holds this data but does not offer {}",
            r.mode.name(),
            r.record.id,
            op.name()
        ),
    )
}

/// The path of an entity's attributes, below the NGSI-LD base.
fn attrs_path(target: &Target) -> Vec<String> {
    vec!["entities".into(), target.id.clone(), "attrs".into()]
}

/// A source's failure as the failure of its part.
fn source_failure(registration: &Registration, attrs: Vec<String>, e: Failure) -> LegFailure {
    let kind = match e.status {
        Some(404) => ErrorKind::ResourceNotFound,
        Some(409) => ErrorKind::AlreadyExists,
        Some(400) => ErrorKind::BadRequestData,
        Some(422) => ErrorKind::OperationNotSupported,
        _ => ErrorKind::ServiceUnavailable,
    };
    LegFailure {
        registration: Some(registration.record.id.clone()),
        attrs,
        error: NgsiError::new(kind, format!("the context source failed: {e}")),
        status: e.status,
        partial: e.partial,
    }
}

/// The attributes `names` of a write, compacted with the caller's context as a source reads
/// them; with id and type when the source needs them to know the entity (create, replace).
pub fn fragment(
    id: &str,
    input: &EntityInput,
    names: &[String],
    with_id: bool,
    ctx: &ActiveContext,
) -> Value {
    let now = Utc::now();
    let entity = Entity {
        id: id.to_string(),
        types: input.types.clone(),
        scope: input.scope.clone(),
        attrs: input
            .attrs
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect(),
        created_at: now,
        modified_at: now,
        expires_at: input.expires_at.flatten(),
    };
    let mut body = crate::model::render::entity(&entity, ctx, &Default::default());
    if !with_id {
        body.remove("id");
        body.remove("type");
    }
    Value::Object(body)
}
