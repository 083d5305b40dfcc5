//! Templates: minijinja sources of a channel's content fields, compiled once when they are
//! stored or loaded and rendered for each notification (or each recipient, when they refer
//! to `subscriber`).
//!
//! Rendering is strict: a variable the template prints but the context lacks is an error
//! naming that variable, never an empty string in a message. Only the `html` field is
//! HTML-escaped.

use std::{borrow::Cow, sync::Arc};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, syntax::SyntaxConfig, value::Serde};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    Channel, Content, FieldError,
    request::{check_action_url_source, check_content},
};

/// A stored template, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateView {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Channel,
    pub locale: String,
    /// The minijinja sources of the channel's fields.
    pub content: Content,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A template's field sources, compiled once and rendered many times (a topic of 10,000
/// subscribers renders it up to 10,000 times). Cloning shares the compiled form.
#[derive(Clone)]
pub struct Template {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: Content,
    /// One minijinja template per field, named by the field.
    env: Environment<'static>,
    fields: Vec<CompiledField>,
}

struct CompiledField {
    /// A content field (`subject`), or `data.<key>` for a value of push's `data`.
    name: String,
    /// The variables the field looks up in the context (`order`), and the same with the
    /// attributes it reads of them (`order.id`), in the order they first appear.
    variables: Vec<String>,
    paths: Vec<String>,
}

/// Why rendering failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A variable the template uses is not in the context: `variable` is its top-level name
    /// (`customer` for `{{ customer.name }}`), or the path to the first missing attribute
    /// when the variable is there (`customer.name`); `field` the content field (`subject`).
    #[error("the template's {field} uses `{variable}`, which is missing")]
    MissingVariable { field: String, variable: String },
    /// Any other failure (a filter error, a type error), with minijinja's message.
    #[error("the template's {field} does not render: {message}")]
    Failed { field: String, message: String },
}

/// The content fields that are templates, in a fixed order; push's `data` values follow
/// as `data.<key>` (a template each), and its `badge` is a number, taken as it is.
const FIELDS: [&str; 9] = ["subject", "text", "html", "title", "body", "action_url", "image", "sound", "structured"];

/// The escaping of the `structured` field: its source is a JSON document, and what its
/// expressions print lands inside JSON strings, so it is escaped as JSON string content.
const JSON_STRING: &str = "json-string";

/// The escaping of `structured.slack` (Block Kit, where `<…>` is a mention or a link and
/// `&` starts an entity): Slack's markup escape (`&amp;`, `&lt;`, `&gt;`), then JSON string
/// content, so data such as `<!channel>` prints as text.
const SLACK_JSON_STRING: &str = "slack-json-string";

/// The template of the `slack` subtree of `structured`, compiled on its own so its printed
/// values get Slack's escape too.
const SLACK_PART: &str = "structured.slack";

/// The templates the `structured` source compiles to: the document without its `slack` key
/// (`structured`), and that key's subtree ([`SLACK_PART`]) when present.
fn structured_parts(structured: &Value) -> Vec<(&'static str, String)> {
    match structured.as_object() {
        Some(map) if map.contains_key("slack") => {
            let mut rest = map.clone();
            let slack = rest.remove("slack").expect("the key is there");
            vec![("structured", Value::Object(rest).to_string()), (SLACK_PART, slack.to_string())]
        }
        _ => vec![("structured", structured.to_string())],
    }
}

/// Writes `text` as the content of a JSON string.
fn write_json_string(out: &mut minijinja::Output, text: &str) -> std::fmt::Result {
    let quoted = Value::String(text.to_owned()).to_string();
    out.write_str(&quoted[1..quoted.len() - 1])
}

/// The fields a template of `channel` may have (`None`: the channel takes no template).
fn fields_of(channel: Channel) -> Option<&'static [&'static str]> {
    match channel {
        Channel::Email => Some(&["subject", "text", "html"]),
        Channel::Sms | Channel::Whatsapp => Some(&["text"]),
        Channel::InApp => Some(&["title", "body", "action_url"]),
        Channel::Chat => Some(&["text", "structured"]),
        Channel::Push => Some(&["title", "body", "action_url", "image", "sound", "data", "badge"]),
        Channel::Novu => None,
    }
}

