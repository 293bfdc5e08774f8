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
    #[arg(long, env = "O2FLOW_CLAIM_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub claim_lease: chrono::Duration,
}

fn parse_lease(text: &str) -> Result<chrono::Duration, String> {
    crate::domain::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
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
        Command::Serve(args) => serve(args).await,
    }
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
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("connecting to {database_url}"))?;
    let listener = std::net::TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    let address = listener.local_addr()?;
    let public_url = public_url.unwrap_or_else(|| format!("http://{address}"));
    let runtime = Arc::new(Runtime::new(Options {
        webhook,
        lease: claim_lease,
        ..Options::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(templates),
            public_url.clone(),
        )
    }));
    let now = chrono::Utc::now();
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
        "o2flow listening on http://{address} (database: {})",
        redact(database_url)
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(
        runtime
            .clone()
            .run_background(std::time::Duration::from_millis(500), shutdown_rx),
    );
    let server = crate::http::server(runtime, listener)?;
    server.await?;
    let _ = shutdown_tx.send(true);
    let _ = background.await;
    Ok(0)
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
