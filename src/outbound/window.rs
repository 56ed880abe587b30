//! The platforms' messaging windows (Messenger, Instagram): the 24-hour standard
//! window after a customer's last message, in which any reply may be sent, and the
//! 7-day window in which only a person may reply, with the `HUMAN_AGENT` tag.

use channels::ChannelKind;

/// The standard messaging window.
pub const STANDARD_MS: i64 = 24 * 60 * 60 * 1000;
/// How long after the customer's last message a person may still reply.
pub const HUMAN_AGENT_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// The message tag of a person's reply after the standard window.
pub const HUMAN_AGENT_TAG: &str = "HUMAN_AGENT";

/// Whether `kind` restricts replies to messaging windows.
pub fn applies(kind: ChannelKind) -> bool {
    matches!(kind, ChannelKind::Messenger | ChannelKind::Instagram)
}

/// How a person's reply may go out, given when the customer last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentReply {
    /// Inside the standard window (or a platform without windows).
    Standard,
    /// After the standard window and within 7 days: with this message tag.
    Tagged(&'static str),
    /// The customer has not written in the last 7 days (or never).
    Closed,
}

pub fn agent_reply(kind: ChannelKind, last_customer_at: Option<i64>, now: i64) -> AgentReply {
    if !applies(kind) {
        return AgentReply::Standard;
    }
    match last_customer_at.map(|at| now.saturating_sub(at)) {
        Some(age) if age <= STANDARD_MS => AgentReply::Standard,
        Some(age) if age <= HUMAN_AGENT_MS => AgentReply::Tagged(HUMAN_AGENT_TAG),
        _ => AgentReply::Closed,
    }
}

/// Whether the assistant may answer a customer message written at `message_at`
/// (platform time, ms): only inside the standard window.
pub fn assistant_may_answer(kind: ChannelKind, message_at: Option<i64>, now: i64) -> bool {
    !applies(kind) || message_at.is_none_or(|at| now.saturating_sub(at) <= STANDARD_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 60 * 60 * 1000;

    #[test]
    fn windows_by_age() {
        let now = 1_000 * H;
        let m = ChannelKind::Messenger;
        assert_eq!(
            agent_reply(m, Some(now - 23 * H), now),
            AgentReply::Standard
        );
        assert_eq!(
            agent_reply(m, Some(now - 25 * H), now),
            AgentReply::Tagged("HUMAN_AGENT")
        );
        assert_eq!(
            agent_reply(m, Some(now - 8 * 24 * H), now),
            AgentReply::Closed
        );
        assert_eq!(agent_reply(m, None, now), AgentReply::Closed);
        assert_eq!(
            agent_reply(ChannelKind::WhatsApp, None, now),
            AgentReply::Standard
        );
        assert!(assistant_may_answer(m, Some(now - 23 * H), now));
        assert!(!assistant_may_answer(
            ChannelKind::Instagram,
            Some(now - 25 * H),
            now
        ));
        assert!(assistant_may_answer(
            ChannelKind::WhatsApp,
            Some(now - 25 * H),
            now
        ));
    }
}
