//! Working out a notification's deliveries from what the tenant has stored: its type
//! (channels, `critical`, Novu workflow, retry override), its recipients (subscribers by
//! id, members of topics), their preferences and quiet hours, and the content of each
//! delivery (inline, or rendered from the type's templates in the best locale).
//!
//! Pure: the store loads a [`Directory`] for a whole batch in a few statements, and this
//! module decides; the subscribers' `data` it asks for a page at a time ([`plan_all`]).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{
    Channel, Content, FieldError, Priority, RetryPolicy, ValidNotification,
    chat::StoredChat,
    locale,
    notification_type::NotificationType,
    request::{Recipient, check_action_url, check_content},
    subscriber::{Preferences, Subscriber},
    template::{RenderError, Template},
};

/// Deliveries one request (a notification, or a whole batch) may fan out to, topics
/// included; also the topic members it may name.
pub const MAX_DELIVERIES: usize = 50_000;
/// Content one request may render for its deliveries in all (each delivery stores its own).
pub const MAX_RENDERED_BYTES: usize = 64 * 1024 * 1024;
/// Render steps (minijinja's fuel) one request may spend on its renders in all, by
/// default (`limits.render_fuel`): a few hundred per render of a 50,000-member topic, and
/// about a second of one core; a render alone may take [`crate::template::RENDER_FUEL`].
pub const RENDER_FUEL_PER_REQUEST: u64 = 20_000_000;

/// What a request may still fan out to. The items of a batch share one, in order: an item
/// that does not fit is refused (on `to`) and costs nothing; the ones before it stand.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Topic members still to be named, counted before any member is loaded.
    pub members: usize,
    pub deliveries: usize,
    pub rendered_bytes: usize,
    /// Render steps left: spent by every render, an item's refused ones too.
    pub render_fuel: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            members: MAX_DELIVERIES,
            deliveries: MAX_DELIVERIES,
            rendered_bytes: MAX_RENDERED_BYTES,
            render_fuel: RENDER_FUEL_PER_REQUEST,
        }
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
    /// Whether the tenant's in-app action URLs may be `http` (else `https` or a path only).
    pub http_action_urls: bool,
    pub types: HashMap<String, NotificationType>,
    /// Compiled templates by (type, channel, locale).
    pub templates: HashMap<(String, Channel, String), Template>,
    /// Without their `data` (empty here), which [`plan_all`] reads a page at a time.
    pub subscribers: HashMap<String, Listed>,
    /// Each topic's member ids, in a stable order.
    pub topics: HashMap<String, Vec<String>>,
    /// The push devices of the subscribers listed, by subscriber id, in a stable order
    /// (loaded only when the batch may go out as a push).
    pub devices: HashMap<String, Vec<ListedDevice>>,
}

/// A subscriber's device, as planning needs it (no token: the worker's claim reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDevice {
    /// The app's id for the device: a push delivery's recipient.
    pub id: String,
    pub platform: crate::push::Platform,
    /// Override the subscriber's for the deliveries to this device: the template's locale
    /// and the quiet hours' clock.
    pub locale: Option<String>,
    pub timezone: Option<String>,
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

impl Plan {
    /// The stored subscribers (named or topic members) this plan's deliveries go to, each
    /// once, as `directory` read them.
    pub fn subscribers(&self, directory: &Directory) -> Vec<PlannedSubscriber> {
        let mut seen = HashSet::new();
        self.deliveries
            .iter()
            .filter_map(|d| directory.subscribers.get(d.subscriber_id.as_deref()?))
            .filter(|listed| seen.insert(listed.subscriber.id.as_str()))
            .map(|listed| PlannedSubscriber {
                id: listed.subscriber.id.clone(),
                created_at: listed.subscriber.created_at,
            })
            .collect()
    }
}

/// A stored subscriber a plan sends to, as the directory read it. The directory is read
/// before the notification is written, so the write locks each (`FOR KEY SHARE`, which an
/// erasure's `FOR UPDATE` waits for) and writes nothing for a notification one of whose
/// subscribers is gone, or was erased and created again (another `created_at`), since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSubscriber {
    pub id: String,
    pub created_at: OffsetDateTime,
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
    /// A chat destination given inline (`slack_channel`, or a webhook, sealed by then),
    /// which replaces the stored chat addresses.
    inline_chat: Option<&'a Recipient>,
    chat: Option<&'a StoredChat>,
    /// A stored subscriber's push devices.
    devices: &'a [ListedDevice],
}

impl<'a> Resolved<'a> {
    /// A stored subscriber, with the addresses given inline (if any) taking precedence.
    fn listed(listed: &'a Listed, inline: Option<&'a Recipient>, dir: &'a Directory) -> Self {
        let s = &listed.subscriber;
        let pick = |inline: Option<&'a str>, stored: &'a Option<String>| inline.or(stored.as_deref());
        Self {
            listed: Some(listed),
            id: Some(&s.id),
            email: pick(inline.and_then(|r| r.email.as_deref()), &s.email),
            phone: pick(inline.and_then(|r| r.phone.as_deref()), &s.phone),
            whatsapp: pick(inline.and_then(|r| r.whatsapp.as_deref()), &s.whatsapp),
            inline_chat: inline.filter(|r| r.chat_inline()),
            chat: Some(&s.chat),
            devices: dir.devices.get(&s.id).map_or(&[], Vec::as_slice),
        }
    }

    fn inline(r: &'a Recipient) -> Self {
        Self {
            listed: None,
            id: r.subscriber_id.as_deref(),
            email: r.email.as_deref(),
            phone: r.phone.as_deref(),
            whatsapp: r.whatsapp.as_deref(),
            inline_chat: Some(r).filter(|r| r.chat_inline()),
            chat: None,
            devices: &[],
        }
    }

