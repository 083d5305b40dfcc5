//! SNS HTTP(S) messages (docs/providers.md §9.2), how SES events reach us. SNS signs each
//! message with RSA (PKCS#1 v1.5, SHA1 for `SignatureVersion` 1, SHA256 for 2) under a
//! certificate it names by URL; the URL is not part of what is signed, so only
//! `/SimpleNotificationService-<id>.pem` on the configured hosts (by default exactly
//! `sns.<region>.amazonaws.com`, `.com.cn` in China) is fetched, the certificate must be
//! SNS's (subject `sns.amazonaws.com`, issued by Amazon), only messages of allow-listed
//! topics are taken, and only within an hour of their signed `Timestamp` (a replay of an old
//! message is refused).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bootstrap::ConfigError;
use regex::Regex;
use reqwest::Url;
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use x509_cert::{
    Certificate,
    der::{
        DecodePem,
        asn1::{Ia5StringRef, ObjectIdentifier, PrintableStringRef, Utf8StringRef},
    },
    name::Name,
};

use super::{Refusal, invalid};
use crate::config::SesReceipts;

/// Certificates kept: SNS signs with a handful per region, rotated rarely.
const MAX_CACHED_CERTS: usize = 64;
/// A PEM certificate is a few KiB; anything much larger is not one.
const MAX_CERT_BYTES: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Hosts SNS serves certificates from: a pattern admitting one of them must keep `https`.
const AWS_HOSTS: [&str; 3] =
    ["sns.us-east-1.amazonaws.com", "sns.cn-north-1.amazonaws.com.cn", "sns.us-gov-west-1.amazonaws.com"];
/// The subject SNS's signing certificates name.
const CERT_SUBJECT: &str = "sns.amazonaws.com";
/// A message older than this (by its signed `Timestamp`) is a replay: SNS stops retrying
/// an HTTP delivery within an hour (a delivery policy's retries last at most 3,600 s).
pub const MAX_MESSAGE_AGE: time::Duration = time::Duration::hours(1);
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// An SNS message as POSTed to a subscribed HTTP(S) endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    pub subject: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

impl Envelope {
    /// The string SNS signs: for each of the type's keys that is present, in order,
    /// `key\nvalue\n` (the algorithm of AWS's own validators). `None` for a type SNS does not
    /// send.
    pub fn string_to_sign(&self) -> Option<String> {
        let keys: &[&str] = match self.kind.as_str() {
            "Notification" => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
            }
            _ => return None,
        };
        let mut signed = String::new();
        for key in keys {
            if let Some(value) = self.field(key) {
                signed.push_str(key);
                signed.push('\n');
                signed.push_str(value);
                signed.push('\n');
            }
        }
        Some(signed)
    }

    fn field(&self, key: &str) -> Option<&str> {
        match key {
            "Message" => Some(&self.message),
            "MessageId" => Some(&self.message_id),
            "Subject" => self.subject.as_deref(),
            "SubscribeURL" => self.subscribe_url.as_deref(),
            "Timestamp" => Some(&self.timestamp),
            "Token" => self.token.as_deref(),
            "TopicArn" => Some(&self.topic_arn),
            "Type" => Some(&self.kind),
            _ => None,
        }
    }
}

pub struct Sns {
    hosts: Regex,
    allow_http: bool,
    topic_arns: HashSet<String>,
    /// Organizations whose certificates are taken as SNS's (`O` of the issuer).
    cert_issuers: Vec<String>,
    http: reqwest::Client,
    /// Certificate host and path -> its RSA public key (PKCS#1 DER).
    keys: Mutex<HashMap<String, Arc<[u8]>>>,
}