/// A field's source; `structured` as its JSON text (expressions sit in its strings), and
/// `data.<key>` a value of push's `data`.
fn field<'c>(content: &'c Content, name: &str) -> Option<Cow<'c, str>> {
    if let Some(key) = name.strip_prefix("data.") {
        return content.data.as_ref()?.get(key).map(|v| Cow::Borrowed(v.as_str()));
    }
    let text = match name {
        "subject" => content.subject.as_ref(),
        "text" => content.text.as_ref(),
        "html" => content.html.as_ref(),
        "title" => content.title.as_ref(),
        "body" => content.body.as_ref(),
        "action_url" => content.action_url.as_ref(),
        "image" => content.image.as_ref(),
        "sound" => content.sound.as_ref(),
        "structured" => return content.structured.as_ref().map(|v| Cow::Owned(v.to_string())),
        _ => unreachable!("not a content field: {name}"),
    };
    text.map(|t| Cow::Borrowed(t.as_str()))
}

fn field_mut<'c>(content: &'c mut Content, name: &str) -> &'c mut Option<String> {
    match name {
        "subject" => &mut content.subject,
        "text" => &mut content.text,
        "html" => &mut content.html,
        "title" => &mut content.title,
        "body" => &mut content.body,
        "action_url" => &mut content.action_url,
        "image" => &mut content.image,
        "sound" => &mut content.sound,
        _ => unreachable!("not a content field: {name}"),
    }
}

/// Instructions one render of one field may execute: far beyond any real message, far
/// below a render that would hold a request for long.
pub const RENDER_FUEL: u64 = 100_000;

