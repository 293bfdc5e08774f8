//! The runtime: loads instances, asks the engine for transitions, commits
//! them, runs outbox effects after commit and fires due timers. It owns the
//! clock; the engine gets `now` from here.
//!
//! Architecture invariant: the runtime knows nothing of HTTP; `http`
//! calls it, and so do the CLI and the tests.

mod effects;
mod jobs;
mod locks;
pub mod metrics;
mod migrate;
mod payments;
mod waiters;

pub use crate::domain::RetryPolicy;
pub use effects::{Completion, Execute, Failure};
pub use jobs::{ClockAdvance, Job, JOBS};
pub use migrate::{InstancePlan, MigrationReport, MigrationRequest, TimerPlan};
pub use o2flow_core::clock::{Clock, ManualClock, SystemClock};
pub use payments::{CallbackRefused, PageError, PayView, DEFAULT_RECONCILE_EVERY};
pub use waiters::MAX_WAIT;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::Duration;
use futures::future::join_all;
use serde_json::json;
use tokio::sync::Notify;

pub use crate::channels::webhook::WebhookConfig;
use crate::channels::{Channels, Delivered, Outgoing};
use crate::dsl::{self, Catalog, Diagnostic, WorkflowDef};
use crate::engine::{self, Event, SendEffect};
use crate::store::{
    self, CommitExtras, DefinitionRow, IdempotencyRecord, InstanceRow, NewInstance, NewSchedule,
    Store,
};
use crate::templates::Templates;

/// Why the runtime refused a request. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("there is no workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("there is no branch `{0}`")]
    UnknownBranch(String),
    #[error("there is no tenant `{0}`")]
    TenantNotFound(String),
    #[error("`{0}` is not an IANA time zone such as Asia/Shanghai")]
    BadTimeZone(String),
    #[error("there is no instance `{0}`")]
    InstanceNotFound(String),
    #[error("the workflow has {} problem(s)", .0.len())]
    InvalidWorkflow(Vec<Diagnostic>),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("the instance kept changing; try again")]
    Busy,
    #[error("there is no incident {0}")]
    IncidentNotFound(i64),
    #[error("workflow `{0}` has no version {1}")]
    VersionNotFound(String, i32),
    #[error("the migration is not valid: {0}")]
    InvalidMigration(String),
    #[error("{} instance(s) cannot be migrated", .0.instances.iter().filter(|i| i.problem.is_some()).count())]
    Unmigratable(Box<MigrationReport>),
    #[error("incident {0} is not open")]
    IncidentNotOpen(i64),
    #[error("`{0}` is raised by o2flow itself and cannot be sent from outside")]
    ReservedEvent(String),
    #[error("a template is not valid: {0}")]
    InvalidTemplate(String),
    #[error("the clock is the system's; start o2flow with `serve --clock manual` to move it")]
    ClockNotManual,
    #[error("the clock moves forward only, by at most 400 days at once (asked: {0})")]
    BadAdvance(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// How the runtime is set up.
pub struct Options {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub templates: Arc<Templates>,
    /// The address people reach o2flow at, for links in messages.
    pub public_url: String,
    pub retry: RetryPolicy,
    /// Where the `webhook` channel posts; none: such sends fail for good.
    pub webhook: Option<WebhookConfig>,
    /// How long a claimed timer or outbox row stays with this process; if
    /// it dies, another takes the work over after this.
    pub lease: chrono::Duration,
    /// How often a payment or refund whose callback has not come is queried.
    pub reconcile_every: chrono::Duration,
    /// Where `templates` were loaded from: read again on every deploy, so
    /// template files added since the start are found. None: never again.
    pub templates_dir: Option<std::path::PathBuf>,
    /// The bearer token `/metrics` asks for; none: only callers on this
    /// machine (loopback) may read it.
    pub metrics_token: Option<String>,
}

impl Options {
    /// Options with the defaults: no webhook, a 10 s lease, the default retry policy.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
        public_url: String,
    ) -> Options {
        Options {
            store,
            clock,
            templates,
            public_url,
            retry: RetryPolicy::default(),
            webhook: None,
            lease: DEFAULT_LEASE,
            reconcile_every: DEFAULT_RECONCILE_EVERY,
            templates_dir: None,
            metrics_token: None,
        }
    }
}

/// A request to start an instance.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub workflow: String,
    pub input: serde_json::Value,
    pub branch: Option<String>,
    pub business_key: Option<String>,
    /// `(Idempotency-Key, hash of the request body)`.
    pub idempotency: Option<(String, String)>,
    /// The instance whose `start` action starts this one.
    pub parent_id: Option<String>,
}

/// A correlated event from outside.
#[derive(Debug, Clone)]
pub struct Published {
    pub event_type: String,
    pub correlation_key: String,
    pub payload: serde_json::Value,
    /// The sender's id of this message: the same id twice is dropped.
    pub message_id: String,
}

