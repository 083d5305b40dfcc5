//! Working out a notification's deliveries from what the tenant has stored: its type
//! (channels, `critical`, Novu workflow, retry override), its recipients (subscribers by
//! id, members of topics), their preferences and quiet hours, and the content of each
//! delivery (inline, or rendered from the type's templates in the best locale).
//!
//! Pure: the store loads a [`Directory`] for a whole batch in a few statements, and this
//! module decides.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    Channel, Content, FieldError, Priority, RetryPolicy, ValidNotification, locale,
    notification_type::NotificationType,
    request::{Recipient, check_content},
    subscriber::{Preferences, Subscriber},
    template::{RenderError, Template},
};

/// Deliveries one request (a notification, or a whole batch) may fan out to, topics
/// included; also the topic members it may name.
pub const MAX_DELIVERIES: usize = 50_000;
/// Content one request may render for its deliveries in all (each delivery stores its own).
pub const MAX_RENDERED_BYTES: usize = 64 * 1024 * 1024;

/// What a request may still fan out to. The items of a batch share one, in order: an item
/// that does not fit is refused (on `to`) and costs nothing; the ones before it stand.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Topic members still to be named, counted before any member is loaded.
    pub members: usize,
    pub deliveries: usize,
    pub rendered_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self { members: MAX_DELIVERIES, deliveries: MAX_DELIVERIES, rendered_bytes: MAX_RENDERED_BYTES }
    }
}

impl Budget {
    /// Takes the members of the topics `n` names (`sizes`: members per topic, as counted in
    /// the database), or refuses `n` on `to` when they do not fit: then its topics need not be
    /// loaded, let alone rendered for. A member of two topics named counts twice.
    pub fn take_members(
        &mut self,
        n: &ValidNotification,
        sizes: &HashMap<String, usize>,
    ) -> Result<(), Vec<FieldError>> {
        let members = n.topics().map(|t| sizes.get(t).copied().unwrap_or(0)).fold(0, usize::saturating_add);
        if members > self.members {
            let first = self.members == MAX_DELIVERIES;
            return Err(vec![FieldError::new("to", over(first, &format!("{MAX_DELIVERIES} topic members")))]);
        }
        self.members -= members;
        Ok(())
    }
}

/// Why an item does not fit: alone, or after the items before it took their share.
fn over(first: bool, limit: &str) -> String {
    if first {
        format!("fans out to more than {limit}, the most one request may")
    } else {
        format!(
            "fans out to more than this request has left of {limit} after its earlier items; send it in another request"
        )
    }
}

/// What the tenant has stored that a batch of notifications refers to.
#[derive(Default)]
pub struct Directory {
    pub default_locale: String,
    /// Whether a notification may name a type the tenant has not defined.
    pub adhoc_types: bool,
    pub types: HashMap<String, NotificationType>,
    /// Compiled templates by (type, channel, locale).
    pub templates: HashMap<(String, Channel, String), Template>,
    pub subscribers: HashMap<String, Listed>,
    /// Each topic's member ids, in a stable order.
    pub topics: HashMap<String, Vec<String>>,
}

/// A stored subscriber with its preferences.
#[derive(Clone, Debug)]
pub struct Listed {
    pub subscriber: Subscriber,
    pub preferences: Preferences,
}

/// What a notification makes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub deliveries: Vec<PlannedDelivery>,
    /// The type's Novu workflow key, when it differs from the type's key.
    pub workflow: Option<String>,
    /// The type's retry policy, overriding the channel's.
    pub retry: Option<RetryPolicy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedDelivery {
    pub channel: Channel,
    /// The address (or Novu subscriber id) on that channel; empty when the subscriber has
    /// none (the delivery is then skipped with [`Skip::NoAddress`]).
    pub recipient: String,
    pub subscriber_id: Option<String>,
    /// Rendered from a template; `None`: the notification's inline content (or Novu's
    /// workflow, which renders its own).
    pub content: Option<Content>,
    /// The template locale the content was rendered in.
    pub locale: Option<String>,
    /// Written `suppressed` with this reason and never sent.
    pub skip: Option<Skip>,
    /// Deferred by the subscriber's quiet hours to this instant.
    pub not_before: Option<OffsetDateTime>,
}

