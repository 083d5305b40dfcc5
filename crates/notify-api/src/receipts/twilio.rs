//! Twilio's `StatusCallback` (docs/providers.md §9.1): a form POST signed with
//! `X-Twilio-Signature`, base64 of HMAC-SHA1 keyed with the auth token over the URL Twilio
//! requested followed by every parameter, sorted, as `name` + `value`.

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bootstrap::ConfigError;
use domain::DeliveryStatus;
use store::Receipt;

use super::{invalid, secret};
use crate::config::TwilioReceipts;

/// The provider name the workers record on a delivery sent through Twilio.
pub const PROVIDER: &str = "twilio";

pub struct Twilio {
    key: hmac::Key,
    /// The public URL as configured and with its default port toggled: Twilio's own
    /// validator accepts either, as proxies and SDKs differ in writing `:443`.
    urls: Vec<String>,
}

impl Twilio {
    pub fn new(config: &TwilioReceipts) -> Result<Self, ConfigError> {
        let token = secret(&config.auth_token, "receipts.twilio.auth_token")?;
        Self::signed_with(token, &config.public_url).map_err(|why| invalid("receipts.twilio.public_url", why))
    }

    /// A checker of callbacks Twilio posts to `public_url`, signed with `auth_token`: a
    /// tenant's, for its own receipt route.
    pub fn signed_with(auth_token: &[u8], public_url: &str) -> Result<Self, String> {
        let urls = url_forms(public_url)?;
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token), urls })
    }

    /// Whether `signature` (the `X-Twilio-Signature` header) signs a callback with the raw
    /// query `query` and the form parameters `params`. Constant time in the signature.
    pub fn verify(&self, query: Option<&str>, params: &[(String, String)], signature: &str) -> bool {
        let Ok(tag) = BASE64.decode(signature.trim()) else { return false };
        self.urls.iter().any(|url| {
            let url = match query {
                Some(query) => format!("{url}?{query}"),
                None => url.clone(),
            };
            hmac::verify(&self.key, &signed_bytes(&url, params), &tag).is_ok()
        })
    }
}

/// What Twilio signs: the URL, then for each parameter name in order, each of its distinct
/// values in order, as `name` + `value` with no separator (twilio-python's
/// `RequestValidator.compute_signature`). Byte order of UTF-8 is code point order, as in
/// Python.
fn signed_bytes(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut signed = url.to_owned();
    for (name, values) in sorted {
        for value in values {
            signed.push_str(name);
            signed.push_str(value);
        }
    }
    signed.into_bytes()
}

/// The configured URL as written (Twilio signs the `StatusCallback` string it was given),
/// then without and with its scheme's default port (only with it if it names another).
fn url_forms(public_url: &str) -> Result<Vec<String>, String> {
    let url = reqwest::Url::parse(public_url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment: the request's own query is added to it".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials".into());
    }
    let (scheme, path) = (url.scheme(), url.path());
    let host = url.host_str().ok_or("must name a host")?;
    let port = url.port_or_known_default().ok_or("must have a port")?;
    let mut forms = vec![public_url.trim().to_owned()];
    // `Url` drops a default port, so `port()` is `None` for `https://host:443/` too.
    if url.port().is_none() {
        forms.push(format!("{scheme}://{host}{path}"));
    }
    forms.push(format!("{scheme}://{host}:{port}{path}"));
    let mut unique: Vec<String> = Vec::with_capacity(forms.len());
    for form in forms {
        if !unique.contains(&form) {
            unique.push(form);
        }
    }
    Ok(unique)
}

/// What a callback reports: `delivered` (and WhatsApp's `read`, which implies it),
/// `undelivered` and `failed` with Twilio's `ErrorCode`. Other statuses (`queued`, `sent`,
/// ...) are steps before the outcome and change nothing. `Err` names a missing field.
pub fn receipt(params: &[(String, String)]) -> Result<Option<Receipt>, &'static str> {
    let get = |name: &str| params.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone());
    let sid = get("MessageSid").ok_or("MessageSid")?;
    let status = match get("MessageStatus").ok_or("MessageStatus")?.as_str() {
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undelivered" => DeliveryStatus::Undelivered,
        "failed" => DeliveryStatus::Failed,
        _ => return Ok(None),
    };
    let error_code = match status {
        DeliveryStatus::Delivered => None,
        _ => get("ErrorCode"),
    };
    Ok(Some(Receipt {
        provider: PROVIDER,
        provider_message_id: sid,
        tenant_id: None,
        status: Some(status),
        error_code,
        error_message: None,
        suppress: None,
    }))
}