/// What publishing a correlated event did.
#[derive(Debug, Clone)]
pub struct PublishResult {
    /// The message id was seen before; nothing was done.
    pub duplicate: bool,
    /// The instances it was delivered to now.
    pub delivered_to: Vec<String>,
    /// Nothing waited for it: kept until then.
    pub kept_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// What applying an event did.
#[derive(Debug, Clone)]
pub struct EventResult {
    pub instance: InstanceRow,
    /// False when the event was absorbed as a recorded no-op.
    pub applied: bool,
    /// True when this was a replay of an earlier request with the same key.
    pub replayed: bool,
}

pub struct Runtime {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The files under `templates/` (read again on deploy).
    templates: RwLock<Arc<Templates>>,
    templates_dir: Option<std::path::PathBuf>,
    /// Per tenant: the templates it deployed through the API, and when read.
    tenant_templates: RwLock<HashMap<String, (std::time::Instant, Arc<Templates>)>>,
    public_url: String,
    retry: RetryPolicy,
    definitions: RwLock<HashMap<i64, Arc<WorkflowDef>>>,
    /// The loop of timers and outbox, woken on every commit; the loop of
    /// payment checks, woken when payment work is added (`wake`).
    wake: Notify,
    wake_outbox: Notify,
    wake_payments: Notify,
    /// Callers waiting for instances to end.
    waiters: waiters::Waiters,
    /// One clock advance at a time.
    advancing: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    channels: Channels,
    lease: chrono::Duration,
    /// Per tenant: `keep_for` by event type, and the latest definition id it was built from.
    keep_for: RwLock<KeepForCache>,
    payments: payments::PaymentsState,
    reconcile_every: chrono::Duration,
    /// Requests with one Idempotency-Key, and events for one business key,
    /// run one at a time on this node.
    locks: locks::KeyedLocks,
    /// Tenants' time zones, read again after `ZONE_TTL`.
    zones: crate::cache::TtlCache<chrono_tz::Tz>,
    /// What `/metrics` shows.
    metrics: metrics::Metrics,
    metrics_token: Option<String>,
}

/// A template's name: a directory name under `templates/` as well.
fn is_template_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// How long a tenant's time zone, and its deployed templates, are cached.
const ZONE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Where an event comes from: the API (checked against its declared
/// payload) or o2flow itself (its own events, kept correlated events
/// already checked at the door).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Api,
    O2flow,
}

/// `(message_id, instance_id)` delivered, and `(message_id, why)` refused.
type Dispatched = (Vec<(String, String)>, Vec<(String, engine::Error)>);

/// Per tenant: its event settings and the latest definition id they were built from.
type KeepForCache = HashMap<String, (Option<i64>, Arc<EventSettings>)>;

/// What a tenant's workflows declare of event types.
#[derive(Default)]
struct EventSettings {
    keep_for: HashMap<String, Duration>,
    payloads: indexmap::IndexMap<String, indexmap::IndexMap<String, dsl::FieldSpec>>,
}

const MAX_CONFLICT_RETRIES: usize = 8;

pub use crate::engine::ACTION_FAILED;

/// Rounds of delivering kept events after one change (each delivery may
/// move an instance into a state that another kept event waits for).
const MAX_DISPATCH_ROUNDS: usize = 16;

/// Timers fired, or effects executed, at once. Different instances are
/// independent; two on one instance meet the optimistic revision check.
const IN_FLIGHT: usize = 64;

/// Due timers and pending outbox rows read per query.
const BATCH: u64 = 256;
const BATCH_LEN: usize = 256;

/// A timer whose firing failed is tried again after this.
const TIMER_RETRY: chrono::Duration = chrono::Duration::seconds(1);

/// How long a claimed timer or outbox row stays with the process that
/// claimed it, unless configured otherwise.
pub const DEFAULT_LEASE: chrono::Duration = chrono::Duration::seconds(10);

impl Runtime {
    pub fn new(options: Options) -> Runtime {
        let http = reqwest::Client::new();
        let channels = Channels::new(options.store.clone(), http.clone(), options.webhook);
        Runtime {
            store: options.store,
            clock: options.clock,
            templates: RwLock::new(options.templates),
            templates_dir: options.templates_dir,
            tenant_templates: RwLock::new(HashMap::new()),
            public_url: options.public_url,
            retry: options.retry,
            definitions: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            wake_outbox: Notify::new(),
            wake_payments: Notify::new(),
            waiters: waiters::Waiters::default(),
            advancing: tokio::sync::Mutex::new(()),
            http,
            channels,
            lease: options.lease,
            keep_for: RwLock::new(HashMap::new()),
            payments: payments::PaymentsState::default(),
            reconcile_every: options.reconcile_every,
            locks: locks::KeyedLocks::default(),
            zones: crate::cache::TtlCache::new(ZONE_TTL),
            metrics: metrics::Metrics::new(),
            metrics_token: options.metrics_token,
        }
    }

    /// The bearer token `/metrics` asks for, if one is configured.
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token.as_deref()
    }

