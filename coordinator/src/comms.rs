//! Communication (DESIGN.md §9, docs/communication.md): the versioned
//! templates of every product, and the incidents that rollout events open,
//! update and resolve with those templates rendered.
//!
//! - Templates: when a bundle is uploaded (`bundle.upload` on the event
//!   bus) its release's five templates — the release's own files, or the
//!   built-in default for an event without one — are stored as new versions,
//!   once per bundle. An admin's edit (`rewindctl templates edit`) is parsed
//!   with `rewind_shared::templates` and stored as the next version; one that
//!   does not parse is refused with every error at file:line:column and
//!   nothing is stored. Rendering always uses the newest version.
//! - Incidents: [`spawn`] follows the event bus. `rollout.halted` opens an
//!   incident (`incident_started`), `rollout.rolling_back` and the fleet-wide
//!   `rollback.start` add `rollback_started`, `rollout.rolled_back` adds
//!   `rollback_completed`, and `rollout.done` resolves an open incident
//!   (`resolved`), as does an operator ([`resolve`]). The engine's
//!   `rollout.notify` (which names the message) maps the same way; a step
//!   told twice gives one message. [`schedule_maintenance`]
//!   announces an update. Every message is stored, then recorded in the audit
//!   log as `incident.<event>` (so webhooks and the status page follow it).
//!
//! Guarantee: a message's variable values can never add markup to the
//! status page (`rewind_shared::templates` escapes them), and the `html`
//! of an [`Incident`] is built from escaped text only.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rewind_shared::templates::{Event, Template, Templates, Values, Variable};
use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::error::{Error, Result};
use crate::store::{IncidentUpdate, TemplateVersion};

/// Source of a version that was never stored: the built-in default.
pub const DEFAULT_SOURCE: &str = "built-in default";

/// An incident as the status page shows it: the newest message, and the
/// timeline of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub id: String,
    pub product: String,
    pub release: String,
    /// The newest message's event (`incident_started`, `rollback_started`, ...).
    pub kind: String,
    /// `investigating`, `rolling_back`, `rolled_back`, `resolved` or `scheduled`.
    pub state: String,
    /// Plain text (HTML-escape it in a page).
    pub title: String,
    /// Markdown, values escaped.
    pub markdown: String,
    /// Plain text: title, blank line, body.
    pub text: String,
    /// The body as HTML built from escaped text: `<p>` per paragraph.
    pub html: String,
    /// RFC 3339.
    pub started: String,
    pub updated: String,
    /// Oldest first.
    pub updates: Vec<IncidentUpdate>,
}

impl Incident {
    /// True until resolved (a scheduled maintenance is not an open incident).
    #[must_use]
    pub fn is_open(&self) -> bool {
        !matches!(self.state.as_str(), "resolved" | "scheduled")
    }
}

/// How long plans took on the endpoints, from the `millis` of verified
/// results (`result` events, whichever replica stored them): the slowest
/// apply and the slowest rollback per release, since this coordinator
/// started. Messages take their `restore_window` from it.
#[derive(Debug, Default)]
pub struct Timings(std::sync::Mutex<BTreeMap<(String, String), Slowest>>);

/// The slowest plan of each kind and how many were measured.
#[derive(Debug, Default, Clone, Copy)]
struct Slowest {
    apply: Option<(u64, u64)>,
    rollback: Option<(u64, u64)>,
}

impl Timings {
    /// Takes the `millis` of a `result` event's report.
    pub fn observe(&self, params: &Value) {
        let (Some(product), Some(release), Some(ms)) =
            (str_param(params, "product"), str_param(params, "release"), params["millis"].as_u64())
        else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = map.entry((product.to_string(), release.to_string())).or_default();
        let which = match params["kind"].as_str() {
            Some("rollback") => &mut slot.rollback,
            // A failed apply ran and reverted its steps: as good a measure.
            Some("apply") => &mut slot.apply,
            _ => return,
        };
        let (max, n) = which.unwrap_or((0, 0));
        *which = Some((max.max(ms), n + 1));
    }

