//! `/status`: the public status page, and `/status/events`, the same
//! content pushed live over Server-Sent Events.
//!
//! What it shows comes from the store and the rollout functions only (no
//! cached copy of its own): per product the newest rollout's state and
//! per-wave progress, migration progress (endpoints reporting the release's
//! sequence installed), the release's flags, anomalies (integrity alarms
//! and schema drift from fleet verification) and incidents with their
//! newest message, rendered from the product's communication templates
//! ([`crate::comms::incidents`]).
//!
//! Live updates: one renderer task follows the event bus; after every
//! event (a burst is coalesced) it renders the `<div id="live">` fragment
//! once and publishes it on a `watch` channel, which every SSE client
//! follows. A client gets the current fragment as soon as it connects, so
//! an event between page load and subscription is never missed. Without
//! JavaScript, `<noscript><meta refresh>` reloads the page every 5 s.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html as HtmlResponse, IntoResponse, Response};
use rewind_shared::Release;
use rewind_shared::fleet::AgentId;
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::WatchStream;

use super::Web;
use super::html::{Html, esc, page};
use crate::App;
use crate::error::{Error, Result};

/// Seconds between reloads of the page when JavaScript is off.
pub const REFRESH_SECONDS: u32 = 5;
/// Shortest time between two renders of the live fragment.
pub const MIN_RENDER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// One product on the status page.
#[derive(Debug, Clone, Default)]
pub struct ProductView {
    pub name: String,
    /// DESIGN.md §8 rollout status JSON, when the product has a rollout.
    pub rollout: Option<Value>,
    /// Why the rollout could not be read (other than "none yet").
    pub error: Option<String>,
    /// Enrolled, unrevoked endpoints with the product.
    pub endpoints: usize,
    /// Of them, how many report the rollout's sequence installed.
    pub installed: usize,
    /// The release's flags: (name, release value, previous value, where
    /// the fleet stands: how many endpoints that applied turned it off).
    pub flags: Vec<(String, String, String, String)>,
    /// Drift from fleet verification: (agent, target, digest, expected).
    pub drift: Vec<(String, String, String, String)>,
    /// Incident updates, newest first.
    pub incidents: Vec<IncidentView>,
}

/// How many incidents per product the page shows.
pub const INCIDENTS_SHOWN: usize = 5;

/// One incident with its newest message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentView {
    /// RFC 3339 of the newest message.
    pub time: String,
    pub started: String,
    /// The newest message's event, e.g. `rollback_started`.
    pub event: String,
    /// `investigating`, `rolling_back`, `rolled_back`, `resolved`, `scheduled`.
    pub state: String,
    pub title: String,
    /// The body as plain text (rendered from the product's templates).
    pub body: String,
    /// Every message, oldest first: (time, title).
    pub updates: Vec<(String, String)>,
}

/// An integrity alarm of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmView {
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

/// Everything the status page shows at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub products: Vec<ProductView>,
    pub alarms: Vec<AlarmView>,
    /// RFC 3339, when it was read.
    pub time: String,
    /// Sequence of the newest event seen by the renderer (0 on page load).
    pub seq: u64,
}

/// The release carried by a stored bundle's apply plan.
///
/// # Errors
/// When the store fails or the stored bundle does not decode.
pub async fn release_of(app: &App, product: &str, version: &str) -> Result<Option<Release>> {
    let Some(b) = app.store.bundle(product.to_string(), Some(version.to_string())).await? else {
        return Ok(None);
    };
    let bundle: rewind_shared::bundle::Bundle =
        serde_json::from_slice(&b.bytes).map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    let payload = bundle.apply.payload_bytes().map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    let plan: rewind_shared::bundle::Plan =
        serde_json::from_slice(&payload).map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    Ok(Some(plan.steps))
}

/// The rollout status (DESIGN.md §8 JSON) of every product in `products`
/// and of every product with a rollout, by product; an error for a
/// product without one is [`Error::NotFound`].
///
/// # Errors
/// When the store fails.
pub async fn rollout_statuses(app: &App, products: &BTreeSet<String>) -> Result<Vec<(String, Result<Value>)>> {
    let mut by: std::collections::BTreeMap<String, Result<Value>> =
        products.iter().map(|p| (p.clone(), Err(Error::NotFound(format!("{p} has no rollout"))))).collect();
    for s in crate::rollouts::statuses(app).await? {
        if let Some(p) = s["product"].as_str() {
            by.insert(p.to_string(), Ok(s));
        }
    }
    Ok(by.into_iter().collect())
}