    /// One instance's turn on this node: held from reading it to
    /// committing its transition.
    async fn instance_turn(&self, tenant_id: &str, instance_id: &str) -> locks::KeyGuard<'_> {
        self.locks
            .lock(format!("{tenant_id}\ninstance\n{instance_id}"))
            .await
    }

    /// The metrics in Prometheus text format, with the backlog read now.
    ///
    /// # Errors
    /// A store error.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let backlog = self.store.backlog(self.now()).await?;
        Ok(self.metrics.render(backlog))
    }

    /// The HTTP client of requests to endpoints (`call` steps and the
    /// webhook channel): one pool of connections for the process.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Wakes the background loops: something was committed.
    fn wake(&self) {
        self.wake.notify_one();
        self.wake_outbox.notify_one();
        self.wake_payments.notify_one();
    }

    /// An instance's change was committed: wakes the background loops, and
    /// whoever waits for it to end when it has.
    ///
    /// Only the flow loop is woken: payment work is done inline (orders,
    /// refunds, callbacks) or due minutes later, which the payment loop's
    /// tick finds; waking it on every commit cost three reads each time.
    /// `was` is the instance's status before (`None` for a start).
    fn committed(&self, instance: &InstanceRow, was: Option<&str>) {
        self.metrics
            .transition(&instance.workflow, was, &instance.status);
        self.wake.notify_one();
        self.wake_outbox.notify_one();
        if instance.status != engine::Status::Active.as_str() {
            self.waiters.ended(&instance.id);
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The template files' names (not a tenant's deployed ones).
    pub fn catalog(&self) -> Catalog {
        Catalog::with_templates(self.file_templates().names().iter().cloned())
    }

    fn file_templates(&self) -> Arc<Templates> {
        self.templates
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The names a tenant's workflows may send: the template files and the
    /// templates it deployed.
    async fn catalog_for(&self, tenant_id: &str) -> Result<Catalog, Error> {
        let deployed = self.tenant_templates(tenant_id, false).await?;
        let files = self.file_templates();
        Ok(Catalog::with_templates(
            files.names().iter().chain(deployed.names()).cloned(),
        ))
    }

    /// A tenant's deployed templates, compiled; read again after
    /// `ZONE_TTL`, or at once when `fresh` (a name was not found).
    async fn tenant_templates(
        &self,
        tenant_id: &str,
        fresh: bool,
    ) -> Result<Arc<Templates>, Error> {
        let cached = self
            .tenant_templates
            .read()
            .ok()
            .and_then(|all| all.get(tenant_id).cloned())
            .filter(|(at, _)| !fresh && at.elapsed() < ZONE_TTL);
        if let Some((_, templates)) = cached {
            return Ok(templates);
        }
        let rows = self.store.templates_of(tenant_id).await?;
        let items: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.title.as_str(), r.body.as_str()))
            .collect();
        let templates = Arc::new(
            Templates::from_strings(&items).map_err(|e| Error::InvalidTemplate(e.to_string()))?,
        );
        if let Ok(mut all) = self.tenant_templates.write() {
            all.insert(
                tenant_id.to_owned(),
                (std::time::Instant::now(), templates.clone()),
            );
        }
        Ok(templates)
    }

    /// Renders a message: the tenant's deployed template of that name, else
    /// the file's. A name found in neither is looked up again at once (a
    /// template deployed on another node a moment ago).
    async fn render(
        &self,
        tenant_id: &str,
        name: &str,
        context: &serde_json::Value,
    ) -> Result<crate::templates::Rendered, Failure> {
        let transient = |e: Error| Failure::Transient(e.to_string());
        let mut deployed = self
            .tenant_templates(tenant_id, false)
            .await
            .map_err(transient)?;
        let files = self.file_templates();
        if !deployed.names().contains(name) && !files.names().contains(name) {
            deployed = self
                .tenant_templates(tenant_id, true)
                .await
                .map_err(transient)?;
        }
        let templates = if deployed.names().contains(name) {
            deployed
        } else {
            files
        };
        templates
            .render(name, context)
            .map_err(|e| Failure::Permanent(e.to_string()))
    }

    /// Validates and deploys a workflow for a tenant. Returns the stored
    /// row and whether it is a new version.
    ///
    /// # Errors
    /// `InvalidWorkflow` with every diagnostic, or a store error.
    pub async fn deploy(
        &self,
        tenant_id: &str,
        file: &str,
        source: &str,
    ) -> Result<(DefinitionRow, bool), Error> {
        self.deploy_with_templates(tenant_id, file, source, &[])
            .await
    }

    /// Deploys a workflow with message templates of its own, `(name,
    /// title, body)`, in one step: the templates compile and the workflow
    /// validates against the template files (read again now), the tenant's
    /// deployed templates and these, or nothing is stored.
    ///
    /// # Errors
    /// `InvalidTemplate`, `InvalidWorkflow` with every diagnostic, or a store error.
    pub async fn deploy_with_templates(
        &self,
        tenant_id: &str,
        file: &str,
        source: &str,
        templates: &[(&str, &str, &str)],
    ) -> Result<(DefinitionRow, bool), Error> {
        if let Some(dir) = &self.templates_dir {
            let files = Templates::load(dir).map_err(|e| Error::InvalidTemplate(e.to_string()))?;
            if let Ok(mut current) = self.templates.write() {
                *current = Arc::new(files);
            }
        }
        for (name, _, _) in templates {
            if !is_template_name(name) {
                return Err(Error::InvalidTemplate(format!(
                    "`{name}` is not a template name: lower-case letters, digits and `_`"
                )));
            }
        }
        Templates::from_strings(templates).map_err(|e| Error::InvalidTemplate(e.to_string()))?;
        let catalog = self.catalog_for(tenant_id).await?;
        let catalog = Catalog::with_templates(
            catalog
                .templates
                .iter()
                .map(String::as_str)
                .chain(templates.iter().map(|(name, _, _)| *name))
                .map(str::to_owned),
        );
        let (def, diagnostics) = dsl::validate(file, source, &catalog);
        let Some(def) = def else {
            return Err(Error::InvalidWorkflow(diagnostics));
        };
        if !templates.is_empty() {
            self.store
                .save_templates(tenant_id, templates, self.now())
                .await?;
            if let Ok(mut all) = self.tenant_templates.write() {
                all.remove(tenant_id);
            }
        }
        let (row, created) = self
            .store
            .deploy(
                tenant_id,
                &def.name,
                source,
                def.title.as_deref(),
                def.label.as_deref(),
                self.now(),
            )
            .await?;
        if created {
            // A new version replaces the workflow's schedules; the same
            // content again leaves them as they are.
            let zone = self.tenant_zone(tenant_id).await?;
            let schedules = schedules_of(&def, zone, self.now());
            self.store
                .replace_schedules(tenant_id, &row, &schedules, self.now())
                .await?;
        }
        if let Ok(mut cache) = self.definitions.write() {
            cache.insert(row.id, Arc::new(def));
        }
        Ok((row, created))
    }

    /// Sets a tenant's time zone; its schedules that name no zone of their
    /// own move to it at once.
    ///
    /// # Errors
    /// `BadTimeZone`, `TenantNotFound`, or a store error.
    pub async fn set_tenant_time_zone(&self, tenant_id: &str, zone: &str) -> Result<(), Error> {
        let tz: chrono_tz::Tz = zone
            .parse()
            .map_err(|_| Error::BadTimeZone(zone.to_owned()))?;
        if !self
            .store
            .set_tenant_time_zone(tenant_id, tz.name())
            .await?
        {
            return Err(Error::TenantNotFound(tenant_id.to_owned()));
        }
        self.zones.forget(tenant_id);
        let mut definitions: Vec<i64> = self
            .store
            .schedules(tenant_id)
            .await?
            .iter()
            .map(|s| s.definition_id)
            .collect();
        definitions.sort_unstable();
        definitions.dedup();
        for id in definitions {
            let def = self.definition_by_id(id).await?;
            let Some(row) = self.store.definition_by_id(id).await? else {
                continue;
            };
            let schedules = schedules_of(&def, tz, self.now());
            self.store
                .replace_schedules(tenant_id, &row, &schedules, self.now())
                .await?;
        }
        Ok(())
    }

    /// The tenant's time zone (Asia/Shanghai unless set otherwise): the
    /// default of expressions, templates, timers and pages. Cached for
    /// `ZONE_TTL`, so a change made by another process (`o2flow tenants
    /// set-time-zone`) is seen within that.
    async fn tenant_zone(&self, tenant_id: &str) -> Result<chrono_tz::Tz, Error> {
        if let Some(zone) = self.zones.get(tenant_id) {
            return Ok(zone);
        }
        let zone = self
            .store
            .tenant(tenant_id)
            .await?
            .and_then(|t| t.time_zone.parse().ok())
            .unwrap_or(chrono_tz::Asia::Shanghai);
        self.zones.put(tenant_id, zone);
        Ok(zone)
    }

    /// Starts an instance for every schedule that is due. Returns how many started.
    ///
    /// # Errors
    /// A store error.
    pub async fn fire_due_schedules(&self) -> Result<usize, Error> {
        let due = self
            .store
            .claim_due_schedules(self.now(), self.lease, BATCH)
            .await?;
        let mut started = 0;
        for schedule in due {
            match self.fire_schedule(&schedule).await {
                Ok(created) => started += usize::from(created),
                Err(error) => {
                    tracing::warn!(schedule.id = schedule.id, workflow.name = %schedule.workflow, "schedule {} failed: {error}", schedule.id);
                }
            }
        }
        Ok(started)
    }

    /// Starts the instance of one due schedule, once: the start carries an
    /// idempotency key made of the schedule and its due time, so a process
    /// that dies between the start and moving the schedule on does not
    /// start it twice.
    async fn fire_schedule(&self, schedule: &store::ScheduleRow) -> Result<bool, Error> {
        let def = self.definition_by_id(schedule.definition_id).await?;
        let index = usize::try_from(schedule.schedule_index).unwrap_or(usize::MAX);
        let Some(spec) = def.schedules.get(index) else {
            self.store
                .advance_schedule(schedule.id, schedule.next_fire_at_ms, None)
                .await?;
            return Ok(false);
        };
        let key = format!("schedule:{}:{}", schedule.id, schedule.next_fire_at_ms);
        let (instance, created) = self
            .start(
                &schedule.tenant_id,
                StartRequest {
                    workflow: schedule.workflow.clone(),
                    input: spec.input.clone(),
                    branch: None,
                    business_key: None,
                    idempotency: Some((key.clone(), store::sha256_hex(key.as_bytes()))),
                    parent_id: None,
                },
            )
            .await?;
        if created {
            tracing::info!(schedule.id = schedule.id, instance.id = %instance.id, "schedule {} started {}", schedule.id, instance.id);
        }
        // After downtime, one start for the missed times, then on from now,
        // in the zone the schedule was deployed with.
        let zone = schedule.time_zone.parse().unwrap_or(spec.cron.zone);
        let next = spec
            .cron
            .with_default_zone(zone)
            .next_after(self.now().max(store::from_ms(schedule.next_fire_at_ms)));
        self.store
            .advance_schedule(schedule.id, schedule.next_fire_at_ms, next)
            .await?;
        Ok(created)
    }

    /// The compiled definition of a stored version.
    ///
    /// # Errors
    /// A store error, or a stored source that no longer validates (a
    /// template was removed).
    pub async fn definition(&self, row: &DefinitionRow) -> Result<Arc<WorkflowDef>, Error> {
        if let Some(def) = self
            .definitions
            .read()
            .ok()
            .and_then(|c| c.get(&row.id).cloned())
        {
            return Ok(def);
        }
        let (def, diagnostics) = dsl::validate(
            &format!("{}@v{}", row.name, row.version),
            &row.source,
            &self.catalog_for(&row.tenant_id).await?,
        );
        let def = Arc::new(def.ok_or(Error::InvalidWorkflow(diagnostics))?);
        if let Ok(mut cache) = self.definitions.write() {
            cache.insert(row.id, def.clone());
        }
        Ok(def)
    }

    async fn definition_by_id(&self, id: i64) -> Result<Arc<WorkflowDef>, Error> {
        if let Some(def) = self
            .definitions
            .read()
            .ok()
            .and_then(|c| c.get(&id).cloned())
        {
            return Ok(def);
        }
        let row = self
            .store
            .definition_by_id(id)
            .await?
            .ok_or_else(|| Error::UnknownWorkflow(format!("#{id}")))?;
        self.definition(&row).await
    }

    /// Starts an instance on the latest version of a workflow.
    ///
    /// # Errors
    /// Unknown workflow or branch, invalid input, a reused idempotency key
    /// with another body, or a store error.
    pub async fn start(
        &self,
        tenant_id: &str,
        request: StartRequest,
    ) -> Result<(InstanceRow, bool), Error> {
        // Copies of one start wait for each other on this node; across
        // nodes the unique key decides and the loser replays the winner.
        let _guard = match &request.idempotency {
            Some((key, _)) => Some(self.locks.lock(format!("{tenant_id}\nstart\n{key}")).await),
            None => None,
        };
        if let Some(replay) = self.replay_start(tenant_id, &request).await? {
            return Ok((replay, false));
        }
        let row = self
            .store
            .latest_definition(tenant_id, &request.workflow)
            .await?
            .ok_or_else(|| Error::UnknownWorkflow(request.workflow.clone()))?;
        let def = self.definition(&row).await?;
        let branches = self.store.branches(tenant_id).await?;
        let branch = match &request.branch {
            Some(branch) if branches.contains(branch) => branch.clone(),
            Some(branch) => return Err(Error::UnknownBranch(branch.clone())),
            None => branches
                .first()
                .cloned()
                .ok_or_else(|| Error::UnknownBranch("(none)".into()))?,
        };
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let engine::Started {
            input,
            business_key,
            transition,
        } = engine::start(
            &def,
            &id,
            &request.input,
            request.business_key.as_deref(),
            request.parent_id.as_deref(),
            now,
            self.tenant_zone(tenant_id).await?,
        )?;
        let record = request
            .idempotency
            .as_ref()
            .map(|(key, hash)| IdempotencyRecord {
                scope: "start".into(),
                key: key.clone(),
                request_hash: hash.clone(),
                response: id.clone(),
                status_code: 201,
            });
        let inserted = self
            .store
            .insert_instance(
                NewInstance {
                    id: &id,
                    tenant_id,
                    branch_id: &branch,
                    definition: &row,
                    input: &input,
                    business_key: business_key.as_deref(),
                    parent_id: request.parent_id.as_deref(),
                },
                &transition,
                record.as_ref(),
                now,
            )
            .await;
        match inserted {
            Ok(instance) => {
                tracing::info!(instance.id = %id, workflow.name = %row.name, state = %instance.state, "started instance {id}");
                self.committed(&instance, None);
                Ok((self.after_commit(instance).await?, true))
            }
            Err(error) => match self.replay_start(tenant_id, &request).await? {
                // Another request with the same key won the race.
                Some(replay) => Ok((replay, false)),
                None => Err(error.into()),
            },
        }
    }

    async fn replay_start(
        &self,
        tenant_id: &str,
        request: &StartRequest,
    ) -> Result<Option<InstanceRow>, Error> {
        let Some((key, hash)) = &request.idempotency else {
            return Ok(None);
        };
        let Some(stored) = self.store.idempotency(tenant_id, "start", key).await? else {
            return Ok(None);
        };
        if &stored.request_hash != hash {
            return Err(Error::IdempotencyMismatch);
        }
        Ok(self.store.instance(tenant_id, &stored.response).await?)
    }

    /// Applies an event to an instance of the tenant.
    ///
    /// # Errors
    /// Unknown instance, an event the state does not handle, a reused
    /// idempotency key with another body, or a store error.
    pub async fn send_event(
        &self,
        tenant_id: &str,
        instance_id: &str,
        event: Event,
        idempotency: Option<(String, String)>,
    ) -> Result<EventResult, Error> {
        if let Event::Named { event_type, .. } = &event {
            if engine::is_reserved_event(event_type) {
                return Err(Error::ReservedEvent(event_type.clone()));
            }
        }
        self.deliver_event(tenant_id, instance_id, event, idempotency, Origin::Api)
            .await
    }

    /// Applies an event o2flow raises itself (`payment.*`, `child.completed`,
    /// `action.failed`).
    ///
    /// # Errors
    /// As `send_event`.
    pub(crate) async fn raise(
        &self,
        tenant_id: &str,
        instance_id: &str,
        event: Event,
        idempotency: Option<(String, String)>,
    ) -> Result<EventResult, Error> {
        self.deliver_event(tenant_id, instance_id, event, idempotency, Origin::O2flow)
            .await
    }

    async fn deliver_event(
        &self,
        tenant_id: &str,
        instance_id: &str,
        event: Event,
        idempotency: Option<(String, String)>,
        origin: Origin,
    ) -> Result<EventResult, Error> {
        let scope = format!("event:{instance_id}");
        let Some((key, hash)) = idempotency else {
            let result = self
                .apply(tenant_id, instance_id, &event, None, None, origin)
                .await?;
            let instance = self.after_commit(result.instance).await?;
            return Ok(EventResult { instance, ..result });
        };
        // Copies of one request wait for each other here; every copy gets
        // the first one's answer.
        let _guard = self
            .locks
            .lock(format!("{tenant_id}\n{scope}\n{key}"))
            .await;
        if let Some(replay) = self
            .replay_event(tenant_id, instance_id, &scope, &key, &hash)
            .await?
        {
            return Ok(replay);
        }
        let idempotency = (scope, key, hash);
        match self
            .apply(
                tenant_id,
                instance_id,
                &event,
                Some(&idempotency),
                None,
                origin,
            )
            .await
        {
            Ok(result) => {
                let instance = self.after_commit(result.instance).await?;
                Ok(EventResult { instance, ..result })
            }
            Err(error) => {
                // A copy on another node may have won (a unique key or a
                // deadlock here): its answer is ours.
                let (scope, key, hash) = &idempotency;
                for _ in 0..20 {
                    if let Some(replay) = self
                        .replay_event(tenant_id, instance_id, scope, key, hash)
                        .await?
                    {
                        return Ok(replay);
                    }
                    if !matches!(error, Error::Store(_) | Error::Busy) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Err(error)
            }
        }
    }

    /// The answer to an earlier request with this Idempotency-Key, if there was one.
    async fn replay_event(
        &self,
        tenant_id: &str,
        instance_id: &str,
        scope: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<EventResult>, Error> {
        let Some(stored) = self.store.idempotency(tenant_id, scope, key).await? else {
            return Ok(None);
        };
        if stored.request_hash != hash {
            return Err(Error::IdempotencyMismatch);
        }
        let instance = self
            .store
            .instance(tenant_id, instance_id)
            .await?
            .ok_or_else(|| Error::InstanceNotFound(instance_id.to_owned()))?;
        Ok(Some(EventResult {
            instance,
            applied: stored.response == "applied",
            replayed: true,
        }))
    }

    /// Steps and commits one event, reloading and retrying when the
    /// instance changed under us.
    async fn apply(
        &self,
        tenant_id: &str,
        instance_id: &str,
        event: &Event,
        idempotency: Option<&(String, String, String)>,
        consume: Option<&str>,
        origin: Origin,
    ) -> Result<EventResult, Error> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            // Events and timers of one instance take turns on this node, so
            // they never conflict here; across nodes the revision decides.
            let turn = self.instance_turn(tenant_id, instance_id).await;
            let current = self
                .store
                .instance(tenant_id, instance_id)
                .await?
                .ok_or_else(|| Error::InstanceNotFound(instance_id.to_owned()))?;
            let def = self.definition_by_id(current.definition_id).await?;
            // An event from the API is checked against its declared payload
            // before anything is applied (a correlated one was, at the door).
            let checked;
            let event = match (origin, event) {
                (
                    Origin::Api,
                    Event::Named {
                        event_type,
                        payload,
                    },
                ) => {
                    checked = Event::Named {
                        event_type: event_type.clone(),
                        payload: engine::normalize_payload(
                            &def.event_payloads,
                            event_type,
                            payload,
                        )?,
                    };
                    &checked
                }
                _ => event,
            };
            let now = self.now();
            let zone = self.tenant_zone(tenant_id).await?;
            let transition = step_row(&def, &current, event, now, zone)??;
            let record = idempotency.map(|(scope, key, hash)| IdempotencyRecord {
                scope: scope.clone(),
                key: key.clone(),
                request_hash: hash.clone(),
                response: if transition.applied {
                    "applied"
                } else {
                    "ignored"
                }
                .into(),
                status_code: 200,
            });
            let extras = CommitExtras {
                fired_timer: None,
                idempotency: record.as_ref(),
                consume,
            };
            let committed = self.store.commit(&current, &transition, extras, now).await;
            drop(turn);
            match committed {
                Ok(instance) => {
                    self.committed(&instance, Some(&current.status));
                    if transition.applied && current.status == engine::Status::Active.as_str() {
                        self.check_money_held(&instance, &def, &transition).await?;
                    }
                    return Ok(EventResult {
                        instance,
                        applied: transition.applied,
                        replayed: false,
                    });
                }
                Err(store::Error::Conflict) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Busy)
    }

    /// Publishes a correlated event: delivered to every active instance
    /// with that business key whose state handles it, or kept until one
    /// does (for the type's `keep_for`, 1 h by default). The same
    /// `message_id` twice is dropped.
    ///
    /// # Errors
    /// A store error.
    pub async fn publish(&self, tenant_id: &str, event: Published) -> Result<PublishResult, Error> {
        if engine::is_reserved_event(&event.event_type) {
            return Err(Error::ReservedEvent(event.event_type));
        }
        // Copies of one message, and events for one business key, go one
        // at a time: a copy sees where the first was delivered.
        let _guard = self
            .locks
            .lock(format!(
                "{tenant_id}\ncorrelation\n{}",
                event.correlation_key
            ))
            .await;
        let now = self.now();
        let settings = self.event_settings(tenant_id).await?;
        let payload =
            engine::normalize_payload(&settings.payloads, &event.event_type, &event.payload)?;
        let event = Published { payload, ..event };
        let keep_for = settings
            .keep_for
            .get(&event.event_type)
            .copied()
            .unwrap_or(dsl::DEFAULT_KEEP_EVENTS_FOR);
        let expires_at = now + keep_for;
        let fresh = self
            .store
            .keep_event(
                tenant_id,
                &event.message_id,
                &event.event_type,
                &event.correlation_key,
                &event.payload,
                expires_at,
                now,
            )
            .await?;
        if !fresh {
            let stored = self
                .store
                .correlated_event(tenant_id, &event.message_id)
                .await?;
            return Ok(PublishResult {
                duplicate: true,
                delivered_to: stored.and_then(|s| s.delivered_to).into_iter().collect(),
                kept_until: None,
            });
        }
        let (delivered, refused) = self.dispatch(tenant_id, &event.correlation_key).await?;
        // An event the flow cannot take (a guard or `set` failed on its
        // payload) is answered with the reason and forgotten: never kept,
        // never applied later.
        if let Some((_, error)) = refused
            .into_iter()
            .find(|(message_id, _)| message_id == &event.message_id)
        {
            return Err(Error::Engine(error));
        }
        let delivered_to: Vec<String> = delivered
            .into_iter()
            .filter(|(message_id, _)| message_id == &event.message_id)
            .map(|(_, instance_id)| instance_id)
            .collect();
        Ok(PublishResult {
            duplicate: false,
            kept_until: delivered_to.is_empty().then_some(expires_at),
            delivered_to,
        })
    }

    /// What the tenant's workflows say of an event type: how long an early
    /// one is kept (the longest `keep_for` any version declares, else 1 h)
    /// and its declared payload (the latest version that declares one).
    /// Cached per tenant until a version is deployed (by any process).
    async fn event_settings(&self, tenant_id: &str) -> Result<Arc<EventSettings>, Error> {
        let latest = self.store.latest_definition_id(tenant_id).await?;
        let cached = self
            .keep_for
            .read()
            .ok()
            .and_then(|cache| cache.get(tenant_id).cloned())
            .filter(|(id, _)| *id == latest);
        if let Some((_, settings)) = cached {
            return Ok(settings);
        }
        let mut settings = EventSettings::default();
        // Oldest first: a later version's payload replaces an earlier one's.
        let mut rows = self.store.definitions(tenant_id).await?;
        rows.sort_by_key(|row| row.id);
        for row in rows {
            if let Ok(def) = self.definition(&row).await {
                for (event, duration) in &def.keep_events_for {
                    let entry = settings.keep_for.entry(event.clone()).or_insert(*duration);
                    *entry = (*entry).max(*duration);
                }
                for (event, fields) in &def.event_payloads {
                    settings.payloads.insert(event.clone(), fields.clone());
                }
            }
        }
        let settings = Arc::new(settings);
        if let Ok(mut cache) = self.keep_for.write() {
            cache.insert(tenant_id.to_owned(), (latest, settings.clone()));
        }
        Ok(settings)
    }

    /// Delivers the kept events of a business key to the active instances
    /// whose state handles them, oldest event first, until nothing more
    /// can be delivered. Returns `(message_id, instance_id)` pairs.
    async fn dispatch(&self, tenant_id: &str, correlation_key: &str) -> Result<Dispatched, Error> {
        let mut delivered = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..MAX_DISPATCH_ROUNDS {
            let mut progressed = false;
            for kept in self
                .store
                .waiting_events(tenant_id, correlation_key, self.now())
                .await?
            {
                let payload: serde_json::Value =
                    serde_json::from_str(&kept.payload).map_err(store::Error::Json)?;
                let event = Event::Named {
                    event_type: kept.event_type.clone(),
                    payload,
                };
                let mut consume = Some(kept.message_id.as_str());
                for instance in self
                    .store
                    .active_instances_with_key(tenant_id, correlation_key)
                    .await?
                {
                    let def = self.definition_by_id(instance.definition_id).await?;
                    if !def.handles(&instance.state, &kept.event_type) {
                        continue;
                    }
                    match self
                        .apply(
                            tenant_id,
                            &instance.id,
                            &event,
                            None,
                            consume,
                            Origin::O2flow,
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(instance.id = %instance.id, event.message_id = %kept.message_id, "delivered {} to {}", kept.event_type, instance.id);
                            delivered.push((kept.message_id.clone(), instance.id.clone()));
                            consume = None;
                            progressed = true;
                        }
                        // Taken by another node, or the guard does not hold here.
                        Err(Error::Store(store::Error::Consumed)) => break,
                        Err(Error::Engine(engine::Error::GuardRejected { .. })) => {}
                        // The flow cannot take it: forgotten, so it does
                        // not block the events behind it.
                        Err(Error::Engine(
                            error @ (engine::Error::Expression(_) | engine::Error::Refused { .. }),
                        )) => {
                            tracing::warn!(instance.id = %instance.id, event.message_id = %kept.message_id, "{} refused by {}: {error}", kept.event_type, instance.id);
                            self.store
                                .forget_kept_event(tenant_id, &kept.message_id)
                                .await?;
                            refused.push((kept.message_id.clone(), error));
                            break;
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        Ok((delivered, refused))
    }

    /// After a commit: an instance that has just entered a state may be
    /// awaited by kept events. Returns the instance as it is now.
    async fn after_commit(&self, instance: InstanceRow) -> Result<InstanceRow, Error> {
        let Some(key) = instance.business_key.clone() else {
            return Ok(instance);
        };
        if instance.status != engine::Status::Active.as_str() {
            return Ok(instance);
        }
        let (delivered, _) = self.dispatch(&instance.tenant_id, &key).await?;
        if delivered.is_empty() {
            return Ok(instance);
        }
        Ok(self
            .store
            .instance(&instance.tenant_id, &instance.id)
            .await?
            .unwrap_or(instance))
    }

    /// Fires every timer that is due now. Returns how many were tried
    /// (a failed one is released for the next pass).
    ///
    /// # Errors
    /// A store error.
    pub async fn fire_due_timers(&self) -> Result<usize, Error> {
        let mut fired = 0;
        loop {
            let due = self
                .store
                .claim_due_timers(self.now(), self.lease, BATCH)
                .await?;
            fired += run_all(&due, |timer| self.fire_logged(timer)).await?;
            if due.len() < BATCH_LEN {
                return Ok(fired);
            }
        }
    }

    /// Fires one timer; a failure is logged and the timer stays for the next round.
    async fn fire_logged(&self, timer: &store::TimerRow) -> Result<bool, Error> {
        match self.fire(timer).await {
            Ok(()) => Ok(true),
            Err(error) => {
                tracing::warn!(timer.id = timer.id, instance.id = %timer.instance_id, "timer {} failed: {error}", timer.id);
                // Give the claim back (a lost connection, a failed group
                // commit): tried again in a second, not only by the next
                // process after the lease, and not in a busy loop.
                self.store
                    .release_timer(timer.id, self.now() + TIMER_RETRY)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn fire(&self, timer: &store::TimerRow) -> Result<(), Error> {
        let event = Event::Timer {
            entry_seq: timer.entry_seq,
            index: usize::try_from(timer.timer_index).unwrap_or(usize::MAX),
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let turn = self
                .instance_turn(&timer.tenant_id, &timer.instance_id)
                .await;
            let Some(current) = self
                .store
                .instance(&timer.tenant_id, &timer.instance_id)
                .await?
            else {
                // A timer whose instance is gone would come due forever.
                self.store.delete_timer(timer.id).await?;
                return Ok(());
            };
            let def = self.definition_by_id(current.definition_id).await?;
            let now = self.now();
            let zone = self.tenant_zone(&timer.tenant_id).await?;
            let transition = match step_row(&def, &current, &event, now, zone)? {
                Ok(transition) => transition,
                Err(error) => engine::Transition {
                    // The flow cannot take this timer (an expression failed):
                    // record it and drop the timer rather than fire forever.
                    applied: false,
                    state: current.state.clone(),
                    status: parsed(&current)?.2,
                    data: parsed(&current)?.1,
                    entry_seq: current.entry_seq,
                    effects: Vec::new(),
                    cancel_timers: false,
                    timers: Vec::new(),
                    history: vec![engine::HistoryEntry {
                        kind: "timer_failed",
                        detail: json!({"index": timer.timer_index, "error": error.to_string()}),
                    }],
                },
            };
            let committed = self
                .store
                .commit(
                    &current,
                    &transition,
                    CommitExtras {
                        fired_timer: Some(timer.id),
                        ..CommitExtras::default()
                    },
                    now,
                )
                .await;
            drop(turn);
            match committed {
                Ok(row) => {
                    self.committed(&row, Some(&current.status));
                    self.metrics
                        .timer_fired(now - store::from_ms(timer.due_at_ms));
                    if transition.applied && current.status == engine::Status::Active.as_str() {
                        self.check_money_held(&row, &def, &transition).await?;
                    }
                    self.after_commit(row).await?;
                    return Ok(());
                }
                Err(store::Error::Conflict) => {
                    if !self
                        .store
                        .timers_of(&timer.instance_id)
                        .await?
                        .iter()
                        .any(|t| t.id == timer.id)
                    {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Busy)
    }

    /// Runs every pending outbox effect whose time has come. Returns how
    /// many were delivered.
    ///
    /// # Errors
    /// A store error.
    pub async fn drain_outbox(&self) -> Result<usize, Error> {
        let mut done = 0;
        loop {
            let rows = self
                .store
                .claim_outbox(self.now(), self.lease, BATCH)
                .await?;
            // Orders first: a message planned in the same step carries
            // their pay link, which must work as soon as it arrives.
            let (orders, rest): (Vec<_>, Vec<_>) =
                rows.iter().cloned().partition(|row| row.kind == "pay");
            done += run_all(&orders, |row| self.execute(row)).await?;
            done += run_all(&rest, |row| self.execute(row)).await?;
            if rows.len() < BATCH_LEN {
                return Ok(done);
            }
        }
    }

    async fn execute(&self, row: &store::OutboxRow) -> Result<bool, Error> {
        let now = self.now();
        let (outcome, own_policy) = self.execute_row(row).await;
        let policy = own_policy.unwrap_or(self.retry);
        let outcome = match outcome {
            Ok(completion) => self.complete(row, completion).await,
            Err(failure) => Err(failure),
        };
        let (message, retry_at) = match outcome {
            Ok(done) => return Ok(done),
            Err(Failure::Transient(message)) => {
                let attempts = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                let retry_at = policy.delay(attempts).map(|d| now + d);
                (message, retry_at)
            }
            // Retrying cannot help: no further attempt.
            Err(Failure::Permanent(message)) => (message, None),
        };
        self.metrics.effect_failed(&row.kind, retry_at.is_none());
        self.store
            .outbox_attempt_failed(row, &message, retry_at, now)
            .await?;
        match retry_at {
            Some(at) => {
                tracing::warn!(outbox.id = row.id, instance.id = %row.instance_id, "effect {} failed, retrying at {at}: {message}", row.effect_key);
            }
            None => {
                tracing::error!(outbox.id = row.id, instance.id = %row.instance_id, "effect {} failed for good: {message}", row.effect_key);
                self.effect_failed(row, &message).await?;
            }
        }
        Ok(false)
    }

    /// An effect failed for good: the flow gets `action.failed`; when its
    /// state does not handle it (or the instance is over), an incident opens.
    async fn effect_failed(&self, row: &store::OutboxRow, message: &str) -> Result<(), Error> {
        let event = Event::Named {
            event_type: ACTION_FAILED.into(),
            payload: json!({"action": row.kind, "key": row.effect_key, "error": message}),
        };
        let handled = match self
            .apply(
                &row.tenant_id,
                &row.instance_id,
                &event,
                None,
                None,
                Origin::O2flow,
            )
            .await
        {
            Ok(result) => {
                if result.applied {
                    self.after_commit(result.instance).await?;
                }
                result.applied
            }
            Err(Error::Engine(
                engine::Error::EventNotHandled { .. } | engine::Error::GuardRejected { .. },
            )) => false,
            Err(error) => return Err(error),
        };
        if !handled {
            let incident = self.store.open_incident(row, message, self.now()).await?;
            tracing::error!(incident.id = incident.id, instance.id = %row.instance_id, "incident {} opened", incident.id);
        }
        Ok(())
    }

    /// Retries an open incident's effect with fresh attempts.
    ///
    /// # Errors
    /// `IncidentNotFound`, `IncidentNotOpen`, or a store error.
    pub async fn retry_incident(
        &self,
        tenant_id: &str,
        id: i64,
    ) -> Result<store::IncidentRow, Error> {
        let incident = self
            .store
            .incident(tenant_id, id)
            .await?
            .ok_or(Error::IncidentNotFound(id))?;
        if !self.store.retry_incident(&incident, self.now()).await? {
            return Err(Error::IncidentNotOpen(id));
        }
        if incident.kind == "refund" {
            self.retry_refund(&incident.effect_key, incident.id).await?;
        }
        self.wake();
        self.store
            .incident(tenant_id, id)
            .await?
            .ok_or(Error::IncidentNotFound(id))
    }

    /// Renders the message and tries its channels in order; the first that
    /// takes it delivers it.
    pub(crate) async fn deliver(
        &self,
        row: &store::OutboxRow,
        send: &SendEffect,
    ) -> Result<Completion, Failure> {
        let mut context = send.context.clone();
        // A party without a time zone is in the tenant's.
        let zone = self
            .tenant_zone(&row.tenant_id)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        if let Some(party) = context.get_mut("party").and_then(|p| p.as_object_mut()) {
            if party
                .get("time_zone")
                .is_none_or(serde_json::Value::is_null)
            {
                party.insert("time_zone".into(), json!(zone.name()));
            }
        }
        self.add_pay_link(row, &mut context)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        if let Some(object) = context.as_object_mut() {
            object.insert("public_url".into(), json!(self.public_url));
        }
        let rendered = self
            .render(&row.tenant_id, &send.template, &context)
            .await?;
        let mut last = Failure::Permanent("the send has no channel".into());
        for channel in &send.channels {
            let outgoing = Outgoing {
                key: &row.effect_key,
                tenant_id: &row.tenant_id,
                instance_id: &row.instance_id,
                to: &send.to,
                template: &send.template,
                purpose: send.purpose.as_deref(),
                message: &rendered,
                attempts: row.attempts,
            };
            let delivered = match self.channels.get(*channel) {
                Ok(deliver) => deliver.deliver(&outgoing).await,
                Err(error) => Err(error),
            };
            match delivered {
                Ok(delivered) => return Ok(Completion::Delivered(delivered)),
                Err(error) => {
                    let failure = Failure::from(error);
                    tracing::warn!(
                        outbox.id = row.id,
                        "channel {} failed: {}",
                        channel.as_str(),
                        failure.message()
                    );
                    last = failure;
                }
            }
        }
        Err(last)
    }

    /// Writes what an executor did with the outbox row's completion, in one
    /// transaction. True when the row is done; false when it is postponed.
    /// Writing it failing is a transient failure: the effect runs again
    /// under the same key.
    async fn complete(
        &self,
        row: &store::OutboxRow,
        completion: Completion,
    ) -> Result<bool, Failure> {
        let now = self.now();
        let with_key = |mut detail: serde_json::Value| {
            if let Some(object) = detail.as_object_mut() {
                object.insert("effect".into(), json!(row.kind));
                object.insert("key".into(), json!(row.effect_key));
            }
            detail
        };
        let channel = match &completion {
            Completion::Delivered(Delivered::Inbox { .. }) => "inbox",
            Completion::Delivered(Delivered::Sent { detail }) => {
                detail["channel"].as_str().unwrap_or("other")
            }
            _ => "",
        }
        .to_owned();
        let done = !matches!(completion, Completion::Postponed { .. });
        let recorded = match completion {
            Completion::Done(detail) => self
                .store
                .outbox_done(row, &with_key(detail), now)
                .await
                .map(|()| true),
            Completion::Delivered(Delivered::Inbox {
                party_id,
                template,
                title,
                body,
            }) => self
                .store
                .deliver_to_inbox(row, &party_id, &template, &title, &body, now)
                .await
                .map(|()| true),
            Completion::Delivered(Delivered::Sent { detail }) => self
                .store
                .outbox_done(row, &with_key(detail), now)
                .await
                .map(|()| true),
            Completion::Postponed { at, reason } => self
                .store
                .outbox_postpone(row, at, &reason, now)
                .await
                .map(|()| false),
        };
        if done && recorded.is_ok() {
            // `?wait=settled` waits for an ended instance's last effects.
            self.waiters.ended(&row.instance_id);
            self.metrics
                .effect_done(&row.kind, &channel, now - store::from_ms(row.created_at_ms));
        }
        recorded.map_err(|e| Failure::Transient(e.to_string()))
    }
}

/// The schedules of a definition as deployed for a tenant: one without a
/// zone of its own runs in the tenant's.
fn schedules_of(
    def: &WorkflowDef,
    tenant_zone: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<NewSchedule> {
    def.schedules
        .iter()
        .enumerate()
        .filter_map(|(index, schedule)| {
            let cron = schedule.cron.with_default_zone(tenant_zone);
            cron.next_after(now).map(|next_fire_at| NewSchedule {
                index,
                cron: cron.source.clone(),
                time_zone: cron.zone.name().to_owned(),
                next_fire_at,
            })
        })
        .collect()
}

/// Runs `work` over `rows`, `IN_FLIGHT` at a time; counts the `true`s.
async fn run_all<'a, R, F, Fut>(rows: &'a [R], work: F) -> Result<usize, Error>
where
    F: Fn(&'a R) -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>> + 'a,
{
    let mut done = 0;
    for chunk in rows.chunks(IN_FLIGHT) {
        for result in join_all(chunk.iter().map(&work)).await {
            if result? {
                done += 1;
            }
        }
    }
    Ok(done)
}

/// A stored instance's input, data and status, parsed: a corrupt row is an
/// error, never a silent `null` or `active`.
fn parsed(
    row: &InstanceRow,
) -> Result<(serde_json::Value, serde_json::Value, engine::Status), store::Error> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        store::Error::Corrupt(format!("instance {}: {what}: {e}", row.id))
    };
    let input = serde_json::from_str(&row.input).map_err(|e| corrupt("input", &e))?;
    let data = serde_json::from_str(&row.data).map_err(|e| corrupt("data", &e))?;
    let status = engine::Status::parse(&row.status)
        .ok_or_else(|| corrupt("status", &format!("`{}` is no status", row.status)))?;
    Ok((input, data, status))
}

/// The engine view of a stored row, stepped: `Ok(Err(_))` when the engine
/// refuses the event, `Err(_)` when the row is corrupt.
fn step_row(
    def: &WorkflowDef,
    row: &InstanceRow,
    event: &Event,
    now: chrono::DateTime<chrono::Utc>,
    time_zone: chrono_tz::Tz,
) -> Result<Result<engine::Transition, engine::Error>, store::Error> {
    let (input, data, status) = parsed(row)?;
    let view = engine::Instance {
        id: &row.id,
        state: &row.state,
        status,
        input: &input,
        data: &data,
        entry_seq: row.entry_seq,
        revision: row.revision,
        business_key: row.business_key.as_deref(),
        parent_id: row.parent_id.as_deref(),
        time_zone,
    };
    Ok(engine::step(def, &view, event, now))
}