/// Why a delivery is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The subscriber's preferences (or the type's default) rule the channel out.
    OptedOut,
    /// The subscriber has no address on the channel.
    NoAddress,
}

impl Skip {
    /// Stored in the delivery's `last_error_code`.
    pub fn code(self) -> &'static str {
        match self {
            Skip::OptedOut => "opted_out",
            Skip::NoAddress => "no_address",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Skip::OptedOut => "the subscriber's preferences exclude this channel for this type",
            Skip::NoAddress => "the subscriber has no address on this channel",
        }
    }
}

/// One recipient once ids and topics are resolved.
struct Resolved<'a> {
    listed: Option<&'a Listed>,
    /// The subscriber id: a stored subscriber's, or one given inline (Novu's).
    id: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    whatsapp: Option<&'a str>,
}

impl<'a> Resolved<'a> {
    /// A stored subscriber, with the addresses given inline (if any) taking precedence.
    fn listed(listed: &'a Listed, inline: Option<&'a Recipient>) -> Self {
        let s = &listed.subscriber;
        let pick = |inline: Option<&'a str>, stored: &'a Option<String>| inline.or(stored.as_deref());
        Self {
            listed: Some(listed),
            id: Some(&s.id),
            email: pick(inline.and_then(|r| r.email.as_deref()), &s.email),
            phone: pick(inline.and_then(|r| r.phone.as_deref()), &s.phone),
            whatsapp: pick(inline.and_then(|r| r.whatsapp.as_deref()), &s.whatsapp),
        }
    }

    fn inline(r: &'a Recipient) -> Self {
        Self {
            listed: None,
            id: r.subscriber_id.as_deref(),
            email: r.email.as_deref(),
            phone: r.phone.as_deref(),
            whatsapp: r.whatsapp.as_deref(),
        }
    }

    fn address(&self, channel: Channel) -> Option<&'a str> {
        match channel {
            Channel::Email => self.email,
            Channel::Sms => self.phone,
            Channel::Whatsapp => self.whatsapp,
            Channel::Novu | Channel::InApp => self.id,
        }
    }
}

/// The deliveries of `n`, or every reason it cannot be accepted.
pub fn plan(n: &ValidNotification, dir: &Directory, now: OffsetDateTime) -> Result<Plan, Vec<FieldError>> {
    plan_within(n, dir, now, &mut Budget::default())
}

