//! Channels whose platform must be told about them: a Telegram bot gets its webhook
//! set (`setWebhook` with the channel's route, secret token and update types) when it
//! is connected and removed (`deleteWebhook`) when it is deleted; a Discord
//! application's public key is checked. Platform failures reach the caller (502).

use channels::telegram::SetupError;
use channels::{ChannelKind, Credentials, DiscordCredentials, TelegramCredentials};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::channels::field;
use crate::app::App;
use crate::http::AppError;

pub(super) fn credentials_for(
    kind: ChannelKind,
    fields: &serde_json::Map<String, Value>,
) -> Result<Credentials, AppError> {
    let known: &[&str] = match kind {
        ChannelKind::Telegram => &["bot_token", "secret_token"],
        _ => &[
            "bot_token",
            "application_id",
            "public_key",
            "support_channels",
        ],
    };
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(AppError::Unprocessable(format!(
            "unknown field `{unknown}` for {kind}"
        )));
    }
    let required = |name: &str| field(fields, name, true).map(Option::unwrap_or_default);
    match kind {
        ChannelKind::Telegram => {
            let bot_token = required("bot_token")?;
            let bot_id = bot_token
                .split_once(':')
                .map(|(id, _)| id)
                .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    AppError::Unprocessable("`bot_token` must look like `123456:ABC...`".into())
                })?
                .to_string();
            let secret_token = required("secret_token")?;
            if !webhooks::telegram::is_valid_secret_token(&secret_token) {
                return Err(AppError::Unprocessable(
                    "`secret_token` must be 1-256 characters of A-Z, a-z, 0-9, _ and -".into(),
                ));
            }
            Ok(Credentials::Telegram(TelegramCredentials {
                bot_id,
                bot_username: None,
                bot_token: SecretString::from(bot_token),
                secret_token: SecretString::from(secret_token),
            }))
        }
        _ => {
            let application_id = required("application_id")?;
            if !application_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AppError::Unprocessable(
                    "`application_id` must be digits".into(),
                ));
            }
            let public_key = required("public_key")?;
            webhooks::discord::parse_public_key(&public_key).map_err(|_| {
                AppError::Unprocessable(
                    "`public_key` must be 64 hex digits of an Ed25519 key".into(),
                )
            })?;
            let support_channels = match fields.get("support_channels") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        AppError::Unprocessable("`support_channels` must be channel ids".into())
                    })?,
                Some(_) => {
                    return Err(AppError::Unprocessable(
                        "`support_channels` must be an array".into(),
                    ))
                }
            };
            Ok(Credentials::Discord(DiscordCredentials {
                application_id,
                public_key,
                bot_token: SecretString::from(required("bot_token")?),
                support_channels,
            }))
        }
    }
}

/// Registers a new channel with its platform before it is stored.
pub(super) async fn connect(
    app: &App,
    channel_id: &str,
    credentials: Credentials,
) -> Result<Credentials, AppError> {
    let Credentials::Telegram(mut telegram) = credentials else {
        return Ok(credentials);
    };
    let token = telegram.bot_token.expose_secret().to_string();
    let me = app.telegram.get_me(&token).await.map_err(platform)?;
    if me.id.to_string() != telegram.bot_id {
        return Err(AppError::Unprocessable(
            "`bot_token` does not belong to the bot getMe reports".into(),
        ));
    }
    telegram.bot_username = me.username;
    let url = format!("{}/webhooks/telegram/{channel_id}", app.public_url);
    app.telegram
        .set_webhook(&token, &url, telegram.secret_token.expose_secret())
        .await
        .map_err(platform)?;
    Ok(Credentials::Telegram(telegram))
}

/// Unregisters a channel from its platform before it is deleted. Another tenant's
/// or an unknown channel is left to the caller's 404.
pub(super) async fn disconnect(
    app: &App,
    tenant_id: &str,
    channel_id: &str,
) -> Result<(), AppError> {
    let Some(record) = app.store.channel(channel_id).await? else {
        return Ok(());
    };
    if record.tenant_id != tenant_id || record.platform != ChannelKind::Telegram.as_str() {
        return Ok(());
    }
    if let Credentials::Telegram(telegram) = app.credentials(&record)? {
        app.telegram
            .delete_webhook(telegram.bot_token.expose_secret())
            .await
            .map_err(platform)?;
    }
    Ok(())
}

fn platform(error: SetupError) -> AppError {
    tracing::warn!(error = %error, "telegram bot api call failed");
    AppError::Platform(error.to_string())
}
