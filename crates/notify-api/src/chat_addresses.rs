//! Subscribers' chat addresses as the API stores them: checked against each provider's
//! hosts, webhook URLs sealed for the tenant (they are secrets: whoever has one can post).

use std::sync::Arc;

use bootstrap::seal::Keyring;
use domain::{
    FieldError, Recipient,
    chat::{self, Key, StoredChat, Target},
};
use uuid::Uuid;

#[derive(Clone)]
pub struct ChatAddresses {
    /// `None` without `secrets.keys`: webhook URLs cannot be stored then.
    keyring: Option<Arc<Keyring>>,
    /// `integrations.allow_private_hosts` (tests): webhook URLs may point anywhere.
    pub allow_private_hosts: bool,
}

impl ChatAddresses {
    pub fn new(keyring: Option<Arc<Keyring>>, allow_private_hosts: bool) -> Self {
        Self { keyring, allow_private_hosts }
    }

    /// The chat addresses as stored, webhook URLs sealed for `tenant`; a webhook given to
    /// a server without keys is refused (naming the field), not stored in clear.
    pub fn seal(&self, tenant: Uuid, targets: &[(Key, Target)]) -> Result<StoredChat, Vec<FieldError>> {
        let mut stored = StoredChat::default();
        let mut errors = Vec::new();
        for (key, target) in targets {
            let address = match (target, &self.keyring) {
                (Target::Webhook { .. }, None) => {
                    errors.push(FieldError::new(
                        format!("chat.{}", key.as_str()),
                        "webhook URLs are stored encrypted, and this server has no secrets.keys configured",
                    ));
                    continue;
                }
                (_, keyring) => target.recipient(|url| {
                    keyring.as_ref().expect("a keyring for webhooks").seal(&tenant, chat::SEAL_PURPOSE, url.as_bytes())
                }),
            };
            let slot = match key {
                Key::Slack => &mut stored.slack,
                Key::Teams => &mut stored.teams,
                Key::Discord => &mut stored.discord,
            };
            *slot = Some(address);
        }
        if errors.is_empty() { Ok(stored) } else { Err(errors) }
    }

    /// Seals the webhook URLs `to` names inline (`to[i].discord_webhook`), in place, so
    /// the plan writes only their sealed values.
    pub fn seal_inline(&self, tenant: Uuid, to: &mut [Recipient]) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for (i, r) in to.iter_mut().enumerate() {
            for (field, value) in r.webhooks_mut() {
                let Some(url) = value.as_mut() else { continue };
                match &self.keyring {
                    Some(keyring) => *url = keyring.seal(&tenant, chat::SEAL_PURPOSE, url.as_bytes()),
                    None => errors.push(FieldError::new(
                        format!("to[{i}].{field}"),
                        "webhook URLs are stored encrypted, and this server has no secrets.keys configured",
                    )),
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