    /// The restore window of `release`: the slowest rollback measured, else
    /// an estimate from the slowest apply (a rollback undoes the same steps
    /// from the same snapshot; a failed apply already undid them); `None`
    /// before any endpoint reported a time.
    #[must_use]
    pub fn restore_window(&self, product: &str, release: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.get(&(product.to_string(), release.to_string()))?;
        let of = |n: u64, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            _ => format!("the slowest of {n} {many}"),
        };
        match (s.rollback, s.apply) {
            (Some((ms, n)), _) => {
                Some(format!("{} per endpoint ({})", duration(ms), of(n, "measured rollback", "measured rollbacks")))
            }
            (None, Some((ms, n))) => {
                Some(format!("{} per endpoint (estimated from {})", duration(ms), of(n, "apply", "applies")))
            }
            (None, None) => None,
        }
    }
}

/// `850 ms`, `2.4 s`, `3 min 5 s`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// Every incident, newest first.
///
/// # Errors
/// When the store fails.
pub async fn incidents(app: &App) -> Result<Vec<Incident>> {
    let mut by_id: BTreeMap<String, Vec<IncidentUpdate>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for u in app.store.incident_updates().await? {
        if !by_id.contains_key(&u.incident) {
            order.push(u.incident.clone());
        }
        by_id.entry(u.incident.clone()).or_default().push(u);
    }
    let mut out: Vec<Incident> = order
        .into_iter()
        .filter_map(|id| {
            let updates = by_id.remove(&id)?;
            let (first, last) = (updates.first()?.clone(), updates.last()?.clone());
            Some(Incident {
                id,
                product: last.product.clone(),
                release: last.release.clone(),
                kind: last.kind.clone(),
                state: last.state.clone(),
                title: last.title.clone(),
                markdown: last.markdown.clone(),
                html: html_paragraphs(body_of(&last.text)),
                text: last.text.clone(),
                started: first.time,
                updated: last.time,
                updates,
            })
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The text without its first line (the title) and the blank line after it.
fn body_of(text: &str) -> &str {
    text.split_once("\n\n").map_or(text, |(_, body)| body)
}

fn html_paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>", crate::web::html::esc(p).replace('\n', "<br>")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn event_named(name: &str) -> Result<Event> {
    Event::from_name(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown template `{name}`: the templates are {}",
            Event::ALL.map(Event::name).join(", ")
        ))
    })
}

fn default_version(product: &str, event: Event) -> TemplateVersion {
    TemplateVersion {
        product: product.to_string(),
        name: event.name().to_string(),
        version: 0,
        body: Template::default_for(event).source,
        author: "rewind".into(),
        source: DEFAULT_SOURCE.into(),
        time: String::new(),
    }
}

/// The template in use for each event of `product` (every product that
/// has stored templates with `None`): the newest stored version, or the
/// built-in default as version 0 for an event never stored.
///
/// # Errors
/// When the store fails.
pub async fn templates(app: &App, product: Option<&str>) -> Result<Vec<TemplateVersion>> {
    let mut newest: BTreeMap<(String, String), TemplateVersion> = BTreeMap::new();
    for v in app.store.template_versions(product.map(String::from)).await? {
        newest.insert((v.product.clone(), v.name.clone()), v);
    }
    let mut products: Vec<String> = newest.keys().map(|(p, _)| p.clone()).collect();
    if let Some(p) = product {
        products.push(p.to_string());
    }
    products.sort();
    products.dedup();
    let mut out = Vec::new();
    for p in products {
        for e in Event::ALL {
            out.push(newest.remove(&(p.clone(), e.name().to_string())).unwrap_or_else(|| default_version(&p, e)));
        }
    }
    Ok(out)
}

/// Every version of one template, oldest first (the built-in default as
/// version 0 when none was stored).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown template name; store failures.
pub async fn template_versions(app: &App, product: &str, name: &str) -> Result<Vec<TemplateVersion>> {
    let event = event_named(name)?;
    let v: Vec<TemplateVersion> =
        app.store.template_versions(Some(product.to_string())).await?.into_iter().filter(|v| v.name == name).collect();
    Ok(if v.is_empty() { vec![default_version(product, event)] } else { v })
}

