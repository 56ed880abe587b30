//! Plain data carried in and out of the [`Store`](super::Store).

use serde::Serialize;

/// Unix time in milliseconds, the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub struct NewTenant {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub key_id: String,
    pub key_hash: Vec<u8>,
    pub key_prefix: String,
    pub created_at: i64,
}

pub struct NewChannel {
    pub id: String,
    pub tenant_id: String,
    pub platform: String,
    pub account_id: String,
    /// Sealed credentials (never plaintext).
    pub credentials: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRecord {
    pub id: String,
    pub tenant_id: String,
    pub platform: String,
    pub account_id: String,
    pub status: String,
    pub status_detail: Option<String>,
    pub credentials: Option<Vec<u8>>,
    pub created_at: i64,
}

/// What one webhook request stores.
#[derive(Debug, Clone, Default)]
pub struct IngressBatch {
    pub envelopes: Vec<NewEnvelope>,
    pub events: Vec<NewInboxEvent>,
    pub unhandled: Vec<NewUnhandled>,
}

#[derive(Debug, Clone)]
pub struct NewEnvelope {
    pub tenant_id: Option<String>,
    pub channel_id: Option<String>,
    pub platform: String,
    pub body: Vec<u8>,
    pub received_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewInboxEvent {
    pub tenant_id: String,
    pub channel_id: String,
    pub platform: String,
    pub external_id: String,
    pub kind: String,
    pub conv_key: String,
    pub platform_ts: i64,
    pub payload: String,
    pub received_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUnhandled {
    pub id: String,
    pub tenant_id: Option<String>,
    pub channel_id: Option<String>,
    pub platform: String,
    pub reason: String,
    pub raw: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressOutcome {
    pub inserted: usize,
    pub duplicates: usize,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxItem {
    pub id: i64,
    pub tenant_id: String,
    pub channel_id: String,
    pub platform: String,
    pub external_id: String,
    pub kind: String,
    pub payload: Option<String>,
    pub attempts: i64,
    pub received_at: i64,
}

/// Who is writing where: enough to find or create contact and conversation.
#[derive(Debug, Clone)]
pub struct ConversationKey {
    pub tenant_id: String,
    pub channel_id: String,
    pub chat: String,
    pub user_id: String,
    pub phone: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRef {
    pub id: String,
    pub contact_id: String,
    pub status: String,
    pub disclosed_at: Option<i64>,
    pub last_message_at: i64,
    /// Created by the resolve that returned it: nothing is stored in it yet.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub direction: &'static str,
    pub author: &'static str,
    pub kind: String,
    pub text: Option<String>,
    pub content: Option<String>,
    pub external_id: Option<String>,
    pub reply_to: Option<String>,
    pub status: &'static str,
    pub produced_by: Option<String>,
    pub platform_ts: Option<i64>,
    pub created_at: i64,
}

/// A change to apply in the same transaction as the event that caused it.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Records a message; a message with the same external id in the conversation is
    /// kept as it is.
    InsertMessage {
        conversation_id: String,
        message: NewMessage,
    },
    /// Records an outbound message and queues its parts for sending.
    EnqueueReply {
        conversation_id: String,
        channel_id: String,
        recipient: String,
        message: NewMessage,
        parts: Vec<String>,
    },
    EditMessage {
        conversation_id: String,
        target: String,
        text: Option<String>,
        content: Option<String>,
        at: i64,
    },
    /// Removes the text and content of a message the customer deleted.
    DeleteMessage {
        conversation_id: String,
        target: String,
    },
    /// Same, for a deletion that names no author: the message is looked up in the
    /// conversation of the channel's chat.
    DeleteChatMessage {
        channel_id: String,
        chat: String,
        target: String,
    },
    ApplyStatus {
        channel_id: String,
        external_id: String,
        status: channels::DeliveryStatus,
        error_code: Option<i64>,
        error_detail: Option<String>,
    },
    Touch {
        conversation_id: String,
        at: i64,
        inbound: bool,
        /// The AI disclosure went out with this turn (recorded as made at `at`).
        disclosed: bool,
    },
    SetConversationStatus {
        conversation_id: String,
        status: &'static str,
    },
    ChannelNotice {
        channel_id: String,
        detail: String,
    },
    // -- Meta messaging (Messenger, Instagram) ----------------------------------------
    /// Removes a message the customer unsent from storage altogether (the row, and
    /// the raw deliveries that carried it).
    RemoveMessage {
        conversation_id: String,
        target: String,
    },
    /// A watermark receipt: moves every part sent to `recipient` on the channel at or
    /// before `watermark` (ms), and the parts named in `external_ids`, to `status`.
    ApplyReceipt {
        channel_id: String,
        recipient: String,
        status: channels::DeliveryStatus,
        watermark: Option<i64>,
        external_ids: Vec<String>,
    },
    /// Sends the parts of an enqueued reply with a platform message tag.
    TagReply {
        message_id: String,
        tag: String,
    },
    /// Consent, restriction, rectification or an audit entry (privacy engine).
    Privacy(super::PrivacyEffect),
    /// The provider calls made for the answer this event gets, for accounting
    /// (written with the answer: no write of their own).
    RecordAiCalls {
        conversation_id: String,
        calls: Vec<super::AiCall>,
    },
    // -- AI pipeline ----
    /// Every provider failed for this event: its customer was told "we will get back
    /// to you" (once), and the event is retried.
    HoldForAi {
        conversation_id: String,
        inbox_id: i64,
        at: i64,
    },
    /// The held event got its answer (or a person took over).
    ClearAiHold {
        inbox_id: i64,
    },
    // -- telegram, discord ---------------------------------------------------------
    /// The person blocked (`reachable: false`) or unblocked the bot: marks the
    /// identity and records the platform signal in the consent ledger.
    SetReachable {
        contact_id: String,
        channel_id: String,
        user_id: String,
        reachable: bool,
        at: i64,
    },
}

/// The end of one inbox event's processing.
#[derive(Debug, Clone)]
pub struct Completion {
    pub inbox_id: i64,
    pub owner: String,
    pub tenant_id: String,
    pub outcome: String,
    pub now: i64,
    pub effects: Vec<Effect>,
    /// The dispatcher that has a slot waiting for the reply queued here: the first
    /// part of each reply is leased to it in the same transaction (when the
    /// conversation has no earlier part waiting and the channel is active), and
    /// comes back in [`Completed::handed`].
    pub hand_off: Option<HandOff>,
}

/// Who a completion's replies are leased to, and until when.
#[derive(Debug, Clone)]
pub struct HandOff {
    pub owner: String,
    pub lease_until: i64,
}

/// What a completion did.
#[derive(Debug, Clone, Default)]
pub struct Completed {
    /// The event was marked done with its effects; `false`: the worker's lease was
    /// lost, and nothing was written.
    pub kept: bool,
    /// Reply parts leased to [`Completion::hand_off`]'s owner, to be sent at once
    /// (on disk before this returns).
    pub handed: Vec<OutboxItem>,
    /// Another event of the conversation is still open (as the completion saw it):
    /// the next one may be ready now that this one is done.
    pub more: bool,
    /// `more` false is final: an event committed after the completion looked is
    /// claimed after it (one writer at a time). Where writers run side by side, that
    /// event's wake-up may have claimed before this commit and found the
    /// conversation busy: then [`Store::open_besides`](super::Store::open_besides)
    /// tells after the commit.
    pub sure: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub id: i64,
    pub tenant_id: String,
    pub channel_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub part: i64,
    pub recipient: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub attempts: i64,
    pub possible_duplicate: bool,
    /// Platform message tag to send with (Meta messaging `HUMAN_AGENT`).
    #[sqlx(default)]
    pub message_tag: Option<String>,
}

#[derive(Debug, Clone)]
pub enum SendOutcome {
    Sent {
        external_id: String,
        at: i64,
    },
    Retry {
        at: i64,
        code: Option<i64>,
        detail: String,
    },
    Failed {
        code: Option<i64>,
        detail: String,
    },
    /// The channel cannot send now (credentials need re-authorization); the part
    /// waits without spending an attempt.
    Parked {
        at: i64,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub platform: Option<String>,
    pub status: Option<String>,
    /// Keyset cursor: (last_message_at, id) of the last item of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConversationRecord {
    pub id: String,
    pub channel_id: String,
    pub platform: String,
    pub contact_id: String,
    #[serde(skip)]
    pub external_chat_id: String,
    pub status: String,
    pub last_message_at: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: String,
    pub direction: String,
    pub author: String,
    pub kind: String,
    pub text: Option<String>,
    pub content: Option<String>,
    pub external_id: Option<String>,
    pub reply_to: Option<String>,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_detail: Option<String>,
    pub produced_by: Option<String>,
    pub possible_duplicate: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UnhandledRecord {
    pub id: String,
    pub channel_id: Option<String>,
    pub platform: String,
    pub reason: String,
    pub raw: String,
    pub received_at: i64,
}

pub struct NewDocument {
    pub id: String,
    pub tenant_id: String,
    pub title: String,
    pub url: Option<String>,
    pub text: String,
    pub passages: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Passage {
    pub document_id: String,
    pub title: String,
    pub url: Option<String>,
    pub text: String,
}

// -- Meta data-deletion callback ---------------------------------------------------------

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeletionRequest {
    pub code: String,
    #[serde(skip)]
    pub channel_id: Option<String>,
    /// The person's app-scoped id; never shown, cleared once erased.
    #[serde(skip)]
    pub subject: Option<String>,
    pub status: String,
    pub erased_contacts: i64,
    pub requested_at: i64,
    pub completed_at: Option<i64>,
}

// -- slack install and revocation -------------------------------------------------------

pub struct NewInstallState {
    /// SHA-256 (hex) of the state handed to the browser.
    pub state_hash: String,
    pub tenant_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub struct ChannelRevocation {
    pub tenant_id: String,
    pub channel_id: String,
    /// The platform's event id: a redelivery of the same event changes nothing.
    pub event_id: String,
    /// `app_uninstalled` or `tokens_revoked`.
    pub kind: String,
    /// The channel's credentials sealed again without any token.
    pub credentials: Vec<u8>,
    /// Shown as the channel's status detail and on replies that will not be sent.
    pub detail: String,
    pub at: i64,
    /// Appended to the tenant's audit log in the same transaction.
    pub audit: crate::audit::Audit,
}
