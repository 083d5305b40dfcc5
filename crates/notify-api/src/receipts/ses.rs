//! SES events (docs/providers.md §9.2), the JSON string in an SNS
//! notification's `Message`.

use domain::{Channel, DeliveryStatus};
use serde::Deserialize;
use store::{Receipt, Suppression, SuppressionReason};

/// The provider name the email worker records on a delivery sent through SES.
pub const PROVIDER: &str = "ses";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    /// Configuration-set events say `eventType`; identity notifications `notificationType`.
    #[serde(alias = "notificationType")]
    event_type: String,
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    message_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    bounce_sub_type: Option<String>,
    #[serde(default)]
    bounced_recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: String,
    diagnostic_code: Option<String>,
}

/// What an SES event reports, if anything:
/// - `Delivery`: delivered.
/// - `Bounce`, `Permanent`: bounced (a delivered message too: the receiving server may
///   bounce after accepting), and each bounced address is suppressed. A `Transient` or
///   `Undetermined` bounce changes nothing: SES has retried already, and the address may
///   work tomorrow.
/// - `Complaint`: each complained address is suppressed. The complaint proves the message
///   arrived, so a delivery still `sent` becomes `delivered`; any other status stays.
/// - Anything else (`Send`, `DeliveryDelay`, `Open`, ...) changes nothing.
pub fn receipt(message: &str) -> Result<Option<Receipt>, serde_json::Error> {
    let event: Event = serde_json::from_str(message)?;
    let receipt = |status, error_code, error_message, suppress| Receipt {
        provider: PROVIDER,
        provider_message_id: event.mail.message_id.clone(),
        tenant_id: None,
        status: Some(status),
        error_code,
        error_message,
        suppress,
    };
    Ok(match (event.event_type.as_str(), &event.bounce, &event.complaint) {
        ("Delivery", _, _) => Some(receipt(DeliveryStatus::Delivered, None, None, None)),
        ("Bounce", Some(bounce), _) if bounce.bounce_type == "Permanent" => {
            let diagnostic = bounce.bounced_recipients.iter().find_map(|r| r.diagnostic_code.clone());
            let sub_type = bounce.bounce_sub_type.clone().unwrap_or_else(|| "Permanent".into());
            let suppress = suppression(SuppressionReason::Bounce, &bounce.bounced_recipients);
            Some(receipt(DeliveryStatus::Bounced, Some(sub_type), diagnostic, Some(suppress)))
        }
        ("Complaint", _, Some(complaint)) => {
            let suppress = suppression(SuppressionReason::Complaint, &complaint.complained_recipients);
            Some(receipt(DeliveryStatus::Delivered, None, None, Some(suppress)))
        }
        _ => None,
    })
}

fn suppression(reason: SuppressionReason, recipients: &[Recipient]) -> Suppression {
    Suppression {
        channel: Channel::Email,
        reason,
        addresses: recipients.iter().map(|r| r.email_address.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(value: serde_json::Value) -> Option<Receipt> {
        receipt(&value.to_string()).unwrap()
    }

    fn mail() -> serde_json::Value {
        json!({"timestamp": "2026-11-25T10:00:00.000Z", "messageId": "0100-ses-1", "source": "noreply@example.com",
               "destination": ["ada@example.com"], "tags": {"nid": ["n-1"]}})
    }

    #[test]
    fn a_delivery_is_delivered() {
        let r =
            event(json!({"eventType": "Delivery", "mail": mail(), "delivery": {"recipients": ["ada@example.com"]}}))
                .unwrap();
        assert_eq!(
            (r.provider, r.provider_message_id.as_str(), r.status),
            ("ses", "0100-ses-1", Some(DeliveryStatus::Delivered))
        );
        assert!(r.suppress.is_none());
    }

    #[test]
    fn a_permanent_bounce_bounces_and_suppresses_each_address() {
        let r = event(json!({"eventType": "Bounce", "mail": mail(), "bounce": {
            "bounceType": "Permanent", "bounceSubType": "NoEmail", "feedbackId": "f",
            "bouncedRecipients": [{"emailAddress": "ada@example.com", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
                                  {"emailAddress": "bob@example.com"}]}}))
        .unwrap();
        assert_eq!(r.status, Some(DeliveryStatus::Bounced));
        assert_eq!(r.error_code.as_deref(), Some("NoEmail"));
        assert_eq!(r.error_message.as_deref(), Some("smtp; 550 5.1.1 user unknown"));
        let s = r.suppress.unwrap();
        assert_eq!((s.channel, s.reason), (Channel::Email, SuppressionReason::Bounce));
        assert_eq!(s.addresses, ["ada@example.com", "bob@example.com"]);
    }

    #[test]
    fn transient_and_undetermined_bounces_change_nothing() {
        for kind in ["Transient", "Undetermined"] {
            let bounce = json!({"bounceType": kind, "bounceSubType": "MailboxFull",
                                "bouncedRecipients": [{"emailAddress": "ada@example.com"}]});
            assert!(event(json!({"eventType": "Bounce", "mail": mail(), "bounce": bounce})).is_none(), "{kind}");
        }
    }

    #[test]
    fn a_complaint_suppresses_and_proves_delivery() {
        let r = event(json!({"notificationType": "Complaint", "mail": mail(), "complaint": {
            "complainedRecipients": [{"emailAddress": "ada@example.com"}], "complaintFeedbackType": "abuse"}}))
        .unwrap();
        assert_eq!(r.status, Some(DeliveryStatus::Delivered));
        let s = r.suppress.unwrap();
        assert_eq!(
            (s.reason, s.addresses.as_slice()),
            (SuppressionReason::Complaint, ["ada@example.com".to_owned()].as_slice())
        );
    }

    #[test]
    fn other_events_change_nothing_and_garbage_is_an_error() {
        for kind in ["Send", "DeliveryDelay", "Open", "Click", "Reject"] {
            assert!(event(json!({"eventType": kind, "mail": mail()})).is_none(), "{kind}");
        }
        assert!(receipt("not json").is_err());
        assert!(receipt(r#"{"eventType": "Delivery"}"#).is_err());
    }
}