/// Parses an edited template; every error at `templates/<name>.md:line:column`.
///
/// # Errors
/// [`Error::InvalidArgument`] listing every error.
pub fn parse_template(name: &str, body: &str) -> Result<Template> {
    let event = event_named(name)?;
    Template::parse(event, Path::new(&format!("templates/{name}.md")), body)
        .map_err(|errs| Error::InvalidArgument(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// Stores an admin's edit as the template's next version.
///
/// # Errors
/// [`Error::InvalidArgument`] when the product name is empty or the
/// template does not parse (nothing is stored); store failures.
pub async fn put_template(app: &App, product: &str, name: &str, body: &str, author: &str) -> Result<TemplateVersion> {
    if product.is_empty() || product.len() > 128 || product.chars().any(char::is_control) {
        return Err(Error::InvalidArgument("product: 1-128 printable characters".into()));
    }
    parse_template(name, body)?;
    let stored = app
        .store
        .put_templates(product.into(), vec![(name.into(), body.into())], author.into(), "edit".into(), None)
        .await?;
    let v = stored.into_iter().next().ok_or_else(|| Error::Store("the template version was not stored".into()))?;
    crate::audit::record(
        app,
        "template.edit",
        json!({"by": author, "product": product, "name": name, "version": v.version}),
    )
    .await;
    Ok(v)
}

/// The release inside a stored bundle (the apply plan's steps), with its
/// templates.
async fn stored_release(
    app: &App,
    product: &str,
    release: Option<&str>,
) -> Result<Option<(String, rewind_shared::Release)>> {
    let Some(b) = app.store.bundle(product.to_string(), release.map(String::from)).await? else {
        return Ok(None);
    };
    let bundle: rewind_shared::bundle::Bundle =
        serde_json::from_slice(&b.bytes).map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    let payload = bundle.apply.payload_bytes().map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    let plan: rewind_shared::bundle::Plan =
        serde_json::from_slice(&payload).map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    Ok(Some((b.id, plan.steps)))
}

/// Stores the templates of the uploaded bundle of `product` `release` as
/// new versions, unless that bundle's were stored before.
///
/// # Errors
/// When the store fails or the stored bundle cannot be read.
pub async fn import_bundle(app: &App, product: &str, release: &str, by: &str) -> Result<Vec<TemplateVersion>> {
    let Some((bundle, rel)) = stored_release(app, product, Some(release)).await? else {
        return Ok(Vec::new());
    };
    let templates: Vec<(String, String)> =
        Event::ALL.iter().map(|e| (e.name().to_string(), rel.templates.get(*e).source)).collect();
    let source = format!("release {release} (bundle {bundle})");
    let stored = app.store.put_templates(product.into(), templates, by.into(), source, Some(bundle)).await?;
    if !stored.is_empty() {
        tracing::info!(product, release, versions = stored.len(), "templates imported from the uploaded bundle");
    }
    Ok(stored)
}

/// The templates in use for `product`, parsed.
async fn current(app: &App, product: &str) -> Result<Templates> {
    let mut t = Templates::default();
    for v in templates(app, Some(product)).await? {
        if v.version == 0 {
            continue;
        }
        match parse_template(&v.name, &v.body) {
            Ok(parsed) => t.set(parsed),
            Err(e) => {
                tracing::error!(product, name = %v.name, version = v.version, "stored template does not parse, using the default: {e}")
            }
        }
    }
    Ok(t)
}

fn str_param<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// How many endpoints an event concerns, from its parameters.
fn affected(params: &Value) -> Option<u64> {
    ["affected_count", "affected", "agents"].iter().find_map(|k| match params.get(*k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::Array(a)) => Some(a.len() as u64),
        _ => None,
    })
}

/// How many endpoints the product's rollout of `release` has reached (the
/// apply plan was sent to them, whether or not they reported yet), from the
/// rollout engine's status.
async fn reached(app: &App, product: &str, release: Option<&str>) -> Option<u64> {
    let s = crate::rollouts::status(app, product).await.ok()?;
    if release.is_some_and(|r| s.get("version").and_then(Value::as_str) != Some(r)) {
        return None;
    }
    let agents = s.get("agents")?.as_array()?;
    Some(agents.iter().filter(|a| a.get("plan_sent").and_then(Value::as_bool) == Some(true)).count() as u64)
}

/// What `started_at` shows: RFC 3339 cut to minutes, `2026-11-25 08:00 UTC`.
fn display_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => rfc3339.to_string(),
    }
}

/// One message to render and store.
struct Message<'a> {
    product: &'a str,
    /// The release version, when the event names it.
    release: Option<&'a str>,
    event: Event,
    state: &'a str,
    cause: String,
    params: &'a Value,
    /// Continue this incident, else open a new one.
    incident: Option<Incident>,
}