/// Products the fleet has: every product an unrevoked agent's inventory
/// names (products with a rollout or an incident are added by the callers).
#[must_use]
pub fn products(agents: &[crate::store::AgentRecord]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for a in agents.iter().filter(|a| !a.revoked) {
        set.extend(a.inventory.targets.iter().map(|t| t.product.clone()));
        set.extend(a.inventory.products.iter().map(|p| p.name.clone()));
    }
    set
}

/// The product's incidents (newest first, at most [`INCIDENTS_SHOWN`]):
/// open ones and recent resolved ones, from the communication module.
#[must_use]
pub fn incidents_of(all: &[crate::comms::Incident], product: &str) -> Vec<IncidentView> {
    all.iter()
        .filter(|i| i.product == product)
        .take(INCIDENTS_SHOWN)
        .map(|i| IncidentView {
            time: i.updated.clone(),
            started: i.started.clone(),
            event: i.kind.clone(),
            state: i.state.clone(),
            title: i.title.clone(),
            body: i.text.split_once("\n\n").map_or(String::new(), |(_, b)| b.trim().to_string()),
            updates: i.updates.iter().map(|u| (u.time.clone(), u.title.clone())).collect(),
        })
        .collect()
}

/// Where the fleet stands on a flag, from the rollout status: how many of
/// the endpoints that applied the release had it turned on (its activation
/// plan) or off (a kill switch or a flag rollback) by hand; `as released`
/// (for a manual flag: `not turned on`) when none did.
fn flag_state(status: &serde_json::Value, flag: &str, manual: bool) -> String {
    let (off_key, on_key) = (format!("flag {flag}"), format!("flag {flag} on"));
    let applied: Vec<&serde_json::Value> =
        status["agents"].as_array().into_iter().flatten().filter(|a| a["outcome"] == "applied").collect();
    let count = |key: &str, words: &[&str]| {
        applied.iter().filter(|a| a["parts"][key].as_str().is_some_and(|w| words.contains(&w))).count()
    };
    let (on, off) = (count(&on_key, &["proven"]), count(&off_key, &["proven"]));
    let turning = count(&on_key, &["queued", "sent"]) + count(&off_key, &["queued", "sent"]);
    let n = applied.len();
    let mut done: Vec<String> = Vec::new();
    if on > 0 {
        done.push(format!("turned on on {on}"));
    }
    if off > 0 {
        done.push(format!("turned off on {off}"));
    }
    let mut out = match (done.is_empty(), manual) {
        (true, false) => format!("as released on {n} endpoint(s)"),
        (true, true) => format!("not turned on yet (manual) on {n} endpoint(s)"),
        (false, _) => format!("{} of {n} endpoint(s)", done.join(", ")),
    };
    if turning > 0 {
        out.push_str(&format!(", {turning} on the way"));
    }
    out
}