impl Sns {
    pub fn new(config: &SesReceipts) -> Result<Self, ConfigError> {
        let hosts = host_pattern(&config.cert_host_pattern)?;
        if config.allow_http_certs && AWS_HOSTS.iter().any(|h| hosts.is_match(h)) {
            return Err(invalid(
                "receipts.ses.allow_http_certs",
                "http certificate URLs are for a local stand-in: not with a pattern that admits AWS's hosts",
            ));
        }
        if config.topic_arns.is_empty() || config.topic_arns.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("receipts.ses.topic_arns", "must list the SNS topics whose messages are accepted"));
        }
        if config.cert_issuers.is_empty() || config.cert_issuers.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "receipts.ses.cert_issuers",
                "must list the organizations that issue SNS's certificates",
            ));
        }
        // No redirects: a redirect could lead away from the allowed hosts.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| invalid("receipts.ses", format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            hosts,
            allow_http: config.allow_http_certs,
            topic_arns: config.topic_arns.iter().map(|t| t.trim().to_owned()).collect(),
            cert_issuers: config.cert_issuers.iter().map(|t| t.trim().to_owned()).collect(),
            http,
            keys: Mutex::default(),
        })
    }

    /// Accepts the message only if its topic is allowed, it is not older than
    /// [`MAX_MESSAGE_AGE`], and SNS signed it under a certificate from an allowed URL.
    pub async fn verify(&self, envelope: &Envelope) -> Result<(), Refusal> {
        let allowed = self.topic_arns.contains(&envelope.topic_arn);
        self.verify_at(envelope, allowed, OffsetDateTime::now_utc()).await
    }

    /// As [`Sns::verify`], for a tenant's route: the topic must be one of `topics` (the
    /// tenant's own), not the operator's.
    pub async fn verify_for(&self, envelope: &Envelope, topics: &[String]) -> Result<(), Refusal> {
        let allowed = topics.iter().any(|t| t.trim() == envelope.topic_arn);
        self.verify_at(envelope, allowed, OffsetDateTime::now_utc()).await
    }

    async fn verify_at(&self, envelope: &Envelope, topic_allowed: bool, now: OffsetDateTime) -> Result<(), Refusal> {
        if !topic_allowed {
            return Err(Refusal::Signature("the topic is not on the allow-list"));
        }
        // Checked before anything is fetched; the signature below proves the timestamp.
        let signed_at = OffsetDateTime::parse(envelope.timestamp.trim(), &Rfc3339)
            .map_err(|_| Refusal::Signature("the Timestamp is not an RFC 3339 time"))?;
        if now - signed_at > MAX_MESSAGE_AGE {
            return Err(Refusal::Signature("the message is more than an hour old: a replay"));
        }
        let url = self.allowed_url(&envelope.signing_cert_url).filter(is_certificate_path);
        let url = url.ok_or(Refusal::Signature("the signing certificate URL is not allowed"))?;
        let key = self.public_key(&url).await?;
        verify_signature(&key, envelope)
    }

    /// Confirms a subscription by fetching its `SubscribeURL`, if that is on an allowed host.
    pub async fn confirm(&self, envelope: &Envelope) -> Result<(), Refusal> {
        let url = envelope.subscribe_url.as_deref().and_then(|u| self.allowed_url(u));
        let url = url.ok_or(Refusal::Signature("the SubscribeURL is not allowed"))?;
        // The URL carries the subscription's token: keep it out of the error, which is logged.
        let unreachable = |e: reqwest::Error| Refusal::Unreachable(format!("confirming: {}", e.without_url()));
        let response = self.http.get(url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(Refusal::Unreachable(format!("confirming the subscription answered {}", response.status())));
        }
        Ok(())
    }

    /// The URL if its scheme is allowed (`https`, or `http` when configured) and its host
    /// matches the pattern.
    fn allowed_url(&self, raw: &str) -> Option<Url> {
        let url = Url::parse(raw).ok()?;
        let scheme_ok = url.scheme() == "https" || (self.allow_http && url.scheme() == "http");
        let plain = url.username().is_empty() && url.password().is_none();
        (scheme_ok && plain && url.host_str().is_some_and(|h| self.hosts.is_match(h))).then_some(url)
    }

    /// The certificate's public key, fetched once per host and path (the URL has no query:
    /// [`is_certificate_path`]), once the certificate proved to be SNS's.
    async fn public_key(&self, url: &Url) -> Result<Arc<[u8]>, Refusal> {
        let cache_key = format!("{}{}", url.host_str().unwrap_or_default(), url.path());
        if let Some(key) = self.keys.lock().expect("not poisoned").get(&cache_key) {
            return Ok(key.clone());
        }
        let pem = self.fetch(url).await?;
        let key: Arc<[u8]> = sns_public_key(&pem, &self.cert_issuers).map_err(Refusal::Signature)?.into();
        let mut keys = self.keys.lock().expect("not poisoned");
        if keys.len() >= MAX_CACHED_CERTS {
            keys.clear();
        }
        keys.insert(cache_key, key.clone());
        Ok(key)
    }

    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, Refusal> {
        let unreachable = |e: reqwest::Error| Refusal::Unreachable(format!("fetching the signing certificate: {e}"));
        let response = self.http.get(url.clone()).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(Refusal::Unreachable(format!("the signing certificate answered {}", response.status())));
        }
        if response.content_length().is_some_and(|n| n > MAX_CERT_BYTES as u64) {
            return Err(Refusal::Signature("the signing certificate is too large"));
        }
        let body = response.bytes().await.map_err(unreachable)?;
        if body.len() > MAX_CERT_BYTES {
            return Err(Refusal::Signature("the signing certificate is too large"));
        }
        Ok(body.to_vec())
    }
}

