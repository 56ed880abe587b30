//! The common conversation model every platform is normalized into.
//!
//! Events are serializable because the gateway stores them in its durable inbox
//! between ingress and the worker.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The platforms omnigate connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    WhatsApp,
    Messenger,
    Instagram,
    Slack,
    Telegram,
    Discord,
}

impl ChannelKind {
    pub const ALL: [Self; 6] = [
        Self::WhatsApp,
        Self::Messenger,
        Self::Instagram,
        Self::Slack,
        Self::Telegram,
        Self::Discord,
    ];

    /// The lowercase name used in routes, the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp",
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
            Self::Slack => "slack",
            Self::Telegram => "telegram",
            Self::Discord => "discord",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A platform name that omnigate does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform `{0}`")]
pub struct UnknownPlatform(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownPlatform(s.to_string()))
    }
}

/// What one authenticated delivery contained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Normalized {
    pub events: Vec<InboundEvent>,
    /// Parts of the delivery the model does not cover, kept raw.
    pub unhandled: Vec<Unhandled>,
}

/// Something in a delivery that was not understood, with its raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unhandled {
    /// The platform account it was addressed to, when known (for routing to a tenant).
    pub account_id: Option<String>,
    /// Short machine-readable reason, e.g. `unknown_field:account_update`.
    pub reason: String,
    pub raw: serde_json::Value,
}

/// One event of the common model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The platform's own id for this event, unique per channel; the dedupe key
    /// (WhatsApp: the wamid; a status: `wamid:status`).
    pub external_id: String,
    /// The platform account the event was addressed to (WhatsApp `phone_number_id`,
    /// Page id, Instagram account id); used to route it to a channel.
    pub account_id: String,
    /// When the platform says it happened, Unix seconds.
    pub timestamp: i64,
    pub body: EventBody,
}

impl InboundEvent {
    /// The conversation the event belongs to (external chat id), when it has one.
    pub fn chat(&self) -> Option<&str> {
        self.body.chat()
    }

    /// Short kind name for storage and metrics.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::Message(_) => "message",
            EventBody::Reaction(_) => "reaction",
            EventBody::Edit(_) => "edit",
            EventBody::Delete(_) => "delete",
            EventBody::Status(_) => "status",
            EventBody::AccountError(_) => "account_error",
            EventBody::Echo(_) => "echo",
            EventBody::Receipt(_) => "receipt",
            EventBody::Standby(_) => "standby",
            EventBody::Handover(_) => "handover",
            EventBody::Consent(_) => "consent",
            EventBody::Reachability(_) => "reachability",
        }
    }
}

