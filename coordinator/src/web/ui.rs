//! `/ui`: the operator dashboard. Sign-in posts an operator token (the
//! same tokens and roles as the Admin API, looked up by hash in the store);
//! the coordinator answers with a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui` (the token itself is never
//! stored in the browser). Sessions live in memory for [`SESSION_TTL`] and
//! end with the process or at sign-out.
//!
//! Every state-changing request is a POST carrying the session's CSRF token
//! (a random value embedded in the page's forms) and is refused without
//! it; together with `SameSite=Strict` another site can neither read nor
//! forge a request. Roles: a viewer sees everything and gets no buttons; an
//! operator may roll back (and pause, resume, abort once the rollout engine
//! offers them); an approver may also approve waves. The role is checked
//! again on every POST, not only when drawing buttons.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html as HtmlResponse, IntoResponse, Redirect, Response};
use serde_json::Value;

use super::Web;
use super::html::{Html, esc, page};
use crate::App;
use crate::auth::Role;
use crate::store::token_hash;

/// How long a dashboard session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "rewind_session";
/// How many audit entries the dashboard lists (newest first).
pub const AUDIT_ROWS: usize = 50;
/// How many webhook delivery attempts the dashboard lists (newest first).
pub const WEBHOOK_ROWS: u32 = 50;

/// One signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    expires: Instant,
    /// The outcome of the last action, shown once.
    flash: Option<(bool, String)>,
}

/// Signed-in sessions by id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn create(&self, name: String, role: Role) -> String {
        let id = crate::random_id("rws", 24);
        let now = Instant::now();
        let mut m = self.0.lock().expect("ui sessions lock");
        m.retain(|_, s| s.expires > now);
        m.insert(
            id.clone(),
            Session { name, role, csrf: crate::random_id("csrf", 16), expires: now + SESSION_TTL, flash: None },
        );
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        let m = self.0.lock().expect("ui sessions lock");
        m.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn take_flash(&self, id: &str) -> Option<(bool, String)> {
        self.0.lock().expect("ui sessions lock").get_mut(id).and_then(|s| s.flash.take())
    }

    fn set_flash(&self, id: &str, ok: bool, msg: String) {
        if let Some(s) = self.0.lock().expect("ui sessions lock").get_mut(id) {
            s.flash = Some((ok, msg));
        }
    }

    fn remove(&self, id: &str) {
        self.0.lock().expect("ui sessions lock").remove(id);
    }

    /// Ends every session of operator `name`; how many there were.
    pub fn end_for(&self, name: &str) -> usize {
        let mut m = self.0.lock().expect("ui sessions lock");
        let before = m.len();
        m.retain(|_, s| s.name != name);
        before - m.len()
    }
}

