//! The tenant's knowledge base: documents split into passages, searched with the
//! database's own full-text index.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::assistant::{passages, terms};
use crate::http::extract::{JsonBody, TenantAuth};
use crate::http::AppError;
use crate::store::{new_id, now_ms, NewDocument};

/// Largest document accepted through the API, in bytes.
const MAX_DOCUMENT: usize = 512 * 1024;

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/knowledge/documents", post(add))
        .route("/api/v1/knowledge/search", get(search))
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