async fn publish(app: &App, m: Message<'_>) -> Result<Incident> {
    let found = stored_release(app, m.product, m.release).await?;
    if let Some((_, rel)) = &found {
        // A bundle whose upload event was missed (lagging bus, older coordinator).
        import_bundle(app, m.product, &rel.version, str_param(m.params, "by").unwrap_or("coordinator")).await?;
    }
    let release = m
        .release
        .map(String::from)
        .or_else(|| found.as_ref().map(|(_, r)| r.version.clone()))
        .or_else(|| m.incident.as_ref().map(|i| i.release.clone()))
        .unwrap_or_default();
    let now = crate::now();
    let started = m.incident.as_ref().map_or_else(|| now.clone(), |i| i.started.clone());
    let mut values = match &found {
        Some((_, rel)) => Values::for_release(rel),
        None => Values::default()
            .with(Variable::Product, m.product)
            .with(Variable::Version, &release)
            .with(Variable::Release, format!("{} {release}", m.product)),
    };
    values = values
        .with(Variable::StartedAt, str_param(m.params, "starts").map_or_else(|| display_time(&started), String::from));
    for (var, key) in
        [(Variable::Wave, "wave"), (Variable::Reason, "reason"), (Variable::RestoreWindow, "restore_window")]
    {
        if let Some(v) = str_param(m.params, key) {
            values = values.with(var, v);
        }
    }
    if let Some(n) = affected(m.params) {
        values = values.with(Variable::AffectedCount, n);
    }
    let rendered = current(app, m.product).await?.render(m.event, &values);
    let id = m.incident.as_ref().map_or_else(|| crate::random_id("inc", 8), |i| i.id.clone());
    let update = IncidentUpdate {
        incident: id.clone(),
        product: m.product.to_string(),
        release: release.clone(),
        kind: m.event.name().to_string(),
        state: m.state.to_string(),
        title: rendered.title.clone(),
        markdown: format!("## {}\n\n{}", rendered.title_markdown, rendered.markdown),
        text: rendered.text.clone(),
        cause: m.cause,
        time: now,
    };
    app.store.add_incident_update(update.clone()).await?;
    crate::audit::record(
        app,
        &format!("incident.{}", m.event.name()),
        json!({
            "incident": id, "product": m.product, "version": release, "state": m.state, "cause": update.cause,
            "title": rendered.title, "text": rendered.text, "markdown": update.markdown,
        }),
    )
    .await;
    tracing::info!(incident = %id, product = m.product, event = m.event.name(), "incident message published");
    incidents(app)
        .await?
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(|| Error::Store(format!("incident {id} vanished")))
}

async fn open_incident(app: &App, product: &str) -> Result<Option<Incident>> {
    Ok(incidents(app).await?.into_iter().find(|i| i.product == product && i.is_open()))
}

/// Announces a scheduled update of `product` to `version`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty product, version or start time.
pub async fn schedule_maintenance(
    app: &App,
    product: &str,
    version: &str,
    starts: &str,
    wave: &str,
    by: &str,
) -> Result<Incident> {
    for (field, v) in [("product", product), ("version", version), ("starts", starts)] {
        if v.trim().is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!("{field}: 1-200 printable characters")));
        }
    }
    let params = json!({"by": by, "starts": starts, "wave": wave});
    publish(
        app,
        Message {
            product,
            release: Some(version),
            event: Event::ScheduledMaintenance,
            state: "scheduled",
            cause: format!("operator {by}"),
            params: &params,
            incident: None,
        },
    )
    .await
}

/// Resolves an open incident, by id or by product.
///
/// # Errors
/// [`Error::NotFound`] when there is no such open incident.
pub async fn resolve(app: &App, incident_or_product: &str, reason: &str, by: &str) -> Result<Incident> {
    let all = incidents(app).await?;
    let found = all
        .into_iter()
        .find(|i| i.is_open() && (i.id == incident_or_product || i.product == incident_or_product))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no open incident {incident_or_product:?} (an incident id or a product); list them with rewindctl incidents list"
            ))
        })?;
    let reason = if reason.trim().is_empty() { format!("Resolved by {by}.") } else { reason.to_string() };
    let params = json!({"by": by, "reason": reason});
    let product = found.product.clone();
    let release = found.release.clone();
    publish(
        app,
        Message {
            product: &product,
            release: Some(&release),
            event: Event::Resolved,
            state: "resolved",
            cause: format!("operator {by}"),
            params: &params,
            incident: Some(found),
        },
    )
    .await
}

