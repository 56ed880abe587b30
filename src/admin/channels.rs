//! Channels: a tenant's connection to one platform account. Credentials are sealed
//! before they reach the database and never leave it through the API.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use channels::{
    ChannelKind, Credentials, InstagramCredentials, MessengerCredentials, SlackCredentials,
    WhatsAppCredentials,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::http::extract::{JsonBody, TenantAuth};
use crate::http::AppError;
use crate::store::{new_id, now_ms, ChannelRecord, NewChannel};

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/channels", get(list).post(create))
        .route("/api/v1/channels/{id}", delete(remove))
}

/// The body of `POST /api/v1/channels`: `platform` plus that platform's fields.
#[derive(Debug, Deserialize)]
struct CreateChannel {
    platform: String,
    #[serde(flatten)]
    fields: serde_json::Map<String, Value>,
}

pub(super) fn field(
    fields: &serde_json::Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<String>, AppError> {
    let value = match fields.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        Some(_) => {
            return Err(AppError::Unprocessable(format!(
                "`{name}` must be a string"
            )))
        }
    };
    if required && value.is_none() {
        return Err(AppError::Unprocessable(format!("`{name}` is required")));
    }
    Ok(value)
}

fn credentials_for(
    kind: ChannelKind,
    fields: &serde_json::Map<String, Value>,
) -> Result<Credentials, AppError> {
    let required = |name: &str| field(fields, name, true).map(Option::unwrap_or_default);
    let optional = |name: &str| field(fields, name, false);
    match kind {
        ChannelKind::WhatsApp => {
            let known = [
                "app_secret",
                "verify_token",
                "access_token",
                "phone_number_id",
                "waba_id",
            ];
            if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(AppError::Unprocessable(format!(
                    "unknown field `{unknown}` for whatsapp"
                )));
            }
            let phone_number_id = required("phone_number_id")?;
            if !phone_number_id.chars().all(|c| c.is_ascii_digit()) {
                return Err(AppError::Unprocessable(
                    "`phone_number_id` must be digits".into(),
                ));
            }
            Ok(Credentials::WhatsApp(WhatsAppCredentials {
                phone_number_id,
                waba_id: optional("waba_id")?,
                access_token: SecretString::from(required("access_token")?),
                app_secret: optional("app_secret")?.map(SecretString::from),
                verify_token: optional("verify_token")?.map(SecretString::from),
            }))
        }
        // -- Meta messaging (Messenger, Instagram) ----------------------------------------
        ChannelKind::Messenger | ChannelKind::Instagram => {
            let (account, token) = match kind {
                ChannelKind::Messenger => ("page_id", "page_access_token"),
                _ => ("account_id", "access_token"),
            };
            let known = ["app_secret", "verify_token", account, token];
            if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(AppError::Unprocessable(format!(
                    "unknown field `{unknown}` for {kind}"
                )));
            }
            let account_id = required(account)?;
            if !account_id.chars().all(|c| c.is_ascii_digit()) {
                return Err(AppError::Unprocessable(format!(
                    "`{account}` must be digits"
                )));
            }
            let token = SecretString::from(required(token)?);
            let app_secret = optional("app_secret")?.map(SecretString::from);
            let verify_token = optional("verify_token")?.map(SecretString::from);
            Ok(match kind {
                ChannelKind::Messenger => Credentials::Messenger(MessengerCredentials {
                    page_id: account_id,
                    page_access_token: token,
                    app_secret,
                    verify_token,
                }),
                _ => Credentials::Instagram(InstagramCredentials {
                    account_id,
                    access_token: token,
                    app_secret,
                    verify_token,
                }),
            })
        }
        // -- slack ----
        ChannelKind::Slack => {
            let known = ["signing_secret", "bot_token", "team_id"];
            if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(AppError::Unprocessable(format!(
                    "unknown field `{unknown}` for slack"
                )));
            }
            let team_id = required("team_id")?;
            if !team_id.starts_with(['T', 'E'])
                || !team_id.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(AppError::Unprocessable(
                    "`team_id` must be a Slack workspace id (T...)".into(),
                ));
            }
            let bot_token = required("bot_token")?;
            if !bot_token.starts_with("xoxb-") {
                return Err(AppError::Unprocessable(
                    "`bot_token` must be a bot token (xoxb-...)".into(),
                ));
            }
            Ok(Credentials::Slack(SlackCredentials {
                team_id,
                team_name: None,
                app_id: None,
                bot_user_id: None,
                bot_token: Some(SecretString::from(bot_token)),
                signing_secret: optional("signing_secret")?.map(SecretString::from),
            }))
        }
        // -- telegram, discord ---------------------------------------------------------
        ChannelKind::Telegram | ChannelKind::Discord => super::bots::credentials_for(kind, fields),
    }
}

