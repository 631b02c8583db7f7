//! Communication templates (DESIGN.md §9): `templates/<event>.md` in a
//! release directory, one per incident event, with `{{variable}}`
//! placeholders and an optional front matter holding the title.
//!
//! Guarantees: a [`Template`] that parsed names only known variables, so
//! rendering never fails; every event has a template (the release's file or
//! the built-in default, [`Template::default_for`]); values are escaped for
//! Markdown (and inline HTML) in [`Rendered::markdown`], so a value such as
//! a reason can never add a link, a heading or markup to a status page,
//! while [`Rendered::text`] is the same message as plain text for chat
//! webhooks.
//!
//! File format:
//!
//! ```text
//! ---
//! title: Rolling back {{release}}
//! ---
//! We are rolling back {{release}} on {{affected_count}} endpoint(s).
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An incident event that has a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    IncidentStarted,
    RollbackStarted,
    RollbackCompleted,
    Resolved,
    ScheduledMaintenance,
}

impl Event {
    /// Every event, in the order an incident goes through them
    /// (maintenance last).
    pub const ALL: [Event; 5] = [
        Event::IncidentStarted,
        Event::RollbackStarted,
        Event::RollbackCompleted,
        Event::Resolved,
        Event::ScheduledMaintenance,
    ];

    /// The event's name, which is also its file name without `.md`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Event::IncidentStarted => "incident_started",
            Event::RollbackStarted => "rollback_started",
            Event::RollbackCompleted => "rollback_completed",
            Event::Resolved => "resolved",
            Event::ScheduledMaintenance => "scheduled_maintenance",
        }
    }

    /// The event named `name` (`rollback_started`), if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    fn file_names() -> String {
        Event::ALL.iter().map(|e| format!("{}.md", e.name())).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value a template may use as `{{name}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variable {
    /// Product and version together: `notes 2026.11.0`.
    Release,
    /// The product (`name` in release.toml): `notes`.
    Product,
    /// The display version: `2026.11.0`.
    Version,
    /// The rollout wave concerned: `canary`.
    Wave,
    /// How many endpoints the event concerns.
    AffectedCount,
    /// How long a restore takes per endpoint, e.g. `40 ms per endpoint`.
    RestoreWindow,
    /// Who answers for the release (`owner`).
    Owner,
    /// Who leads communication during the incident (`on_call`).
    OnCall,
    /// When the event (or the maintenance) starts, e.g. `2026-11-25 08:00 UTC`.
    StartedAt,
    /// Why: the trigger or halt signal, or the operator's words.
    Reason,
}

impl Variable {
    pub const ALL: [Variable; 10] = [
        Variable::Release,
        Variable::Product,
        Variable::Version,
        Variable::Wave,
        Variable::AffectedCount,
        Variable::RestoreWindow,
        Variable::Owner,
        Variable::OnCall,
        Variable::StartedAt,
        Variable::Reason,
    ];

    /// The name written between the braces.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Variable::Release => "release",
            Variable::Product => "product",
            Variable::Version => "version",
            Variable::Wave => "wave",
            Variable::AffectedCount => "affected_count",
            Variable::RestoreWindow => "restore_window",
            Variable::Owner => "owner",
            Variable::OnCall => "on_call",
            Variable::StartedAt => "started_at",
            Variable::Reason => "reason",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `release, product, ...`: for error messages and docs.
    #[must_use]
    pub fn names() -> String {
        Variable::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A template problem, at `file:line:column` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct TemplateError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A piece of a parsed text: literal Markdown or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Variable),
}

/// Values for the placeholders; a variable without a value renders as
/// `unknown`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values(BTreeMap<Variable, String>);

impl Values {
    /// The values a release knows: release, product, version, owner, on_call.
    #[must_use]
    pub fn for_release(release: &crate::Release) -> Values {
        Values::default()
            .with(Variable::Release, format!("{} {}", release.name, release.version))
            .with(Variable::Product, &release.name)
            .with(Variable::Version, &release.version)
            .with(Variable::Owner, &release.owner)
            .with(Variable::OnCall, &release.on_call)
    }

    /// Sets `var` (replacing an earlier value).
    #[must_use]
    pub fn with(mut self, var: Variable, value: impl ToString) -> Values {
        self.0.insert(var, value.to_string());
        self
    }

    /// The value of `var`, if set.
    #[must_use]
    pub fn get(&self, var: Variable) -> Option<&str> {
        self.0.get(&var).map(String::as_str)
    }

    fn raw(&self, var: Variable) -> String {
        // A value is one line: a newline would let it start a new Markdown
        // block (a heading, a list) on the status page.
        self.get(var).map_or_else(|| "unknown".to_string(), |v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Where a template came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `templates/<event>.md` of the release (the path as loaded).
    File(PathBuf),
    /// The built-in default.
    Default,
}

/// One event's message: a title and a Markdown body with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub event: Event,
    pub origin: Origin,
    /// The file's text as written (front matter included); what the
    /// coordinator stores and admins edit.
    pub source: String,
    title: Vec<Segment>,
    body: Vec<Segment>,
}

/// A template filled in with values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub event: Event,
    /// One line of plain text (values as given): for a page's `<title>`
    /// (HTML-escape it there), a JSON payload or a chat message.
    pub title: String,
    /// The title as Markdown, values escaped: for a heading.
    pub title_markdown: String,
    /// The body as Markdown, values escaped: for the status page.
    pub markdown: String,
    /// Title, blank line, body as plain text (Markdown markup removed,
    /// values as given): for chat webhooks.
    pub text: String,
}

/// The built-in messages: (event, title, body). docs/communication.md
/// quotes them; keep the two in step.
const DEFAULTS: [(Event, &str, &str); 5] = [
    (
        Event::IncidentStarted,
        "Investigating a problem with {{release}}",
        "We are investigating a problem with **{{release}}** in wave {{wave}}. \
{{affected_count}} endpoint(s) are affected.\n\n\
Reason: {{reason}}\n\n\
Started at {{started_at}}. {{on_call}} leads the response; {{owner}} owns the release. \
Every endpoint took a verified snapshot of its data before the update.\n",
    ),
    (
        Event::RollbackStarted,
        "Rolling back {{release}}",
        "We are rolling back **{{release}}** on {{affected_count}} endpoint(s) in wave {{wave}}.\n\n\
Reason: {{reason}}\n\n\
Each endpoint returns to its state before the update and proves it by checksum. \
A restore takes about {{restore_window}}. Started at {{started_at}}; {{on_call}} leads the response.\n",
    ),
    (
        Event::RollbackCompleted,
        "Rollback of {{release}} completed",
        "**{{release}}** was rolled back on {{affected_count}} endpoint(s) in wave {{wave}}; \
each proved by checksum that its data is back to the state before the update.\n\n\
Reason for the rollback: {{reason}}\n\n\
{{on_call}} keeps watching; {{owner}} will publish a review.\n",
    ),
    (
        Event::Resolved,
        "Resolved: {{release}}",
        "The incident with **{{release}}** that started at {{started_at}} is resolved.\n\n\
{{reason}}\n\n\
Thank you for your patience. Questions: {{on_call}}.\n",
    ),
    (
        Event::ScheduledMaintenance,
        "Scheduled update: {{release}}",
        "{{product}} will be updated to **{{version}}** starting {{started_at}}, wave by wave \
(first wave: {{wave}}).\n\n\
Every endpoint takes a verified snapshot of its data first; if anything goes wrong the update \
is rolled back, and a restore takes about {{restore_window}}.\n\n\
Owner: {{owner}}. Questions: {{on_call}}.\n",
    ),
];

/// Splits `text` (starting at 1-based `line` of `file`) into literal
/// Markdown and placeholders.
fn parse_segments(text: &str, file: &Path, first_line: usize) -> Result<Vec<Segment>, Vec<TemplateError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let at = |byte: usize| (first_line + i, line[..byte].chars().count() + 1);
        let mut rest = line;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            push_text(&mut out, &rest[..open]);
            let inner_start = open + 2;
            let Some(close) = rest[inner_start..].find("}}") else {
                let (l, c) = at(offset + open);
                errors.push(TemplateError {
                    file: file.to_path_buf(),
                    line: l,
                    column: c,
                    message: format!(
                        "`{{{{` is not closed on this line: write `{{{{variable}}}}` with one of: {}",
                        Variable::names()
                    ),
                });
                rest = "";
                break;
            };
            let name = rest[inner_start..inner_start + close].trim();
            match Variable::from_name(name) {
                Some(v) => out.push(Segment::Var(v)),
                None => {
                    let (l, c) = at(offset + open);
                    errors.push(TemplateError {
                        file: file.to_path_buf(),
                        line: l,
                        column: c,
                        message: format!("unknown variable `{{{{{name}}}}}`; the variables are: {}", Variable::names()),
                    });
                }
            }
            let consumed = inner_start + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        push_text(&mut out, rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn push_text(out: &mut Vec<Segment>, s: &str) {
    if s.is_empty() {
        return;
    }
    if let Some(Segment::Text(t)) = out.last_mut() {
        t.push_str(s);
    } else {
        out.push(Segment::Text(s.to_string()));
    }
}

impl Template {
    /// Parses a template file's text for `event`; `file` names it in errors.
    ///
    /// An optional front matter (`---` lines around `title: ...`) gives the
    /// title; without one the event's default title is used.
    ///
    /// # Errors
    /// Every problem at once, each at file:line:column: an unknown variable
    /// (listing the allowed ones), an unclosed `{{`, an unknown front-matter
    /// key, an unterminated front matter, an empty body.
    pub fn parse(event: Event, file: &Path, source: &str) -> Result<Template, Vec<TemplateError>> {
        let err = |line: usize, message: String| TemplateError { file: file.to_path_buf(), line, column: 1, message };
        let mut errors = Vec::new();
        let mut title_src: Option<(String, usize)> = None;
        let mut body_src = source;
        let mut body_line = 1;
        let mut lines = source.split_inclusive('\n');
        if lines.next().is_some_and(|l| l.trim_end() == "---") {
            let mut consumed = source.find('\n').map_or(source.len(), |n| n + 1);
            let mut closed = false;
            for (i, l) in lines.enumerate() {
                let line_no = i + 2;
                consumed += l.len();
                let t = l.trim();
                if t == "---" {
                    closed = true;
                    body_line = line_no + 1;
                    break;
                }
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                match t.split_once(':') {
                    Some((k, v)) if k.trim() == "title" => {
                        let v = v.trim();
                        let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
                        if title_src.is_some() {
                            errors.push(err(line_no, "`title` is given twice in the front matter; keep one".into()));
                        }
                        title_src = Some((v.to_string(), line_no));
                    }
                    Some((k, _)) => errors.push(err(
                        line_no,
                        format!("unknown front-matter key `{}`; the only key is `title`", k.trim()),
                    )),
                    None => {
                        errors.push(err(line_no, "front matter lines are `title: ...`; close it with `---`".into()))
                    }
                }
            }
            if !closed {
                errors.push(err(
                    1,
                    "the front matter opened here is never closed: add a line `---` after `title: ...`".into(),
                ));
            }
            body_src = &source[consumed.min(source.len())..];
        }
        let default = Template::default_for(event);
        let title = match &title_src {
            Some((t, _)) if t.trim().is_empty() => {
                errors.push(err(
                    title_src.as_ref().map_or(1, |x| x.1),
                    "`title` is empty; write a title or remove the line for the default".into(),
                ));
                Vec::new()
            }
            Some((t, line)) => parse_segments(t, file, *line).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Vec::new()
            }),
            None => default.title.clone(),
        };
        let mut body = parse_segments(body_src, file, body_line).unwrap_or_else(|mut e| {
            errors.append(&mut e);
            Vec::new()
        });
        // Blank lines between the front matter and the message are layout.
        if let Some(Segment::Text(t)) = body.first_mut() {
            *t = t.trim_start_matches(['\n', '\r']).to_string();
            if t.is_empty() {
                body.remove(0);
            }
        }
        if body_src.trim().is_empty() {
            errors.push(err(
                body_line,
                format!("the message body is empty; write the {event} message (or delete the file for the default)"),
            ));
        }
        if errors.is_empty() {
            Ok(Template { event, origin: Origin::File(file.to_path_buf()), source: source.to_string(), title, body })
        } else {
            Err(errors)
        }
    }

    /// The built-in template of `event`.
    #[must_use]
    pub fn default_for(event: Event) -> Template {
        let (_, title, body) = DEFAULTS.iter().find(|(e, _, _)| *e == event).expect("every event has a default");
        let file = PathBuf::from(format!("(default {event})"));
        Template {
            event,
            origin: Origin::Default,
            source: format!("---\ntitle: {title}\n---\n{body}"),
            title: parse_segments(title, &file, 1).expect("default titles parse"),
            body: parse_segments(body, &file, 1).expect("default bodies parse"),
        }
    }

    /// The variables this template uses, in order of first use.
    #[must_use]
    pub fn variables(&self) -> Vec<Variable> {
        let mut out = Vec::new();
        for s in self.title.iter().chain(&self.body) {
            if let Segment::Var(v) = s
                && !out.contains(v)
            {
                out.push(*v);
            }
        }
        out
    }

    /// Fills in `values`: Markdown with escaped values, and plain text.
    #[must_use]
    pub fn render(&self, values: &Values) -> Rendered {
        let fill = |segs: &[Segment], text: fn(&str) -> String, value: fn(&str) -> String| -> String {
            segs.iter()
                .map(|s| match s {
                    Segment::Text(t) => text(t),
                    Segment::Var(v) => value(&values.raw(*v)),
                })
                .collect()
        };
        let title = fill(&self.title, plain_text, str::to_string);
        let title_markdown = fill(&self.title, str::to_string, escape_markdown);
        let markdown = fill(&self.body, str::to_string, escape_markdown);
        let body_text = fill(&self.body, plain_text, str::to_string);
        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = format!("{title}\n\n{}\n", body_text.trim_end());
        Rendered { event: self.event, title, title_markdown: title_markdown.trim().to_string(), markdown, text }
    }
}

/// Escapes a value so that, inside Markdown, it reads as the literal text:
/// inline markup (`*`, `_`, backticks, links, HTML) is backslash-escaped,
/// and a leading block marker (`# `, `- `, `+ `, `---`, `1. `) too, since
/// the value may start a line.
#[must_use]
pub fn escape_markdown(value: &str) -> String {
    let mut chars = value.chars();
    let first = chars.next();
    let second = chars.next();
    // `# x`, `- x`, `+ x`, `---`, `===`: a block marker if the value starts
    // a line; `-x` or `2026.11.0` are not, and stay readable.
    let block_marker = matches!(first, Some('#' | '-' | '+' | '='))
        && (second.is_none() || second.is_some_and(char::is_whitespace) || second == first);
    let mut out = String::with_capacity(value.len() + 8);
    for (i, c) in value.chars().enumerate() {
        if (i == 0 && block_marker)
            || matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '!')
        {
            out.push('\\');
        }
        out.push(c);
    }
    // `1. x` / `1) x` at a line start would be a list item.
    let digits = value.chars().take_while(char::is_ascii_digit).count();
    let mut after = value[digits..].chars();
    if digits > 0 && matches!(after.next(), Some('.' | ')')) && after.next().is_none_or(char::is_whitespace) {
        out.insert(digits, '\\');
    }
    out
}

/// Markdown of a template's own text as plain text: headings' `#`, `**`,
/// `__`, backticks and backslash escapes removed, `[text](url)` as
/// `text (url)`.
fn plain_text(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    for line in md.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let line = if trimmed.starts_with('#') { trimmed.trim_start_matches('#').trim_start() } else { line };
        let line = line.replace("**", "").replace("__", "").replace('`', "");
        let mut chars = line.chars().peekable();
        let mut link_text: Option<String> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(char::is_ascii_punctuation) => {
                    let n = chars.next().expect("peeked");
                    push(&mut out, &mut link_text, n);
                }
                '[' if link_text.is_none() => link_text = Some(String::new()),
                ']' if link_text.is_some() => {
                    let text = link_text.take().expect("inside a link");
                    if chars.peek() == Some(&'(') {
                        chars.next();
                        let url: String = chars.by_ref().take_while(|c| *c != ')').collect();
                        out.push_str(&format!("{text} ({url})"));
                    } else {
                        out.push_str(&format!("[{text}]"));
                    }
                }
                c => push(&mut out, &mut link_text, c),
            }
        }
        if let Some(t) = link_text {
            out.push('[');
            out.push_str(&t);
        }
    }
    out
}

fn push(out: &mut String, link: &mut Option<String>, c: char) {
    match link {
        Some(l) => l.push(c),
        None => out.push(c),
    }
}

/// The templates of a release: those its `templates/` directory gives;
/// [`Templates::get`] falls back to the default for the others.
///
/// Serialized as `{event: {"file": .., "source": ..}}` with the sources as
/// written; deserializing parses them again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<Event, Stored>", into = "BTreeMap<Event, Stored>")]
pub struct Templates(BTreeMap<Event, Template>);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    file: PathBuf,
    source: String,
}

impl TryFrom<BTreeMap<Event, Stored>> for Templates {
    type Error = String;
    fn try_from(m: BTreeMap<Event, Stored>) -> Result<Self, String> {
        m.into_iter()
            .map(|(e, s)| {
                Template::parse(e, &s.file, &s.source)
                    .map(|t| (e, t))
                    .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            })
            .collect::<Result<_, _>>()
            .map(Templates)
    }
}

impl From<Templates> for BTreeMap<Event, Stored> {
    fn from(t: Templates) -> Self {
        t.0.into_iter()
            .map(|(e, t)| {
                let file = match t.origin {
                    Origin::File(f) => f,
                    Origin::Default => PathBuf::from(format!("{e}.md")),
                };
                (e, Stored { file, source: t.source })
            })
            .collect()
    }
}

impl Templates {
    /// Reads `dir/templates/*.md` (a missing directory means no templates).
    /// Hidden files (`.gitkeep`) are ignored.
    ///
    /// # Errors
    /// Every problem at once: a file whose name is not `<event>.md` (line
    /// 1), an unreadable file, and each template's own errors
    /// ([`Template::parse`]).
    pub fn load(dir: &Path) -> Result<Templates, Vec<TemplateError>> {
        let tdir = dir.join("templates");
        let entries = match std::fs::read_dir(&tdir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Templates::default()),
            Err(e) => {
                return Err(vec![TemplateError {
                    file: tdir,
                    line: 1,
                    column: 1,
                    message: format!("cannot read: {e}"),
                }]);
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut errors = Vec::new();
        let mut out = BTreeMap::new();
        for path in paths {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            let event = name.strip_suffix(".md").and_then(Event::from_name);
            let Some(event) = event.filter(|_| path.is_file()) else {
                errors.push(TemplateError {
                    file: path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("unknown template `{name}`: templates/ holds only {}", Event::file_names()),
                });
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(src) => match Template::parse(event, &path, &src) {
                    Ok(t) => {
                        out.insert(event, t);
                    }
                    Err(mut e) => errors.append(&mut e),
                },
                Err(e) => errors.push(TemplateError {
                    file: path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if errors.is_empty() { Ok(Templates(out)) } else { Err(errors) }
    }

    /// The release's template for `event`, else the built-in default.
    #[must_use]
    pub fn get(&self, event: Event) -> Template {
        self.0.get(&event).cloned().unwrap_or_else(|| Template::default_for(event))
    }

    /// Replaces (or adds) one event's template, e.g. after an admin edited
    /// it in the coordinator.
    pub fn set(&mut self, template: Template) {
        self.0.insert(template.event, template);
    }

    /// True when the release gives no template of its own.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renders `event`'s template (the release's or the default).
    #[must_use]
    pub fn render(&self, event: Event, values: &Values) -> Rendered {
        self.get(event).render(values)
    }
}

#[cfg(test)]
mod tests;