/// Ends the dashboard sessions of operators whose tokens are revoked
/// (`operator.revoke` on the event bus) until `stop` turns true.
pub(super) async fn follow_revocations(web: std::sync::Arc<super::Web>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut rx = web.app.events.subscribe();
    loop {
        let e = tokio::select! {
            _ = stop.changed() => return,
            r = rx.recv() => match r {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if e.kind == "operator.revoke"
            && let Some(name) = e.params["name"].as_str()
        {
            let n = web.sessions.end_for(name);
            tracing::info!(name, sessions = n, "dashboard sessions of a revoked operator ended");
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn current(web: &Web, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session_id(headers)?;
    web.sessions.get(&id).map(|s| (id, s))
}

/// Compares secrets without an early exit on the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the dashboard lets an operator do, each through the same rollout
/// functions (and so the same audit entries) as `rewindctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
    Approve,
    Rollback,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Pause, Action::Resume, Action::Approve, Action::Abort, Action::Rollback];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
            Action::Approve => "approve",
            Action::Rollback => "rollback",
        }
    }

    /// The lowest role allowed to do it (DESIGN.md §6 roles).
    #[must_use]
    pub fn needs(self) -> Role {
        match self {
            Action::Approve => Role::Approver,
            _ => Role::Operator,
        }
    }

    /// Whether the action makes sense for a rollout in `state` (the
    /// engine checks again and refuses with a reason otherwise).
    #[must_use]
    pub fn offered_in(self, state: &str) -> bool {
        match self {
            Action::Pause => matches!(state, "running" | "baking" | "awaiting_approval"),
            Action::Abort => matches!(state, "running" | "baking" | "awaiting_approval" | "paused"),
            Action::Resume => state == "paused",
            Action::Approve => state == "awaiting_approval",
            Action::Rollback => !matches!(state, "rolling_back" | "rolled_back" | "superseded"),
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Runs an action for operator `who`; returns the message to show.
///
/// # Errors
/// The rollout function's refusal (no active rollout, wrong state, wrong
/// wave), as text.
pub async fn run_action(app: &App, who: &str, action: Action, product: &str, wave: &str) -> Result<String, String> {
    let actor = format!("{who} (dashboard)");
    let state = |v: Value| v["state"].as_str().unwrap_or("unknown").replace('_', " ");
    let r = match action {
        Action::Pause => crate::rollouts::pause(app, product, &actor).await.map(|v| format!("{product}: {}", state(v))),
        Action::Resume => {
            crate::rollouts::resume(app, product, &actor).await.map(|v| format!("{product}: {}", state(v)))
        }
        Action::Abort => crate::rollouts::abort(app, product, &actor).await.map(|v| format!("{product}: {}", state(v))),
        Action::Approve => crate::rollouts::approve(app, product, wave, &actor)
            .await
            .map(|v| format!("{product}: wave {wave} approved; {}", state(v))),
        Action::Rollback => {
            let req = crate::rollouts::RollbackRequest {
                granularity: "release".into(),
                scope: "fleet".into(),
                reason: format!("requested from the dashboard by {who}"),
                ..crate::rollouts::RollbackRequest::default()
            };
            crate::rollouts::rollback(app, product, req, &actor)
                .await
                .map(|r| format!("{product}: rollback sent to {} endpoint(s)", r.agents))
        }
    };
    r.map_err(|e| e.to_string())
}

fn nav(s: Option<&Session>) -> String {
    let mut h = Html::default();
    h.raw("<nav><a href=\"/status\">Status</a>");
    if let Some(s) = s {
        h.raw(
            " <a href=\"#agents\">Agents</a> <a href=\"#rollouts\">Rollouts</a> <a href=\"#drift\">Drift</a> \
               <a href=\"#flags\">Flags</a> <a href=\"#audit\">Audit</a> <a href=\"#templates\">Templates</a> <a href=\"#webhooks\">Webhooks</a>",
        );
        let _ = write!(
            h.0,
            " <span class=\"who\">{} ({})</span><form class=\"inline\" method=\"post\" action=\"/ui/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(&s.name),
            esc(s.role.as_str()),
            esc(&s.csrf)
        );
    }
    h.raw("</nav>");
    h.0
}

fn login_page(error: Option<&str>) -> String {
    let mut h = Html::default();
    h.raw("<section class=\"card\"><h2>Sign in</h2>");
    if let Some(e) = error {
        h.el("p", "warn", e);
    }
    h.raw(
        "<form method=\"post\" action=\"/ui/login\"><label for=\"token\">Operator token</label><br>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" size=\"40\" required> \
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">The admin token is in &lt;state&gt;/admin.token; create others with \
         rewindctl operator create NAME --role viewer|operator|approver.</p></section>",
    );
    page("Rewind dashboard", "", &nav(None), &h.0)
}

pub(super) async fn login_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if current(&web, &headers).is_some() {
        return Redirect::to("/ui").into_response();
    }
    HtmlResponse(login_page(None)).into_response()
}

pub(super) async fn login(State(web): State<Arc<Web>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let refuse = |msg: &str| (StatusCode::UNAUTHORIZED, HtmlResponse(login_page(Some(msg)))).into_response();
    if token.is_empty() {
        return refuse("Give an operator token.");
    }
    match web.app.store.operator(token_hash(token)).await {
        Ok(Some((name, role))) => {
            let id = web.sessions.create(name.clone(), role);
            tracing::info!(operator = %name, role = role.as_str(), "dashboard sign-in");
            let cookie =
                format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs());
            let mut r = Redirect::to("/ui").into_response();
            r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ascii cookie"));
            r
        }
        Ok(None) => refuse("Unknown operator token."),
        Err(e) => super::unavailable(&e.to_string()),
    }
}

pub(super) async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some((id, s)) = current(&web, &headers)
        && form.get("csrf").is_some_and(|c| same(c, &s.csrf))
    {
        web.sessions.remove(&id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("rewind_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

pub(super) async fn action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some((id, s)) = current(&web, &headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in at /ui/login first\n").into_response();
    };
    if !form.get("csrf").is_some_and(|c| same(c, &s.csrf)) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token; reload /ui and try again\n").into_response();
    }
    let name = form.get("action").map(String::as_str).unwrap_or_default();
    let Some(act) = Action::parse(name) else {
        return (StatusCode::BAD_REQUEST, format!("unknown action {name:?}\n")).into_response();
    };
    if s.role < act.needs() {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "operator {} has role {}, {} needs {}\n",
                s.name,
                s.role.as_str(),
                act.name(),
                act.needs().as_str()
            ),
        )
            .into_response();
    }
    let product = form.get("product").map(String::as_str).unwrap_or_default();
    let wave = form.get("wave").map(String::as_str).unwrap_or_default();
    let outcome = run_action(&web.app, &s.name, act, product, wave).await;
    tracing::info!(operator = %s.name, action = act.name(), product, ok = outcome.is_ok(), "dashboard action");
    match outcome {
        Ok(m) => web.sessions.set_flash(&id, true, m),
        Err(e) => web.sessions.set_flash(&id, false, format!("{} {product}: {e}", act.name())),
    }
    Redirect::to("/ui").into_response()
}

fn button(s: &Session, action: Action, product: &str, wave: &str) -> String {
    if s.role < action.needs() {
        return String::new();
    }
    let label = if action == Action::Approve { format!("approve {wave}") } else { action.name().to_string() };
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/ui/action\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"{}\"><input type=\"hidden\" name=\"product\" value=\"{}\">\
         <input type=\"hidden\" name=\"wave\" value=\"{}\"><button type=\"submit\" data-action=\"{}\">{} {}</button></form>",
        esc(&s.csrf),
        action.name(),
        esc(product),
        esc(wave),
        action.name(),
        esc(&label),
        esc(product)
    )
}

