//! The assistant's settings, drafts waiting for review, and provider usage.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::config::ProviderName;
use crate::http::extract::{JsonBody, TenantAuth};
use crate::http::AppError;
use crate::store::{now_ms, AssistantSettings};

pub fn router() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/settings/assistant",
            get(get_settings).put(put_settings),
        )
        .route("/api/v1/drafts", get(drafts))
        .route("/api/v1/drafts/{id}/approve", post(approve))
        .route("/api/v1/drafts/{id}/discard", post(discard))
        .route("/api/v1/usage/ai", get(usage))
}

/// Who produced a message, split for the API: (provider, model, offline).
pub fn producer(produced_by: Option<&str>) -> (Option<&str>, Option<&str>, bool) {
    match produced_by {
        Some("kb") => (None, None, true),
        Some(p) => match p.split_once('/') {
            Some((provider, model)) if ProviderName::parse(provider).is_some() => {
                (Some(provider), Some(model), false)
            }
            _ => (None, None, false),
        },
        None => (None, None, false),
    }
}

fn settings_json(app: &App, s: &AssistantSettings) -> Value {
    let configured: Vec<&str> = ProviderName::ALL
        .into_iter()
        .filter(|p| {
            crate::assistant::providers::settings(&app.config.ai, *p)
                .api_key
                .is_some()
        })
        .map(ProviderName::as_str)
        .collect();
    json!({
        "persona": s.persona,
        "business_facts": s.business_facts,
        "language": s.language,
        "providers": s.providers,
        "allowed_providers": s.allowed_providers,
        "review_required": s.review_required,
        "default_providers": app.config.ai.providers.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "configured_providers": configured,
    })
}

async fn get_settings(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let settings = app
        .store
        .assistant_settings(&tenant_id)
        .await?
        .unwrap_or_default();
    Ok(Json(settings_json(&app, &settings)))
}

/// The whole settings document; fields left out take their defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSettings {
    #[serde(default)]
    persona: String,
    #[serde(default)]
    business_facts: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    providers: Option<Vec<String>>,
    #[serde(default)]
    allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    review_required: bool,
}

async fn put_settings(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    JsonBody(body): JsonBody<PutSettings>,
) -> Result<Json<Value>, AppError> {
    let check_list = |field: &str, list: &Option<Vec<String>>| -> Result<(), AppError> {
        for name in list.iter().flatten() {
            if ProviderName::parse(name).is_none() {
                return Err(AppError::Unprocessable(format!(
                    "`{field}`: unknown provider `{name}` (expected openai, anthropic or gemini)"
                )));
            }
        }
        Ok(())
    };
    check_list("providers", &body.providers)?;
    check_list("allowed_providers", &body.allowed_providers)?;
    if body.persona.chars().count() > 4_000 {
        return Err(AppError::Unprocessable(
            "`persona` must be at most 4000 characters".into(),
        ));
    }
    if body.business_facts.chars().count() > 20_000 {
        return Err(AppError::Unprocessable(
            "`business_facts` must be at most 20000 characters".into(),
        ));
    }
    if body
        .language
        .as_ref()
        .is_some_and(|l| l.chars().count() > 40)
    {
        return Err(AppError::Unprocessable(
            "`language` must be at most 40 characters".into(),
        ));
    }
    let settings = AssistantSettings {
        persona: body.persona,
        business_facts: body.business_facts,
        language: body.language.filter(|l| !l.trim().is_empty()),
        providers: body.providers,
        allowed_providers: body.allowed_providers,
        review_required: body.review_required,
    };
    app.store
        .put_assistant_settings(&tenant_id, &settings, now_ms())
        .await?;
    Ok(Json(settings_json(&app, &settings)))
}

async fn drafts(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let items = app.store.drafts(&tenant_id).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    text: Option<String>,
}

/// Sends a draft, as written or with the agent's edited text (`{"text"}`).
async fn approve(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let edit = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let approve: Approve = serde_json::from_slice(&body).map_err(|_| {
            AppError::BadRequest("body must be {\"text\": \"...\"} or empty".into())
        })?;
        approve.text
    };
    let draft = app
        .store
        .draft(&tenant_id, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    let original = draft.text.unwrap_or_default();
    let (text, edited) = match edit {
        Some(text) if text.trim().is_empty() => {
            return Err(AppError::Unprocessable("`text` must not be empty".into()))
        }
        Some(text) => {
            // The AI disclosure the draft carried stays, whatever the edit.
            let disclosure = app
                .store
                .privacy_settings(&tenant_id)
                .await?
                .disclosure
                .unwrap_or_else(|| crate::privacy::policy::DISCLOSURE.to_string());
            let disclosure = disclosure.as_str();
            let text = text.trim().to_string();
            if original.starts_with(disclosure) && !text.starts_with(disclosure) {
                (format!("{disclosure}\n\n{text}"), true)
            } else {
                (text, true)
            }
        }
        None => (original, false),
    };
    let limit = draft
        .platform
        .parse()
        .ok()
        .and_then(|kind| app.channel_impl(kind))
        .map_or(1000, |c| c.text_limit());
    let parts = channels::text::split(&text, limit);
    if !app
        .store
        .release_draft(&tenant_id, &id, &text, edited, &parts, now_ms())
        .await?
    {
        return Err(AppError::Conflict("the draft was already decided".into()));
    }
    app.outbox_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "queued", "edited": edited})),
    ))
}

async fn discard(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    if !app.store.discard_draft(&tenant_id, &id).await? {
        return Err(AppError::NotFound);
    }
    Ok(Json(json!({"id": id, "status": "discarded"})))
}

async fn usage(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let rows = app.store.ai_usage(&tenant_id).await?;
    let usd = |micros: i64| micros as f64 / 1_000_000.0;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "provider": r.provider,
                "model": r.model,
                "calls": r.calls,
                "failed_calls": r.failed_calls,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cost_usd": usd(r.cost_micros),
            })
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": {
            "calls": rows.iter().map(|r| r.calls).sum::<i64>(),
            "input_tokens": rows.iter().map(|r| r.input_tokens).sum::<i64>(),
            "output_tokens": rows.iter().map(|r| r.output_tokens).sum::<i64>(),
            "cost_usd": usd(rows.iter().map(|r| r.cost_micros).sum::<i64>()),
        }
    })))
}