/// Where the platform should deliver this channel's webhooks.
fn webhook_url(app: &App, channel: &ChannelRecord, own_secret: bool) -> String {
    // -- telegram, discord: always the channel's own route --------------------------
    if own_secret
        || !matches!(
            channel.platform.as_str(),
            "whatsapp" | "messenger" | "instagram" | "slack"
        )
    {
        format!(
            "{}/webhooks/{}/{}",
            app.public_url, channel.platform, channel.id
        )
    } else if channel.platform == ChannelKind::Slack.as_str() {
        format!("{}/webhooks/slack", app.public_url)
    } else {
        format!("{}/webhooks/meta", app.public_url)
    }
}

async fn create(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    JsonBody(body): JsonBody<CreateChannel>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let kind: ChannelKind = body
        .platform
        .parse()
        .map_err(|_| AppError::Unprocessable(format!("unknown platform `{}`", body.platform)))?;
    let credentials = credentials_for(kind, &body.fields)?;
    let own_secret = credentials.signing_secret().is_some();
    let is_meta = matches!(
        kind,
        ChannelKind::WhatsApp | ChannelKind::Messenger | ChannelKind::Instagram
    );
    if kind == ChannelKind::Slack {
        if !own_secret && app.config.platforms.slack.signing_secret.is_none() {
            return Err(AppError::Unprocessable(
                "`signing_secret` is required: no operator Slack app is configured".into(),
            ));
        }
    } else if is_meta && !own_secret && app.config.platforms.meta.app_secret.is_none() {
        return Err(AppError::Unprocessable(
            "`app_secret` is required: no operator Meta app is configured".into(),
        ));
    }
    let id = new_id();
    // -- telegram, discord: the platform learns about the channel first ---------------
    let credentials = super::bots::connect(&app, &id, credentials).await?;
    let sealed = app.seal_credentials(&tenant_id, &id, &credentials)?;
    let channel = NewChannel {
        id: id.clone(),
        tenant_id: tenant_id.clone(),
        platform: kind.as_str().into(),
        account_id: credentials.account_id().to_string(),
        credentials: sealed,
        created_at: now_ms(),
    };
    app.store.create_channel(&channel).await?;
    let record = ChannelRecord {
        id: id.clone(),
        tenant_id,
        platform: channel.platform,
        account_id: channel.account_id,
        status: "active".into(),
        status_detail: None,
        credentials: None,
        created_at: channel.created_at,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "platform": kind.as_str(),
            "status": "active",
            "webhook_url": webhook_url(&app, &record, own_secret),
        })),
    ))
}

async fn list(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let mut items = Vec::new();
    for channel in app.store.list_channels(&tenant_id).await? {
        let own_secret = app
            .credentials(&channel)
            .map(|c| c.signing_secret().is_some())
            .unwrap_or(false);
        items.push(json!({
            "id": channel.id,
            "platform": channel.platform,
            "account_id": channel.account_id,
            "status": channel.status,
            "status_detail": channel.status_detail,
            "webhook_url": webhook_url(&app, &channel, own_secret),
            "created_at": channel.created_at,
        }));
    }
    Ok(Json(json!({ "items": items })))
}

async fn remove(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    // -- telegram, discord: tell the platform first; a failure keeps the channel -------
    super::bots::disconnect(&app, &tenant_id, &id).await?;
    if app.store.delete_channel(&tenant_id, &id).await? {
        app.forget_channel(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound)
    }
}
