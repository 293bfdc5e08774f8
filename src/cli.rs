//! The command line: `serve`, `validate`, `graph`, `schema`, `keys create`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::dsl::{self, Catalog};
use crate::runtime::{Options, Runtime, SystemClock, WebhookConfig};
use crate::store::{Store, ROLES};
use crate::templates::Templates;

#[derive(Debug, Parser)]
#[command(
    name = "o2flow",
    version,
    about = "Hospital and hotel O2O flows in YAML, run as durable state machines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct DatabaseArgs {
    /// SQLite file (`sqlite:o2flow.db`, created on first run) or `postgres://…`.
    #[arg(long, env = "O2FLOW_DATABASE_URL", default_value = "sqlite:o2flow.db")]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and deploy `workflows/`, then serve the HTTP API.
    Serve(ServeArgs),
    /// Check workflow files (default: `workflows/`); exit 1 on any problem.
    Validate {
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "templates")]
        templates: PathBuf,
    },
    /// Print a workflow's Mermaid state diagram.
    Graph {
        file: PathBuf,
        #[arg(long, default_value = "templates")]
        templates: PathBuf,
    },
    /// Print the JSON Schema of workflow files (for yaml-language-server).
    Schema,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Name the hospital's or hotel's own systems (HIS, PMS) that `call` steps reach.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Point a tenant or branch at its WeChat Pay merchant account.
    Merchants {
        #[command(subcommand)]
        command: MerchantsCommand,
    },
    /// Measure o2flow over HTTP: the reference five-step flow on a fresh
    /// SQLite file and PostgreSQL database, latency and saturation
    /// (docs/PERFORMANCE.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum MerchantsCommand {
    /// Create or replace the merchant of a tenant (or of one branch). The
    /// secrets are given by reference (`file:/path` or `env:NAME`), checked
    /// now, read again at each start, and never stored or printed.
    Set(Box<MerchantArgs>),
    /// List the merchants (no secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct MerchantArgs {
    #[arg(long)]
    pub tenant: String,
    /// A branch with its own merchant; default: the whole tenant.
    #[arg(long)]
    pub branch: Option<String>,
    #[arg(long)]
    pub mchid: String,
    /// The Official Account (or mini program) appid payers' openids belong to.
    #[arg(long)]
    pub appid: String,
    /// The merchant API certificate's serial number.
    #[arg(long)]
    pub serial_no: String,
    /// The merchant API private key (PKCS#8 PEM): `file:/etc/o2flow/apiclient_key.pem` or `env:NAME`.
    #[arg(long)]
    pub private_key: String,
    /// The 32-character APIv3 key: `file:…` or `env:NAME`.
    #[arg(long)]
    pub api_v3_key: String,
    /// The WeChat Pay public key (PEM): `file:…` or `env:NAME`.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Its id, `PUB_KEY_ID_…`.
    #[arg(long)]
    pub public_key_id: Option<String>,
    /// Platform-certificate mode: download `/v3/certificates` (and again on a
    /// serial not held). With --public-key too, both are held during the switch.
    #[arg(long)]
    pub platform_certificates: bool,
    /// Where WeChat Pay sends notifications; default `<public URL>/callbacks/wechatpay/<id>`.
    #[arg(long)]
    pub notify_url: Option<String>,
    #[arg(long, default_value = crate::wechat::pay::client::DEFAULT_BASE_URL)]
    pub base_url: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "O2FLOW_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    #[arg(long, default_value = "templates")]
    pub templates: PathBuf,
    /// The address people reach o2flow at, used in links inside messages.
    #[arg(long, env = "O2FLOW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where the `webhook` channel posts messages (the hospital's or hotel's own system).
    #[arg(long, env = "O2FLOW_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// A file holding the secret that signs webhook bodies (HMAC-SHA256); or set O2FLOW_WEBHOOK_SECRET.
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// How long claimed timers and outbox rows stay with this process: after
    /// it dies, another process (or this one restarted) takes them over.
    /// Leases of work still running are renewed every third of it, so it
    /// only bounds how long a node that died for good holds its work.
    #[arg(long, env = "O2FLOW_CLAIM_LEASE", default_value = "10s", value_parser = parse_lease)]
    pub claim_lease: chrono::Duration,
    /// This node's name in its claims (default: host name and --bind). Run
    /// again under the same name after a crash, o2flow takes the work the
    /// dead process had claimed back at once instead of waiting out its lease.
    /// Two live processes must not share a name.
    #[arg(long, env = "O2FLOW_NODE_NAME")]
    pub node_name: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "O2FLOW_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// API write requests under way at most; past it o2flow answers 503
    /// `overloaded` with `Retry-After` and changes nothing.
    #[arg(long, env = "O2FLOW_MAX_IN_FLIGHT", default_value_t = crate::http::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Database connections (default: 16 on PostgreSQL; SQLite has one).
    #[arg(long, env = "O2FLOW_DB_CONNECTIONS")]
    pub db_connections: Option<u32>,
    /// `system`, or `manual`: time stands still until an admin moves it
    /// (`POST /api/v1/clock/advance {"by": "24h"}`), so a flow with a 7-day
    /// expiry can be tried in seconds. Refused while any tenant is production.
    #[arg(long, env = "O2FLOW_CLOCK", default_value = "system", value_parser = ["system", "manual"])]
    pub clock: String,
}