/// The dashboard's body for one session.
///
/// # Errors
/// When the store fails.
pub async fn dashboard(app: &App, s: &Session, flash: Option<(bool, String)>) -> crate::error::Result<String> {
    let mut h = Html::default();
    if let Some((ok, msg)) = flash {
        h.el("p", if ok { "card flash ok" } else { "card flash warn" }, &msg);
    }
    // Agents.
    let agents = app.store.agents().await?;
    h.raw("<section class=\"card\" id=\"agents\"><h2>Agents</h2>");
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.hostname.clone(),
                a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                a.last_seen.clone().unwrap_or_else(|| "never".into()),
                if a.revoked {
                    "revoked".into()
                } else if app.cluster.is_connected(app, &a.id) {
                    "connected".into()
                } else {
                    "offline".into()
                },
                a.inventory
                    .products
                    .iter()
                    .map(|p| format!("{} #{}", p.name, p.sequence))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    h.table("agents", &["id", "host", "labels", "last seen", "stream", "products"], &rows);
    h.raw("</section>");
    // Rollouts, drift, flags, templates per product.
    let audit = app.store.audit_entries().await?;
    let products = super::status::products(&agents);
    let statuses = super::status::rollout_statuses(app, &products).await?;
    let mut drift = Html::default();
    let mut flags = Html::default();
    h.raw("<section class=\"card\" id=\"rollouts\"><h2>Rollouts</h2>");
    for (product, status) in &statuses {
        let _ = write!(h.0, "<div class=\"rollout\" data-product=\"{}\">", esc(product));
        match status {
            Ok(r) => {
                let version = r["version"].as_str().unwrap_or_default();
                let state = r["state"].as_str().unwrap_or("unknown");
                let _ = write!(
                    h.0,
                    "<h3>{} {} <span class=\"state {}\" data-state=\"{}\">{}</span></h3>",
                    esc(product),
                    esc(version),
                    esc(state),
                    esc(state),
                    esc(&state.replace('_', " "))
                );
                h.el("p", "summary", r["summary"].as_str().unwrap_or(""));
                for w in r["waves"].as_array().into_iter().flatten() {
                    let n = |k: &str| w[k].as_u64().unwrap_or(0);
                    h.el("strong", "", w["name"].as_str().unwrap_or("")).raw(" ").el(
                        "span",
                        "state",
                        w["state"].as_str().unwrap_or(""),
                    );
                    h.bar(n("succeeded"), n("failed"), n("pending"), n("rolled_back"));
                }
                let rows: Vec<Vec<String>> = r["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let stream = if a["online"] == Value::Bool(true) { "online" } else { "offline" };
                        ["id", "wave", "outcome", "rollback", "detail"]
                            .iter()
                            .map(|k| a[*k].as_str().unwrap_or("").to_string())
                            .chain([stream.to_string()])
                            .collect()
                    })
                    .collect();
                h.table("outcomes", &["agent", "wave", "outcome", "rollback", "detail", "stream"], &rows);
                let wave = r["awaiting_approval"].as_str().unwrap_or_default();
                for a in Action::ALL.into_iter().filter(|a| a.offered_in(state)) {
                    h.raw(&button(s, a, product, wave));
                }
                drift_section(app, &mut drift, product, version).await;
                if let Some(release) = super::status::release_of(app, product, version).await? {
                    self::flags(&mut flags, product, &release);
                }
            }
            Err(crate::error::Error::NotFound(_)) => {
                h.el("h3", "", product).el("p", "muted", "No rollout yet.");
            }
            Err(e) => {
                h.el("h3", "", product).el("p", "warn", &e.to_string());
            }
        }
        h.raw("</div>");
    }
    if statuses.is_empty() {
        h.el("p", "muted", "No products yet.");
    }
    if s.role < Role::Approver {
        h.el(
            "p",
            "muted",
            &format!("Signed in as {} ({}): actions your role does not allow are not shown.", s.name, s.role.as_str()),
        );
    }
    h.raw("</section>");
    let _ = write!(
        h.0,
        "<section class=\"card\" id=\"drift\"><h2>Drift groups by schema digest</h2>{}</section>",
        if drift.0.is_empty() { "<p class=\"muted\">No rollout to verify.</p>".into() } else { drift.0 }
    );
    let _ = write!(
        h.0,
        "<section class=\"card\" id=\"flags\"><h2>Flags</h2>{}</section>",
        if flags.0.is_empty() { "<p class=\"muted\">No release declares flags.</p>".into() } else { flags.0 }
    );
    // Audit, newest first.
    h.raw("<section class=\"card\" id=\"audit\"><h2>Audit (latest)</h2>");
    let rows: Vec<Vec<String>> = audit
        .iter()
        .rev()
        .take(AUDIT_ROWS)
        .map(|e| vec![e.seq.to_string(), e.time.clone(), e.kind.clone(), e.params.clone()])
        .collect();
    h.table("audit", &["#", "time", "kind", "parameters"], &rows);
    h.raw("</section>");
    communication(app, &mut h).await?;
    Ok(h.0)
}