    /// The recipient's addresses on `channel`: at most one, except on chat, where each of
    /// a subscriber's chat addresses (Slack, Teams, Discord, in that order) is one delivery,
    /// and on push, where each of a stored subscriber's devices is (its id).
    fn addresses(&self, channel: Channel) -> Vec<Cow<'a, str>> {
        let one = match channel {
            Channel::Email => self.email,
            Channel::Sms => self.phone,
            Channel::Whatsapp => self.whatsapp,
            Channel::Novu | Channel::InApp => self.id,
            Channel::Push => return self.devices.iter().map(|d| Cow::Borrowed(d.id.as_str())).collect(),
            Channel::Chat => {
                return match (self.inline_chat, self.chat) {
                    (Some(r), _) => inline_chat(r).map(Cow::Owned).into_iter().collect(),
                    (None, Some(chat)) => chat.recipients().map(Cow::Borrowed).collect(),
                    (None, None) => vec![],
                };
            }
        };
        one.map(Cow::Borrowed).into_iter().collect()
    }
}

/// The recipient of an inline chat destination: `slack:<id>`, or a webhook's
/// `<provider>:<value>` (the API sealed the value before planning).
fn inline_chat(r: &Recipient) -> Option<String> {
    let webhooks = [("slack_webhook", &r.slack_webhook), ("teams", &r.teams_webhook), ("discord", &r.discord_webhook)];
    let slack = r.slack_channel.as_ref().map(|id| format!("slack:{id}"));
    slack.or_else(|| webhooks.into_iter().find_map(|(p, v)| v.as_ref().map(|v| format!("{p}:{v}"))))
}

/// Where [`plan_all`] reads the `data` of stored subscribers (up to 64 KiB each), which the
/// [`Directory`] leaves out.
pub trait SubscriberData {
    type Error;

    /// The `data` of those of `subscribers` still stored as the directory listed them (the
    /// same `created_at`), by id, as JSON text: a page keeps it as stored (parsed, JSON can
    /// take many times its size) and each subscriber's is parsed only for its own renders.
    /// One erased since is left out.
    fn load(
        &mut self,
        subscribers: &[&Subscriber],
    ) -> impl Future<Output = Result<HashMap<String, String>, Self::Error>> + Send;
}

/// Plans `items` in order, each within what `budget` has left after the ones before it
/// (a batch's items share one budget); an accepted plan takes from it. Answers for each
/// item its deliveries or every reason it cannot be accepted.
///
/// Deliveries whose template uses `subscriber` are rendered a page of at most `page`
/// subscribers at a time: the page's `data` is read from `data`, the page's deliveries
/// are rendered, and the page is dropped before the next one is read. A page is filled
/// with the subscribers the next items may need too, so a batch of small notifications
/// reads one page, not one per item. The memory this takes is bounded by the page, not by
/// the topics: at most `page` × 64 KiB of `data` as stored, plus one subscriber's parsed,
/// besides the rendered content (bounded by the budget, 64 MiB) and the directory (no
/// `data`).
pub async fn plan_all<D: SubscriberData>(
    items: &[&ValidNotification],
    dir: &Directory,
    now: OffsetDateTime,
    budget: &mut Budget,
    page: usize,
    data: &mut D,
) -> Result<Vec<Result<Plan, Vec<FieldError>>>, D::Error> {
    let mut loaded = Page::default();
    let mut plans = Vec::with_capacity(items.len());
    for (i, n) in items.iter().enumerate() {
        let mut draft = fan_out(n, dir, now, budget);
        while !draft.render(&loaded) {
            let ahead = items[i + 1..].iter().flat_map(|n| data_wanted(n, dir));
            let wanted = first_distinct(draft.wanted().chain(ahead), page.max(1));
            // Dropped before the next page is read: one page at a time.
            loaded.0.clear();
            let mut found = data.load(&wanted).await?;
            loaded.0.extend(wanted.iter().map(|s| (s.id.clone(), found.remove(&s.id))));
        }
        plans.push(draft.finish(budget));
    }
    Ok(plans)
}

/// Stored subscribers' `data` as read (JSON text), by id: `None` for one asked for that
/// was erased since the directory was read.
#[derive(Default)]
struct Page(HashMap<String, Option<String>>);

/// The stored subscribers whose `data` planning `n` may need, in the order its draft asks
/// for them: every stored recipient, if a template of its type uses `subscriber`.
fn data_wanted<'a>(n: &'a ValidNotification, dir: &'a Directory) -> Vec<&'a Subscriber> {
    let per_subscriber = n.content.is_none()
        && dir.templates.iter().any(|((kind, _, _), template)| *kind == n.kind && template.uses_subscriber());
    if !per_subscriber {
        return vec![];
    }
    resolve(n, dir).0.into_iter().filter_map(|r| r.listed.map(|l| &l.subscriber)).collect()
}

/// The first `limit` distinct subscribers of `subscribers`.
fn first_distinct<'a>(subscribers: impl Iterator<Item = &'a Subscriber>, limit: usize) -> Vec<&'a Subscriber> {
    let mut seen = HashSet::new();
    subscribers.filter(|s| seen.insert(s.id.as_str())).take(limit).collect()
}

