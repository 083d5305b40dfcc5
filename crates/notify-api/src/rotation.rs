//! `notify-api admin rotate-integration-key`: re-seals every stored secret that was not
//! sealed with `secrets.current`, opening it with whichever configured key sealed it, so
//! the old key can then be removed from `secrets.keys`. Runs in batches; each row is
//! written only if it did not change since it was read (a row changed meanwhile was sealed
//! by its writer with the current key, or is seen by the next run). Idempotent: a second
//! run finds nothing to do.

use bootstrap::seal::{Keyring, SealError};
use store::{Store, integrations::purpose};

/// What a rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    /// Rows re-sealed with the current key.
    pub resealed: u64,
    /// Rows that changed while they were being re-sealed (left to their writer).
    pub changed: u64,
    /// Rows with a value that does not open: sealed with a key not configured, or damaged.
    /// Their ids are logged (never a value); configure the key and run again.
    pub unreadable: u64,
}

/// Re-seals, `batch` rows at a time, every integration secret not sealed with the current key.
pub async fn rotate(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Rotated> {
    let mut done = Rotated::default();
    let mut after = None;
    loop {
        let page = store
            .integrations_to_reseal(
                keyring.current(),
                after.as_ref().map(|(t, c, p): &(_, _, String)| (*t, *c, p.as_str())),
                batch,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.tenant_id, last.channel, last.provider.clone()));
        for integration in &page {
            let purpose = purpose(integration.channel, &integration.provider);
            let resealed: Result<_, SealError> = integration
                .secrets
                .iter()
                .map(|(key, sealed)| {
                    if !keyring.needs_reseal(sealed) {
                        return Ok((key.clone(), sealed.clone()));
                    }
                    let plain = keyring.open(&integration.tenant_id, &purpose, sealed)?;
                    Ok((key.clone(), keyring.seal(&integration.tenant_id, &purpose, &plain)))
                })
                .collect();
            match resealed {
                Ok(secrets) if store.reseal_integration(integration, &secrets).await? => done.resealed += 1,
                Ok(_) => done.changed += 1,
                Err(e) => {
                    tracing::warn!(tenant_id = %integration.tenant_id, channel = %integration.channel,
                        provider = integration.provider, error = %e, "integration secret not re-sealed");
                    done.unreadable += 1;
                }
            }
        }
    }
    // Chat webhook addresses of subscribers (purpose `chat-address`) are sealed with the
    // same keyring: once they are stored, re-seal them here too, in the same batches and
    // with the same only-if-unchanged write, so one command retires a key everywhere.
    Ok(done)
}