async fn drift_section(app: &App, h: &mut Html, product: &str, version: &str) {
    match crate::rollouts::verify(app, product, version).await {
        Ok((ok, v)) => {
            let _ = write!(
                h.0,
                "<h3>{} {} <span class=\"state {}\">{}</span></h3>",
                esc(product),
                esc(version),
                if ok { "done" } else { "halted" },
                if ok { "all match" } else { "drift" }
            );
            let mut by: BTreeMap<(String, String), (usize, bool)> = BTreeMap::new();
            for g in v["groups"].as_array().into_iter().flatten() {
                let key =
                    (g["target"].as_str().unwrap_or("").to_string(), g["digest"].as_str().unwrap_or("").to_string());
                by.insert(key, (g["agents"].as_array().map_or(0, Vec::len), g["expected"] == Value::Bool(true)));
            }
            let rows: Vec<Vec<String>> = by
                .into_iter()
                .map(|((t, d), (n, e))| vec![t, d, n.to_string(), if e { "expected".into() } else { "DRIFT".into() }])
                .collect();
            h.table("drift-groups", &["target", "schema digest", "endpoints", ""], &rows);
        }
        Err(e) => {
            h.el("p", "warn", &format!("{product} {version}: {e}"));
        }
    }
}

fn flags(flags: &mut Html, product: &str, release: &rewind_shared::Release) {
    if !release.flags.is_empty() {
        flags.el("h3", "", &format!("{product} {}", release.version));
        let rows: Vec<Vec<String>> = release
            .flags
            .iter()
            .map(|f| {
                let activate = match f.activate {
                    rewind_shared::release::Activation::Manual => "manual (rewindctl flags set ... on)",
                    other => other.as_str(),
                };
                vec![
                    f.name.clone(),
                    f.value.to_string(),
                    f.previous.to_string(),
                    f.owner.clone(),
                    activate.to_string(),
                    f.kill_switch.to_string(),
                ]
            })
            .collect();
        flags.table("flags", &["flag", "value", "previous", "owner", "activate", "kill switch"], &rows);
    }
}