/// The deliveries of `n` within what is left of `budget`: fan-out, de-duplication,
/// preferences, quiet hours, and the content that needs no subscriber's `data`. Stops
/// at the first delivery or byte over the budget: the rest is neither planned nor
/// rendered.
fn fan_out<'a>(n: &'a ValidNotification, dir: &'a Directory, now: OffsetDateTime, budget: &Budget) -> Draft<'a> {
    let mut errors = Errors::default();
    let kind = dir.types.get(&n.kind);
    let mut bytes = Bytes { used: 0, left: budget.rendered_bytes };
    let fuel = Fuel { used: 0, left: budget.render_fuel };
    if kind.is_none() && !dir.adhoc_types {
        errors.push("type", format!("no notification type `{}`; define it with PUT /v1/types/{}", n.kind, n.kind));
        let (context, deliveries, awaiting, rendered) = (Value::Null, vec![], vec![], 0);
        let http_action_urls = dir.http_action_urls;
        let inline = n.content.as_ref();
        return Draft { kind, inline, context, deliveries, awaiting, rendered, bytes, fuel, errors, http_action_urls };
    }

    let (recipients, unknown) = resolve(n, dir);
    let channels: Vec<Channel> = match (&n.channels, kind) {
        (Some(asked), _) => asked.clone(),
        (None, Some(t)) => t.channels.clone(),
        // The inbox is asked for, not implied by a subscriber id (which already means Novu).
        (None, None) => {
            Channel::QUEUED.into_iter().filter(|c| recipients.iter().any(|r| !r.addresses(*c).is_empty())).collect()
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
    // Inline content's action URL passed `validate` as https, http or a path; whether http
    // will do is the tenant's setting.
    if let Some(content) = &n.content {
        let mut found = Vec::new();
        check_action_url(content, "content", dir.http_action_urls, &mut found);
        errors.extend(found);
    }

    let critical = kind.is_some_and(|t| t.critical);
    let category = kind.and_then(|t| t.category.as_deref());
    let start = n.send_at.filter(|at| *at > now).unwrap_or(now);
    let mut renderer = Renderer::new(n, dir, fuel);
    let mut deliveries = Vec::new();
    // By recipient, so the subscribers' data is asked for in the order they were named.
    let mut awaiting: BTreeMap<usize, Awaiting> = BTreeMap::new();
    let mut seen: HashSet<(Channel, Cow<str>)> = HashSet::new();
    'fan_out: for &channel in &channels {
        let type_default = kind.and_then(|t| t.preferences.get(&channel).copied());
        for (at, r) in recipients.iter().enumerate() {
            let addresses = r.addresses(channel);
            // No address is one delivery too: skipped as `no_address` for a subscriber.
            for i in 0..addresses.len().max(1) {
                let address = addresses.get(i).map(|a| a.as_ref());
                // A push delivery goes to one device, whose locale and timezone (when it has
                // them) are the subscriber's for it.
                let device = r.devices.get(i).filter(|_| channel == Channel::Push);
                let locale = device.and_then(|d| d.locale.as_deref());
                let locale = locale.or(r.listed.and_then(|l| l.subscriber.locale.as_deref()));
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
                    // A device id is the subscriber's own (each subscriber is planned once).
                    (Some(_), _) if channel != Channel::Push && !seen.insert((channel, addresses[i].clone())) => {
                        continue;
                    }
                    (Some(_), Some(listed)) if !critical => {
                        let prefs = &listed.preferences;
                        if !prefs.allows(&n.kind, category, channel, type_default) {
                            delivery.skip = Some(Skip::OptedOut);
                        } else if n.priority != Priority::Urgent && channel.is_queued() {
                            // An inbox item interrupts nobody: quiet hours defer the channels that do.
                            let timezone = device.and_then(|d| d.timezone.as_deref());
                            let timezone = timezone.or(listed.subscriber.timezone.as_deref());
                            delivery.not_before = prefs.quiet_hours.as_ref().and_then(|q| q.defer(timezone, start));
                        }
                    }
                    (Some(_), _) => {}
                }
                if deliveries.len() == budget.deliveries {
                    let first = budget.deliveries == MAX_DELIVERIES;
                    errors.push("to", over(first, &format!("{MAX_DELIVERIES} deliveries")));
                    awaiting.clear();
                    break 'fan_out;
                }
                if delivery.skip.is_none() && n.content.is_none() && channel != Channel::Novu {
                    match renderer.template(channel, locale) {
                        Ok((template, locale)) => match r.listed {
                            Some(listed) if template.uses_subscriber() => {
                                let waiting = awaiting
                                    .entry(at)
                                    .or_insert_with(|| Awaiting { subscriber: &listed.subscriber, renders: vec![] });
                                waiting.renders.push((deliveries.len(), template));
                                delivery.locale = Some(locale);
                            }
                            _ => match renderer.shared(template, channel, &locale) {
                                _ if renderer.fuel.is_over() => {
                                    errors.extend([renderer.fuel.over(channel, &locale)]);
                                    awaiting.clear();
                                    break 'fan_out;
                                }
                                Ok(content) => {
                                    if !bytes.take(&content) {
                                        errors.extend([bytes.over()]);
                                        awaiting.clear();
                                        break 'fan_out;
                                    }
                                    delivery.content = Some(content);
                                    delivery.locale = Some(locale);
                                }
                                Err(found) => errors.extend(found),
                            },
                        },
                        Err(found) => errors.extend(found),
                    }
                }
                deliveries.push(delivery);
            }
        }
    }
    let awaiting = awaiting.into_values().collect();
    let http_action_urls = dir.http_action_urls;
    let (context, fuel) = (renderer.context, renderer.fuel);
    let inline = n.content.as_ref();
    Draft { kind, inline, context, deliveries, awaiting, rendered: 0, bytes, fuel, errors, http_action_urls }
}

