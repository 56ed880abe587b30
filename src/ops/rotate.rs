//! `omnigate rotate-key`: re-seals every channel's credentials under the configured
//! `master_key`, opening them with it or any of `previous_master_keys`. Running
//! instances keep working throughout: they open both old and new ciphertexts as long
//! as their configuration lists both keys (docs/operations.md gives the order).

use anyhow::Context as _;

use crate::config::Config;
use crate::crypto::{self, Sealer};

/// What one rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    /// Re-sealed under the current key now.
    pub resealed: u64,
    /// Already under the current key.
    pub current: u64,
    /// Changed by someone else meanwhile (re-sealed by them; run again to check).
    pub changed: u64,
    /// Channels whose credentials no configured key opens.
    pub unreadable: Vec<String>,
}

pub async fn run(config: &Config) -> anyhow::Result<Rotation> {
    let key = config
        .master_key
        .as_ref()
        .context("rotate-key needs master_key (the new key) in the configuration")?;
    let key = crate::config::decode_master_key(key).context("master_key")?;
    let sealer = Sealer::new(&key).with_previous(&crate::app::previous_master_keys(config)?);
    let store = crate::store::open(&config.database_url).await?;
    let mut rotation = Rotation::default();
    for channel in store.sealed_credentials().await? {
        let context = crypto::channel_context(&channel.tenant_id, &channel.id);
        if sealer.is_current(&context, &channel.credentials) {
            rotation.current += 1;
            continue;
        }
        let Ok(plain) = sealer.open(&context, &channel.credentials) else {
            rotation.unreadable.push(channel.id);
            continue;
        };
        let resealed = sealer.seal(&context, &plain)?;
        if store
            .reseal_credentials(&channel.id, &channel.credentials, &resealed)
            .await?
        {
            rotation.resealed += 1;
        } else {
            rotation.changed += 1;
        }
    }
    Ok(rotation)
}