/// [`plan`], within what is left of the request's `budget`, which an accepted plan takes
/// from. Stops at the first delivery or byte over it: the rest is neither planned nor
/// rendered.
pub fn plan_within(
    n: &ValidNotification,
    dir: &Directory,
    now: OffsetDateTime,
    budget: &mut Budget,
) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Errors::default();
    let kind = dir.types.get(&n.kind);
    if kind.is_none() && !dir.adhoc_types {
        errors.push("type", format!("no notification type `{}`; define it with PUT /v1/types/{}", n.kind, n.kind));
        return Err(errors.0);
    }

    let (recipients, unknown) = resolve(n, dir);
    let channels: Vec<Channel> = match (&n.channels, kind) {
        (Some(asked), _) => asked.clone(),
        (None, Some(t)) => t.channels.clone(),
        // The inbox is asked for, not implied by a subscriber id (which already means Novu).
        (None, None) => {
            Channel::QUEUED.into_iter().filter(|c| recipients.iter().any(|r| r.address(*c).is_some())).collect()
        }
    };
    // An id that names no subscriber is still a Novu subscriber id; on other channels it
    // has no address, which is almost certainly a mistake.
    if !channels.contains(&Channel::Novu) {
        for i in unknown {
            errors.push(format!("to[{i}].subscriber_id"), "no subscriber with this id");
        }
    }
    match (&n.content, kind) {
        (Some(content), _) if n.channels.is_none() => {
            let mut found = Vec::new();
            for channel in &channels {
                check_content(*channel, content, "content", &mut found);
            }
            errors.extend(found);
        }
        // Novu renders in its own workflow; every other channel needs content.
        (None, None) if channels.iter().any(|c| *c != Channel::Novu) => {
            errors.push("content", format!("type `{}` is not defined, so inline content is required", n.kind))
        }
        _ => {}
    }

    let critical = kind.is_some_and(|t| t.critical);
    let category = kind.and_then(|t| t.category.as_deref());
    let start = n.send_at.filter(|at| *at > now).unwrap_or(now);
    let mut renderer = Renderer::new(n, dir);
    let mut deliveries = Vec::new();
    let mut rendered_bytes = 0usize;
    let mut seen: HashSet<(Channel, &str)> = HashSet::new();
    'fan_out: for &channel in &channels {
        let type_default = kind.and_then(|t| t.preferences.get(&channel).copied());
        for r in &recipients {
            let address = r.address(channel);
            let mut delivery = PlannedDelivery {
                channel,
                recipient: address.unwrap_or_default().to_owned(),
                subscriber_id: r.id.map(str::to_owned),
                content: None,
                locale: None,
                skip: None,
                not_before: None,
            };
            match (address, r.listed) {
                (None, None) => continue,
                (None, Some(_)) => delivery.skip = Some(Skip::NoAddress),
                (Some(address), _) if !seen.insert((channel, address)) => continue,
                (Some(_), Some(listed)) if !critical => {
                    let prefs = &listed.preferences;
                    if !prefs.allows(&n.kind, category, channel, type_default) {
                        delivery.skip = Some(Skip::OptedOut);
                    } else if n.priority != Priority::Urgent && channel.is_queued() {
                        // An inbox item interrupts nobody: quiet hours defer the channels that do.
                        delivery.not_before = prefs
                            .quiet_hours
                            .as_ref()
                            .and_then(|q| q.defer(listed.subscriber.timezone.as_deref(), start));
                    }
                }
                (Some(_), _) => {}
            }
            if deliveries.len() == budget.deliveries {
                let first = budget.deliveries == MAX_DELIVERIES;
                errors.push("to", over(first, &format!("{MAX_DELIVERIES} deliveries")));
                break 'fan_out;
            }
            if delivery.skip.is_none() && n.content.is_none() && channel != Channel::Novu {
                match renderer.render(channel, r.listed) {
                    Ok((content, locale)) => {
                        rendered_bytes = rendered_bytes.saturating_add(content_bytes(&content));
                        if rendered_bytes > budget.rendered_bytes {
                            let first = budget.rendered_bytes == MAX_RENDERED_BYTES;
                            let limit = format!("{} MiB of rendered content", MAX_RENDERED_BYTES >> 20);
                            errors.push("to", over(first, &limit));
                            break 'fan_out;
                        }
                        delivery.content = Some(content);
                        delivery.locale = Some(locale);
                    }
                    Err(found) => errors.extend(found),
                }
            }
            deliveries.push(delivery);
        }
    }

    if deliveries.is_empty() && errors.0.is_empty() {
        errors.push("to", "no recipient has an address for any of the requested channels");
    }
    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    budget.deliveries -= deliveries.len();
    budget.rendered_bytes -= rendered_bytes;
    Ok(Plan {
        deliveries,
        workflow: kind.and_then(|t| t.novu_workflow.clone()),
        retry: kind.and_then(|t| t.retry.clone()),
    })
}

