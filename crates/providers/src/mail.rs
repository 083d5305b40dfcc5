//! What the SES and SMTP providers share: checking the configured addresses, the
//! unsubscribe headers, and keeping the recipient's address out of the attempt log.

use bootstrap::ConfigError;
use domain::{DeliveryJob, FailureKind, SendFailure};
use lettre::message::Mailbox;

use crate::settings::Section;

/// A configured mailbox, `noreply@example.com` or `Notify <noreply@example.com>`.
pub(crate) fn mailbox(value: &str, section: &Section, key: &str) -> Result<Mailbox, ConfigError> {
    value.parse().map_err(|e| section.invalid(key, format!("not an address like `Notify <noreply@example.com>`: {e}")))
}

/// Where a recipient unsubscribes: the `List-Unsubscribe` header (RFC 2369), plus
/// `List-Unsubscribe-Post` for one-click unsubscription (RFC 8058) when it is an https URL.
#[derive(Clone, Debug)]
pub(crate) struct ListUnsubscribe {
    template: String,
    one_click: bool,
}

/// Replaced by the delivery's id in the URL, so that a one-click POST (which carries no
/// other identification) tells which recipient and notification it is about.
const DELIVERY_ID: &str = "{delivery_id}";

impl ListUnsubscribe {
    pub(crate) fn parse(value: &str, section: &Section) -> Result<Self, ConfigError> {
        let value = value.trim();
        let scheme_ok = ["https://", "http://", "mailto:"].iter().any(|s| value.starts_with(s));
        // Header-safe: printable ASCII without the characters that delimit the header's
        // `<uri>, <uri>` list.
        let chars_ok = value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b','));
        if !scheme_ok || !chars_ok {
            return Err(section.invalid(
                "list_unsubscribe",
                "must be an https, http or mailto URL in printable ASCII without `<`, `>` or `,`",
            ));
        }
        Ok(Self { template: value.to_owned(), one_click: value.starts_with("https://") })
    }

    /// The headers for `job`, as (name, value).
    pub(crate) fn headers(&self, job: &DeliveryJob) -> Vec<(&'static str, String)> {
        let uri = self.template.replace(DELIVERY_ID, &job.delivery_id.to_string());
        let mut headers = vec![("List-Unsubscribe", format!("<{uri}>"))];
        if self.one_click {
            headers.push(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()));
        }
        headers
    }
}

/// The parts of the content an email needs: a subject and a text or HTML body or both.
pub(crate) struct EmailParts<'a> {
    pub subject: &'a str,
    pub body: EmailBody<'a>,
}

pub(crate) enum EmailBody<'a> {
    Text(&'a str),
    Html(&'a str),
    /// Both, sent as multipart/alternative: clients show the HTML, or the text without it.
    Alternative {
        text: &'a str,
        html: &'a str,
    },
}

impl EmailBody<'_> {
    pub(crate) fn text(&self) -> Option<&str> {
        match *self {
            EmailBody::Text(text) | EmailBody::Alternative { text, .. } => Some(text),
            EmailBody::Html(_) => None,
        }
    }

    pub(crate) fn html(&self) -> Option<&str> {
        match *self {
            EmailBody::Html(html) | EmailBody::Alternative { html, .. } => Some(html),
            EmailBody::Text(_) => None,
        }
    }
}

impl<'a> EmailParts<'a> {
    /// The API refuses email without them, so a missing part is a malformed job: retrying
    /// cannot help.
    pub(crate) fn of(job: &'a DeliveryJob) -> Result<Self, SendFailure> {
        let invalid = |message| SendFailure::new(FailureKind::Permanent, "content_invalid", message);
        let present = |s: &'a Option<String>| s.as_deref().filter(|s| !s.is_empty());
        let c = &job.content;
        let subject = present(&c.subject).ok_or_else(|| invalid("an email needs a subject"))?;
        let body = match (present(&c.text), present(&c.html)) {
            (Some(text), Some(html)) => EmailBody::Alternative { text, html },
            (Some(text), None) => EmailBody::Text(text),
            (None, Some(html)) => EmailBody::Html(html),
            (None, None) => return Err(invalid("an email needs a text or html body")),
        };
        Ok(Self { subject, body })
    }
}

/// `text` with every occurrence of the recipient's address replaced, ignoring ASCII case:
/// providers quote it in their error messages, and the attempt log must not hold it.
pub(crate) fn redact(text: &str, recipient: &str) -> String {
    if recipient.is_empty() {
        return text.to_owned();
    }
    // ASCII lowercasing keeps every byte offset, so matches in the lowered copy are
    // positions in `text`.
    let (lower_text, lower_recipient) = (text.to_ascii_lowercase(), recipient.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower_text.match_indices(&lower_recipient) {
        out.push_str(&text[rest..at]);
        out.push_str("<recipient>");
        rest = at + recipient.len();
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use domain::{Channel, Content, Priority};
    use uuid::Uuid;

    use super::*;

    fn ses() -> Section {
        Section::Config("email.ses".into())
    }

    pub(crate) fn job(recipient: &str, content: Content) -> DeliveryJob {
        DeliveryJob {
            delivery_id: Uuid::now_v7(),
            notification_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            channel: Channel::Email,
            attempt: 1,
            retry_base: 0,
            recipient: recipient.into(),
            kind: "test".into(),
            priority: Priority::Normal,
            content,
            data: Default::default(),
            workflow: None,
            retry: None,
            device: None,
        }
    }

    fn content(subject: Option<&str>, text: Option<&str>, html: Option<&str>) -> Content {
        Content {
            subject: subject.map(Into::into),
            text: text.map(Into::into),
            html: html.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_recipient_is_redacted_whatever_its_case() {
        let text = "Address User@Example.org rejected; user@example.org unknown";
        assert_eq!(redact(text, "user@example.org"), "Address <recipient> rejected; <recipient> unknown");
        assert_eq!(redact("nothing here", "user@example.org"), "nothing here");
        assert_eq!(redact("x", ""), "x");
    }

    #[test]
    fn https_unsubscribe_urls_get_one_click_and_the_delivery_id() {
        let job = job("a@example.org", Content::default());
        let https = ListUnsubscribe::parse("https://example.com/u/{delivery_id}", &ses()).unwrap();
        assert_eq!(
            https.headers(&job),
            vec![
                ("List-Unsubscribe", format!("<https://example.com/u/{}>", job.delivery_id)),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()),
            ]
        );
        let mailto = ListUnsubscribe::parse("mailto:unsubscribe@example.com", &ses()).unwrap();
        assert_eq!(mailto.headers(&job), vec![("List-Unsubscribe", "<mailto:unsubscribe@example.com>".to_owned())]);
        for bad in ["example.com/u", "https://a b", "https://x>, <https://y", "ftp://x"] {
            let err = ListUnsubscribe::parse(bad, &ses()).unwrap_err().to_string();
            assert!(err.contains("email.ses.list_unsubscribe"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_email_needs_a_subject_and_a_body() {
        let ok = job("a@example.org", content(Some("s"), None, Some("<p>h</p>")));
        let parts = EmailParts::of(&ok).unwrap();
        assert_eq!((parts.subject, parts.body.text(), parts.body.html()), ("s", None, Some("<p>h</p>")));
        for c in [content(None, Some("t"), None), content(Some("s"), None, None), content(Some("s"), Some(""), None)] {
            let failure = EmailParts::of(&job("a@example.org", c)).err().unwrap();
            assert_eq!((failure.kind, failure.code.as_str()), (FailureKind::Permanent, "content_invalid"));
        }
    }
}
