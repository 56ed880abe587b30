//! The tenant's knowledge base: documents split into passages, searched with the
//! database's own full-text index.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::assistant::{passages, terms};
use crate::http::extract::{JsonBody, TenantAuth};
use crate::http::AppError;
use crate::store::{new_id, now_ms, CrawlJob, NewDocument};

/// Largest document accepted through the API, in bytes.
const MAX_DOCUMENT: usize = 512 * 1024;

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/knowledge/documents", post(add))
        .route("/api/v1/knowledge/search", get(search))
        .route("/api/v1/knowledge/crawl", post(start_crawl))
        .route("/api/v1/knowledge/crawl/{id}", get(crawl_progress))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDocument {
    title: String,
    #[serde(default)]
    url: Option<String>,
    text: String,
}

async fn add(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    JsonBody(body): JsonBody<AddDocument>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    if body.title.trim().is_empty() {
        return Err(AppError::Unprocessable("`title` must not be empty".into()));
    }
    if body.text.len() > MAX_DOCUMENT {
        return Err(AppError::Unprocessable(format!(
            "`text` must be at most {MAX_DOCUMENT} bytes"
        )));
    }
    if let Some(url) = &body.url {
        if reqwest::Url::parse(url).is_err() {
            return Err(AppError::Unprocessable("`url` is not a valid URL".into()));
        }
    }
    let passages = passages(&body.text);
    if passages.is_empty() {
        return Err(AppError::Unprocessable("`text` must not be empty".into()));
    }
    let doc = NewDocument {
        id: new_id(),
        tenant_id,
        title: body.title.trim().to_string(),
        url: body.url,
        text: body.text,
        passages,
        created_at: now_ms(),
    };
    app.store.add_document(&doc).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": doc.id, "passages": doc.passages.len()})),
    ))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: String,
}

async fn search(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, AppError> {
    let terms = terms(&query.q);
    let items = app.store.search_passages(&tenant_id, &terms, 10).await?;
    Ok(Json(json!({ "items": items })))
}

// -- website crawl ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartCrawl {
    url: String,
    #[serde(default)]
    max_pages: Option<i64>,
}

/// Starts a crawl in the background; its progress is at `GET .../crawl/{id}`.
async fn start_crawl(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    JsonBody(body): JsonBody<StartCrawl>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let settings = app.config.knowledge.clone();
    let url = reqwest::Url::parse(body.url.trim())
        .map_err(|_| AppError::Unprocessable("`url` is not a valid URL".into()))?;
    crate::knowledge::fetch::check_url(&url, settings.allow_private_targets)
        .map_err(|e| AppError::Unprocessable(format!("`url`: {e}")))?;
    let limit = settings.max_pages as i64;
    let max_pages = body.max_pages.unwrap_or(limit.min(50));
    if !(1..=limit).contains(&max_pages) {
        return Err(AppError::Unprocessable(format!(
            "`max_pages` must be between 1 and {limit}"
        )));
    }
    let slot = crate::knowledge::crawl::Slot::take(&tenant_id)
        .ok_or_else(|| AppError::Conflict("a crawl is already running for this tenant".into()))?;
    let job = CrawlJob {
        id: new_id(),
        tenant_id,
        url: url.to_string(),
        max_pages,
        state: "running".into(),
        pages_fetched: 0,
        pages_indexed: 0,
        pages_unchanged: 0,
        pages_skipped: 0,
        pages_removed: 0,
        error: None,
        created_at: now_ms(),
        finished_at: None,
    };
    app.store.create_crawl_job(&job).await?;
    let id = job.id.clone();
    tokio::spawn(crate::knowledge::crawl::run(
        app.store.clone(),
        settings,
        job,
        slot,
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "running"})),
    ))
}

async fn crawl_progress(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let job = app
        .store
        .crawl_job(&tenant_id, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(
        serde_json::to_value(job).map_err(anyhow::Error::from)?,
    ))
}