/// A notification fanned out, with the content still to render of the deliveries whose
/// template uses the subscriber (they need its `data`).
struct Draft<'a> {
    kind: Option<&'a NotificationType>,
    /// The notification's inline content, if any.
    inline: Option<&'a Content>,
    /// The template context without `subscriber`: the notification's `data`.
    context: Value,
    deliveries: Vec<PlannedDelivery>,
    /// Subscribers whose deliveries await their `data`, in the order they were named.
    awaiting: Vec<Awaiting<'a>>,
    /// How many of `awaiting` are rendered.
    rendered: usize,
    bytes: Bytes,
    fuel: Fuel,
    errors: Errors,
    /// The tenant's [`Directory::http_action_urls`].
    http_action_urls: bool,
}

struct Awaiting<'a> {
    subscriber: &'a Subscriber,
    /// Its deliveries (indexes into [`Draft::deliveries`]) and their templates.
    renders: Vec<(usize, &'a Template)>,
}

impl<'a> Draft<'a> {
    /// The subscribers whose `data` the deliveries still to render need, in order.
    fn wanted(&self) -> impl Iterator<Item = &'a Subscriber> + '_ {
        self.awaiting[self.rendered..].iter().map(|a| a.subscriber)
    }

    /// Renders the deliveries of the subscribers awaiting their data, in order, while
    /// `page` has it; true once none awaits it any more.
    fn render(&mut self, page: &Page) -> bool {
        while let Some(next) = self.awaiting.get(self.rendered) {
            let Some(data) = page.0.get(&next.subscriber.id) else {
                return false;
            };
            self.rendered += 1;
            // Erased since the directory was read: its deliveries stay unrendered, as the
            // accept statement, which locks the subscriber by its `created_at`, writes
            // nothing for this notification and answers 422.
            let Some(data) = data else { continue };
            let data: Map<String, Value> = match serde_json::from_str(data) {
                Ok(data) => data,
                Err(e) => {
                    let id = &next.subscriber.id;
                    self.errors.push("to", format!("the stored data of subscriber `{id}` cannot be read: {e}"));
                    continue;
                }
            };
            let context = with_subscriber(&self.context, next.subscriber, data);
            for &(i, template) in &next.renders {
                let delivery = &mut self.deliveries[i];
                let locale = delivery.locale.as_deref().unwrap_or_default();
                match render_checked(
                    template,
                    delivery.channel,
                    locale,
                    &context,
                    self.http_action_urls,
                    &mut self.fuel,
                ) {
                    _ if self.fuel.is_over() => {
                        // Refused: the rest is not rendered.
                        self.errors.extend([self.fuel.over(delivery.channel, locale)]);
                        self.rendered = self.awaiting.len();
                        return true;
                    }
                    Ok(content) => {
                        if !self.bytes.take(&content) {
                            // Refused: the rest is not rendered.
                            self.errors.extend([self.bytes.over()]);
                            self.rendered = self.awaiting.len();
                            return true;
                        }
                        delivery.content = Some(content);
                    }
                    Err(found) => self.errors.extend(found),
                }
            }
        }
        true
    }

    /// The plan, taken from `budget`, or every reason it cannot be accepted.
    fn finish(self, budget: &mut Budget) -> Result<Plan, Vec<FieldError>> {
        // Spent whether or not the plan stands: the renders ran.
        budget.render_fuel = budget.render_fuel.saturating_sub(self.fuel.used);
        let mut errors = self.errors;
        check_chat_limits(&self.deliveries, self.inline, &mut errors);
        if self.deliveries.is_empty() && errors.0.is_empty() {
            errors.push("to", "no recipient has an address for any of the requested channels");
        }
        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        budget.deliveries -= self.deliveries.len();
        budget.rendered_bytes -= self.bytes.used;
        Ok(Plan {
            deliveries: self.deliveries,
            workflow: self.kind.and_then(|t| t.novu_workflow.clone()),
            retry: self.kind.and_then(|t| t.retry.clone()),
        })
    }
}

/// Refuses chat content its provider would refuse (Discord's 2,000 characters, a Teams
/// message over 28 KB), now that each delivery's provider and content are known: a `422`
/// on `content.text` for inline content, on `to` naming the subscriber for rendered.
fn check_chat_limits(deliveries: &[PlannedDelivery], inline: Option<&Content>, errors: &mut Errors) {
    for d in deliveries.iter().filter(|d| d.channel == Channel::Chat && d.skip.is_none()) {
        let Some((provider, _)) = crate::chat::split(&d.recipient) else { continue };
        let Some(content) = d.content.as_ref().or(inline) else { continue };
        let text = content.text.as_deref().unwrap_or("");
        let Some(why) = crate::chat::over_provider_limit(provider, text, content.structured.as_ref()) else { continue };
        let whose = d.subscriber_id.as_deref().map_or(String::new(), |id| format!(" of subscriber `{id}`"));
        let message = format!("{why} (the {provider} webhook{whose})");
        if d.content.is_some() {
            errors.push("to", format!("the chat template renders a message its provider refuses: {message}"));
        } else {
            errors.push("content.text", message);
        }
        return;
    }
}

/// Content a notification renders, against what the request's budget left it.
struct Bytes {
    used: usize,
    left: usize,
}

impl Bytes {
    /// Counts `content`; false when it does not fit any more.
    fn take(&mut self, content: &Content) -> bool {
        self.used = self.used.saturating_add(content_bytes(content));
        self.used <= self.left
    }

    fn over(&self) -> FieldError {
        let limit = format!("{} MiB of rendered content", MAX_RENDERED_BYTES >> 20);
        FieldError::new("to", over(self.left == MAX_RENDERED_BYTES, &limit))
    }
}