#[cfg(test)]
thread_local! {
    /// Fields compiled on this thread, so a test can tell rendering never compiles.
    static COMPILED_FIELDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Template {
    /// Compiles every field of `source` for `channel`: strict undefined variables, HTML
    /// auto-escaping for the `html` field only. Refuses a field that does not compile
    /// (`content.<field>`, with minijinja's message and line), a field the channel does not
    /// use, missing required fields, and any template for Novu (it renders in its own
    /// workflow). Every problem is reported.
    pub fn compile(channel: Channel, source: &Content) -> Result<Template, Vec<FieldError>> {
        let Some(allowed) = fields_of(channel) else {
            return Err(vec![FieldError::new("channel", "novu renders in its own workflow; it takes no template")]);
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| match name {
            "html" => AutoEscape::Html,
            "structured" => AutoEscape::Custom(JSON_STRING.into()),
            SLACK_PART => AutoEscape::Custom(SLACK_JSON_STRING.into()),
            _ => AutoEscape::None,
        });
        env.set_formatter(|out, state, value| match state.auto_escape() {
            AutoEscape::Custom(name) if name == JSON_STRING && !value.is_safe() => {
                Ok(write_json_string(out, &value.to_string())?)
            }
            AutoEscape::Custom(name) if name == SLACK_JSON_STRING && !value.is_safe() => {
                let escaped = value.to_string().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                Ok(write_json_string(out, &escaped)?)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        // A tenant's template runs inside the API's request: bound what one render may do
        // (a loop nested to blow up the output fails instead of stalling intake).
        env.set_fuel(Some(RENDER_FUEL));
        // Keeps what the source ends with (a text message's last line break).
        env.set_syntax(SyntaxConfig::builder().keep_trailing_newline(true).build().expect("a valid syntax"));
        // Undefined values remember the expression that made them, so a render error can
        // name the missing variable.
        env.set_debug(true);

        let mut errors = Vec::new();
        let mut fields = Vec::new();
        let refuse = |errors: &mut Vec<FieldError>, name: &str| {
            errors.push(FieldError::new(
                format!("content.{name}"),
                format!("is not used by the {channel} channel, which takes {}", allowed.join(", ")),
            ))
        };
        for (given, name) in [(source.data.is_some(), "data"), (source.badge.is_some(), "badge")] {
            if given && !allowed.contains(&name) {
                refuse(&mut errors, name);
            }
        }
        let data_keys = source.data.iter().flat_map(|d| d.keys()).filter(|_| allowed.contains(&"data"));
        let names = FIELDS.iter().map(|n| n.to_string()).chain(data_keys.map(|k| format!("data.{k}")));
        for name in names {
            let Some(text) = field(source, &name) else { continue };
            if !name.starts_with("data.") && !allowed.contains(&name.as_str()) {
                refuse(&mut errors, &name);
                continue;
            }
            #[cfg(test)]
            COMPILED_FIELDS.with(|c| c.set(c.get() + 1));
            let parts = match (name.as_str(), &source.structured) {
                ("structured", Some(structured)) => {
                    structured_parts(structured).into_iter().map(|(part, text)| (part.to_owned(), text)).collect()
                }
                _ => vec![(name.clone(), text.clone().into_owned())],
            };
            let (mut variables, mut paths) = (std::collections::HashSet::new(), std::collections::HashSet::new());
            let mut compiled = true;
            for (part, part_text) in parts {
                if let Err(e) = env.add_template_owned(part.clone(), part_text) {
                    errors.push(FieldError::new(
                        format!("content.{name}"),
                        format!("does not compile: {}", describe(&e)),
                    ));
                    compiled = false;
                    break;
                }
                let template = env.get_template(&part).expect("the template just added");
                variables.extend(template.undeclared_variables(false));
                paths.extend(template.undeclared_variables(true));
            }
            if !compiled {
                continue;
            }
            let globals: Vec<String> = env.globals().map(|(g, _)| g.to_owned()).collect();
            let by_position = |set: std::collections::HashSet<String>| {
                let mut names: Vec<String> =
                    set.into_iter().filter(|v| !globals.iter().any(|g| g == head(v))).collect();
                names.sort_by_key(|v| (text.find(head(v)).unwrap_or(usize::MAX), v.clone()));
                names
            };
            let variables = by_position(variables);
            let paths = by_position(paths);
            fields.push(CompiledField { name, variables, paths });
        }
        check_content(channel, source, "content", &mut errors);
        check_action_url_source(source, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Template { inner: Arc::new(Compiled { source: source.clone(), env, fields }) })
    }

    /// The sources it was compiled from.
    pub fn source(&self) -> &Content {
        &self.inner.source
    }

    /// Whether any field refers to the variable `subscriber`: then it renders per recipient,
    /// otherwise once per notification and locale.
    pub fn uses_subscriber(&self) -> bool {
        self.inner.fields.iter().any(|f| f.variables.iter().any(|v| v == "subscriber"))
    }

    /// Renders every field with `context`, a JSON object: the notification's `data` at the
    /// top level, and `subscriber` when rendering for one.
    pub fn render(&self, context: &Value) -> Result<Content, RenderError> {
        self.render_metered(context).0
    }

    /// Like [`Self::render`], also answering the render steps (minijinja's fuel) it took: a
    /// field that failed counts as the most a field may take, as minijinja does not say
    /// what a failed render used.
    pub fn render_metered(&self, context: &Value) -> (Result<Content, RenderError>, u64) {
        let ctx = minijinja::Value::from(Serde(context));
        let mut out = Content::default();
        let mut fuel = 0u64;
        for f in &self.inner.fields {
            let template = self.inner.env.get_template(&f.name).expect("every compiled field is in the environment");
            match template.render_captured(&ctx) {
                Ok(rendered) => {
                    fuel += rendered.state().fuel_levels().map_or(0, |(consumed, _)| consumed);
                    if f.name == "structured" {
                        match self.render_structured(rendered.output(), &ctx, &mut fuel) {
                            Ok(value) => out.structured = Some(value),
                            Err(Ok(message)) => {
                                return (Err(RenderError::Failed { field: f.name.clone(), message }), fuel);
                            }
                            Err(Err(e)) => return (Err(self.render_error(f, &e, context)), fuel + RENDER_FUEL),
                        }
                    } else if let Some(key) = f.name.strip_prefix("data.") {
                        out.data.get_or_insert_default().insert(key.to_owned(), rendered.output().to_owned());
                    } else {
                        *field_mut(&mut out, &f.name) = Some(rendered.output().to_owned());
                    }
                }
                Err(e) => return (Err(self.render_error(f, &e, context)), fuel + RENDER_FUEL),
            }
        }
        out.badge = self.inner.source.badge;
        (Ok(out), fuel)
    }

    /// The `structured` document from its rendered text, with its `slack` subtree rendered
    /// by its own template. Printed values are escaped, but a `| safe` or a `{% raw %}` can
    /// still break the document: that is the template's failure (`Err(Ok(message))`).
    fn render_structured(
        &self,
        rendered: &str,
        ctx: &minijinja::Value,
        fuel: &mut u64,
    ) -> Result<Value, Result<String, minijinja::Error>> {
        let parse =
            |text: &str| serde_json::from_str::<Value>(text).map_err(|e| Ok(format!("does not render to JSON: {e}")));
        let mut value = parse(rendered)?;
        if let Ok(slack) = self.inner.env.get_template(SLACK_PART) {
            let rendered = slack.render_captured(ctx).map_err(Err)?;
            *fuel += rendered.state().fuel_levels().map_or(0, |(consumed, _)| consumed);
            let slack = parse(rendered.output())?;
            value.as_object_mut().expect("the document without `slack` is an object").insert("slack".to_owned(), slack);
        }
        Ok(value)
    }

    fn render_error(&self, f: &CompiledField, e: &minijinja::Error, context: &Value) -> RenderError {
        let failed = || RenderError::Failed { field: f.name.clone(), message: describe(e) };
        if e.kind() != ErrorKind::UndefinedError {
            return failed();
        }
        let missing = |variable: String| RenderError::MissingVariable { field: f.name.clone(), variable };
        // In debug mode minijinja names the expression: "... `order.id` is undefined".
        if let Some(path) = e.detail().and_then(undefined_expression).map(|expr| parse_path(&expr))
            && let Some(Segment::Key(first)) = path.first()
            && f.variables.contains(first)
            && let Some(variable) = first_missing(&path, context)
        {
            return missing(variable);
        }
        // Otherwise: a variable the field reads that the context lacks, within the
        // expression that failed when minijinja says where that is.
        let source = field(&self.inner.source, &f.name).unwrap_or_default();
        let failed_expression = e.range().and_then(|r| source.get(r));
        let candidates = f.paths.iter().filter_map(|p| first_missing(&parse_path(p), context));
        let found = match failed_expression {
            Some(expr) => candidates.into_iter().find(|v| expr.contains(head(v))),
            None => candidates.into_iter().next(),
        };
        found.map(missing).unwrap_or_else(failed)
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("source", &self.inner.source).finish_non_exhaustive()
    }
}

/// minijinja's message without the template's name: `syntax error: unexpected end of input
/// (line 1)`.
fn describe(e: &minijinja::Error) -> String {
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

/// The top-level variable of a path: `order` of `order.id` or `items[0]`.
fn head(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// The expression minijinja says is undefined, from an error's detail.
fn undefined_expression(detail: &str) -> Option<String> {
    let end = detail.rfind("` is undefined")?;
    let start = detail[..end].rfind('`')? + 1;
    Some(detail[start..end].to_owned())
}

#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The simple lookups at the start of an expression: `items[0].name`, `user["x"]`; stops at
/// anything else (a call, a filter, `(...)`).
fn parse_path(expr: &str) -> Vec<Segment> {
    let ident_end = |s: &str| s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut segments = Vec::new();
    let mut rest = expr;
    let end = ident_end(rest);
    if end == 0 {
        return segments;
    }
    segments.push(Segment::Key(rest[..end].to_owned()));
    rest = &rest[end..];
    loop {
        if let Some(after) = rest.strip_prefix('.') {
            let end = ident_end(after);
            if end == 0 {
                break;
            }
            segments.push(match after[..end].parse() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(after[..end].to_owned()),
            });
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(close) = after.find(']') else { break };
            let inner = &after[..close];
            let quoted = inner
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            segments.push(match (quoted, inner.parse()) {
                (Some(key), _) => Segment::Key(key.to_owned()),
                (None, Ok(i)) => Segment::Index(i),
                (None, Err(_)) => break,
            });
            rest = &after[close + 1..];
        } else {
            break;
        }
    }
    segments
}

/// The path up to and including its first segment `context` does not have (`order` when
/// there is no `order`, `order.id` when `order` has no `id`), or `None` if it has them all.
fn first_missing(path: &[Segment], context: &Value) -> Option<String> {
    let mut at = Some(context);
    let mut name = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(key);
                at = at.and_then(|v| v.get(key.as_str()));
            }
            Segment::Index(i) => {
                name.push_str(&format!("[{i}]"));
                at = at.and_then(|v| v.get(*i));
            }
        }
        if at.is_none() {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_render_answers_the_steps_it_took_and_a_failed_one_the_most_a_field_may_take() {
        let looping = email("Hi", "{% for i in range(100) %}{{ i }}{% endfor %}", None);
        let (rendered, fuel) = Template::compile(Channel::Email, &looping).unwrap().render_metered(&json!({}));
        assert!(rendered.is_ok());
        assert!((100..RENDER_FUEL).contains(&fuel), "{fuel}");
        let missing = email("Hi", "{{ nope }}", None);
        let (rendered, fuel) = Template::compile(Channel::Email, &missing).unwrap().render_metered(&json!({}));
        assert!(rendered.is_err());
        assert!(fuel >= RENDER_FUEL, "{fuel}");
    }

    #[test]
    fn values_printed_into_slack_blocks_are_escaped_for_slack_markup_and_json() {
        let source = Content {
            text: Some("{{ who }}".into()),
            structured: Some(json!({
                "slack": [{"type": "section", "text": {"type": "mrkdwn", "text": "by *{{ who }}* {{ n }}"}}],
                "discord": [{"title": "{{ who }}"}]})),
            ..Default::default()
        };
        let template = Template::compile(Channel::Chat, &source).unwrap();
        let who = r#"<!channel> <https://evil|Click> & "q""#;
        let content = template.render(&json!({"who": who, "n": 7})).unwrap();
        let structured = content.structured.unwrap();
        assert_eq!(
            structured["slack"][0]["text"]["text"],
            r#"by *&lt;!channel&gt; &lt;https://evil|Click&gt; &amp; "q"* 7"#
        );
        // Other providers' subtrees and the plain text keep the value as it is.
        assert_eq!(structured["discord"][0]["title"], who);
        assert_eq!(content.text.as_deref(), Some(who));
        // A variable missing in the `slack` subtree is named like any other.
        assert_eq!(template.render(&json!({"who": "x"})).unwrap_err(), missing("structured", "n"));
    }

    fn email(subject: &str, text: &str, html: Option<&str>) -> Content {
        Content {
            subject: Some(subject.into()),
            text: Some(text.into()),
            html: html.map(Into::into),
            ..Default::default()
        }
    }

    fn sms(text: &str) -> Content {
        Content { text: Some(text.into()), ..Default::default() }
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    fn missing(field: &str, variable: &str) -> RenderError {
        RenderError::MissingVariable { field: field.into(), variable: variable.into() }
    }

    #[test]
    fn renders_every_field() {
        let t = Template::compile(Channel::Email, &email("Hi {{ name }}", "Order {{ order.id }}\n", None)).unwrap();
        let out = t.render(&json!({"name": "Ada", "order": {"id": 991}})).unwrap();
        assert_eq!(out, email("Hi Ada", "Order 991\n", None));
        assert_eq!(t.source(), &email("Hi {{ name }}", "Order {{ order.id }}\n", None));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let t = Template::compile(Channel::Sms, &sms("Hi {{ customer.name }}, order {{ order.id }}")).unwrap();
        assert_eq!(t.render(&json!({})), Err(missing("text", "customer")));
        assert_eq!(t.render(&json!({"customer": {"name": "Ada"}})), Err(missing("text", "order")));
        assert_eq!(t.render(&json!({"customer": {"name": "Ada"}, "order": {}})), Err(missing("text", "order.id")));
        assert_eq!(t.render(&json!({"customer": "Ada", "order": {"id": 1}})), Err(missing("text", "customer.name")));

        let t = Template::compile(Channel::Email, &email("{{ title }}", "{{ a }}{{ b }}", None)).unwrap();
        assert_eq!(t.render(&json!({"a": 1, "b": 2})), Err(missing("subject", "title")));
        assert_eq!(t.render(&json!({"title": "x", "a": 1})), Err(missing("text", "b")));

        let t = Template::compile(Channel::Sms, &sms("{{ items[1].sku }}")).unwrap();
        assert_eq!(t.render(&json!({"items": [{"sku": "a"}]})), Err(missing("text", "items[1]")));
        assert_eq!(t.render(&json!({"items": [{"sku": "a"}, {}]})), Err(missing("text", "items[1].sku")));
    }

    #[test]
    fn a_missing_variable_in_a_filter_or_condition_is_named() {
        let t = Template::compile(Channel::Sms, &sms("{{ name | upper }}")).unwrap();
        assert_eq!(t.render(&json!({})), Err(missing("text", "name")));
        let t = Template::compile(Channel::Sms, &sms("{% if vip %}Dear{% endif %} you")).unwrap();
        assert_eq!(t.render(&json!({})), Err(missing("text", "vip")));
        let t = Template::compile(Channel::Sms, &sms("{% for i in lines %}{{ i }}{% endfor %}")).unwrap();
        assert_eq!(t.render(&json!({})), Err(missing("text", "lines")));
    }

    #[test]
    fn a_missing_attribute_of_a_loop_variable_is_not_blamed_on_the_data() {
        let t = Template::compile(
            Channel::Sms,
            &sms("{% if x is defined %}{{ x }}{% endif %}{% for i in items %}{{ i.name }}{% endfor %}"),
        )
        .unwrap();
        match t.render(&json!({"items": [{}]})) {
            Err(RenderError::Failed { field, message }) => {
                assert_eq!(field, "text");
                assert!(message.contains("undefined"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn is_defined_and_default_work_when_the_variable_is_absent() {
        let t = Template::compile(
            Channel::Sms,
            &sms("Hi{% if name is defined %} {{ name }}{% endif %}, {{ greeting | default('welcome') }}"),
        )
        .unwrap();
        assert_eq!(t.render(&json!({})).unwrap().text.as_deref(), Some("Hi, welcome"));
        assert_eq!(
            t.render(&json!({"name": "Ada", "greeting": "hello"})).unwrap().text.as_deref(),
            Some("Hi Ada, hello")
        );
    }

    #[test]
    fn only_html_is_escaped() {
        let t =
            Template::compile(Channel::Email, &email("{{ name }}", "{{ name }}", Some("<p>{{ name }}</p>"))).unwrap();
        let out = t.render(&json!({"name": "<b>Tom & Jerry</b>"})).unwrap();
        assert_eq!(out.subject.as_deref(), Some("<b>Tom & Jerry</b>"));
        assert_eq!(out.text.as_deref(), Some("<b>Tom & Jerry</b>"));
        assert_eq!(out.html.as_deref(), Some("<p>&lt;b&gt;Tom &amp; Jerry&lt;&#x2f;b&gt;</p>"));
    }

    #[test]
    fn compile_errors_name_the_field_and_line() {
        let errors =
            Template::compile(Channel::Email, &email("Hi {{ name", "ok", Some("<p>\n{% if x %}</p>"))).unwrap_err();
        assert_eq!(fields(errors.clone()), ["content.subject", "content.html"]);
        assert!(errors[0].message.contains("syntax error") && errors[0].message.contains("line 1"), "{errors:?}");
        assert!(errors[1].message.contains("line 2"), "{errors:?}");
    }

    #[test]
    fn fields_the_channel_does_not_use_are_refused() {
        let errors = Template::compile(Channel::Sms, &email("Hi", "text", Some("<p>x</p>"))).unwrap_err();
        assert_eq!(fields(errors), ["content.subject", "content.html"]);
        let title = Content { title: Some("t".into()), ..email("s", "t", None) };
        assert_eq!(fields(Template::compile(Channel::Email, &title).unwrap_err()), ["content.title"]);
        assert_eq!(fields(Template::compile(Channel::Novu, &sms("x")).unwrap_err()), ["channel"]);
    }

    #[test]
    fn required_fields_are_checked() {
        assert_eq!(fields(Template::compile(Channel::Sms, &Content::default()).unwrap_err()), ["content.text"]);
        let no_subject = Content { html: Some("<p>x</p>".into()), ..Default::default() };
        assert_eq!(fields(Template::compile(Channel::Email, &no_subject).unwrap_err()), ["content.subject"]);
        // Every problem at once.
        let bad = Content { html: Some("{{".into()), title: Some("t".into()), ..Default::default() };
        assert_eq!(
            fields(Template::compile(Channel::Email, &bad).unwrap_err()),
            ["content.html", "content.title", "content.subject"]
        );
    }

    #[test]
    fn knows_whether_it_uses_the_subscriber() {
        let t = Template::compile(Channel::Sms, &sms("Hi {{ subscriber.first_name }}")).unwrap();
        assert!(t.uses_subscriber());
        assert_eq!(t.render(&json!({"subscriber": {"first_name": "Ada"}})).unwrap().text.as_deref(), Some("Hi Ada"));
        assert_eq!(t.render(&json!({})), Err(missing("text", "subscriber")));
        let t = Template::compile(
            Channel::Email,
            &email("Hi {{ name }}", "{% set subscriber = 1 %}{{ subscriber }}", None),
        )
        .unwrap();
        assert!(!t.uses_subscriber());
    }

    #[test]
    fn other_failures_carry_minijinja_s_message() {
        let t = Template::compile(Channel::Sms, &sms("{{ n + 1 }}")).unwrap();
        match t.render(&json!({"n": "x"})) {
            Err(RenderError::Failed { field, message }) => {
                assert_eq!(field, "text");
                assert!(message.contains("line 1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_ten_thousand_times_from_one_compilation() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Template>();

        let before = COMPILED_FIELDS.with(|c| c.get());
        let t = Template::compile(
            Channel::Email,
            &email("Hi {{ subscriber.name }}", "{{ body }}", Some("<p>{{ body }}</p>")),
        )
        .unwrap();
        assert_eq!(COMPILED_FIELDS.with(|c| c.get()) - before, 3);
        let copy = t.clone();
        assert!(Arc::ptr_eq(&t.inner, &copy.inner));
        for i in 0..10_000 {
            let out = copy.render(&json!({"body": "b", "subscriber": {"name": i}})).unwrap();
            assert_eq!(out.subject, Some(format!("Hi {i}")));
        }
        assert_eq!(COMPILED_FIELDS.with(|c| c.get()) - before, 3, "rendering compiled nothing");
    }

    #[test]
    fn a_runaway_render_fails_instead_of_running_on() {
        let source = Content {
            text: Some("{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}".into()),
            ..Default::default()
        };
        let template = Template::compile(Channel::Sms, &source).unwrap();
        assert!(matches!(template.render(&serde_json::json!({})), Err(RenderError::Failed { .. })));
    }

    #[test]
    fn paths_are_parsed_from_simple_expressions() {
        use Segment::*;
        assert_eq!(parse_path("order.id"), [Key("order".into()), Key("id".into())]);
        assert_eq!(parse_path("items[0].name"), [Key("items".into()), Index(0), Key("name".into())]);
        assert_eq!(parse_path("user[\"first name\"]"), [Key("user".into()), Key("first name".into())]);
        assert_eq!(parse_path("(...).name"), []);
        assert_eq!(parse_path("f(x).y"), [Key("f".into())]);
        assert_eq!(undefined_expression("undefined value (`order.id` is undefined)").as_deref(), Some("order.id"));
    }

    #[test]
    fn a_push_template_renders_its_data_values_and_takes_its_badge_as_it_is() {
        let source: Content = serde_json::from_value(json!({"title": "Order {{ id }}", "sound": "default",
            "image": "https://cdn.example.com/{{ id }}.png", "badge": 3,
            "data": {"order_id": "{{ id }}", "screen": "orders"}}))
        .unwrap();
        let t = Template::compile(Channel::Push, &source).unwrap();
        let out = t.render(&json!({"id": 42})).unwrap();
        assert_eq!(out.title.as_deref(), Some("Order 42"));
        assert_eq!(out.image.as_deref(), Some("https://cdn.example.com/42.png"));
        assert_eq!((out.sound.as_deref(), out.badge), (Some("default"), Some(3)));
        let data = out.data.unwrap();
        assert_eq!((data["order_id"].as_str(), data["screen"].as_str()), ("42", "orders"));
        assert_eq!(t.render(&json!({})), Err(missing("title", "id")));
        let only_data: Content =
            serde_json::from_value(json!({"body": "b", "data": {"order_id": "{{ nope }}"}})).unwrap();
        let t = Template::compile(Channel::Push, &only_data).unwrap();
        assert_eq!(t.render(&json!({})), Err(missing("data.order_id", "nope")));
    }

    #[test]
    fn push_fields_are_refused_elsewhere_and_checked_on_push() {
        let push: Content = serde_json::from_value(json!({"title": "t", "badge": 1, "data": {"a": "b"},
            "image": "https://x.example/i.png"}))
        .unwrap();
        assert_eq!(
            fields(Template::compile(Channel::InApp, &push).unwrap_err()),
            ["content.data", "content.badge", "content.image"]
        );
        let bad: Content = serde_json::from_value(json!({"body": "b", "image": "http://x.example/{{ i }}",
            "data": {"from": "x", "ok": "{{"}}))
        .unwrap();
        assert_eq!(
            fields(Template::compile(Channel::Push, &bad).unwrap_err()),
            ["content.data.ok", "content.data.from", "content.image"]
        );
    }
}