fn parse_lease(text: &str) -> Result<chrono::Duration, String> {
    crate::domain::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Mark a tenant as production: it takes real money only, so `serve`
    /// refuses to start while it has no WeChat Pay merchant (no sandbox).
    SetProduction {
        #[arg(long)]
        tenant: String,
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        production: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a tenant's IANA time zone (default Asia/Shanghai): the zone of its
    /// schedules that name none, moved at once.
    SetTimeZone {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        time_zone: String,
        #[arg(long, default_value = "templates")]
        templates: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Set (or replace) a named endpoint: `o2flow endpoints set his https://his.example/api --tenant demo --secret file:/etc/o2flow/his.secret`.
    Set {
        /// The name `call: { endpoint: … }` uses: lower-case letters, digits and `_`.
        name: String,
        /// The base URL (http or https); a call's `path` is appended to it.
        url: String,
        #[arg(long)]
        tenant: String,
        /// Only for this branch's instances (default: the whole tenant).
        #[arg(long)]
        branch: Option<String>,
        /// The secret that signs bodies (HMAC-SHA256): `file:/path` or `env:NAME`, never the secret itself.
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List a tenant's endpoints (secrets by reference only).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only its hash is stored). Creates the tenant if needed.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ROLES)]
        role: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Workflow files: the files named, and the `.yaml`/`.yml` files of the directories named.
///
/// # Errors
/// A path that does not exist.
pub fn workflow_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{} does not exist", path.display());
        }
    }
    Ok(files)
}

fn catalog_from(dir: &Path) -> anyhow::Result<(Catalog, Templates)> {
    let templates = Templates::load(dir)?;
    Ok((
        Catalog::with_templates(templates.names().iter().cloned()),
        templates,
    ))
}

/// Validates files; prints every diagnostic. Returns the sources that passed.
fn check_files(
    files: &[PathBuf],
    catalog: &Catalog,
) -> anyhow::Result<(Vec<(String, String)>, usize)> {
    let mut good = Vec::new();
    let mut problems = 0;
    for file in files {
        let source =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let label = file.display().to_string();
        let (def, diagnostics) = dsl::validate(&label, &source, catalog);
        for diagnostic in &diagnostics {
            eprintln!("{}", diagnostic.render(&source));
        }
        problems += diagnostics.len();
        if def.is_some() {
            good.push((label, source));
        }
    }
    Ok((good, problems))
}

/// Runs the command line.
///
/// # Errors
/// Whatever stops the command; `main` prints it and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&dsl::json_schema())?);
            Ok(0)
        }
        Command::Validate { paths, templates } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("workflows")]
            } else {
                paths
            };
            let files = workflow_files(&paths)?;
            let (catalog, _) = catalog_from(&templates)?;
            let (good, problems) = check_files(&files, &catalog)?;
            if problems > 0 {
                eprintln!(
                    "error: {problems} problem(s) in {} of {} file(s)",
                    files.len() - good.len(),
                    files.len()
                );
                Ok(1)
            } else {
                println!("ok: {} workflow file(s) valid", files.len());
                Ok(0)
            }
        }
        Command::Graph { file, templates } => {
            let (catalog, _) = catalog_from(&templates)?;
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (def, diagnostics) = dsl::validate(&file.display().to_string(), &source, &catalog);
            for diagnostic in &diagnostics {
                eprintln!("{}", diagnostic.render(&source));
            }
            match def {
                Some(def) => {
                    print!("{}", dsl::mermaid(&def));
                    Ok(0)
                }
                None => Ok(1),
            }
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    tenant,
                    role,
                    database,
                },
        } => {
            let store = Store::connect(&database.database_url).await?;
            let now = chrono::Utc::now();
            store.ensure_tenant(&tenant, &tenant, now).await?;
            println!("{}", store.create_api_key(&tenant, &role, now).await?);
            Ok(0)
        }
        Command::Tenants {
            command:
                TenantsCommand::SetTimeZone {
                    tenant,
                    time_zone,
                    templates,
                    database,
                },
        } => {
            let (_, templates) = catalog_from(&templates)?;
            let store = Store::connect(&database.database_url).await?;
            let runtime = Runtime::new(Options::new(
                store,
                Arc::new(SystemClock),
                Arc::new(templates),
                String::new(),
            ));
            match runtime.set_tenant_time_zone(&tenant, &time_zone).await {
                Ok(()) => {
                    println!("tenant `{tenant}` now runs in {time_zone}");
                    Ok(0)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(1)
                }
            }
        }
        Command::Tenants {
            command:
                TenantsCommand::SetProduction {
                    tenant,
                    production,
                    database,
                },
        } => {
            let store = Store::connect(&database.database_url).await?;
            if store.set_tenant_production(&tenant, production).await? {
                println!("tenant `{tenant}` production: {production}");
                Ok(0)
            } else {
                eprintln!("error: there is no tenant `{tenant}`");
                Ok(1)
            }
        }
        Command::Merchants {
            command: MerchantsCommand::Set(args),
        } => set_merchant(*args).await,
        Command::Endpoints {
            command:
                EndpointsCommand::Set {
                    name,
                    url,
                    tenant,
                    branch,
                    secret,
                    database,
                },
        } => {
            set_endpoint(
                &name,
                &url,
                &tenant,
                branch.as_deref(),
                secret.as_deref(),
                &database,
            )
            .await
        }
        Command::Endpoints {
            command: EndpointsCommand::List { tenant, database },
        } => {
            let store = Store::connect(&database.database_url).await?;
            for e in store.endpoints(&tenant).await? {
                let branch = if e.branch_id.is_empty() {
                    "*"
                } else {
                    e.branch_id.as_str()
                };
                println!(
                    "{}\tbranch={branch}\turl={}\tsecret={}",
                    e.name,
                    e.url,
                    e.secret_ref.as_deref().unwrap_or("(none)")
                );
            }
            Ok(0)
        }
        Command::Merchants {
            command: MerchantsCommand::List { tenant, database },
        } => {
            let store = Store::connect(&database.database_url).await?;
            for m in store.merchants(tenant.as_deref()).await? {
                let branch = if m.branch_id.is_empty() {
                    "*"
                } else {
                    m.branch_id.as_str()
                };
                println!(
                    "{}\ttenant={}\tbranch={branch}\tmchid={}\tappid={}\tverify={}\tbase_url={}",
                    m.id,
                    m.tenant_id,
                    m.mchid,
                    m.appid,
                    if m.platform_certificates {
                        "platform certificates".to_owned()
                    } else {
                        m.public_key_id.clone().unwrap_or_default()
                    },
                    m.base_url
                );
            }
            Ok(0)
        }
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