impl EventBody {
    /// The external chat id the body belongs to, when it has one.
    pub fn chat(&self) -> Option<&str> {
        match self {
            Self::Message(m) => Some(&m.chat),
            Self::Reaction(r) => Some(&r.chat),
            Self::Edit(e) => Some(&e.chat),
            Self::Delete(d) => Some(&d.chat),
            Self::Status(s) => s.recipient.as_deref(),
            Self::AccountError(_) => None,
            Self::Echo(e) => Some(&e.chat),
            Self::Receipt(r) => Some(&r.chat),
            Self::Standby(s) => s.body.chat(),
            Self::Handover(h) => Some(&h.chat),
            Self::Consent(c) => Some(&c.chat),
            Self::Reachability(r) => Some(&r.chat),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A customer wrote something.
    Message(InboundMessage),
    /// A customer reacted to a message (or removed a reaction: `emoji` is `None`).
    Reaction(Reaction),
    /// A customer edited one of their messages.
    Edit(Edit),
    /// A customer deleted (unsent) one of their messages.
    Delete(Delete),
    /// Delivery status of a message we sent.
    Status(StatusUpdate),
    /// An error about the account as a whole (WhatsApp `value.errors[]`).
    AccountError(PlatformError),
    // -- Meta messaging (Messenger, Instagram) ----------------------------------------
    /// A message the business account itself sent (from any app, or a person in the
    /// platform's own inbox).
    Echo(Echo),
    /// Read or delivery receipt covering outbound messages up to a watermark.
    Receipt(Receipt),
    /// An event delivered while another app owns the thread (handover protocol): kept,
    /// never answered.
    Standby(Standby),
    /// Thread control changed hands between apps (handover protocol).
    Handover(Handover),
    /// A person's consent changed on the platform's side (WhatsApp marketing
    /// preferences; a blocked or unblocked bot, ...). Feeds the consent ledger.
    Consent(ConsentSignal),
    // -- telegram, discord ---------------------------------------------------------
    /// The customer blocked (`reachable: false`) or unblocked the bot (Telegram
    /// `my_chat_member` in a private chat): nothing may be sent to a blocked chat.
    Reachability(Reachability),
}

/// A consent change the platform reports for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSignal {
    pub chat: String,
    pub sender: Participant,
    /// The gateway's purpose: `ai_processing`, `marketing` or `analytics`.
    pub purpose: String,
    pub granted: bool,
    /// The platform's own name for the signal (e.g. `user_preferences`).
    pub signal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    pub chat: String,
    pub sender: Participant,
    pub reachable: bool,
}

/// The person on the platform side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The platform's own user id for this channel account (WhatsApp: the
    /// business-scoped user id when present, else the WhatsApp id).
    pub id: String,
    /// Phone number, when the platform shares it (optional on WhatsApp since usernames).
    pub phone: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// External id of the chat (the destination a reply is sent to).
    pub chat: String,
    pub sender: Participant,
    pub content: Content,
    /// The message this one quotes or answers (`context.id`).
    pub reply_to: Option<String>,
    #[serde(default)]
    pub forwarded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
    },
    Media(Media),
    Location(Location),
    Contacts {
        contacts: Vec<SharedContact>,
    },
    /// A tap on an interactive button or list row.
    InteractiveReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A tap on a template quick-reply button.
    Button {
        text: String,
        payload: Option<String>,
    },
    /// A platform-side system notice (e.g. the customer changed number).
    System {
        body: String,
    },
    // -- Meta messaging (Messenger, Instagram) ----------------------------------------
    /// A tap on a button, persistent menu item or ice breaker.
    Postback {
        title: Option<String>,
        payload: Option<String>,
        referral: Option<Referral>,
    },
    /// A tap on a quick reply: its text and the developer payload.
    QuickReply {
        text: String,
        payload: String,
    },
    /// A reply to one of the business's stories (Instagram).
    StoryReply {
        body: String,
        story_id: Option<String>,
        url: Option<String>,
    },
    /// The person arrived through a link or an ad.
    Referral(Referral),
    /// Several attachments in one message.
    Attachments {
        items: Vec<Media>,
    },
    /// A message type the platform itself could not deliver to us, or one we do not
    /// model; the raw part is kept.
    Unsupported {
        reason: String,
        code: Option<i64>,
        raw: serde_json::Value,
    },
}

impl Content {
    /// Kind name for storage (`text`, `image`, `location`, ...).
    pub fn kind(&self) -> &str {
        match self {
            Self::Text { .. } => "text",
            Self::Media(m) => m.kind.as_str(),
            Self::Location(_) => "location",
            Self::Contacts { .. } => "contacts",
            Self::InteractiveReply { .. } => "interactive",
            Self::Button { .. } => "button",
            Self::System { .. } => "system",
            Self::Unsupported { .. } => "unsupported",
            Self::Postback { .. } => "postback",
            Self::QuickReply { .. } => "quick_reply",
            Self::StoryReply { .. } => "story_reply",
            Self::Referral(_) => "referral",
            Self::Attachments { .. } => "attachments",
        }
    }

    /// The text a person wrote or chose, if any: what the assistant reads and what is
    /// stored as the message text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text { body } | Self::System { body } => Some(body),
            Self::Media(m) => m.caption.as_deref(),
            Self::InteractiveReply { title, .. } => Some(title),
            Self::Button { text, .. } => Some(text),
            Self::Location(l) => l.name.as_deref().or(l.address.as_deref()),
            Self::Contacts { .. } | Self::Unsupported { .. } => None,
            Self::Postback { title, .. } => title.as_deref(),
            Self::QuickReply { text, .. } => Some(text),
            Self::StoryReply { body, .. } => Some(body),
            Self::Referral(_) => None,
            Self::Attachments { items } => items.iter().find_map(|m| m.caption.as_deref()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    // -- Meta messaging (Messenger, Instagram) ----------------------------------------
    /// A shared post, link or product (`share`, `ig_post`, `post`).
    Share,
    /// A reel (`reel`, `ig_reel`).
    Reel,
    /// The person mentioned the business in their story (Instagram).
    StoryMention,
    /// A story (`story`, `ig_story`).
    Story,
    /// Content the platform shows only as a link or placeholder (`fallback`, unknown types).
    Fallback,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Share => "share",
            Self::Reel => "reel",
            Self::StoryMention => "story_mention",
            Self::Story => "story",
            Self::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub kind: MediaKind,
    /// The platform's media id (download handle).
    pub media_id: Option<String>,
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    /// Audio recorded as a voice note.
    #[serde(default)]
    pub voice: bool,
    /// Animated sticker.
    #[serde(default)]
    pub animated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedContact {
    pub name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub chat: String,
    pub sender: Participant,
    /// External id of the message reacted to.
    pub target: String,
    /// `None` when the reaction was removed.
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub chat: String,
    pub sender: Participant,
    pub target: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delete {
    pub chat: String,
    /// Who deleted it, when the platform says (Discord's `MESSAGE_DELETE` does not:
    /// the message is then found by its id within the channel).
    #[serde(default)]
    pub sender: Option<Participant>,
    pub target: String,
}

// -- Meta messaging (Messenger, Instagram) --------------------------------------------

/// A message the business account sent itself, as echoed by the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// The chat (the customer's id) the message went to.
    pub chat: String,
    pub recipient: Participant,
    pub content: Content,
    /// The app that sent it; absent (or Meta's own) for a person in the Meta inbox.
    pub app_id: Option<String>,
    /// The `metadata` the sending app attached.
    pub metadata: Option<String>,
}

/// A watermark receipt: every outbound message up to `watermark` (platform
/// milliseconds) and each of `message_ids` reached `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub chat: String,
    pub status: DeliveryStatus,
    pub watermark: Option<i64>,
    #[serde(default)]
    pub message_ids: Vec<String>,
}

/// An event of a thread another app owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    pub body: Box<EventBody>,
}