/// Handles one bus event; public for tests that drive it without a bus.
///
/// # Errors
/// When the store fails.
pub async fn on_event(app: &App, kind: &str, params: &Value) -> Result<Option<Incident>> {
    let Some(product) = str_param(params, "product") else {
        return Ok(None);
    };
    let release = str_param(params, "version").or_else(|| str_param(params, "release"));
    if kind == "result" {
        app.timings.observe(params);
        return Ok(None);
    }
    if kind == "bundle.upload" {
        if let Some(r) = release {
            import_bundle(app, product, r, str_param(params, "by").unwrap_or("upload")).await?;
        }
        return Ok(None);
    }
    // The rollout engine names the message itself (`rollout.notify`); its
    // transitions map the same way, and carry the wave and reason. Every
    // other event (results, telemetry: thousands a second) is dismissed
    // here, before the store is read.
    let notify = (kind == "rollout.notify").then(|| str_param(params, "event").and_then(Event::from_name)).flatten();
    let (event, state) = match (kind, notify) {
        (_, Some(Event::IncidentStarted)) | ("rollout.halted", _) => (Event::IncidentStarted, "investigating"),
        (_, Some(Event::RollbackStarted)) | ("rollout.rolling_back" | "rollback.start", _) => {
            (Event::RollbackStarted, "rolling_back")
        }
        (_, Some(Event::RollbackCompleted)) | ("rollout.rolled_back", _) => (Event::RollbackCompleted, "rolled_back"),
        (_, Some(Event::Resolved)) | ("rollout.done", _) => (Event::Resolved, "resolved"),
        _ => return Ok(None),
    };
    let open = open_incident(app, product).await?;
    if event == Event::Resolved && open.is_none() {
        // Nothing to resolve: a rollout that finished without an incident.
        return Ok(None);
    }
    if open.as_ref().is_some_and(|i| i.kind == event.name()) {
        // The same step told twice (transition and notify): one message.
        return Ok(None);
    }
    let mut params = params.clone();
    if event == Event::Resolved && str_param(&params, "reason").is_none() {
        params["reason"] = json!("The rollout finished and every endpoint is in a verified state.");
    }
    if str_param(&params, "restore_window").is_none()
        && let Some(w) = release.and_then(|r| app.timings.restore_window(product, r))
    {
        params["restore_window"] = json!(w);
    }
    if affected(&params).is_none()
        && let Some(n) = reached(app, product, release).await
    {
        params["affected_count"] = json!(n);
    }
    let m = Message { product, release, event, state, cause: kind.to_string(), params: &params, incident: open };
    publish(app, m).await.map(Some)
}