async fn set_endpoint(
    name: &str,
    url: &str,
    tenant: &str,
    branch: Option<&str>,
    secret: Option<&str>,
    database: &DatabaseArgs,
) -> anyhow::Result<i32> {
    if !crate::dsl::is_identifier(name) {
        eprintln!("error: `{name}` is not an endpoint name: lower-case letters, digits and `_`, such as his");
        return Ok(1);
    }
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
        _ => {
            eprintln!("error: `{url}` is not an http:// or https:// URL");
            return Ok(1);
        }
    }
    if let Some(reference) = secret {
        if !(reference.starts_with("file:") || reference.starts_with("env:")) {
            // Never echo what may be the secret itself.
            eprintln!("error: --secret must be a reference, `file:/path` or `env:NAME`, not the secret itself");
            return Ok(1);
        }
        if let Err(error) = crate::payments::merchant::secret("--secret", reference) {
            eprintln!("error: {error}");
            return Ok(1);
        }
    }
    let store = Store::connect(&database.database_url).await?;
    if store.tenant(tenant).await?.is_none() {
        eprintln!("error: there is no tenant `{tenant}`");
        return Ok(1);
    }
    if let Some(branch) = branch {
        if !store.branches(tenant).await?.iter().any(|b| b == branch) {
            eprintln!("error: tenant `{tenant}` has no branch `{branch}`");
            return Ok(1);
        }
    }
    store
        .set_endpoint(tenant, branch, name, url, secret, chrono::Utc::now())
        .await?;
    println!(
        "endpoint `{name}` of tenant `{tenant}`{} is {url}{}",
        branch
            .map(|b| format!(", branch `{b}`"))
            .unwrap_or_default(),
        if secret.is_some() {
            " (bodies signed)"
        } else {
            " (bodies not signed)"
        }
    );
    Ok(0)
}

