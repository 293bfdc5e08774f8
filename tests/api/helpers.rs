use std::sync::Arc;

use chrono::{TimeZone, Utc};
use o2flow::runtime::{Clock, ManualClock, Options, Runtime};
use o2flow::store::Store;
use o2flow::templates::Templates;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Declares `mod $name { sqlite, postgres }` running `$name(app)` on each.
#[macro_export]
macro_rules! storage_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::run($crate::helpers::Db::Sqlite, super::$name).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::run($crate::helpers::Db::Postgres, super::$name).await;
            }
        }
    };
}

pub async fn run<F, Fut>(db: Db, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let app = TestApp::spawn(db).await;
    test(app.clone()).await;
    app.cleanup().await;
}

pub fn postgres_admin_url() -> String {
    std::env::var("O2FLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A running o2flow on port 0 with a fresh database, a manual clock, and
/// two tenants (`acme`, with admin and viewer keys, and `other`).
#[derive(Clone)]
pub struct TestApp {
    pub db: Db,
    pub database_url: String,
    pub pg_name: Option<String>,
    pub address: String,
    pub client: reqwest::Client,
    pub key: String,
    pub viewer_key: String,
    pub operator_key: String,
    /// The hospital's own system: the role that relays messages (and their links) to patients.
    pub integration_key: String,
    pub other_key: String,
    pub runtime: Arc<Runtime>,
    pub clock: Arc<ManualClock>,
    pub server: Arc<actix_web::dev::ServerHandle>,
}

pub fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

pub fn runtime_on(store: Store, clock: Arc<ManualClock>) -> Arc<Runtime> {
    runtime_with(store, clock, file_templates())
}

/// The templates under `templates/`.
pub fn file_templates() -> Templates {
    Templates::load(std::path::Path::new("templates")).unwrap_or_else(|e| panic!("{e}"))
}

/// A runtime with the given templates (to make a delivery fail, then not).
pub fn runtime_with(store: Store, clock: Arc<ManualClock>, templates: Templates) -> Arc<Runtime> {
    Arc::new(Runtime::new(Options::new(
        store,
        clock,
        Arc::new(templates),
        "http://o2flow.test".into(),
    )))
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        let name = format!("o2flow_test_{}", uuid::Uuid::new_v4().simple());
        let (database_url, pg_name) = match db {
            Db::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite:{}", path.display()), None)
            }
            Db::Postgres => {
                let admin = Database::connect(format!("{}/postgres", postgres_admin_url()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL must answer at {}: {e}", postgres_admin_url())
                    });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                // Tests check behaviour, not what survives the machine losing
                // power: commits need not wait for the disk. (A killed o2flow
                // process loses nothing either way; benchmarks keep the default.)
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE {name} SET synchronous_commit = off"
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                admin.close().await.ok();
                (format!("{}/{name}", postgres_admin_url()), Some(name))
            }
        };
        let store = Store::connect(&database_url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let clock = Arc::new(ManualClock::new(start_time()));
        let now = start_time();
        store
            .ensure_tenant("acme", "Acme Hospital Group", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .add_branch(
                "acme",
                "east",
                "East campus",
                now + chrono::Duration::seconds(1),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .ensure_tenant("other", "Other Hotel Chain", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = store
            .create_api_key("acme", "admin", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let viewer_key = store
            .create_api_key("acme", "viewer", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let operator_key = store
            .create_api_key("acme", "operator", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let integration_key = store
            .create_api_key("acme", "integration", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let other_key = store
            .create_api_key("other", "admin", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let app = o2flow::app::App::new(Options::new(
            store,
            clock.clone(),
            Arc::new(file_templates()),
            "http://o2flow.test".into(),
        ));
        let runtime = app.runtime().clone();
        let source = std::fs::read_to_string("workflows/follow_up_reminder.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        for tenant in ["acme", "other"] {
            runtime
                .deploy(tenant, "follow_up_reminder.yaml", &source)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        // The same start-up path as `serve`, and the same jobs: run by
        // `settle` and clock advances, so a test sees each step happen.
        let running = app
            .start(listener, o2flow::app::Background::OnDemand)
            .unwrap_or_else(|e| panic!("{e}"));
        let address = format!("http://{}", running.address);
        let handle = running.handle();
        tokio::spawn(running.until_stopped());
        TestApp {
            db,
            database_url,
            pg_name,
            address,
            client: reqwest::Client::new(),
            key,
            viewer_key,
            operator_key,
            integration_key,
            other_key,
            runtime,
            clock,
            server: Arc::new(handle),
        }
    }

    /// Stops the server and drops the database, after checking that the
    /// test left no due timer and no unsent outbox row behind.
    pub async fn cleanup(self) {
        let now = self.clock.now();
        let due = self
            .runtime
            .store()
            .due_timers(now, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(due.is_empty(), "due timers left behind: {due:?}");
        let pending = self
            .runtime
            .store()
            .pending_outbox(now, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            pending.is_empty(),
            "unsent outbox rows left behind: {pending:?}"
        );
        // Connections opened by the server's worker threads die with them:
        // stop the server only after the last query above.
        self.server.stop(false).await;
        match (&self.db, &self.pg_name) {
            (Db::Postgres, Some(name)) => {
                self.runtime.store().close().await;
                if let Ok(admin) =
                    Database::connect(format!("{}/postgres", postgres_admin_url())).await
                {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            }
            _ => {
                let path = self.database_url.trim_start_matches("sqlite:").to_owned();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, &self.key).await
    }

    pub async fn get_with(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        read(response).await
    }

    /// Deploys a workflow's YAML through the API; returns status and body.
    pub async fn deploy(&self, source: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/api/v1/workflows"))
            .bearer_auth(&self.key)
            .body(source.to_owned())
            .send()
            .await;
        read(response.unwrap_or_else(|e| panic!("{e}"))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &self.key, body.to_string(), None).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        body: String,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        read(request.send().await.unwrap_or_else(|e| panic!("{e}"))).await
    }

    /// Starts a follow-up reminder for `patient_id` through the API.
    pub async fn start_follow_up(&self, patient_id: &str, business_key: Option<&str>) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/instances",
                &follow_up_request(patient_id, business_key),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Runs one SQL statement on the test's database, as someone editing
    /// rows by hand would (to corrupt a row on purpose).
    pub async fn sql(&self, statement: &str) {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        db.execute_unprepared(statement)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        db.close().await.ok();
    }

    /// Moves the manual clock and lets timers and the outbox catch up.
    pub async fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
        self.runtime
            .settle()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

pub fn follow_up_request(patient_id: &str, business_key: Option<&str>) -> Value {
    json!({
        "workflow": "follow_up_reminder",
        "business_key": business_key,
        "input": {
            "patient": {"id": patient_id, "name": "张三", "phone": "13800001234", "time_zone": "Asia/Shanghai"},
            "department": "心内科",
            "doctor": "李明",
            "visit_ended_at": "2026-11-20T15:30:00+08:00"
        }
    })
}

/// The value at a dotted path (`instance.state`, `messages.0.body`) of a
/// JSON response; panics naming the path and the body when any step is
/// missing, so a misspelt key fails the test instead of reading as empty.
#[track_caller]
pub fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for step in path.split('.') {
        let next = match current {
            Value::Object(object) => object.get(step),
            Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        current = next.unwrap_or_else(|| panic!("no `{path}` (at `{step}`) in {value}"));
    }
    current
}

/// The text at `path`; panics when it is missing or not text.
#[track_caller]
pub fn text(value: &Value, path: &str) -> String {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not text in {value}"))
        .to_owned()
}

/// The list at `path`; panics when it is missing or not a list.
#[track_caller]
pub fn list(value: &Value, path: &str) -> Vec<Value> {
    at(value, path)
        .as_array()
        .unwrap_or_else(|| panic!("`{path}` is not a list in {value}"))
        .clone()
}

/// The whole number at `path`; panics when it is missing or not one.
#[track_caller]
pub fn int(value: &Value, path: &str) -> i64 {
    at(value, path)
        .as_i64()
        .unwrap_or_else(|| panic!("`{path}` is not a whole number in {value}"))
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Starts `o2flow serve` on port 0 with `command`'s extra arguments and
/// environment, and waits until it listens. Returns the child, its address
/// and the admin key it printed, if it printed one (a fresh database).
pub fn spawn_serve(
    mut command: std::process::Command,
) -> (std::process::Child, String, Option<String>) {
    use std::io::BufRead;
    let mut child = command
        .args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut key = None;
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = line.trim().strip_prefix("export O2FLOW_KEY=") {
            key = Some(rest.to_owned());
        }
        if let Some(rest) = line.strip_prefix("o2flow listening on ") {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            return (child, address, key);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not start");
}

/// `o2flow serve --database-url <url>`, ready for more arguments.
pub fn serve_command(database_url: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_o2flow"));
    command.args(["serve", "--database-url", database_url]);
    command
}

/// A fresh SQLite file for a server started by a test, removed (with its
/// WAL files) when dropped.
pub struct TempSqlite {
    pub path: std::path::PathBuf,
    pub url: String,
}

impl TempSqlite {
    pub fn new(label: &str) -> TempSqlite {
        let path = std::env::temp_dir().join(format!(
            "o2flow-{label}-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite:{}", path.display());
        TempSqlite { path, url }
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