/// Reads everything the page shows.
///
/// # Errors
/// When the store fails.
pub async fn snapshot(app: &App) -> Result<Snapshot> {
    let agents = app.store.agents().await?;
    let mut names = products(&agents);
    let all_incidents = crate::comms::incidents(app).await?;
    names.extend(all_incidents.iter().map(|i| i.product.clone()));
    let mut products = Vec::new();
    for (name, status) in rollout_statuses(app, &names).await? {
        let mut view = ProductView { name: name.clone(), ..ProductView::default() };
        let with_product: Vec<_> = agents
            .iter()
            .filter(|a| {
                !a.revoked
                    && (a.inventory.targets.iter().any(|t| t.product == name)
                        || a.inventory.products.iter().any(|p| p.name == name))
            })
            .collect();
        view.endpoints = with_product.len();
        view.incidents = incidents_of(&all_incidents, &name);
        match status {
            Ok(s) => {
                let version = s["version"].as_str().unwrap_or_default().to_string();
                let sequence = s["sequence"].as_u64();
                view.installed = with_product
                    .iter()
                    .filter(|a| a.inventory.products.iter().any(|p| p.name == name && Some(p.sequence) == sequence))
                    .count();
                if let Some(release) = release_of(app, &name, &version).await? {
                    view.flags = release
                        .flags
                        .iter()
                        .map(|f| {
                            (
                                f.name.clone(),
                                f.value.to_string(),
                                f.previous.to_string(),
                                flag_state(&s, &f.name, f.activate == rewind_shared::release::Activation::Manual),
                            )
                        })
                        .collect();
                }
                if let Ok((_, v)) = crate::rollouts::verify(app, &name, &version).await {
                    for d in v["drift"].as_array().into_iter().flatten() {
                        let f = |k: &str| d[k].as_str().unwrap_or("none").to_string();
                        view.drift.push((f("agent"), f("target"), f("digest"), f("expected")));
                    }
                }
                view.rollout = Some(s);
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => view.error = Some(e.to_string()),
        }
        products.push(view);
    }
    // One read for every agent's alarms, shown agent by agent as listed.
    let mut by_agent: HashMap<AgentId, Vec<(String, String)>> = HashMap::new();
    for (agent, kind, detail) in app.store.all_alarms().await? {
        by_agent.entry(agent).or_default().push((kind, detail));
    }
    let mut alarms = Vec::new();
    for a in &agents {
        for (kind, detail) in by_agent.remove(&a.id).unwrap_or_default() {
            alarms.push(AlarmView { agent: a.id.to_string(), kind, detail });
        }
    }
    Ok(Snapshot { products, alarms, time: crate::now(), seq: 0 })
}

/// The live part of the page: `<div id="live">…</div>`. Every value is
/// escaped.
#[must_use]
pub fn render_live(s: &Snapshot) -> String {
    let mut h = Html::default();
    let _ = write!(h.0, "<div id=\"live\" data-seq=\"{}\">", s.seq);
    if s.products.is_empty() {
        h.raw("<section class=\"card\"><p class=\"muted\">No products yet: no agent has reported one and no release was uploaded.</p></section>");
    }
    for p in &s.products {
        let _ = write!(h.0, "<section class=\"card product\" data-product=\"{}\">", esc(&p.name));
        h.raw("<h2>").text(&p.name);
        match &p.rollout {
            Some(r) => {
                let state = r["state"].as_str().unwrap_or("unknown");
                let _ = write!(
                    h.0,
                    " {} <span class=\"state {}\" data-state=\"{}\">{}</span></h2>",
                    esc(r["version"].as_str().unwrap_or("")),
                    esc(state),
                    esc(state),
                    esc(&state.replace('_', " "))
                );
                h.el("p", "summary", r["summary"].as_str().unwrap_or(state));
                h.raw("<h3>Waves</h3>");
                for w in r["waves"].as_array().into_iter().flatten() {
                    let n = |k: &str| w[k].as_u64().unwrap_or(0);
                    let ws = w["state"].as_str().unwrap_or("unknown");
                    let _ = write!(
                        h.0,
                        "<div class=\"wave\" data-wave=\"{}\"><strong>{}</strong> <span class=\"state {}\">{}</span>",
                        esc(w["name"].as_str().unwrap_or("")),
                        esc(w["name"].as_str().unwrap_or("")),
                        esc(ws),
                        esc(&ws.replace('_', " "))
                    );
                    h.bar(n("succeeded"), n("failed"), n("pending"), n("rolled_back"));
                    h.raw("</div>");
                }
                h.raw("<h3>Migration</h3>");
                let _ = write!(
                    h.0,
                    "<p class=\"migration\">{} of {} endpoints run {} (sequence {}).</p>",
                    p.installed,
                    p.endpoints,
                    esc(r["version"].as_str().unwrap_or("")),
                    r["sequence"].as_u64().map_or_else(|| "?".into(), |n| n.to_string())
                );
            }
            None => {
                h.raw("</h2>");
                if let Some(e) = &p.error {
                    h.el("p", "warn", &format!("rollout status unavailable: {e}"));
                } else {
                    let _ = write!(h.0, "<p class=\"muted\">No rollout yet · {} endpoints.</p>", p.endpoints);
                }
            }
        }
        if !p.flags.is_empty() {
            h.raw("<h3>Flags</h3>");
            let rows: Vec<Vec<String>> = p
                .flags
                .iter()
                .map(|(n, v, prev, fleet)| vec![n.clone(), v.clone(), prev.clone(), fleet.clone()])
                .collect();
            h.table("flags", &["flag", "value in this release", "previous value", "on the fleet"], &rows);
        }
        if !p.drift.is_empty() {
            h.raw("<h3 class=\"warn\">Drift</h3>");
            let rows: Vec<Vec<String>> =
                p.drift.iter().map(|(a, t, d, e)| vec![a.clone(), t.clone(), d.clone(), e.clone()]).collect();
            h.table("drift", &["endpoint", "target", "schema digest", "expected"], &rows);
        }
        if !p.incidents.is_empty() {
            h.raw("<h3>Incidents</h3>");
            for i in &p.incidents {
                let _ = write!(
                    h.0,
                    "<div class=\"incident {}\" data-event=\"{}\" data-state=\"{}\">",
                    esc(&i.state),
                    esc(&i.event),
                    esc(&i.state)
                );
                h.el("strong", "", &i.title).raw(" ").el("span", "state", &i.state.replace('_', " "));
                h.el("div", "muted", &format!("started {} · updated {}", i.started, i.time)).el("p", "", &i.body);
                if i.updates.len() > 1 {
                    h.raw("<ol class=\"timeline\">");
                    for (time, title) in &i.updates {
                        h.raw("<li>").el("time", "", time).raw(" ").text(title).raw("</li>");
                    }
                    h.raw("</ol>");
                }
                h.raw("</div>");
            }
        }
        h.raw("</section>");
    }
    h.raw("<section class=\"card\"><h2>Anomalies</h2>");
    if s.alarms.is_empty() && s.products.iter().all(|p| p.drift.is_empty()) {
        h.raw("<p class=\"muted\">None.</p>");
    } else {
        let rows: Vec<Vec<String>> =
            s.alarms.iter().map(|a| vec![a.agent.clone(), a.kind.clone(), a.detail.clone()]).collect();
        if !rows.is_empty() {
            h.table("alarms", &["endpoint", "alarm", "detail"], &rows);
        }
        let drift: usize = s.products.iter().map(|p| p.drift.len()).sum();
        if drift > 0 {
            h.el("p", "warn", &format!("{drift} endpoint target(s) drifted from the predicted schema (see above)."));
        }
    }
    h.raw("</section>");
    let _ = write!(h.0, "<p class=\"muted\">As of <time>{}</time>.</p></div>", esc(&s.time));
    h.0
}

/// The whole page around a live fragment.
#[must_use]
pub fn render_page(live: &str) -> String {
    let head = format!("<noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>");
    let script = "<script>(function(){if(!window.EventSource)return;var es=new EventSource('/status/events');\
                  es.addEventListener('snapshot',function(e){var d=document.getElementById('live');\
                  if(d){d.outerHTML=e.data;}document.body.setAttribute('data-live','1');});})();</script>";
    page("Rewind status", &head, "", &format!("{live}{script}"))
}

pub(super) async fn page_handler(State(web): State<Arc<Web>>) -> Response {
    match snapshot(&web.app).await {
        Ok(s) => HtmlResponse(render_page(&render_live(&s))).into_response(),
        Err(e) => super::unavailable(&e.to_string()),
    }
}

pub(super) async fn events_handler(
    State(web): State<Arc<Web>>,
) -> Sse<impl tokio_stream::Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let stop = web.stop.subscribe();
    // The first snapshot is read now: the last render may be older than
    // the page the client just loaded (state that changed without an event,
    // e.g. an agent's inventory), and sending it would take the page back.
    // Renders after this one follow.
    let live = web.live.subscribe();
    let first = match snapshot(&web.app).await {
        Ok(mut s) => {
            s.seq = web.app.events.last_seq();
            Arc::new(render_live(&s))
        }
        Err(_) => live.borrow().clone(),
    };
    let stream = tokio_stream::iter([first])
        .chain(WatchStream::from_changes(live))
        .map(|html: Arc<String>| Ok(SseEvent::default().event("snapshot").data(html.as_str())))
        .take_while(move |_| !*stop.borrow());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Follows the event bus and republishes the rendered fragment after each
/// event (or burst of events) until `stop` turns true.
/// How often a replica that does not lead renders the page again.
pub const FOLLOWER_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn renderer(app: Arc<App>, live: watch::Sender<Arc<String>>, mut stop: watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut rx = app.events.subscribe();
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = rx.recv() => match r {
                Ok(e) => seq = e.seq,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            // A replica that does not lead sees the rollout's events only
            // through the store: it reads it again every few seconds.
            () = tokio::time::sleep(FOLLOWER_REFRESH), if !app.cluster.is_leader() => {}
        }
        // Coalesce a burst: everything already queued is covered by one render.
        loop {
            match rx.try_recv() {
                Ok(e) => seq = e.seq,
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        match snapshot(&app).await {
            Ok(mut s) => {
                s.seq = seq;
                let _ = live.send(Arc::new(render_live(&s)));
            }
            Err(e) => tracing::warn!("status page: reading the state after event {seq}: {e}"),
        }
        // At most one render per interval, however fast events come: the
        // ones meanwhile are covered by the next render.
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(MIN_RENDER_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The live stream starts from the state as it is when the client
    /// connects, not from the last render: an agent's inventory changes the
    /// products without an event, and the page the client just loaded
    /// already shows them.
    #[tokio::test]
    async fn the_event_stream_starts_from_the_state_now_not_from_the_last_render() {
        use http_body_util::BodyExt as _;
        let dir = tempfile::tempdir().unwrap();
        let app = Arc::new(crate::testing::app(dir.path()).await);
        let stale = render_live(&snapshot(&app).await.unwrap());
        assert!(stale.contains("No products yet"), "{stale}");
        let inventory = rewind_shared::fleet::Inventory {
            products: Vec::new(),
            targets: vec![rewind_shared::fleet::TargetState {
                product: "notes".into(),
                name: "notes".into(),
                digests: rewind_shared::fleet::TargetDigest::Unreadable { error: "not read yet".into() },
            }],
        };
        app.store.insert_agent(crate::testing::agent("agt-1", String::new(), inventory)).await.unwrap();
        let web = Arc::new(Web {
            app,
            live: watch::channel(Arc::new(stale)).0,
            stop: watch::channel(false).0,
            sessions: Default::default(),
        });
        let mut body = events_handler(State(web)).await.into_response().into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let first = String::from_utf8_lossy(&frame);
        assert!(first.contains("data-product=\"notes\"") && !first.contains("No products yet"), "{first}");
    }

    #[test]
    fn flag_state_counts_endpoints_that_turned_the_flag_off() {
        let s = json!({"agents": [
            {"outcome": "applied", "parts": {"flag new_checkout": "proven"}},
            {"outcome": "applied", "parts": {"flag new_checkout": "sent"}},
            {"outcome": "applied"},
            {"outcome": "pending", "parts": {"flag new_checkout": "queued"}},
        ]});
        assert_eq!(flag_state(&s, "new_checkout", false), "turned off on 1 of 3 endpoint(s), 1 on the way");
        assert_eq!(flag_state(&s, "dark_mode", false), "as released on 3 endpoint(s)");
        assert_eq!(flag_state(&s, "dark_mode", true), "not turned on yet (manual) on 3 endpoint(s)");
        let all_off = json!({"agents": [{"outcome": "applied", "parts": {"flag x": "proven"}}]});
        assert_eq!(flag_state(&all_off, "x", false), "turned off on 1 of 1 endpoint(s)");
        let mixed = json!({"agents": [
            {"outcome": "applied", "parts": {"flag x on": "proven"}},
            {"outcome": "applied", "parts": {"flag x on": "proven"}},
            {"outcome": "applied", "parts": {"flag x": "proven"}},
            {"outcome": "applied", "parts": {"flag x on": "sent"}},
        ]});
        assert_eq!(flag_state(&mixed, "x", true), "turned on on 2, turned off on 1 of 4 endpoint(s), 1 on the way");
    }

    fn hostile() -> &'static str {
        "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
    }

    #[test]
    fn every_value_on_the_page_is_escaped() {
        let h = hostile();
        let s = Snapshot {
            products: vec![ProductView {
                name: h.into(),
                rollout: Some(json!({"version": h, "state": h, "sequence": 7,
                    "waves": [{"name": h, "state": h, "succeeded": 1, "failed": 2, "pending": 3}]})),
                endpoints: 6,
                installed: 1,
                flags: vec![(h.into(), h.into(), h.into(), h.into())],
                drift: vec![(h.into(), h.into(), h.into(), h.into())],
                incidents: vec![IncidentView {
                    time: h.into(),
                    started: h.into(),
                    event: h.into(),
                    state: h.into(),
                    title: h.into(),
                    body: h.into(),
                    updates: vec![(h.into(), h.into()), (h.into(), h.into())],
                }],
                error: None,
            }],
            alarms: vec![AlarmView { agent: h.into(), kind: h.into(), detail: h.into() }],
            time: h.into(),
            seq: 3,
        };
        let html = render_page(&render_live(&s));
        assert!(!html.contains("<img"), "{html}");
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script: {html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("1 succeeded") && html.contains("2 failed") && html.contains("3 pending"));
        assert!(html.contains("1 of 6 endpoints"));
        assert!(html.contains("http-equiv=\"refresh\" content=\"5\""), "no-JS fallback");
        assert!(html.contains("data-seq=\"3\""));
    }
}
