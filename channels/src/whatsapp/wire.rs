//! Serde types of the WhatsApp Cloud API webhook payload (the parts under
//! `entry[].changes[].value`), read by [`super::normalize`] after the signature check.
//!
//! The envelope itself (`entry[]`, `changes[]`, `messages[]`, ...) is walked as
//! `serde_json::Value` so that one odd item cannot fail the whole batch; these types
//! are applied to one item (or one type-specific object of a message) at a time.
//! Nearly every field is optional: Meta adds and withholds fields over time (phone
//! numbers of users with usernames, `url` on media, ...).

use serde::{Deserialize, Deserializer};

/// A sender profile from `value.contacts[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Contact {
    /// WhatsApp id, the user's phone number; withheld for some users with usernames.
    pub wa_id: Option<String>,
    /// Business-scoped user id (BSUID), e.g. `US.13491208655302741918`.
    pub user_id: Option<String>,
    pub profile: Option<Profile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Profile {
    pub name: Option<String>,
    pub username: Option<String>,
}

/// One `value.user_preferences[]` item: a marketing opt-out (`stop`) or opt-in
/// (`resume`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Preference {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub category: Option<String>,
    pub value: Option<String>,
    #[serde(deserialize_with = "unix_seconds")]
    pub timestamp: i64,
}

/// The fields every `messages[]` item shares; the type-specific object
/// (`text`, `image`, ...) is read separately.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct MessageHead {
    pub id: Option<String>,
    /// The user's phone number, as the API accepts it in `to`.
    pub from: Option<String>,
    /// The user's BSUID (sent alongside, or instead of, `from`).
    pub from_user_id: Option<String>,
    #[serde(deserialize_with = "unix_seconds")]
    pub timestamp: i64,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub context: Option<Context>,
}

/// `messages[].context`: what a message replies to, and forwarding flags.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Context {
    pub id: Option<String>,
    pub forwarded: bool,
    pub frequently_forwarded: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct Text {
    pub body: String,
}

/// `image`, `audio`, `video`, `document` or `sticker`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Media {
    pub id: Option<String>,
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    pub voice: bool,
    pub animated: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// One card of a `contacts` message (not to be confused with [`Contact`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct SharedContact {
    pub name: Option<ContactName>,
    pub phones: Vec<ContactPhone>,
    pub emails: Vec<ContactEmail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ContactName {
    pub formatted_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ContactPhone {
    pub phone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ContactEmail {
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Interactive {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub button_reply: Option<Reply>,
    #[serde(default)]
    pub list_reply: Option<Reply>,
}

/// A tapped button or list row.
#[derive(Debug, Deserialize)]
pub(super) struct Reply {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A template quick-reply tap.
#[derive(Debug, Deserialize)]
pub(super) struct Button {
    pub text: String,
    #[serde(default)]
    pub payload: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct System {
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Reaction {
    pub message_id: String,
    /// Empty or absent when the reaction was removed.
    #[serde(default)]
    pub emoji: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Edit {
    pub original_message_id: String,
    /// The new content, shaped like a message (`type` plus its object).
    pub message: serde_json::Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct Revoke {
    pub original_message_id: String,
}

/// One `statuses[]` item: progress of a message the business sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Status {
    pub id: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "unix_seconds")]
    pub timestamp: i64,
    pub recipient_id: Option<String>,
    /// BSUID of the recipient, for users whose phone number is withheld.
    pub recipient_user_id: Option<String>,
    pub errors: Vec<Error>,
}

/// An error item of `statuses[].errors[]`, `messages[].errors[]` or `value.errors[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Error {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub message: Option<String>,
    pub error_data: Option<ErrorData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorData {
    pub details: Option<String>,
}

/// Meta sends Unix seconds as a string; accept a number too, and read anything else
/// (or an unparseable string) as 0 rather than failing the item.
fn unix_seconds<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    })
}