/// The templates in use per product (newest version of each), and the
/// webhook delivery log.
async fn communication(app: &App, h: &mut Html) -> crate::error::Result<()> {
    h.raw("<section class=\"card\" id=\"templates\"><h2>Communication templates</h2>");
    let versions = crate::comms::templates(app, None).await?;
    if versions.is_empty() {
        h.el("p", "muted", "No templates stored yet: they come with the first uploaded bundle.");
    }
    for v in &versions {
        h.raw("<details><summary>")
            .text(&format!("{} · {} · version {} · {} · {}", v.product, v.name, v.version, v.source, v.author));
        h.raw("</summary>").el("pre", "", &v.body).raw("</details>");
    }
    h.el("p", "muted", "Edit with rewindctl templates (admins); every edit is a new version.");
    h.raw("</section><section class=\"card\" id=\"webhooks\"><h2>Webhook deliveries</h2>");
    let attempts = app.store.webhook_attempts(WEBHOOK_ROWS).await?;
    if attempts.is_empty() {
        h.el("p", "muted", "No deliveries yet.");
    } else {
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .rev()
            .map(|a| {
                vec![
                    a.time.clone(),
                    a.webhook.clone(),
                    a.event.clone(),
                    a.attempt.to_string(),
                    a.status.map_or_else(String::new, |s| s.to_string()),
                    a.outcome.clone(),
                    a.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        h.table("webhooks", &["time", "webhook", "event", "attempt", "HTTP", "outcome", "error"], &rows);
    }
    h.raw("</section>");
    Ok(())
}

pub(super) async fn home(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some((id, s)) = current(&web, &headers) else {
        return Redirect::to("/ui/login").into_response();
    };
    let flash = web.sessions.take_flash(&id);
    match dashboard(&web.app, &s, flash).await {
        Ok(body) => {
            let mut r = HtmlResponse(page("Rewind dashboard", "", &nav(Some(&s)), &body)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => super::unavailable(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_an_operators_sessions_leaves_the_others() {
        let s = Sessions::default();
        let a = s.create("vera".into(), Role::Viewer);
        let b = s.create("vera".into(), Role::Viewer);
        let c = s.create("alice".into(), Role::Admin);
        assert_eq!(s.end_for("vera"), 2);
        assert!(s.get(&a).is_none() && s.get(&b).is_none());
        assert_eq!(s.get(&c).map(|x| x.name), Some("alice".to_string()));
        assert_eq!(s.end_for("vera"), 0);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; rewind_session=rws_abc; b=2"));
        assert_eq!(session_id(&h).as_deref(), Some("rws_abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn buttons_follow_roles_and_carry_the_csrf_token() {
        let mk = |role| Session { name: "n".into(), role, csrf: "csrf_x".into(), expires: Instant::now(), flash: None };
        assert!(button(&mk(Role::Viewer), Action::Rollback, "notes", "").is_empty());
        assert!(button(&mk(Role::Operator), Action::Approve, "notes", "canary").is_empty(), "approving needs approver");
        assert!(button(&mk(Role::Approver), Action::Approve, "notes", "canary").contains("approve canary"));
        let b = button(&mk(Role::Operator), Action::Rollback, "<notes>", "");
        assert!(b.contains("value=\"csrf_x\"") && b.contains("&lt;notes&gt;") && !b.contains("<notes>"), "{b}");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn sessions_expire_and_sign_out() {
        let s = Sessions::default();
        let id = s.create("ann".into(), Role::Viewer);
        assert_eq!(s.get(&id).unwrap().name, "ann");
        s.0.lock().unwrap().get_mut(&id).unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert!(s.get(&id).is_none(), "expired");
        let id = s.create("bob".into(), Role::Operator);
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }
}