/// The configured host pattern, matched against the whole host whatever its anchors.
fn host_pattern(pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| invalid("receipts.ses.cert_host_pattern", format!("not a regular expression: {e}")))
}

/// Whether the URL's path is SNS's certificate name, `/SimpleNotificationService-<id>.pem`,
/// without a query or fragment (which would make one certificate many).
fn is_certificate_path(url: &Url) -> bool {
    let id = url.path().strip_prefix("/SimpleNotificationService-").and_then(|p| p.strip_suffix(".pem"));
    let id_ok =
        id.is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    id_ok && url.query().is_none() && url.fragment().is_none()
}

/// The RSA public key (PKCS#1 DER) of a PEM certificate that is SNS's: its subject's common
/// name is `sns.amazonaws.com` and its issuer's organization one of `issuers`. The chain
/// is not verified: the certificate came over HTTPS from SNS's own host, and these checks
/// keep any other certificate that host might serve from signing.
fn sns_public_key(pem: &[u8], issuers: &[String]) -> Result<Vec<u8>, &'static str> {
    let cert = Certificate::from_pem(pem).map_err(|_| "the signing certificate is not a PEM X.509 certificate")?;
    let tbs = &cert.tbs_certificate;
    if attribute(&tbs.subject, COMMON_NAME).as_deref() != Some(CERT_SUBJECT) {
        return Err("the signing certificate's subject is not sns.amazonaws.com");
    }
    if !attribute(&tbs.issuer, ORGANIZATION).is_some_and(|o| issuers.contains(&o)) {
        return Err("the signing certificate is not issued by a configured issuer");
    }
    public_key(&cert)
}

/// The RSA public key (PKCS#1 DER) of a certificate.
fn public_key(cert: &Certificate) -> Result<Vec<u8>, &'static str> {
    let key = &cert.tbs_certificate.subject_public_key_info.subject_public_key;
    key.as_bytes().map(<[u8]>::to_vec).ok_or("the signing certificate's key is malformed")
}

