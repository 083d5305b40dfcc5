//! Sealed chat addresses, opened after the claim: a chat delivery to a webhook carries
//! its URL sealed (`discord:v1.<key id>.<ciphertext>`, see `domain::chat`), and the
//! provider is given the plain URL. It exists in clear only in this attempt's memory.

use bootstrap::seal::Keyring;
use domain::{Channel, DeliveryJob, FailureKind, SendFailure, chat};

/// The code of an attempt whose address could not be opened.
pub const UNREADABLE: &str = "address_unreadable";

/// `job` with its chat address opened, or `None` when it has nothing sealed. A value that
/// does not open (another key, altered, another tenant's) is a permanent failure whose
/// message says why without the value; so is a sealed address with no keyring.
pub fn open(keyring: Option<&Keyring>, job: &DeliveryJob) -> Result<Option<DeliveryJob>, SendFailure> {
    if job.channel != Channel::Chat {
        return Ok(None);
    }
    let Some((provider, address)) = chat::split(&job.recipient).filter(|(_, a)| chat::is_sealed(a)) else {
        return Ok(None);
    };
    let unreadable = |why: String| SendFailure::new(FailureKind::Permanent, UNREADABLE, why);
    let Some(keyring) = keyring else {
        return Err(unreadable(
            "the chat address is sealed and this worker has no secrets.keys configured to open it".into(),
        ));
    };
    let plain = keyring
        .open(&job.tenant_id, chat::SEAL_PURPOSE, address)
        .map_err(|e| unreadable(format!("the chat address does not open: {e}")))?;
    let plain = String::from_utf8(plain).map_err(|_| unreadable("the chat address is not text".into()))?;
    Ok(Some(DeliveryJob { recipient: format!("{provider}:{plain}"), ..job.clone() }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bootstrap::seal::SecretsConfig;
    use domain::{Content, Priority};
    use uuid::Uuid;

    use super::*;

    fn keyring(id: &str) -> Keyring {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned();
        let keys = BTreeMap::from([(id.to_owned(), key.into())]);
        SecretsConfig { current: None, keys }.keyring().unwrap().unwrap()
    }

    fn job(recipient: String) -> DeliveryJob {
        DeliveryJob {
            delivery_id: Uuid::nil(),
            notification_id: Uuid::nil(),
            tenant_id: Uuid::from_u128(1),
            channel: Channel::Chat,
            attempt: 1,
            retry_base: 0,
            recipient,
            kind: "t".into(),
            priority: Priority::Normal,
            content: Content::default(),
            data: Default::default(),
            workflow: None,
            retry: None,
            device: None,
        }
    }

    #[test]
    fn a_sealed_address_opens_for_its_tenant_only() {
        let url = "https://discord.com/api/webhooks/1/secret";
        let keys = keyring("k1");
        let sealed = job(format!("discord:{}", keys.seal(&Uuid::from_u128(1), chat::SEAL_PURPOSE, url.as_bytes())));
        assert_eq!(open(Some(&keys), &sealed).unwrap().unwrap().recipient, format!("discord:{url}"));
        assert!(open(Some(&keys), &job("slack:U024BE7LH".into())).unwrap().is_none());

        let other_tenant = DeliveryJob { tenant_id: Uuid::from_u128(2), ..sealed.clone() };
        for (keyring, job) in [(Some(&keys), &other_tenant), (Some(&keyring("k2")), &sealed), (None, &sealed)] {
            let failure = open(keyring, job).unwrap_err();
            assert_eq!((failure.kind, failure.code.as_str()), (FailureKind::Permanent, UNREADABLE));
            assert!(
                !failure.message.contains("secret") || failure.message.contains("secrets.keys"),
                "{}",
                failure.message
            );
        }
        assert!(open(None, &sealed).unwrap_err().message.contains("secrets.keys"));
    }
}
