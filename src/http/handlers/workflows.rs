use actix_web::{web, HttpResponse};

use crate::http::auth::Caller;
use crate::http::dto::{
    DeployQuery, Deployed, Schedule, VersionQuery, WorkflowDetail, WorkflowSummary, WorkflowVersion,
};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::DefinitionRow;

/// A workflow with the message templates it sends, deployed in one request.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBundle {
    /// Labels diagnostics, as `?file=` does.
    file: Option<String>,
    /// The workflow's YAML.
    source: String,
    /// Templates by name: `{ title, body }`, Tera text as in the files.
    #[serde(default)]
    templates: std::collections::BTreeMap<String, TemplateText>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateText {
    title: String,
    body: String,
}

/// `POST /api/v1/workflows`: deploy a workflow. The body is the YAML
/// itself, or (with `Content-Type: application/json`) `{file, source,
/// templates: {name: {title, body}}}`: the workflow with its templates,
/// all stored or none. Template files under `templates/` are read again
/// first. 201 for a new version, 200 when the same content is already
/// deployed, 422 with every diagnostic when it is invalid.
pub async fn deploy(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<DeployQuery>,
    request: actix_web::HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin"])?;
    let is_json = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bundle = if is_json {
        let (bundle, _): (DeployBundle, String) = super::parse_json(&body)?;
        bundle
    } else {
        let source = std::str::from_utf8(&body).map_err(|_| {
            ApiError::bad_request("invalid_encoding", "the workflow must be UTF-8 text")
        })?;
        DeployBundle {
            file: None,
            source: source.to_owned(),
            templates: std::collections::BTreeMap::new(),
        }
    };
    let file = bundle
        .file
        .or_else(|| query.file.clone())
        .unwrap_or_else(|| "request.yaml".into());
    let templates: Vec<(&str, &str, &str)> = bundle
        .templates
        .iter()
        .map(|(name, t)| (name.as_str(), t.title.as_str(), t.body.as_str()))
        .collect();
    let (row, created) = state
        .runtime
        .deploy_with_templates(&caller.tenant_id, &file, &bundle.source, &templates)
        .await?;
    let body = Deployed {
        name: row.name,
        version: row.version,
        hash: row.hash,
    };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `GET /api/v1/workflows`: every workflow with its versions.
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let rows = state
        .reads
        .definitions(&caller.tenant_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut out: Vec<WorkflowSummary> = Vec::new();
    for row in &rows {
        match out.last_mut() {
            Some(last) if last.name == row.name => {
                last.latest_version = row.version;
                last.title = row.title.clone();
                last.versions.push(WorkflowVersion::from(row));
            }
            _ => out.push(WorkflowSummary {
                name: row.name.clone(),
                title: row.title.clone(),
                latest_version: row.version,
                versions: vec![WorkflowVersion::from(row)],
            }),
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"workflows": out})))
}

async fn versions(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<Vec<DefinitionRow>, ApiError> {
    let rows: Vec<DefinitionRow> = state
        .reads
        .definitions(&caller.tenant_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .filter(|r| r.name == name)
        .collect();
    if rows.is_empty() {
        return Err(ApiError::not_found(
            "workflow_not_found",
            format!("there is no workflow `{name}`"),
        ));
    }
    Ok(rows)
}

fn pick(rows: &[DefinitionRow], version: Option<i32>) -> Result<&DefinitionRow, ApiError> {
    match version {
        Some(v) => rows.iter().find(|r| r.version == v).ok_or_else(|| {
            ApiError::not_found("version_not_found", format!("there is no version {v}"))
        }),
        None => rows
            .last()
            .ok_or_else(|| ApiError::not_found("workflow_not_found", "no versions")),
    }
}

/// `GET /api/v1/workflows/{name}?version=`: one version (the latest by default) with its source.
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = versions(&state, &caller, &name).await?;
    let row = pick(&rows, query.version)?;
    let schedules = state
        .reads
        .schedules_of(&caller.tenant_id, &row.name)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(|s| Schedule {
            cron: s.cron,
            time_zone: s.time_zone,
            next_fire_at: crate::store::from_ms(s.next_fire_at_ms)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            version: rows
                .iter()
                .find(|r| r.id == s.definition_id)
                .map_or(0, |r| r.version),
        })
        .collect();
    Ok(HttpResponse::Ok().json(WorkflowDetail {
        name: row.name.clone(),
        title: row.title.clone(),
        version: row.version,
        hash: row.hash.clone(),
        label: row.label.clone(),
        deployed_at: WorkflowVersion::from(row).deployed_at,
        source: row.source.clone(),
        versions: rows.iter().map(WorkflowVersion::from).collect(),
        schedules,
    }))
}

/// `GET /api/v1/workflows/{name}/graph?version=`: a Mermaid state diagram.
pub async fn graph(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = versions(&state, &caller, &name).await?;
    let row = pick(&rows, query.version)?;
    let def = state.runtime.definition(row).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/vnd.mermaid; charset=utf-8")
        .body(crate::dsl::mermaid(&def)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    pub from_version: i32,
    pub to_version: i32,
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /api/v1/workflows/{name}/migrations` `{from_version, to_version,
/// states, dry_run}`: moves every active instance of one version to
/// another, all or none; with `dry_run`, only reports what would happen.
pub async fn migrate(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<Migration>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin"])?;
    let body = body.into_inner();
    let report = state
        .runtime
        .migrate(
            &caller.tenant_id,
            &name,
            &crate::runtime::MigrationRequest {
                from_version: body.from_version,
                to_version: body.to_version,
                states: body.states,
                dry_run: body.dry_run,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(report))
}