/// The first value of the attribute `oid` in `name`, as text.
fn attribute(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    let value = &name.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == oid)?.value;
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.to_string())
        .or_else(|_| value.decode_as::<PrintableStringRef<'_>>().map(|s| s.to_string()))
        .or_else(|_| value.decode_as::<Ia5StringRef<'_>>().map(|s| s.to_string()))
        .ok()
}

/// Checks the envelope's signature with the certificate's RSA key.
pub fn verify_signature(public_key: &[u8], envelope: &Envelope) -> Result<(), Refusal> {
    let algorithm = match envelope.signature_version.as_str() {
        "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(Refusal::Signature("unknown SignatureVersion")),
    };
    let signed = envelope.string_to_sign().ok_or(Refusal::Signature("unknown message Type"))?;
    let sig =
        BASE64.decode(envelope.signature.trim()).map_err(|_| Refusal::Signature("the Signature is not base64"))?;
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| Refusal::Signature("the signature does not match"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and a SubscriptionConfirmation signed with its key, once
    /// per SignatureVersion (made with openssl: `fixtures/sns/README.md`).
    const CERT: &[u8] = include_bytes!("../../fixtures/sns/test-cert.pem");
    /// Certificates issued by a self-made "Amazon RSA 2048 M01" (O=Amazon), as AWS's are:
    /// one for `sns.amazonaws.com`, one for another subject.
    const AMAZON_ISSUED: &[u8] = include_bytes!("../../fixtures/sns/amazon-issued.pem");
    const OTHER_SUBJECT: &[u8] = include_bytes!("../../fixtures/sns/other-subject.pem");
    const CONFIRMATION_V1: &str = include_str!("../../fixtures/sns/confirmation-v1.json");
    const CONFIRMATION_V2: &str = include_str!("../../fixtures/sns/confirmation-v2.json");

    fn configured(pattern: &str, allow_http: bool) -> Result<Sns, ConfigError> {
        Sns::new(&SesReceipts {
            cert_host_pattern: pattern.into(),
            allow_http_certs: allow_http,
            topic_arns: vec!["arn:aws:sns:us-east-1:123456789012:ses-events".into()],
            cert_issuers: vec!["Amazon".into()],
        })
    }

    fn aws() -> Sns {
        configured(crate::config::DEFAULT_CERT_HOST_PATTERN, false).unwrap()
    }

    #[test]
    fn notifications_sign_their_fields_in_order_and_subject_only_when_present() {
        let mut envelope: Envelope = serde_json::from_value(serde_json::json!({
            "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:t", "Message": "{\"a\":1}",
            "Timestamp": "2026-11-25T20:50:24.106Z", "SignatureVersion": "2", "Signature": "",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem", "UnsubscribeURL": "https://x",
            "Token": "ignored for notifications"}))
        .unwrap();
        assert_eq!(
            envelope.string_to_sign().unwrap(),
            "Message\n{\"a\":1}\nMessageId\nm-1\nTimestamp\n2026-11-25T20:50:24.106Z\nTopicArn\narn:t\nType\nNotification\n"
        );
        envelope.subject = Some("s".into());
        assert!(
            envelope.string_to_sign().unwrap().starts_with("Message\n{\"a\":1}\nMessageId\nm-1\nSubject\ns\nTimestamp")
        );
        envelope.kind = "Other".into();
        assert!(envelope.string_to_sign().is_none());
    }

    #[test]
    fn confirmations_sign_subscribe_url_and_token() {
        let envelope: Envelope = serde_json::from_str(CONFIRMATION_V2).unwrap();
        let signed = envelope.string_to_sign().unwrap();
        let expected = [
            ("Message", &envelope.message),
            ("MessageId", &envelope.message_id),
            ("SubscribeURL", envelope.subscribe_url.as_ref().unwrap()),
            ("Timestamp", &envelope.timestamp),
            ("Token", envelope.token.as_ref().unwrap()),
            ("TopicArn", &envelope.topic_arn),
            ("Type", &envelope.kind),
        ]
        .map(|(key, value)| format!("{key}\n{value}\n"))
        .concat();
        assert_eq!(signed, expected);
    }

    #[test]
    fn signatures_of_both_versions_verify_and_tampering_is_caught() {
        let key = public_key(&Certificate::from_pem(CERT).unwrap()).unwrap();
        for fixture in [CONFIRMATION_V1, CONFIRMATION_V2] {
            let envelope: Envelope = serde_json::from_str(fixture).unwrap();
            assert!(verify_signature(&key, &envelope).is_ok(), "{fixture}");
            let mut tampered = envelope.clone();
            tampered.subscribe_url =
                Some("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x".into());
            assert!(verify_signature(&key, &tampered).is_err());
            let mut other_version = envelope.clone();
            other_version.signature_version = if envelope.signature_version == "1" { "2" } else { "1" }.into();
            assert!(verify_signature(&key, &other_version).is_err());
            let mut unknown = envelope;
            unknown.signature_version = "3".into();
            assert!(verify_signature(&key, &unknown).is_err());
        }
        let amazon = ["Amazon".to_owned()];
        assert!(sns_public_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &amazon).is_err());
    }

    #[test]
    fn only_sns_certificates_issued_by_amazon_are_taken() {
        let amazon = ["Amazon".to_owned()];
        assert!(sns_public_key(AMAZON_ISSUED, &amazon).is_ok());
        // Self-signed: the subject is right, the issuer is not Amazon.
        assert_eq!(sns_public_key(CERT, &amazon), Err("the signing certificate is not issued by a configured issuer"));
        assert_eq!(
            sns_public_key(OTHER_SUBJECT, &amazon),
            Err("the signing certificate's subject is not sns.amazonaws.com")
        );
        assert!(sns_public_key(AMAZON_ISSUED, &["DigiCert Inc".to_owned()]).is_err());
    }

    #[test]
    fn certificate_urls_must_be_https_on_an_sns_host_and_its_certificate_path() {
        let sns = aws();
        let ok = |u: &str| sns.allowed_url(u).filter(is_certificate_path).is_some();
        assert!(ok("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        assert!(ok("https://sns.eu-central-2.amazonaws.com/SimpleNotificationService-01ab_c-d.pem"));
        assert!(ok("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"));
        assert!(ok("https://sns.cn-northwest-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"));
        assert!(ok("https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        for bad in [
            // S3 virtual-hosted buckets named like SNS hosts.
            "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.s3-website-us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.US-EAST-1.amazonaws.com.evil/SimpleNotificationService-abc.pem",
            // Not SNS's certificate path, or one path made many by a query.
            "https://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/bucket/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a%2Fb.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#x",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://xsns.us-east-1.amazonaws.com/x.pem",
            "https://sns.a.amazonaws.com/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn subscribe_urls_are_fetched_only_from_allowed_hosts() {
        let sns = aws();
        assert!(sns.allowed_url("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=t").is_some());
        assert!(sns.allowed_url("http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription").is_none());
        assert!(sns.allowed_url("https://169.254.169.254/latest/meta-data/").is_none());
        let local = configured(r"127\.0\.0\.1", true).unwrap();
        assert!(local.allowed_url("http://127.0.0.1:5076/?Action=ConfirmSubscription").is_some());
        assert!(local.allowed_url("http://127.0.0.10/").is_none(), "the pattern matches the whole host");
    }

    #[test]
    fn http_is_refused_with_a_pattern_that_admits_aws() {
        assert!(configured(crate::config::DEFAULT_CERT_HOST_PATTERN, true).is_err());
        assert!(configured(r".*", true).is_err());
        assert!(configured(r"^127\.0\.0\.1$", true).is_ok());
        assert!(configured(r"(", false).is_err());
    }

    /// The fixture, signed with [`CERT`]'s key, naming `cert_url`; its key cached under the
    /// host and path of `cached`, so nothing is fetched.
    fn cached(cached: &str, cert_url: &str) -> (Sns, Envelope) {
        let sns = aws();
        let key = public_key(&Certificate::from_pem(CERT).unwrap()).unwrap();
        let url = Url::parse(cached).unwrap();
        let cache_key = format!("{}{}", url.host_str().unwrap(), url.path());
        sns.keys.lock().unwrap().insert(cache_key, key.into());
        let mut envelope: Envelope = serde_json::from_str(CONFIRMATION_V2).unwrap();
        envelope.signing_cert_url = cert_url.into();
        (sns, envelope)
    }

    #[tokio::test]
    async fn a_message_older_than_an_hour_is_a_replay() {
        const URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
        let (sns, envelope) = cached(URL, URL);
        let signed_at = OffsetDateTime::parse(&envelope.timestamp, &Rfc3339).unwrap();
        assert!(sns.verify_at(&envelope, true, signed_at + time::Duration::minutes(59)).await.is_ok());
        match sns.verify_at(&envelope, true, signed_at + time::Duration::minutes(61)).await {
            Err(Refusal::Signature(why)) => assert!(why.contains("an hour"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut unreadable = envelope.clone();
        unreadable.timestamp = "yesterday".into();
        assert!(matches!(sns.verify_at(&unreadable, true, signed_at).await, Err(Refusal::Signature(_))));
    }

    #[tokio::test]
    async fn certificates_are_cached_by_host_and_path() {
        const URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
        let (sns, envelope) = cached(URL, URL);
        let signed_at = OffsetDateTime::parse(&envelope.timestamp, &Rfc3339).unwrap();
        assert!(sns.verify_at(&envelope, true, signed_at).await.is_ok());
        assert_eq!(sns.keys.lock().unwrap().len(), 1);
        // A query would make one certificate many cache entries (and fetches): refused.
        let (sns, envelope) = cached(URL, &format!("{URL}?v=2"));
        assert!(matches!(sns.verify_at(&envelope, true, signed_at).await, Err(Refusal::Signature(_))));
        assert_eq!(sns.keys.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn topics_off_the_allow_list_are_refused_before_anything_is_fetched() {
        let mut envelope: Envelope = serde_json::from_str(CONFIRMATION_V2).unwrap();
        envelope.topic_arn = "arn:aws:sns:us-east-1:123456789012:other".into();
        assert!(matches!(aws().verify(&envelope).await, Err(Refusal::Signature(_))));
        let mut envelope: Envelope = serde_json::from_str(CONFIRMATION_V2).unwrap();
        envelope.signing_cert_url = "https://evil.example/cert.pem".into();
        assert!(matches!(aws().verify(&envelope).await, Err(Refusal::Signature(_))));
    }
}