/// Render steps a notification spends, against what the request's budget left it.
struct Fuel {
    used: u64,
    left: u64,
}

impl Fuel {
    fn is_over(&self) -> bool {
        self.used > self.left
    }

    /// Names the template whose render went over, on `type` (whose templates they are).
    fn over(&self, channel: Channel, locale: &str) -> FieldError {
        FieldError::new(
            "type",
            format!(
                "rendering the {channel} template ({locale}) for this request's recipients went over the {} render \
                 steps the request had left; simplify the template, or send to fewer recipients per request",
                self.left
            ),
        )
    }
}

/// The template context `context` with `subscriber` (its stored fields and `data`).
fn with_subscriber(context: &Value, subscriber: &Subscriber, data: Map<String, Value>) -> Value {
    let mut subscriber = serde_json::to_value(subscriber).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut subscriber {
        fields.insert("data".into(), Value::Object(data));
    }
    let mut context = context.clone();
    if let Value::Object(map) = &mut context {
        map.insert("subscriber".into(), subscriber);
    }
    context
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
                    recipients.push(Resolved::listed(listed, None, dir));
                }
            }
            continue;
        }
        match r.subscriber_id.as_deref().and_then(|id| dir.subscribers.get_key_value(id)) {
            Some((id, listed)) => {
                if listed_seen.insert(id) {
                    recipients.push(Resolved::listed(listed, Some(r), dir));
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

/// Finds the type's templates in the best locale, and renders those that do not refer to
/// the subscriber once per channel and locale.
struct Renderer<'a> {
    n: &'a ValidNotification,
    dir: &'a Directory,
    context: Value,
    /// Renders that do not depend on the subscriber, by (channel, locale).
    shared: HashMap<(Channel, String), Result<Content, Vec<FieldError>>>,
    fuel: Fuel,
}

impl<'a> Renderer<'a> {
    fn new(n: &'a ValidNotification, dir: &'a Directory, fuel: Fuel) -> Self {
        Self { n, dir, context: Value::Object(n.data.clone()), shared: HashMap::new(), fuel }
    }

    /// The template for `channel` in the first locale of the fallback chain of the
    /// recipient's `locale` (a device's, else the subscriber's) that has one, and that locale.
    fn template(&self, channel: Channel, locale: Option<&str>) -> Result<(&'a Template, String), Vec<FieldError>> {
        let chain = locale::fallback_chain(locale, &self.dir.default_locale);
        let templates = &self.dir.templates;
        let found = chain
            .iter()
            .find_map(|l| templates.get(&(self.n.kind.clone(), channel, l.clone())).map(|t| (t, l.clone())));
        found.ok_or_else(|| {
            vec![FieldError::new(
                "type",
                format!(
                    "type `{}` has no {channel} template in {} and the notification has no inline content",
                    self.n.kind,
                    chain.join(", ")
                ),
            )]
        })
    }

    /// `template` rendered without a subscriber (once per channel and locale).
    fn shared(&mut self, template: &Template, channel: Channel, locale: &str) -> Result<Content, Vec<FieldError>> {
        let key = (channel, locale.to_owned());
        if !self.shared.contains_key(&key) {
            let rendered =
                render_checked(template, channel, locale, &self.context, self.dir.http_action_urls, &mut self.fuel);
            self.shared.insert(key.clone(), rendered);
        }
        self.shared[&key].clone()
    }
}

/// The bytes of a delivery's content, as its deliveries row will hold them (about).
fn content_bytes(c: &Content) -> usize {
    let data = c.data.iter().flatten().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    [&c.subject, &c.text, &c.html, &c.title, &c.body, &c.action_url, &c.image, &c.sound]
        .iter()
        .filter_map(|f| f.as_ref())
        .map(String::len)
        .sum::<usize>()
        + data
}

/// Renders and checks the result is sendable on `channel` (an SMS within its length).
fn render_checked(
    template: &Template,
    channel: Channel,
    locale: &str,
    context: &Value,
    http_action_urls: bool,
    fuel: &mut Fuel,
) -> Result<Content, Vec<FieldError>> {
    let (rendered, spent) = template.render_metered(context);
    fuel.used = fuel.used.saturating_add(spent);
    let content = rendered.map_err(|e| {
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
    check_action_url(&content, "content", http_action_urls, &mut errors);
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
                chat: Default::default(),
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
                audience: None,
                error_class: None,
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

    /// Subscribers' `data` as the store holds it, recording every page asked for.
    #[derive(Default)]
    struct Stored {
        data: HashMap<String, String>,
        pages: Vec<Vec<String>>,
    }

    impl SubscriberData for Stored {
        type Error = std::convert::Infallible;

        fn load(
            &mut self,
            subscribers: &[&Subscriber],
        ) -> impl Future<Output = Result<HashMap<String, String>, Self::Error>> + Send {
            self.pages.push(subscribers.iter().map(|s| s.id.clone()).collect());
            let found = subscribers.iter().filter_map(|s| Some((s.id.clone(), self.data.get(&s.id)?.clone())));
            std::future::ready(Ok(found.collect()))
        }
    }

    /// [`plan_all`], with a store that answers at once.
    fn plan_pages(
        items: &[&ValidNotification],
        dir: &Directory,
        page: usize,
        stored: &mut Stored,
    ) -> Vec<Result<Plan, Vec<FieldError>>> {
        plan_within(items, dir, page, stored, &mut Budget::default())
    }

    /// [`plan_pages`] within `budget`.
    fn plan_within(
        items: &[&ValidNotification],
        dir: &Directory,
        page: usize,
        stored: &mut Stored,
        budget: &mut Budget,
    ) -> Vec<Result<Plan, Vec<FieldError>>> {
        let planning = std::pin::pin!(plan_all(items, dir, now(), budget, page, stored));
        match planning.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(Ok(plans)) => plans,
            std::task::Poll::Ready(Err(never)) => match never {},
            std::task::Poll::Pending => unreachable!("the store answers at once"),
        }
    }

    fn plan(n: &ValidNotification, dir: &Directory, _now: OffsetDateTime) -> Result<Plan, Vec<FieldError>> {
        plan_pages(&[n], dir, 500, &mut Stored::default()).pop().unwrap()
    }

    /// `dir` with the type `invoice.overdue` on email and in-app, whose templates show the
    /// subscriber's `data.x`, and subscribers `ids` (with an email each) whose `x` is stored.
    fn per_subscriber(ids: &[&str]) -> (Directory, Stored) {
        let mut dir = typed(&[Channel::Email, Channel::InApp]);
        template(&mut dir, Channel::Email, "en", json!({"subject": "Hi", "text": "x is {{ subscriber.data.x }}"}));
        template(&mut dir, Channel::InApp, "en", json!({"title": "{{ subscriber.data.x }}"}));
        let mut stored = Stored::default();
        for id in ids {
            dir.subscribers.insert((*id).into(), subscriber(id, Some(&format!("{id}@example.com")), None));
            stored.data.insert((*id).into(), json!({"x": format!("{id}'s")}).to_string());
        }
        (dir, stored)
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
    fn chat_is_one_delivery_per_chat_address_and_an_inline_slack_channel_replaces_them() {
        use crate::chat::StoredChatAddress;
        let mut dir = typed(&[Channel::Chat]);
        template(
            &mut dir,
            Channel::Chat,
            "en",
            json!({"text": "Invoice {{ n }}",
            "structured": {"slack": [{"type": "section", "text": {"type": "mrkdwn", "text": "Invoice {{ n }}"}}]}}),
        );
        let mut listed = subscriber("u-1", None, None);
        let to = |to: &str| Some(StoredChatAddress { to: to.into(), last4: None });
        listed.subscriber.chat.slack = to("slack:U024BE7LH");
        listed.subscriber.chat.discord = to("discord:v1.k.sealed");
        dir.subscribers.insert("u-1".into(), listed);
        dir.subscribers.insert("u-2".into(), subscriber("u-2", None, None));
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"},
            {"slack_channel": "C0123456789"}], "data": {"n": "\"7\""}}));
        let plan = plan(&n, &dir, now()).unwrap();
        let planned: Vec<_> = plan.deliveries.iter().map(|d| (d.recipient.as_str(), d.skip)).collect();
        assert_eq!(
            planned,
            [
                ("slack:U024BE7LH", None),
                ("discord:v1.k.sealed", None),
                ("", Some(Skip::NoAddress)),
                ("slack:C0123456789", None)
            ]
        );
        let content = plan.deliveries[0].content.as_ref().unwrap();
        assert_eq!(content.text.as_deref(), Some("Invoice \"7\""));
        assert_eq!(content.structured.as_ref().unwrap()["slack"][0]["text"]["text"], "Invoice \"7\"");
    }

    #[test]
    fn chat_text_past_a_subscribers_discord_webhook_limit_is_refused_when_planning() {
        use crate::chat::StoredChatAddress;
        let mut dir = typed(&[Channel::Chat]);
        template(&mut dir, Channel::Chat, "en", json!({"text": "{{ long }}"}));
        let mut listed = subscriber("u-1", None, None);
        listed.subscriber.chat.slack = Some(StoredChatAddress { to: "slack:U024BE7LH".into(), last4: None });
        listed.subscriber.chat.discord = Some(StoredChatAddress { to: "discord:v1.k.sealed".into(), last4: None });
        dir.subscribers.insert("u-1".into(), listed);
        let rendered = |text: &str| {
            let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "data": {"long": text}}));
            plan(&n, &dir, now())
        };
        assert!(rendered(&"x".repeat(2000)).is_ok());
        assert_eq!(fields(rendered(&"x".repeat(2001))), ["to"]);
        // Inline content names its field.
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"],
            "content": {"text": "x".repeat(2001)}}));
        assert_eq!(fields(plan(&n, &dir, now())), ["content.text"]);
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
    fn chat_follows_opt_outs_quiet_hours_and_critical_types_like_every_channel() {
        use crate::chat::StoredChatAddress;
        let mut dir = typed(&[Channel::Chat]);
        let mut listed = subscriber("u-1", None, None);
        listed.subscriber.chat.slack = Some(StoredChatAddress { to: "slack:U024BE7LH".into(), last4: None });
        listed.preferences.quiet_hours = Some(QuietHours { start: "11:00".into(), end: "13:30".into() });
        dir.subscribers.insert("u-1".into(), listed);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "content": {"text": "x"}}));
        let planned = &plan(&n, &dir, now()).unwrap().deliveries[0];
        assert_eq!(planned.not_before, Some(time::macros::datetime!(2026-06-10 13:30 UTC)));

        dir.subscribers.get_mut("u-1").unwrap().preferences.channels.insert(Channel::Chat, false);
        assert_eq!(plan(&n, &dir, now()).unwrap().deliveries[0].skip, Some(Skip::OptedOut));
        dir.types.get_mut("invoice.overdue").unwrap().critical = true;
        let critical = &plan(&n, &dir, now()).unwrap().deliveries[0];
        assert_eq!((critical.skip, critical.not_before), (None, None));
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
        assert_eq!(fields(self::plan(&n, &dir, now())), vec!["data.number"]);
    }

    #[test]
    fn per_subscriber_content_is_rendered_a_page_of_data_at_a_time() {
        let (mut dir, mut stored) = per_subscriber(&["u-0", "u-1", "u-2", "u-3", "u-4"]);
        dir.topics.insert("staff".into(), ["u-0", "u-1", "u-2", "u-3", "u-4"].map(String::from).to_vec());
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-2"}, {"topic": "staff"}]}));
        let plan = plan_pages(&[&n], &dir, 2, &mut stored).pop().unwrap().unwrap();
        // Each subscriber's data read once, named directly or not, in the order they are named.
        assert_eq!(stored.pages, [vec!["u-2", "u-0"], vec!["u-1", "u-3"], vec!["u-4"]]);
        let rendered: Vec<_> = plan
            .deliveries
            .iter()
            .map(|d| {
                let content = d.content.as_ref().unwrap();
                (
                    d.channel,
                    d.subscriber_id.as_deref().unwrap(),
                    content.text.as_ref().or(content.title.as_ref()).unwrap(),
                )
            })
            .map(|(channel, id, text)| (channel, id.to_owned(), text.clone()))
            .collect();
        let expected: Vec<_> = [(Channel::Email, "x is "), (Channel::InApp, "")]
            .into_iter()
            .flat_map(|(channel, prefix)| {
                ["u-2", "u-0", "u-1", "u-3", "u-4"].map(|id| (channel, id.to_owned(), format!("{prefix}{id}'s")))
            })
            .collect();
        assert_eq!(rendered, expected, "the order of the fan-out, channel by channel");
    }

    #[test]
    fn a_page_takes_the_subscribers_of_the_next_items_too() {
        let (dir, mut stored) = per_subscriber(&["u-0", "u-1", "u-2"]);
        let to = |id: &str| valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": id}]}));
        let items = [to("u-0"), to("u-1"), to("u-0"), to("u-2")];
        let plans = plan_pages(&items.iter().collect::<Vec<_>>(), &dir, 2, &mut stored);
        assert!(plans.iter().all(Result::is_ok));
        // The first page serves the first three items; the fourth's subscriber is read next.
        assert_eq!(stored.pages, [vec!["u-0", "u-1"], vec!["u-2"]]);

        // Templates that do not use the subscriber read no data.
        let mut dir = typed(&[Channel::Email]);
        template(&mut dir, Channel::Email, "en", json!({"subject": "Hi", "text": "Pay"}));
        dir.subscribers.insert("u-0".into(), subscriber("u-0", Some("a@example.com"), None));
        let mut stored = Stored::default();
        assert!(plan_pages(&[&to("u-0")], &dir, 2, &mut stored).pop().unwrap().is_ok());
        assert!(stored.pages.is_empty());
    }

    #[test]
    fn a_subscriber_erased_before_its_data_was_read_is_left_for_the_accept_to_refuse() {
        let (dir, mut stored) = per_subscriber(&["u-0", "u-1"]);
        stored.data.remove("u-1");
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-0"}, {"subscriber_id": "u-1"}]}));
        let plan = plan_pages(&[&n], &dir, 10, &mut stored).pop().unwrap().unwrap();
        let rendered: Vec<_> = plan.deliveries.iter().map(|d| d.content.is_some()).collect();
        assert_eq!(rendered, [true, false, true, false]);
    }

    fn device(id: &str, locale: Option<&str>, timezone: Option<&str>) -> ListedDevice {
        ListedDevice {
            id: id.into(),
            platform: crate::push::Platform::Fcm,
            locale: locale.map(Into::into),
            timezone: timezone.map(Into::into),
        }
    }

    /// `dir` with the type `invoice.overdue` on `channels`, push templates in en and pt,
    /// and `u-1` (locale en) with a phone (`pt-BR`, timezone Tokyo) and a tablet (neither).
    fn with_devices(channels: &[Channel]) -> Directory {
        let mut dir = typed(channels);
        template(
            &mut dir,
            Channel::Push,
            "en",
            json!({"title": "Invoice {{ n }}", "badge": 2,
            "data": {"invoice": "{{ n }}"}, "image": "https://cdn.example.com/{{ n }}.png"}),
        );
        template(&mut dir, Channel::Push, "pt", json!({"title": "Fatura {{ n }}"}));
        template(&mut dir, Channel::InApp, "en", json!({"title": "Invoice {{ n }}"}));
        dir.subscribers.insert("u-1".into(), subscriber("u-1", None, Some("en")));
        dir.subscribers.insert("u-2".into(), subscriber("u-2", None, None));
        dir.devices.insert(
            "u-1".into(),
            vec![device("phone", Some("pt-BR"), Some("Asia/Tokyo")), device("tablet", None, None)],
        );
        dir
    }

    #[test]
    fn push_is_one_delivery_per_device_in_the_devices_locale_and_none_is_no_address() {
        let dir = with_devices(&[Channel::InApp, Channel::Push]);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"}],
            "data": {"n": 7}}));
        let planned_plan = plan(&n, &dir, now()).unwrap();
        let planned: Vec<_> = planned_plan
            .deliveries
            .iter()
            .map(|d| {
                (d.channel, d.recipient.as_str(), d.subscriber_id.as_deref().unwrap(), d.skip, d.locale.as_deref())
            })
            .collect();
        assert_eq!(
            planned,
            [
                (Channel::InApp, "u-1", "u-1", None, Some("en")),
                (Channel::InApp, "u-2", "u-2", None, Some("en")),
                (Channel::Push, "phone", "u-1", None, Some("pt")),
                (Channel::Push, "tablet", "u-1", None, Some("en")),
                (Channel::Push, "", "u-2", Some(Skip::NoAddress), None),
            ]
        );
        let phone = planned_plan.deliveries[2].content.as_ref().unwrap();
        assert_eq!(phone.title.as_deref(), Some("Fatura 7"));
        let tablet = planned_plan.deliveries[3].content.as_ref().unwrap();
        assert_eq!(tablet.title.as_deref(), Some("Invoice 7"));
        assert_eq!(tablet.badge, Some(2));
        assert_eq!(tablet.image.as_deref(), Some("https://cdn.example.com/7.png"));
        assert_eq!(tablet.data.as_ref().unwrap()["invoice"], "7");

        // Two subscribers may name their devices alike: each is its own delivery.
        let mut dir = dir;
        dir.devices.insert("u-2".into(), vec![device("phone", None, None)]);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"}],
            "channels": ["push"], "content": {"title": "Hi"}}));
        let planned: Vec<_> = plan(&n, &dir, now())
            .unwrap()
            .deliveries
            .iter()
            .map(|d| (d.recipient.clone(), d.subscriber_id.clone().unwrap()))
            .collect();
        assert_eq!(planned.len(), 3, "{planned:?}");
        assert_eq!(planned[2], ("phone".into(), "u-2".into()));
    }

    #[test]
    fn push_follows_preferences_critical_types_and_each_devices_quiet_hours() {
        let mut dir = with_devices(&[Channel::Push]);
        let listed = dir.subscribers.get_mut("u-1").unwrap();
        // 12:00 UTC: outside the subscriber's (UTC) window, 21:00 in Tokyo, the phone's.
        listed.preferences.quiet_hours = Some(QuietHours { start: "20:00".into(), end: "22:00".into() });
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "content": {"body": "x"}}));
        let deferred: Vec<_> = plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| d.not_before).collect();
        assert_eq!(deferred, [Some(time::macros::datetime!(2026-06-10 13:00 UTC)), None]);
        let urgent = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "priority": "urgent",
            "content": {"body": "x"}}));
        assert!(plan(&urgent, &dir, now()).unwrap().deliveries.iter().all(|d| d.not_before.is_none()));

        dir.subscribers.get_mut("u-1").unwrap().preferences.channels.insert(Channel::Push, false);
        let skips: Vec<_> = plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| d.skip).collect();
        assert_eq!(skips, [Some(Skip::OptedOut), Some(Skip::OptedOut)]);
        dir.types.get_mut("invoice.overdue").unwrap().critical = true;
        let critical: Vec<_> =
            plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| (d.skip, d.not_before)).collect();
        assert_eq!(critical, [(None, None), (None, None)]);
    }

    #[test]
    fn devices_count_against_the_requests_deliveries() {
        let mut dir = with_devices(&[Channel::Push]);
        dir.devices.get_mut("u-1").unwrap().push(device("watch", None, None));
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "content": {"body": "x"}}));
        let with = |deliveries: usize| {
            let mut budget = Budget { deliveries, ..Budget::default() };
            let planned = plan_within(&[&n], &dir, 10, &mut Stored::default(), &mut budget).pop().unwrap();
            (planned.map(|p| p.deliveries.len()), budget.deliveries)
        };
        assert_eq!(with(3), (Ok(3), 0));
        let (refused, left) = with(2);
        assert_eq!(refused.unwrap_err()[0].field, "to");
        assert_eq!(left, 2);
    }

    #[test]
    fn a_push_payload_over_the_limit_is_refused_inline_and_rendered() {
        let dir = with_devices(&[Channel::Push]);
        let long = "x".repeat(crate::push::MAX_CONTENT_BYTES);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "content": {"body": long}}));
        assert_eq!(fields(plan(&n, &dir, now())), ["content.body"]);
        let n = valid(json!({"type": "invoice.overdue", "to": [{"subscriber_id": "u-1"}], "data": {"n": long}}));
        let errors = plan(&n, &dir, now()).unwrap_err();
        // The phone's template (pt) has only a title; the tablet's (en) is largest in its image.
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["content.title", "content.image"]);
        assert!(errors[0].message.starts_with("rendered from the push template (pt)"), "{errors:?}");
        assert!(errors[1].message.starts_with("rendered from the push template (en)"), "{errors:?}");
    }

    #[test]
    fn an_adhoc_type_pushes_to_subscribers_with_devices_and_inline_content_must_suit_push() {
        let mut dir = adhoc();
        dir.subscribers.insert("u-1".into(), subscriber("u-1", Some("a@example.com"), None));
        dir.devices.insert("u-1".into(), vec![device("phone", None, None)]);
        let n = valid(json!({"type": "t", "to": [{"subscriber_id": "u-1"}],
            "content": {"subject": "s", "text": "x", "title": "t"}}));
        let planned: Vec<_> =
            plan(&n, &dir, now()).unwrap().deliveries.iter().map(|d| (d.channel, d.recipient.clone())).collect();
        let novu = (Channel::Novu, "u-1".into());
        assert_eq!(planned, [(Channel::Email, "a@example.com".into()), novu, (Channel::Push, "phone".into())]);
        let n = valid(json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "content": {"subject": "s", "text": "x"}}));
        assert_eq!(fields(plan(&n, &dir, now())), ["content.title"]);
        // Addresses alone have no device.
        let n = valid(json!({"type": "t", "to": [{"email": "b@example.com"}], "channels": ["push"],
            "content": {"title": "t"}}));
        assert_eq!(fields(plan(&n, &dir, now())), ["to"]);
    }
}
