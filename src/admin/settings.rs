//! Per-tenant privacy settings: retention periods (`/api/v1/settings/retention`) and
//! the policy words, disclosure wording and hand-off idle time
//! (`/api/v1/settings/privacy`). Changes are audited.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::Caller;
use crate::app::App;
use crate::audit::Audit;
use crate::http::extract::JsonBody;
use crate::http::AppError;
use crate::privacy::retention::{self, RetentionSettings};
use crate::store::PrivacySettings;

pub fn router() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/settings/retention",
            get(get_retention).put(put_retention),
        )
        .route(
            "/api/v1/settings/privacy",
            get(get_privacy).put(put_privacy),
        )
}

fn retention_json(s: &RetentionSettings, app: &App) -> Value {
    let limits = &app.config.retention;
    json!({
        "messages_days": s.messages_days,
        "raw_events_days": s.raw_events_days,
        "analytics_days": s.analytics_days,
        "audit_days": s.audit_days,
        "maximums": {
            "messages_days": limits.max_messages_days,
            "raw_events_days": limits.max_raw_events_days,
            "analytics_days": limits.max_analytics_days,
            "audit_days": limits.max_audit_days,
        },
    })
}

async fn get_retention(State(app): State<App>, caller: Caller) -> Result<Json<Value>, AppError> {
    let s = retention::settings_of(app.store.as_ref(), &app.config.retention, &caller.tenant_id)
        .await?;
    Ok(Json(retention_json(&s, &app)))
}

async fn put_retention(
    State(app): State<App>,
    caller: Caller,
    JsonBody(body): JsonBody<RetentionSettings>,
) -> Result<Json<Value>, AppError> {
    body.check(&app.config.retention)
        .map_err(AppError::Unprocessable)?;
    let audit = Audit::new(&caller.tenant_id, &caller.actor, "settings.retention")
        .detail(serde_json::to_value(body).unwrap_or_default());
    app.store
        .put_retention_settings(&caller.tenant_id, &body, &audit)
        .await?;
    Ok(Json(retention_json(&body, &app)))
}

fn privacy_json(s: &PrivacySettings) -> Value {
    json!({
        "stop_words": s.stop_words,
        "start_words": s.start_words,
        "human_words": s.human_words,
        "disclosure": s.disclosure.clone().unwrap_or_else(|| crate::privacy::policy::DISCLOSURE.into()),
        "handoff_idle_minutes": s.handoff_idle_minutes,
    })
}

async fn get_privacy(State(app): State<App>, caller: Caller) -> Result<Json<Value>, AppError> {
    let s = app.store.privacy_settings(&caller.tenant_id).await?;
    Ok(Json(privacy_json(&s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacyBody {
    stop_words: Option<Vec<String>>,
    start_words: Option<Vec<String>>,
    human_words: Option<Vec<String>>,
    disclosure: Option<String>,
    handoff_idle_minutes: Option<i64>,
}

async fn put_privacy(
    State(app): State<App>,
    caller: Caller,
    JsonBody(body): JsonBody<PrivacyBody>,
) -> Result<Json<Value>, AppError> {
    let mut s = app.store.privacy_settings(&caller.tenant_id).await?;
    let words = |list: Vec<String>| -> Result<Vec<String>, AppError> {
        let list: Vec<String> = list.into_iter().map(|w| w.trim().to_string()).collect();
        if list.len() > 50 || list.iter().any(|w| w.is_empty() || w.chars().count() > 40) {
            return Err(AppError::Unprocessable(
                "keywords: at most 50 words of 1 to 40 characters".into(),
            ));
        }
        Ok(list)
    };
    if let Some(list) = body.stop_words {
        s.stop_words = words(list)?;
    }
    if let Some(list) = body.start_words {
        s.start_words = words(list)?;
    }
    if let Some(list) = body.human_words {
        s.human_words = words(list)?;
    }
    if let Some(text) = body.disclosure {
        let text = text.trim().to_string();
        // The tenant may reword the disclosure, not remove it.
        if text.is_empty() || text.chars().count() > 500 {
            return Err(AppError::Unprocessable(
                "disclosure must be 1 to 500 characters".into(),
            ));
        }
        s.disclosure = Some(text);
    }
    if let Some(minutes) = body.handoff_idle_minutes {
        if !(1..=60 * 24 * 90).contains(&minutes) {
            return Err(AppError::Unprocessable(
                "handoff_idle_minutes must be between 1 and 129600".into(),
            ));
        }
        s.handoff_idle_minutes = minutes;
    }
    let audit = Audit::new(&caller.tenant_id, &caller.actor, "settings.privacy");
    app.store
        .put_privacy_settings(&caller.tenant_id, &s, &audit)
        .await?;
    Ok(Json(privacy_json(&s)))
}
