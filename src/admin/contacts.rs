//! Contacts and the data-subject rights exercised through the admin API: access,
//! export (Art. 15/20), rectification (Art. 16), erasure (Art. 17), restriction
//! (Art. 18) and consent. Every change is audited in its own transaction; every
//! answer for an unknown or another tenant's contact is 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{entry_json, Caller};
use crate::app::App;
use crate::audit::Audit;
use crate::http::extract::JsonBody;
use crate::http::AppError;
use crate::privacy::erasure;
use crate::store::{now_ms, ContactRecord, Effect, PrivacyEffect, Purpose};

pub fn router() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/contacts/{id}",
            get(show).patch(rectify).delete(erase),
        )
        .route("/api/v1/contacts/{id}/export", get(export))
        .route("/api/v1/contacts/{id}/consent", post(consent))
        .route("/api/v1/contacts/{id}/restrict", post(restrict))
        .route("/api/v1/contacts/{id}/unrestrict", post(unrestrict))
}

async fn find(app: &App, tenant_id: &str, id: &str) -> Result<ContactRecord, AppError> {
    app.store
        .contact(tenant_id, id)
        .await?
        .ok_or(AppError::NotFound)
}

/// The contact, its identities on every channel, restriction and consent state.
async fn profile(app: &App, tenant_id: &str, contact: &ContactRecord) -> Result<Value, AppError> {
    let identities = app.store.identities(tenant_id, &contact.id).await?;
    let history = app.store.consent_history(tenant_id, &contact.id).await?;
    let mut state = serde_json::Map::new();
    for purpose in Purpose::ALL {
        let latest = history
            .iter()
            .rev()
            .find(|e| e.purpose == purpose.as_str())
            .map(|e| e.granted);
        state.insert(purpose.as_str().into(), json!(latest));
    }
    Ok(json!({
        "id": contact.id,
        "display_name": contact.display_name,
        "email": contact.email,
        "restricted": contact.restricted_at.is_some(),
        "restricted_at": contact.restricted_at,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        "identities": identities,
        "consent": state,
    }))
}

async fn show(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let contact = find(&app, &caller.tenant_id, &id).await?;
    Ok(Json(profile(&app, &caller.tenant_id, &contact).await?))
}

/// Everything held about the person, machine-readable.
async fn export(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let tenant_id = caller.tenant_id.as_str();
    let contact = find(&app, tenant_id, &id).await?;
    // Recorded first, so the export lists its own access too.
    app.store
        .append_audit(&Audit::new(tenant_id, &caller.actor, "contact.export").contact(&id))
        .await?;
    let mut conversations = Vec::new();
    for c in app.store.contact_conversations(tenant_id, &id).await? {
        let messages: Vec<Value> = app
            .store
            .messages(tenant_id, &c.id)
            .await?
            .into_iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "direction": m.direction,
                    "author": m.author,
                    "kind": m.kind,
                    "text": m.text,
                    "content": m.content.and_then(|c| serde_json::from_str::<Value>(&c).ok()),
                    "external_id": m.external_id,
                    "reply_to": m.reply_to,
                    "status": m.status,
                    "produced_by": m.produced_by,
                    "created_at": m.created_at,
                })
            })
            .collect();
        conversations.push(json!({
            "id": c.id,
            "channel_id": c.channel_id,
            "platform": c.platform,
            "chat_id": c.external_chat_id,
            "status": c.status,
            "last_message_at": c.last_message_at,
            "created_at": c.created_at,
            "messages": messages,
        }));
    }
    let consent = app.store.consent_history(tenant_id, &id).await?;
    let audit: Vec<Value> = app
        .store
        .audit_entries(tenant_id, Some(&id), 100_000)
        .await?
        .iter()
        .rev()
        .map(entry_json)
        .collect();
    let retention = crate::privacy::retention::settings_of(
        app.store.as_ref(),
        &app.config.retention,
        tenant_id,
    )
    .await?;
    Ok(Json(json!({
        "format": "omnigate.contact_export.v1",
        "exported_at": now_ms(),
        "contact": profile(&app, tenant_id, &contact).await?,
        "conversations": conversations,
        "consent_history": consent,
        "retention_days": retention,
        "audit": audit,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rectification {
    display_name: Option<String>,
    email: Option<String>,
}

/// Corrects profile fields (`""` clears one).
async fn rectify(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Rectification>,
) -> Result<Json<Value>, AppError> {
    find(&app, &caller.tenant_id, &id).await?;
    if body.display_name.is_none() && body.email.is_none() {
        return Err(AppError::Unprocessable(
            "give `display_name` and/or `email`".into(),
        ));
    }
    let display_name = body.display_name.map(|v| v.trim().to_string());
    let email = body.email.map(|v| v.trim().to_string());
    if display_name
        .as_ref()
        .is_some_and(|v| v.chars().count() > 200)
    {
        return Err(AppError::Unprocessable(
            "display_name must be at most 200 characters".into(),
        ));
    }
    if email
        .as_ref()
        .is_some_and(|v| !v.is_empty() && (v.len() > 254 || !v.contains('@')))
    {
        return Err(AppError::Unprocessable("email is not an address".into()));
    }
    apply(
        &app,
        &caller.tenant_id,
        PrivacyEffect::Rectify {
            contact_id: id.clone(),
            display_name,
            email,
            actor: caller.actor.clone(),
            at: now_ms(),
        },
    )
    .await?;
    let contact = find(&app, &caller.tenant_id, &id).await?;
    Ok(Json(profile(&app, &caller.tenant_id, &contact).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    purpose: Purpose,
    granted: bool,
}

async fn consent(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ConsentBody>,
) -> Result<Json<Value>, AppError> {
    find(&app, &caller.tenant_id, &id).await?;
    apply(
        &app,
        &caller.tenant_id,
        PrivacyEffect::Consent {
            contact_id: id.clone(),
            purpose: body.purpose,
            granted: body.granted,
            source: "admin_api",
            detail: None,
            actor: caller.actor.clone(),
            at: now_ms(),
        },
    )
    .await?;
    let contact = find(&app, &caller.tenant_id, &id).await?;
    Ok(Json(profile(&app, &caller.tenant_id, &contact).await?))
}

async fn set_restricted(
    app: &App,
    caller: &Caller,
    id: &str,
    restricted: bool,
) -> Result<Json<Value>, AppError> {
    find(app, &caller.tenant_id, id).await?;
    apply(
        app,
        &caller.tenant_id,
        PrivacyEffect::Restrict {
            contact_id: id.to_string(),
            restricted,
            actor: caller.actor.clone(),
            at: now_ms(),
        },
    )
    .await?;
    let contact = find(app, &caller.tenant_id, id).await?;
    Ok(Json(profile(app, &caller.tenant_id, &contact).await?))
}

async fn restrict(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_restricted(&app, &caller, &id, true).await
}

async fn unrestrict(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_restricted(&app, &caller, &id, false).await
}

async fn apply(app: &App, tenant_id: &str, effect: PrivacyEffect) -> Result<(), AppError> {
    app.store
        .apply(tenant_id, &[Effect::Privacy(effect)])
        .await?;
    Ok(())
}

/// Erasure of the person everywhere; 404 for an unknown or another tenant's contact.
async fn erase(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    match erasure::erase_contact(
        app.store.as_ref(),
        &caller.tenant_id,
        &id,
        &caller.actor,
        "admin_api",
    )
    .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(AppError::NotFound),
    }
}