/// The recipients of `n`, each subscriber once whether named by id or through topics, and
/// the indexes of `to` entries whose id names no stored subscriber.
fn resolve<'a>(n: &'a ValidNotification, dir: &'a Directory) -> (Vec<Resolved<'a>>, Vec<usize>) {
    let mut recipients = Vec::new();
    let mut unknown = Vec::new();
    let mut listed_seen: HashSet<&str> = HashSet::new();
    for (i, r) in n.to.iter().enumerate() {
        if let Some(topic) = &r.topic {
            for id in dir.topics.get(topic).into_iter().flatten() {
                if let Some(listed) = dir.subscribers.get(id)
                    && listed_seen.insert(id)
                {
                    recipients.push(Resolved::listed(listed, None));
                }
            }
            continue;
        }
        match r.subscriber_id.as_deref().and_then(|id| dir.subscribers.get_key_value(id)) {
            Some((id, listed)) => {
                if listed_seen.insert(id) {
                    recipients.push(Resolved::listed(listed, Some(r)));
                }
            }
            None => {
                if r.subscriber_id.is_some() && !r.has_inline_address() {
                    unknown.push(i);
                }
                recipients.push(Resolved::inline(r));
            }
        }
    }
    (recipients, unknown)
}

/// Renders the type's templates, once per channel and locale unless a template refers to
/// the subscriber.
struct Renderer<'a> {
    n: &'a ValidNotification,
    dir: &'a Directory,
    context: Value,
    /// Renders that do not depend on the subscriber, by (channel, locale).
    shared: HashMap<(Channel, String), Result<Content, Vec<FieldError>>>,
}

impl<'a> Renderer<'a> {
    fn new(n: &'a ValidNotification, dir: &'a Directory) -> Self {
        Self { n, dir, context: Value::Object(n.data.clone()), shared: HashMap::new() }
    }

    fn render(&mut self, channel: Channel, listed: Option<&Listed>) -> Result<(Content, String), Vec<FieldError>> {
        let subscriber_locale = listed.and_then(|l| l.subscriber.locale.as_deref());
        let chain = locale::fallback_chain(subscriber_locale, &self.dir.default_locale);
        let found = chain
            .iter()
            .find_map(|l| self.dir.templates.get(&(self.n.kind.clone(), channel, l.clone())).map(|t| (t, l.clone())));
        let Some((template, locale)) = found else {
            return Err(vec![FieldError::new(
                "type",
                format!(
                    "type `{}` has no {channel} template in {} and the notification has no inline content",
                    self.n.kind,
                    chain.join(", ")
                ),
            )]);
        };
        if !template.uses_subscriber() {
            let key = (channel, locale.clone());
            if !self.shared.contains_key(&key) {
                let rendered = render_checked(template, channel, &locale, &self.context);
                self.shared.insert(key.clone(), rendered);
            }
            return self.shared[&key].clone().map(|c| (c, locale));
        }
        let mut context = self.context.clone();
        if let (Value::Object(map), Some(listed)) = (&mut context, listed) {
            map.insert("subscriber".into(), serde_json::to_value(&listed.subscriber).unwrap_or(Value::Null));
        }
        render_checked(template, channel, &locale, &context).map(|c| (c, locale))
    }
}

/// The bytes of a delivery's content, as its deliveries row will hold them (about).
fn content_bytes(c: &Content) -> usize {
    [&c.subject, &c.text, &c.html, &c.title, &c.body, &c.action_url]
        .iter()
        .filter_map(|f| f.as_ref())
        .map(String::len)
        .sum()
}

/// Renders and checks the result is sendable on `channel` (an SMS within its length).
fn render_checked(
    template: &Template,
    channel: Channel,
    locale: &str,
    context: &Value,
) -> Result<Content, Vec<FieldError>> {
    let content = template.render(context).map_err(|e| {
        vec![match e {
            RenderError::MissingVariable { field, variable } => FieldError::new(
                format!("data.{variable}"),
                format!(
                    "the {channel} template ({locale}) uses `{variable}` in its {field}, and data has no such value"
                ),
            ),
            RenderError::Failed { field, message } => {
                FieldError::new("data", format!("the {channel} template ({locale}) failed in its {field}: {message}"))
            }
        }]
    })?;
    let mut errors = Vec::new();
    check_content(channel, &content, "content", &mut errors);
    for e in &mut errors {
        e.message = format!("rendered from the {channel} template ({locale}): {}", e.message);
    }
    if errors.is_empty() { Ok(content) } else { Err(errors) }
}