/// `pass_thread_control`, `take_thread_control`, `request_thread_control` or
/// `app_roles`, with its raw object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub chat: String,
    pub sender: Participant,
    pub action: String,
    pub raw: serde_json::Value,
}

/// Where a person came from (`ref` of an m.me / ig.me link, an ad, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub source: Option<String>,
    /// The platform's `type` (e.g. `OPEN_THREAD`); not named `type`, which is the
    /// content's own tag.
    pub kind: Option<String>,
    pub ad_id: Option<String>,
}

/// Delivery progress of an outbound message. Ordered: a later status never moves a
/// message back (`Failed` is terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// External id of the outbound message (wamid).
    pub message_id: String,
    pub status: DeliveryStatus,
    /// The recipient the status is about (their chat id), when given.
    pub recipient: Option<String>,
    pub error: Option<PlatformError>,
}

/// An error as the platform reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformError {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub detail: Option<String>,
}

/// A text reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundReply {
    /// Where it goes: the external chat id (WhatsApp: the customer's number or id).
    pub to: String,
    pub text: String,
    /// External id of the message being answered, for a quoted reply.
    pub reply_to: Option<String>,
}

/// What the platform answered to a successful send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The platform's id of the sent message (WhatsApp: the wamid).
    pub external_id: String,
}

/// A channel's credentials. Stored encrypted by the gateway; `Debug` never shows a
/// secret. `Serialize` exposes the secrets and exists only to feed the encryption.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum Credentials {
    #[serde(rename = "whatsapp")]
    WhatsApp(WhatsAppCredentials),
    // -- Meta messaging (Messenger, Instagram) ----------------------------------------
    Messenger(MessengerCredentials),
    Instagram(InstagramCredentials),
    Slack(SlackCredentials),
    // -- telegram, discord ---------------------------------------------------------
    #[serde(rename = "telegram")]
    Telegram(TelegramCredentials),
    #[serde(rename = "discord")]
    Discord(DiscordCredentials),
}