async fn set_merchant(args: MerchantArgs) -> anyhow::Result<i32> {
    let store = Store::connect(&args.database.database_url).await?;
    if store.tenant(&args.tenant).await?.is_none() {
        eprintln!("error: there is no tenant `{}`", args.tenant);
        return Ok(1);
    }
    if let Some(branch) = &args.branch {
        if !store.branches(&args.tenant).await?.contains(branch) {
            eprintln!("error: tenant `{}` has no branch `{branch}`", args.tenant);
            return Ok(1);
        }
    }
    if args.public_key.is_some() != args.public_key_id.is_some() {
        eprintln!("error: give --public-key and --public-key-id together");
        return Ok(1);
    }
    let merchant = crate::store::NewMerchant {
        tenant_id: args.tenant.clone(),
        branch_id: args.branch.clone(),
        mchid: args.mchid,
        appid: args.appid,
        serial_no: args.serial_no,
        private_key: args.private_key,
        api_v3_key: args.api_v3_key,
        public_key: args.public_key,
        public_key_id: args.public_key_id,
        platform_certificates: args.platform_certificates,
        notify_url: args.notify_url,
        base_url: args.base_url,
    };
    // Check every secret can be read and parsed before storing the account.
    let probe = crate::store::MerchantRow {
        id: 0,
        tenant_id: merchant.tenant_id.clone(),
        branch_id: merchant.branch_id.clone().unwrap_or_default(),
        mchid: merchant.mchid.clone(),
        appid: merchant.appid.clone(),
        serial_no: merchant.serial_no.clone(),
        private_key: merchant.private_key.clone(),
        api_v3_key: merchant.api_v3_key.clone(),
        public_key: merchant.public_key.clone(),
        public_key_id: merchant.public_key_id.clone(),
        platform_certificates: merchant.platform_certificates,
        notify_url: merchant.notify_url.clone(),
        base_url: merchant.base_url.clone(),
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    if let Err(error) = crate::payments::load_merchant(&probe, "") {
        eprintln!("error: {error}");
        return Ok(1);
    }
    let row = store.upsert_merchant(&merchant, chrono::Utc::now()).await?;
    println!(
        "merchant {} (mchid {}) takes the payments of tenant `{}`{}; its callbacks go to {}",
        row.id,
        row.mchid,
        row.tenant_id,
        args.branch
            .map(|b| format!(", branch `{b}`"))
            .unwrap_or_default(),
        row.notify_url
            .clone()
            .unwrap_or_else(|| format!("<public URL>/callbacks/wechatpay/{}", row.id))
    );
    Ok(0)
}

async fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    let ServeArgs {
        bind,
        database,
        workflows,
        templates: templates_dir,
        public_url,
        webhook_url,
        webhook_secret_file,
        claim_lease,
        node_name,
        http_workers,
        max_in_flight,
        db_connections,
        clock,
    } = args;
    let (bind, database_url, workflows, templates_dir) = (
        bind.as_str(),
        database.database_url.as_str(),
        workflows.as_path(),
        templates_dir.as_path(),
    );
    let webhook_secret = match webhook_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("O2FLOW_WEBHOOK_SECRET").ok(),
    };
    let webhook = webhook_url.map(|url| WebhookConfig {
        url,
        secret: webhook_secret,
    });
    let (catalog, templates) = catalog_from(templates_dir)?;
    let files = if workflows.exists() {
        workflow_files(&[workflows.to_path_buf()])?
    } else {
        Vec::new()
    };
    let (good, problems) = check_files(&files, &catalog)?;
    if problems > 0 {
        eprintln!(
            "error: refusing to start: {problems} problem(s) in {}",
            workflows.display()
        );
        return Ok(1);
    }
    let node = node_name.unwrap_or_else(|| format!("{}:{bind}", host_name()));
    let store = Store::connect_with(database_url, db_connections)
        .await
        .with_context(|| format!("connecting to {database_url}"))?
        .claiming_as(&node);
    let taken = store.take_back_claims().await?;
    if taken > 0 {
        tracing::info!(node = %node, "took back {taken} claim(s) of this node's previous run");
    }
    let listener = std::net::TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    let address = listener.local_addr()?;
    let public_url = public_url.unwrap_or_else(|| format!("http://{address}"));
    let manual = clock == "manual";
    let clock: Arc<dyn crate::runtime::Clock> = if manual {
        Arc::new(crate::runtime::ManualClock::new(chrono::Utc::now()))
    } else {
        Arc::new(SystemClock)
    };
    let app = crate::app::App::new(Options {
        webhook,
        lease: claim_lease,
        templates_dir: Some(templates_dir.to_path_buf()),
        metrics_token: std::env::var("O2FLOW_METRICS_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty()),
        ..Options::new(
            store.clone(),
            clock,
            Arc::new(templates),
            public_url.clone(),
        )
    });
    let runtime = app.runtime().clone();
    let now = chrono::Utc::now();
    for tenant in store.tenants().await? {
        if tenant.production && manual {
            eprintln!(
                "error: refusing to start: --clock manual moves time for every tenant, and tenant `{}` is marked production (o2flow tenants set-production --tenant {} --production false)",
                tenant.id, tenant.id
            );
            return Ok(1);
        }
        if tenant.production && store.merchants(Some(&tenant.id)).await?.is_empty() {
            eprintln!(
                "error: refusing to start: tenant `{}` is marked production but has no WeChat Pay merchant, and the sandbox takes no real money (o2flow merchants set --tenant {} …, or o2flow tenants set-production --tenant {} --production false)",
                tenant.id, tenant.id, tenant.id
            );
            return Ok(1);
        }
    }
    let mut first_key = None;
    if store.tenant_count().await? == 0 {
        store.ensure_tenant("demo", "Demo hospital", now).await?;
        first_key = Some(store.create_api_key("demo", "admin", now).await?);
    }
    for tenant in store.tenants().await? {
        for (file, source) in &good {
            let (row, created) = runtime
                .deploy(&tenant.id, file, source)
                .await
                .map_err(|e| anyhow::anyhow!("deploying {file}: {e}"))?;
            if created {
                tracing::info!(tenant.id = %tenant.id, workflow.name = %row.name, "deployed {} version {}", row.name, row.version);
            }
        }
    }
    if let Some(key) = first_key {
        println!(
            "\nA fresh database: created tenant `demo` (branch `main`) and an admin API key, shown only this once:\n\n    export O2FLOW_KEY={key}\n\nTry it:\n\n    curl -s {public_url}/api/v1/workflows -H \"Authorization: Bearer $O2FLOW_KEY\"\n\nThe README walks through starting a follow-up reminder.\n"
        );
    }
    println!(
        "o2flow listening on http://{address} (database: {}){}",
        redact(database_url),
        if manual {
            "; the clock is manual: POST /api/v1/clock/advance moves it"
        } else {
            ""
        }
    );
    let defaults = crate::http::Sizing::default();
    let app = app.sized(crate::http::Sizing {
        workers: http_workers.unwrap_or(defaults.workers),
        max_in_flight,
    });
    app.start(
        listener,
        crate::app::Background::Loops {
            tick: crate::app::TICK,
        },
    )?
    .until_stopped()
    .await?;
    Ok(0)
}

/// This machine's name (Linux), or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