/// Field errors, one per field: a missing variable is reported once, not once per
/// subscriber of a topic or per locale.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.extend([FieldError::new(field, message)]);
    }

    fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        for e in errors {
            if !self.0.iter().any(|known| known.field == e.field) {
                self.0.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{NewNotification, request::Limits, subscriber::QuietHours};

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-10 12:00 UTC)
    }

    fn valid(v: Value) -> ValidNotification {
        serde_json::from_value::<NewNotification>(v).unwrap().validate(Limits::default(), now()).unwrap()
    }

    fn adhoc() -> Directory {
        Directory { default_locale: "en".into(), adhoc_types: true, ..Default::default() }
    }

    fn subscriber(id: &str, email: Option<&str>, locale: Option<&str>) -> Listed {
        Listed {
            subscriber: Subscriber {
                id: id.into(),
                email: email.map(Into::into),
                phone: None,
                whatsapp: None,
                locale: locale.map(Into::into),
                timezone: None,
                data: Default::default(),
                created_at: now(),
                updated_at: now(),
            },
            preferences: Preferences::default(),
        }
    }

    fn typed(channels: &[Channel]) -> Directory {
        let mut dir = adhoc();
        dir.adhoc_types = false;
        dir.types.insert(
            "invoice.overdue".into(),
            NotificationType {
                key: "invoice.overdue".into(),
                channels: channels.to_vec(),
                critical: false,
                novu_workflow: None,
                retry: None,
                category: None,
                preferences: Default::default(),
                created_at: now(),
                updated_at: now(),
            },
        );
        dir
    }

    fn template(dir: &mut Directory, channel: Channel, locale: &str, source: Value) {
        let content: Content = serde_json::from_value(source).unwrap();
        dir.templates
            .insert(("invoice.overdue".into(), channel, locale.into()), Template::compile(channel, &content).unwrap());
    }

    fn fields(r: Result<Plan, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn plans_one_delivery_per_address_and_channel() {
        let n = valid(json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567"},
            {"email": "a@example.com"}, {"subscriber_id": "u-1"}],
            "content": {"subject": "s", "text": "hi"}}));
        let plan = plan(&n, &adhoc(), now()).unwrap();
        let planned: Vec<_> = plan.deliveries.iter().map(|d| (d.channel, d.recipient.as_str())).collect();
        assert_eq!(
            planned,
            vec![(Channel::Email, "a@example.com"), (Channel::Sms, "+15551234567"), (Channel::Novu, "u-1")]
        );
    }

    #[test]
    fn a_recipient_without_an_address_for_the_channels_is_an_error() {
        let n = valid(json!({"type": "t", "to": [{"email": "a@example.com"}], "channels": ["sms"],
            "content": {"text": "x"}}));
        assert_eq!(fields(plan(&n, &adhoc(), now())), vec!["to"]);
    }

    #[test]
    fn unknown_types_are_refused_unless_the_tenant_allows_them() {
        let n = valid(
            json!({"type": "nope", "to": [{"email": "a@example.com"}], "content": {"subject": "s", "text": "x"}}),
        );
        assert_eq!(fields(plan(&n, &typed(&[Channel::Email]), now())), vec!["type"]);
        assert!(plan(&n, &adhoc(), now()).is_ok());
    }

    #[test]
    fn topics_fan_out_once_per_subscriber_and_address() {
        let mut dir = adhoc();
        for (id, email) in [("u-1", "one@example.com"), ("u-2", "two@example.com"), ("u-3", "one@example.com")] {
            dir.subscribers.insert(id.into(), subscriber(id, Some(email), None));
        }
        dir.topics.insert("support".into(), vec!["u-1".into(), "u-2".into(), "u-3".into()]);
        let n = valid(json!({"type": "t", "to": [{"subscriber_id": "u-2"}, {"topic": "support"}],
            "channels": ["email"], "content": {"subject": "s", "text": "x"}}));
        let plan = plan(&n, &dir, now()).unwrap();
        let planned: Vec<_> =
            plan.deliveries.iter().map(|d| (d.recipient.as_str(), d.subscriber_id.as_deref().unwrap())).collect();
        // u-2 named twice; u-3 shares u-1's address.
        assert_eq!(planned, vec![("two@example.com", "u-2"), ("one@example.com", "u-1")]);
    }

    #[test]
    fn a_subscriber_without_an_address_or_opted_out_is_skipped_unless_the_type_is_critical() {
        let mut dir = typed(&[Channel::Email, Channel::Sms]);
        let mut listed = subscriber("u-1", Some("a@example.com"), None);
        listed.preferences.channels.insert(Channel::Email, false);
        dir.subscribers.insert("u-1".into(), listed);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}],
            "content": {"subject": "s", "text": "x"}}));
        let skips: Vec<_> = plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| (d.channel, d.skip)).collect();
        assert_eq!(skips, vec![(Channel::Email, Some(Skip::OptedOut)), (Channel::Sms, Some(Skip::NoAddress))]);

        dir.types.get_mut("invoice.overdue").unwrap().critical = true;
        let skips: Vec<_> = plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| (d.channel, d.skip)).collect();
        assert_eq!(skips, vec![(Channel::Email, None), (Channel::Sms, Some(Skip::NoAddress))]);
    }

    #[test]
    fn quiet_hours_defer_unless_urgent() {
        let mut dir = typed(&[Channel::Email]);
        let mut listed = subscriber("u-1", Some("a@example.com"), None);
        listed.preferences.quiet_hours = Some(QuietHours { start: "11:00".into(), end: "13:30".into() });
        dir.subscribers.insert("u-1".into(), listed);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}],
            "content": {"subject": "s", "text": "x"}}));
        let deferred = plan(&n, &dir, now()).unwrap().deliveries[0].not_before;
        assert_eq!(deferred, Some(time::macros::datetime!(2026-06-10 13:30 UTC)));
        let urgent = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "priority": "urgent",
            "content": {"subject": "s", "text": "x"}}));
        assert_eq!(plan(&urgent, &dir, now()).unwrap().deliveries[0].not_before, None);
    }

    #[test]
    fn templates_render_in_the_best_locale_and_name_missing_variables() {
        let mut dir = typed(&[Channel::Email]);
        dir.subscribers.insert("u-pt".into(), subscriber("u-pt", Some("pt@example.com"), Some("pt-BR")));
        dir.subscribers.insert("u-fr".into(), subscriber("u-fr", Some("fr@example.com"), Some("fr-FR")));
        template(&mut dir, Channel::Email, "en", json!({"subject": "Invoice {{ number }}", "text": "Pay"}));
        template(&mut dir, Channel::Email, "pt", json!({"subject": "Fatura {{ number }}", "text": "Pague"}));
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-pt"}, {"subscriber_id": "u-fr"}],
            "data": {"number": 7}}));
        let plan = plan(&n, &dir, now()).unwrap();
        let rendered: Vec<_> = plan
            .deliveries
            .iter()
            .map(|d| (d.locale.as_deref().unwrap(), d.content.as_ref().unwrap().subject.as_deref().unwrap()))
            .collect();
        assert_eq!(rendered, vec![("pt", "Fatura 7"), ("en", "Invoice 7")]);

        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-pt"}, {"subscriber_id": "u-fr"}]}));
        assert_eq!(fields(super::plan(&n, &dir, now())), vec!["data.number"]);
    }
}