impl Credentials {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::WhatsApp(_) => ChannelKind::WhatsApp,
            Self::Messenger(_) => ChannelKind::Messenger,
            Self::Instagram(_) => ChannelKind::Instagram,
            Self::Slack(_) => ChannelKind::Slack,
            Self::Telegram(_) => ChannelKind::Telegram,
            Self::Discord(_) => ChannelKind::Discord,
        }
    }

    /// The platform account id deliveries for this channel are addressed to.
    pub fn account_id(&self) -> &str {
        match self {
            Self::WhatsApp(c) => &c.phone_number_id,
            Self::Messenger(c) => &c.page_id,
            Self::Instagram(c) => &c.account_id,
            Self::Slack(c) => &c.team_id,
            Self::Telegram(c) => &c.bot_id,
            Self::Discord(c) => &c.application_id,
        }
    }

    /// The channel's own webhook signing secret, if it has one (else the operator
    /// app's secret applies).
    pub fn signing_secret(&self) -> Option<&SecretString> {
        match self {
            Self::WhatsApp(c) => c.app_secret.as_ref(),
            Self::Messenger(c) => c.app_secret.as_ref(),
            Self::Instagram(c) => c.app_secret.as_ref(),
            Self::Slack(c) => c.signing_secret.as_ref(),
            Self::Telegram(c) => Some(&c.secret_token),
            Self::Discord(_) => None,
        }
    }

    /// The token Meta's subscription handshake must present, if the channel has one.
    pub fn verify_token(&self) -> Option<&SecretString> {
        match self {
            Self::WhatsApp(c) => c.verify_token.as_ref(),
            Self::Messenger(c) => c.verify_token.as_ref(),
            Self::Instagram(c) => c.verify_token.as_ref(),
            Self::Slack(_) => None,
            Self::Telegram(_) | Self::Discord(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhatsAppCredentials {
    pub phone_number_id: String,
    #[serde(default)]
    pub waba_id: Option<String>,
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    #[serde(default, serialize_with = "expose_opt")]
    pub app_secret: Option<SecretString>,
    #[serde(default, serialize_with = "expose_opt")]
    pub verify_token: Option<SecretString>,
}

/// A Facebook Page's Messenger connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessengerCredentials {
    pub page_id: String,
    #[serde(serialize_with = "expose")]
    pub page_access_token: SecretString,
    #[serde(default, serialize_with = "expose_opt")]
    pub app_secret: Option<SecretString>,
    #[serde(default, serialize_with = "expose_opt")]
    pub verify_token: Option<SecretString>,
}

/// An Instagram professional account's messaging connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstagramCredentials {
    pub account_id: String,
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    #[serde(default, serialize_with = "expose_opt")]
    pub app_secret: Option<SecretString>,
    #[serde(default, serialize_with = "expose_opt")]
    pub verify_token: Option<SecretString>,
}

// -- slack ----

/// A Slack workspace's installation of the app: its own app (with its own signing
/// secret) or the operator's distributed app (installed through OAuth).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlackCredentials {
    /// The workspace (`T...`): routes deliveries to the channel.
    pub team_id: String,
    #[serde(default)]
    pub team_name: Option<String>,
    /// The app the workspace installed (`A...`); deliveries for another app are refused.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The bot's own user id (`U...`): its messages are never answered.
    #[serde(default)]
    pub bot_user_id: Option<String>,
    /// `xoxb-...`; `None` once Slack revoked it (uninstall, token revocation).
    #[serde(default, serialize_with = "expose_opt")]
    pub bot_token: Option<SecretString>,
    /// The workspace app's own signing secret; `None`: the operator app's applies.
    #[serde(default, serialize_with = "expose_opt")]
    pub signing_secret: Option<SecretString>,
}

// -- telegram, discord -------------------------------------------------------------

/// A Telegram bot. `bot_id` is the numeric prefix of the token; `bot_username` comes
/// from `getMe` and is how a group addresses the bot (`@name`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelegramCredentials {
    pub bot_id: String,
    #[serde(default)]
    pub bot_username: Option<String>,
    #[serde(serialize_with = "expose")]
    pub bot_token: SecretString,
    /// Sent back by Telegram in `X-Telegram-Bot-Api-Secret-Token` on every delivery.
    #[serde(serialize_with = "expose")]
    pub secret_token: SecretString,
}

/// A Discord application with its bot user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscordCredentials {
    pub application_id: String,
    /// Hex Ed25519 key the interactions endpoint verifies with (public, not secret).
    pub public_key: String,
    #[serde(serialize_with = "expose")]
    pub bot_token: SecretString,
    /// Guild channels where the bot answers every message, not only mentions.
    #[serde(default)]
    pub support_channels: Vec<String>,
}

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_opt<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_roundtrips_through_its_name() {
        for kind in ChannelKind::ALL {
            assert_eq!(kind.as_str().parse::<ChannelKind>(), Ok(kind));
        }
        assert!("sms".parse::<ChannelKind>().is_err());
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let creds = Credentials::WhatsApp(WhatsAppCredentials {
            phone_number_id: "1".into(),
            waba_id: None,
            access_token: SecretString::from("EAAG-canary-token"),
            app_secret: Some(SecretString::from("canary-app-secret")),
            verify_token: None,
        });
        let debug = format!("{creds:?}");
        assert!(!debug.contains("canary"), "{debug}");
        let json = serde_json::to_string(&creds).unwrap_or_default();
        assert!(json.contains("EAAG-canary-token"));
    }

    #[test]
    fn statuses_are_ordered() {
        assert!(DeliveryStatus::Sent < DeliveryStatus::Delivered);
        assert!(DeliveryStatus::Delivered < DeliveryStatus::Read);
    }
}
