//! The audit log: who did what, when, to which contact (by id, never by name, number
//! or message text). Every tenant has one append-only chain; each entry stores the
//! hash of the one before it, and the chain's head (last position and hash) is kept
//! beside it, so an altered, removed, inserted or reordered entry, or a cut-off tail,
//! makes [`verify`] fail.
//!
//! Entry points for other modules:
//! - [`record`] appends one entry in its own transaction (e.g. a platform's
//!   `app_uninstalled` signal: `audit::record(store, &Audit::new(tenant, "platform:slack",
//!   "channel.uninstalled").target(channel_id))`);
//! - store methods that change personal data append their entry inside the same
//!   transaction as the change (erasure, consent, restriction, retention);
//! - [`verify`] checks a tenant's chain (`GET /api/v1/audit`).

use sha2::{Digest, Sha256};

use crate::store::{new_id, now_ms, AuditHead, AuditRecord, Store};

/// The chain of operator-level entries (not tied to a tenant).
pub const OPERATOR_CHAIN: &str = "";

/// A new audit entry. `detail` is JSON and must hold no personal data (counts, field
/// names, purposes, keyword kinds, ids).
#[derive(Debug, Clone)]
pub struct Audit {
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub contact_id: Option<String>,
    pub target: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub at: i64,
}

impl Audit {
    pub fn new(tenant_id: &str, actor: &str, action: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            contact_id: None,
            target: None,
            detail: None,
            at: now_ms(),
        }
    }

    pub fn contact(mut self, contact_id: &str) -> Self {
        self.contact_id = Some(contact_id.to_string());
        self
    }

    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The row this entry becomes at position `n` after `prev_hash`.
    pub fn chained(&self, n: i64, prev_hash: &str) -> AuditRecord {
        let mut record = AuditRecord {
            id: new_id(),
            tenant_id: self.tenant_id.clone(),
            n,
            at: self.at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            contact_id: self.contact_id.clone(),
            target: self.target.clone(),
            detail: self.detail.as_ref().map(|d| d.to_string()),
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        record.hash = entry_hash(&record);
        record
    }
}

/// SHA-256 (hex) over a canonical serialisation of every field but the hash itself.
pub fn entry_hash(r: &AuditRecord) -> String {
    let canonical = serde_json::json!([
        r.tenant_id,
        r.n,
        r.id,
        r.at,
        r.actor,
        r.action,
        r.contact_id,
        r.target,
        r.detail,
        r.prev_hash,
    ])
    .to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Appends one entry in its own transaction.
pub async fn record(store: &dyn Store, entry: &Audit) -> crate::store::Result<()> {
    store.append_audit(entry).await
}

/// The result of checking one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub entries: i64,
    /// Chain position of the first entry that does not verify (or where one is missing).
    pub first_bad: Option<i64>,
}

/// Checks a chain given in position order and its head.
pub fn check(entries: &[AuditRecord], head: Option<&AuditHead>) -> ChainReport {
    let (mut expected_n, mut prev) = match head {
        Some(h) => (h.anchor_n + 1, h.anchor_hash.clone()),
        None => (1, String::new()),
    };
    let bad = |n: i64| ChainReport {
        ok: false,
        entries: entries.len() as i64,
        first_bad: Some(n),
    };
    for e in entries {
        if e.n != expected_n || e.prev_hash != prev || entry_hash(e) != e.hash {
            return bad(expected_n.min(e.n));
        }
        prev = e.hash.clone();
        expected_n += 1;
    }
    match head {
        None if entries.is_empty() => {}
        None => return bad(1),
        Some(h) if h.n != expected_n - 1 || h.hash != prev => return bad(expected_n),
        Some(_) => {}
    }
    ChainReport {
        ok: true,
        entries: entries.len() as i64,
        first_bad: None,
    }
}

/// Reads and checks a tenant's whole chain.
pub async fn verify(store: &dyn Store, tenant_id: &str) -> crate::store::Result<ChainReport> {
    let (entries, head) = store.audit_chain(tenant_id).await?;
    Ok(check(&entries, head.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: i64) -> (Vec<AuditRecord>, AuditHead) {
        let mut prev = String::new();
        let mut out = Vec::new();
        for n in 1..=len {
            let r = Audit::new("t", "system", "x").chained(n, &prev);
            prev = r.hash.clone();
            out.push(r);
        }
        let head = AuditHead {
            n: len,
            hash: prev,
            anchor_n: 0,
            anchor_hash: String::new(),
        };
        (out, head)
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        let (entries, head) = chain(5);
        assert!(check(&entries, Some(&head)).ok);

        let mut altered = entries.clone();
        altered[2].action = "y".into();
        assert_eq!(check(&altered, Some(&head)).first_bad, Some(3));

        let mut removed = entries.clone();
        removed.remove(1);
        assert_eq!(check(&removed, Some(&head)).first_bad, Some(2));

        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        assert!(!check(&swapped, Some(&head)).ok);

        let mut inserted = entries.clone();
        inserted.insert(
            2,
            Audit::new("t", "system", "x").chained(3, &entries[1].hash),
        );
        assert!(!check(&inserted, Some(&head)).ok);

        let truncated = &entries[..4];
        assert_eq!(check(truncated, Some(&head)).first_bad, Some(5));
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let (entries, mut head) = chain(5);
        head.anchor_n = 2;
        head.anchor_hash = entries[1].hash.clone();
        assert!(check(&entries[2..], Some(&head)).ok);
        assert!(!check(&entries[3..], Some(&head)).ok);
    }
}
