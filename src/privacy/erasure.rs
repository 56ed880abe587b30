//! Erasure (GDPR Art. 17): one contact of a tenant removed everywhere in one
//! transaction, leaving only an audit tombstone (the contact's id and per-table
//! counts; no name, number or text).
//!
//! Entry points:
//! - [`erase_contact`]: by tenant and contact id (`DELETE /api/v1/contacts/{id}`);
//! - [`find_by_identity`] / [`erase_identity`]: by a platform's own user id, for
//!   callers that carry no tenant (Meta's data-deletion callback: platform
//!   `messenger`/`instagram`, optionally the channel the callback came in on).
//!
//! Kept on purpose: handled inbox rows keep the platform's message id (the dedupe
//! key), so a late redelivery of an erased person's message is still not answered.

use channels::ChannelKind;

use crate::audit::Audit;
use crate::store::{ContactRef, ErasureCounts, Result, Store};

/// One completed erasure.
#[derive(Debug, Clone)]
pub struct ErasureReport {
    pub tenant_id: String,
    pub contact_id: String,
    pub counts: ErasureCounts,
}

/// Erases one contact of `tenant_id`. `actor` is who asked (`api_key:<prefix>`,
/// `platform:meta`, ...), `reason` what triggered it (`admin_api`,
/// `meta_data_deletion`, ...). `None` if the tenant has no such contact.
pub async fn erase_contact(
    store: &dyn Store,
    tenant_id: &str,
    contact_id: &str,
    actor: &str,
    reason: &str,
) -> Result<Option<ErasureReport>> {
    let tombstone =
        Audit::new(tenant_id, actor, "contact.erase").detail(serde_json::json!({"reason": reason}));
    let counts = store
        .erase_contact(tenant_id, contact_id, &tombstone)
        .await?;
    tracing::info!(tenant_id, contact_id, reason, "contact erased");
    Ok(counts.map(|counts| ErasureReport {
        tenant_id: tenant_id.to_string(),
        contact_id: contact_id.to_string(),
        counts,
    }))
}

/// The contacts (in any tenant) that hold this platform user id, on `channel_id` or
/// on every channel of `platform`.
pub async fn find_by_identity(
    store: &dyn Store,
    platform: ChannelKind,
    channel_id: Option<&str>,
    external_user_id: &str,
) -> Result<Vec<ContactRef>> {
    store
        .contacts_by_identity(platform.as_str(), channel_id, external_user_id)
        .await
}

/// Erases every contact holding this platform user id (see [`find_by_identity`]).
/// An empty result means nobody was found (nothing is held about them).
pub async fn erase_identity(
    store: &dyn Store,
    platform: ChannelKind,
    channel_id: Option<&str>,
    external_user_id: &str,
    actor: &str,
    reason: &str,
) -> Result<Vec<ErasureReport>> {
    let mut reports = Vec::new();
    for found in find_by_identity(store, platform, channel_id, external_user_id).await? {
        if let Some(report) =
            erase_contact(store, &found.tenant_id, &found.contact_id, actor, reason).await?
        {
            reports.push(report);
        }
    }
    Ok(reports)
}
