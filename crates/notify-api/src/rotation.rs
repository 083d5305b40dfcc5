//! `notify-admin rotate-integration-key`: re-seals every stored secret that was not
//! sealed with `secrets.current`, opening it with whichever configured key sealed it, so
//! the old key can then be removed from `secrets.keys`. The secrets are the integrations'
//! (purpose `integration:<channel>/<provider>`), subscribers' chat webhook addresses and
//! the recipients of chat deliveries that may still be sent (purpose `chat-address`), and
//! webhook endpoints' signing secrets, current and previous (purpose `webhook:<id>`).
//! Final deliveries keep the recipient they were sent to: it is history, and once its key
//! is removed it no longer opens (nothing needs it to).
//!
//! Runs in batches; each row is written only if it did not change since it was read (a
//! row changed meanwhile was sealed by its writer with the current key, or is seen by the
//! next run). Idempotent: a second run finds nothing to do.

use bootstrap::seal::{Keyring, SealError};
use domain::chat;
use store::{Store, integrations::purpose};
use uuid::Uuid;

/// What a rotation did, per kind of row.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    pub integrations: Counts,
    /// Subscribers with a chat webhook address.
    pub subscribers: Counts,
    /// Chat deliveries to a webhook that may still be sent.
    pub deliveries: Counts,
    /// Webhook endpoints.
    pub webhooks: Counts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rows re-sealed with the current key.
    pub resealed: u64,
    /// Rows that changed while they were being re-sealed (left to their writer).
    pub changed: u64,
    /// Rows with a value that does not open: sealed with a key not configured, or damaged.
    /// Their ids are logged (never a value); configure the key and run again.
    pub unreadable: u64,
}

impl Counts {
    /// Counts one row: `Ok(written)`, or the reason its value did not open.
    fn add(&mut self, row: Result<bool, SealError>) {
        match row {
            Ok(true) => self.resealed += 1,
            Ok(false) => self.changed += 1,
            Err(_) => self.unreadable += 1,
        }
    }
}

impl Rotated {
    pub fn changed(&self) -> u64 {
        self.integrations.changed + self.subscribers.changed + self.deliveries.changed + self.webhooks.changed
    }

    pub fn unreadable(&self) -> u64 {
        self.integrations.unreadable
            + self.subscribers.unreadable
            + self.deliveries.unreadable
            + self.webhooks.unreadable
    }
}

/// Re-seals, `batch` rows at a time, every secret not sealed with the current key.
pub async fn rotate(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Rotated> {
    Ok(Rotated {
        integrations: integrations(store, keyring, batch).await?,
        subscribers: subscribers(store, keyring, batch).await?,
        deliveries: deliveries(store, keyring, batch).await?,
        webhooks: webhooks(store, keyring, batch).await?,
    })
}

async fn webhooks(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Counts> {
    let mut done = Counts::default();
    let mut after = None;
    loop {
        let page = store.webhook_endpoints_to_reseal(keyring.current(), after, batch).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for endpoint in &page {
            let purpose = store::webhooks::purpose(endpoint.id);
            let reseal = |sealed: &str| -> Result<String, SealError> {
                if !keyring.needs_reseal(sealed) {
                    return Ok(sealed.to_owned());
                }
                Ok(keyring.seal(&endpoint.tenant_id, &purpose, &keyring.open(&endpoint.tenant_id, &purpose, sealed)?))
            };
            let resealed = reseal(&endpoint.secret)
                .and_then(|secret| Ok((secret, endpoint.previous_secret.as_deref().map(reseal).transpose()?)));
            let written = match resealed {
                Ok((secret, previous)) => {
                    Ok(store.reseal_webhook_endpoint(endpoint, &secret, previous.as_deref()).await?)
                }
                Err(e) => {
                    tracing::warn!(tenant_id = %endpoint.tenant_id, endpoint_id = %endpoint.id, error = %e,
                        "a webhook secret not re-sealed");
                    Err(e)
                }
            };
            done.add(written);
        }
    }
    Ok(done)
}

async fn integrations(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Counts> {
    let mut done = Counts::default();
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
            let written = match resealed {
                Ok(secrets) => Ok(store.reseal_integration(integration, &secrets).await?),
                Err(e) => {
                    tracing::warn!(tenant_id = %integration.tenant_id, channel = %integration.channel,
                        provider = integration.provider, error = %e, "integration secret not re-sealed");
                    Err(e)
                }
            };
            done.add(written);
        }
    }
    Ok(done)
}

async fn subscribers(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Counts> {
    let mut done = Counts::default();
    let mut after: Option<(Uuid, String)> = None;
    loop {
        let page = store
            .subscribers_to_reseal(keyring.current(), after.as_ref().map(|(t, id)| (*t, id.as_str())), batch)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.tenant_id, last.id.clone()));
        for subscriber in &page {
            let mut chat = subscriber.chat.clone();
            let resealed =
                [&mut chat.slack, &mut chat.teams, &mut chat.discord].into_iter().flatten().try_for_each(|address| {
                    address.to = reseal_address(keyring, subscriber.tenant_id, &address.to)?;
                    Ok(())
                });
            let written = match resealed {
                Ok(()) => Ok(store.reseal_subscriber_chat(subscriber, &chat).await?),
                Err(e) => {
                    // The subscriber's id is the tenant's and may name a person: not logged.
                    tracing::warn!(tenant_id = %subscriber.tenant_id, error = %e,
                        "a subscriber's chat address not re-sealed");
                    Err(e)
                }
            };
            done.add(written);
        }
    }
    Ok(done)
}

async fn deliveries(store: &Store, keyring: &Keyring, batch: i64) -> anyhow::Result<Counts> {
    let mut done = Counts::default();
    let mut after = None;
    loop {
        let page = store.deliveries_to_reseal(keyring.current(), after, batch).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for delivery in &page {
            let written = match reseal_address(keyring, delivery.tenant_id, &delivery.recipient) {
                Ok(recipient) => Ok(store.reseal_delivery_recipient(delivery, &recipient).await?),
                Err(e) => {
                    tracing::warn!(tenant_id = %delivery.tenant_id, delivery_id = %delivery.id, error = %e,
                        "a delivery's chat address not re-sealed");
                    Err(e)
                }
            };
            done.add(written);
        }
    }
    Ok(done)
}

/// A chat recipient (`teams:v1.<key id>.…`) with its address sealed with the current key;
/// as it was if in clear (`slack:U…`) or sealed with that key already.
fn reseal_address(keyring: &Keyring, tenant: Uuid, recipient: &str) -> Result<String, SealError> {
    match chat::split(recipient) {
        Some((provider, address)) if chat::is_sealed(address) && keyring.needs_reseal(address) => {
            let plain = keyring.open(&tenant, chat::SEAL_PURPOSE, address)?;
            Ok(format!("{provider}:{}", keyring.seal(&tenant, chat::SEAL_PURPOSE, &plain)))
        }
        _ => Ok(recipient.to_owned()),
    }
}