/// Follows the event bus: imports templates of uploaded bundles and turns
/// rollout events into incident messages. Call before the first event.
pub fn spawn(app: &Arc<App>) {
    let mut rx = app.events.subscribe();
    let app = Arc::clone(app);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Err(e) = on_event(&app, &ev.kind, &ev.params).await {
                        tracing::error!(kind = %ev.kind, "incident message not published: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(
                        missed = n,
                        "communication fell behind the event bus; {n} events were not turned into messages"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::app;

    #[tokio::test]
    async fn a_halt_rollback_and_resolution_make_one_incident_with_one_message_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let mut bus = app.events.subscribe();
        let p =
            json!({"product": "notes", "version": "2026.11.0", "wave": "canary", "reason": "crash rate <b>high</b>"});
        assert!(on_event(&app, "rollout.done", &p).await.unwrap().is_none(), "nothing to resolve");
        on_event(&app, "rollout.halted", &p).await.unwrap().unwrap();
        let notify = |e: &str| json!({"product": "notes", "version": "2026.11.0", "event": e});
        assert!(on_event(&app, "rollout.notify", &notify("incident_started")).await.unwrap().is_none(), "told twice");
        // The restore window comes from the endpoints' reports: the slowest
        // apply until a rollback was measured.
        for (kind, status, ms) in [("apply", "applied", 40), ("apply", "failed", 1260), ("apply", "refused", 0)] {
            let mut r = json!({"product": "notes", "release": "2026.11.0", "kind": kind, "status": status});
            if status != "refused" {
                r["millis"] = json!(ms);
            }
            assert!(on_event(&app, "result", &r).await.unwrap().is_none());
        }
        assert_eq!(
            app.timings.restore_window("notes", "2026.11.0").as_deref(),
            Some("1.3 s per endpoint (estimated from the slowest of 2 applies)")
        );
        on_event(
            &app,
            "rollout.rolling_back",
            &json!({"product": "notes", "version": "2026.11.0", "wave": "canary", "reason": "auto", "agents": 2}),
        )
        .await
        .unwrap();
        let r = json!({"product": "notes", "release": "2026.11.0", "kind": "rollback", "status": "rolled_back", "millis": 850});
        on_event(&app, "result", &r).await.unwrap();
        assert_eq!(
            app.timings.restore_window("notes", "2026.11.0").as_deref(),
            Some("850 ms per endpoint (1 measured rollback)")
        );
        assert_eq!(app.timings.restore_window("notes", "2026.12.0"), None, "nothing measured for another release");
        on_event(&app, "rollout.notify", &notify("rollback_completed")).await.unwrap();
        let done = on_event(&app, "rollout.notify", &notify("resolved")).await.unwrap().unwrap();
        assert_eq!(done.state, "resolved");
        let kinds: Vec<&str> = done.updates.iter().map(|u| u.kind.as_str()).collect();
        assert_eq!(kinds, ["incident_started", "rollback_started", "rollback_completed", "resolved"]);
        let first = &done.updates[0];
        assert_eq!(first.title, "Investigating a problem with notes 2026.11.0");
        assert!(
            first.markdown.contains("in wave canary") && first.markdown.contains(r"crash rate \<b\>high\</b\>"),
            "{}",
            first.markdown
        );
        assert!(done.updates[1].text.contains("on 2 endpoint(s) in wave canary"), "{}", done.updates[1].text);
        assert!(
            done.updates[1].text.contains("A restore takes about 1.3 s per endpoint (estimated from the slowest of 2"),
            "{}",
            done.updates[1].text
        );
        assert!(!done.html.contains("<b>"), "{}", done.html);
        assert_eq!(incidents(&app).await.unwrap().len(), 1);
        // Each message is an audit entry on the bus.
        let mut seen = Vec::new();
        while let Ok(ev) = bus.try_recv() {
            seen.push(ev.kind);
        }
        assert_eq!(
            seen,
            [
                "incident.incident_started",
                "incident.rollback_started",
                "incident.rollback_completed",
                "incident.resolved"
            ]
        );
        // A new halt opens a new incident.
        on_event(&app, "rollout.halted", &p).await.unwrap().unwrap();
        assert_eq!(
            incidents(&app).await.unwrap().iter().map(|i| i.state.as_str()).collect::<Vec<_>>(),
            ["investigating", "resolved"]
        );
        assert!(resolve(&app, "other", "", "alice").await.is_err());
        let r = resolve(&app, "notes", "", "alice").await.unwrap();
        assert!(r.text.contains("Resolved by alice."), "{}", r.text);
    }

    #[test]
    fn html_is_built_from_escaped_text_only() {
        let h = html_paragraphs("We are <b>rolling</b> back & \"more\".\nLine two\n\nSecond");
        assert_eq!(
            h,
            "<p>We are &lt;b&gt;rolling&lt;/b&gt; back &amp; &quot;more&quot;.<br>Line two</p>\n<p>Second</p>"
        );
        assert_eq!(body_of("Title\n\nBody\n"), "Body\n");
    }

    #[test]
    fn affected_counts_and_times() {
        assert_eq!(affected(&json!({"agents": 5})), Some(5));
        assert_eq!(affected(&json!({"affected": ["a", "b"]})), Some(2));
        assert_eq!(affected(&json!({})), None);
        assert_eq!(display_time("2026-11-25T08:01:33.123Z"), "2026-11-25 08:01 UTC");
    }

    #[test]
    fn an_edit_with_an_unknown_variable_names_the_file_and_line() {
        let e = parse_template("resolved", "---\ntitle: Fixed\n---\nAll good.\nSeverity: {{severity}}\n").unwrap_err();
        assert!(e.to_string().starts_with("templates/resolved.md:5:"), "{e}");
        assert!(e.to_string().contains("{{severity}}"), "{e}");
        assert!(parse_template("outage", "x").unwrap_err().to_string().contains("unknown template `outage`"));
    }
}