#[cfg(test)]
mod tests {
    use bootstrap::SecretString;

    use super::*;

    fn twilio(token: &str, url: &str) -> Twilio {
        Twilio::new(&TwilioReceipts { auth_token: SecretString::from(token), public_url: url.into() }).unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// Twilio's published example (docs/providers.md §9.1): the URL carries a query.
    #[test]
    fn twilios_published_example_verifies() {
        let twilio = twilio("12345", "https://mycompany.com/myapp.php");
        let mut signed = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let query = Some("foo=1&bar=2");
        assert!(twilio.verify(query, &signed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        // Parameter order does not matter; every parameter and the query do.
        signed.reverse();
        assert!(twilio.verify(query, &signed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        signed[0].1 = "+18005551213".into();
        assert!(!twilio.verify(query, &signed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        signed.reverse();
        assert!(!twilio.verify(Some("foo=1&bar=3"), &signed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    }

    fn status_callback() -> Vec<(String, String)> {
        params(&[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("ApiVersion", "2010-04-01"),
            ("From", "+15555550199"),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("MessageStatus", "delivered"),
            ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
            ("SmsStatus", "delivered"),
            ("To", "+15555550100"),
        ])
    }

    #[test]
    fn the_status_callback_vector_verifies_with_and_without_the_default_port() {
        let signature = "muiEAkSM4g0DrlU3XyoUZXQqcLU=";
        for url in [
            "https://notify.example.com/webhooks/twilio/status",
            "https://notify.example.com:443/webhooks/twilio/status",
        ] {
            assert!(twilio("test_auth_token", url).verify(None, &status_callback(), signature), "{url}");
        }
        let twilio = twilio("test_auth_token", "https://notify.example.com/webhooks/twilio/status");
        let mut changed = status_callback();
        changed[4].1 = "failed".into();
        assert!(!twilio.verify(None, &changed, signature));
        assert!(!twilio.verify(Some("x=1"), &status_callback(), signature));
        assert!(!twilio.verify(None, &status_callback(), "not base64!"));
        assert!(!twilio.verify(None, &status_callback(), ""));
        let other_token = super::Twilio::new(&TwilioReceipts {
            auth_token: SecretString::from("another_token"),
            public_url: "https://notify.example.com/webhooks/twilio/status".into(),
        })
        .unwrap();
        assert!(!other_token.verify(None, &status_callback(), signature));
    }

    #[test]
    fn url_forms_toggle_only_the_default_port() {
        assert_eq!(url_forms("https://a.example/s").unwrap(), ["https://a.example/s", "https://a.example:443/s"]);
        assert_eq!(url_forms("http://a.example:80/s").unwrap(), ["http://a.example:80/s", "http://a.example/s"]);
        // Twilio signs the URL as it was given: its spelling is kept.
        assert_eq!(
            url_forms("https://Notify.example/s").unwrap(),
            ["https://Notify.example/s", "https://notify.example/s", "https://notify.example:443/s"]
        );
        assert_eq!(url_forms("https://a.example:8443/s").unwrap(), ["https://a.example:8443/s"]);
        for bad in ["a.example/s", "ftp://a.example/s", "https://a.example/s?x=1", "https://u:p@a.example/s"] {
            assert!(url_forms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_map_to_deliveries() {
        let mut p = status_callback();
        let r = receipt(&p).unwrap().unwrap();
        assert_eq!(
            (r.provider_message_id.as_str(), r.status),
            ("SM0123456789abcdef0123456789abcdef", Some(DeliveryStatus::Delivered))
        );
        p[4].1 = "failed".into();
        p.push(("ErrorCode".into(), "30003".into()));
        let r = receipt(&p).unwrap().unwrap();
        assert_eq!((r.status, r.error_code.as_deref()), (Some(DeliveryStatus::Failed), Some("30003")));
        p[4].1 = "undelivered".into();
        assert_eq!(receipt(&p).unwrap().unwrap().status, Some(DeliveryStatus::Undelivered));
        for step in ["queued", "sending", "sent", "accepted"] {
            p[4].1 = step.into();
            assert!(receipt(&p).unwrap().is_none(), "{step}");
        }
        p.remove(3);
        assert_eq!(receipt(&p).unwrap_err(), "MessageSid");
    }

    #[test]
    fn empty_tokens_are_refused() {
        let config = TwilioReceipts { auth_token: SecretString::from(""), public_url: "https://a.example/s".into() };
        assert!(Twilio::new(&config).is_err());
    }
}
