//! Communication commands (coordinator, `rewind.v1.Comms`): `templates
//! list|show|edit`, `incidents list|maintenance|resolve`, `webhooks
//! deliveries|test`. Each has `--json`. Connection flags come from
//! [`CoordinatorArgs`]; the channel is built by `rewind_shared::channel`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::wire::v1;
use serde_json::{Value, json};
use tonic::codegen::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::coordinator::CoordinatorArgs;
use crate::output::print_json;
use crate::{Error, Result, outln};

#[derive(Debug, Subcommand)]
pub enum TemplatesCmd {
    /// The template in use for each event of each product (version 0 = built-in default).
    List(TemplatesListArgs),
    /// One template's source and every version.
    Show(TemplatesShowArgs),
    /// Store a new version of a template (admin); refused with file:line:column errors, exit 2.
    Edit(TemplatesEditArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl templates list notes --json")]
pub struct TemplatesListArgs {
    /// Only this product's templates (its defaults too).
    pub product: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl templates show notes rollback_started --version 2")]
pub struct TemplatesShowArgs {
    pub product: String,
    /// incident_started, rollback_started, rollback_completed, resolved or scheduled_maintenance.
    pub name: String,
    /// This version instead of the one in use.
    #[arg(long)]
    pub version: Option<u32>,
    /// Print every version (metadata and source).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl templates edit notes rollback_started --file rollback_started.md\n\n\
Without --file, $EDITOR (else vi) opens the version in use; saving an unchanged file stores nothing.")]
pub struct TemplatesEditArgs {
    pub product: String,
    pub name: String,
    /// The new source (Markdown with front matter, docs/communication.md).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCmd {
    /// Incidents, newest first, with their messages.
    List(IncidentsListArgs),
    /// Announce a scheduled update (renders scheduled_maintenance; operator).
    Maintenance(MaintenanceArgs),
    /// Resolve an open incident (renders resolved; operator).
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl incidents list notes --json")]
pub struct IncidentsListArgs {
    pub product: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl incidents maintenance notes 2026.12.0 --starts \"2026-12-01 08:00 UTC\" --wave canary"
)]
pub struct MaintenanceArgs {
    pub product: String,
    pub version: String,
    /// When the update starts, shown as written.
    #[arg(long)]
    pub starts: String,
    /// The first wave.
    #[arg(long, default_value = "")]
    pub wave: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl incidents resolve notes --reason \"The fix is out; all endpoints verified.\""
)]
pub struct ResolveArgs {
    /// An incident id, or a product to resolve its open incident.
    pub incident: String,
    /// Shown in the resolved message.
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    /// The delivery log: every attempt with its status or error.
    Deliveries(DeliveriesArgs),
    /// Send a `webhook.test` event to one configured webhook (operator).
    Test(WebhookTestArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl webhooks deliveries --webhook chat --limit 20 --json")]
pub struct DeliveriesArgs {
    /// Only this webhook's attempts.
    #[arg(long, default_value = "")]
    pub webhook: String,
    /// The newest this many attempts.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl webhooks test chat")]
pub struct WebhookTestArgs {
    /// The webhook's `name` in coordinator.toml.
    pub webhook: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Comms = v1::comms_client::CommsClient<InterceptedService<Channel, Bearer>>;

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("starting the runtime: {e}")))?
        .block_on(f)
}

async fn comms(c: &CoordinatorArgs) -> Result<Comms> {
    let ca = c.ca.as_ref().ok_or_else(|| {
        Error::BadInput(
            "the coordinator's CA is needed: pass --ca FILE or set REWIND_CA (the coordinator writes <state>/ca.pem)"
                .into(),
        )
    })?;
    let ca_pem = std::fs::read_to_string(ca).map_err(|e| Error::BadInput(format!("--ca {}: {e}", ca.display())))?;
    let token = c.token().map_err(|e| Error::BadInput(format!("--token-file: {e}")))?.ok_or_else(|| {
        Error::BadInput(
            "an operator token is needed: pass --token-file FILE or set REWIND_TOKEN (the coordinator writes <state>/admin.token)"
                .into(),
        )
    })?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::BadInput("the operator token holds characters not allowed in a header".into()))?;
    let ch = channel::connect(&c.coordinator, &ClientTls { ca_pem, identity: None }, ChannelOptions::unary())
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
    Ok(v1::comms_client::CommsClient::with_interceptor(ch, Bearer(bearer)))
}

/// The caller's mistakes exit 2, the rest 1.
fn status(call: &str, s: &tonic::Status) -> Error {
    use tonic::Code;
    let m = format!("{call}: {} ({:?})", s.message(), s.code());
    match s.code() {
        Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::AlreadyExists => Error::BadInput(m),
        _ => Error::Failed(m),
    }
}

fn template_json(t: &v1::TemplateVersion) -> Value {
    json!({
        "product": t.product, "name": t.name, "version": t.version, "author": t.author,
        "source": t.source, "time": t.time, "body": t.body,
    })
}

fn incident_json(i: &v1::Incident) -> Value {
    json!({
        "id": i.id, "product": i.product, "release": i.release, "kind": i.kind, "state": i.state,
        "title": i.title, "markdown": i.markdown, "text": i.text, "html": i.html,
        "started": i.started, "updated": i.updated,
        "updates": i.updates.iter().map(|u| json!({
            "kind": u.kind, "state": u.state, "title": u.title, "markdown": u.markdown, "text": u.text,
            "cause": u.cause, "time": u.time,
        })).collect::<Vec<_>>(),
    })
}

fn attempt_json(a: &v1::WebhookAttempt) -> Value {
    json!({
        "delivery": a.delivery, "webhook": a.webhook, "event": a.event, "attempt": a.attempt,
        "status": (a.status != 0).then_some(a.status), "error": (!a.error.is_empty()).then_some(&a.error),
        "outcome": a.outcome, "duration_ms": a.duration_ms,
        "retry_in_ms": (a.retry_in_ms != 0 || a.outcome == "retrying").then_some(a.retry_in_ms), "time": a.time,
    })
}

/// `rewindctl templates ...`.
///
/// # Errors
/// A template that does not parse or an unknown name (exit 2), an
/// unreachable coordinator or refused call.
pub fn templates(c: &CoordinatorArgs, cmd: &TemplatesCmd) -> Result<u8> {
    match cmd {
        TemplatesCmd::List(a) => block_on(async {
            let r = comms(c)
                .await?
                .list_templates(v1::ListTemplatesRequest { product: a.product.clone().unwrap_or_default() })
                .await
                .map_err(|s| status("templates list", &s))?
                .into_inner();
            if a.json {
                print_json(&r.templates.iter().map(template_json).collect::<Vec<_>>());
            } else if r.templates.is_empty() {
                outln!("no stored templates (upload a bundle, or name a product to see its defaults)");
            } else {
                outln!("{:<12} {:<22} {:>7}  {:<24} {:<12} SOURCE", "PRODUCT", "TEMPLATE", "VERSION", "TIME", "AUTHOR");
                for t in &r.templates {
                    outln!(
                        "{:<12} {:<22} {:>7}  {:<24} {:<12} {}",
                        t.product,
                        t.name,
                        t.version,
                        if t.time.is_empty() { "-" } else { &t.time },
                        t.author,
                        t.source
                    );
                }
            }
            Ok(0)
        }),
        TemplatesCmd::Show(a) => block_on(async {
            let r = comms(c)
                .await?
                .get_template(v1::GetTemplateRequest { product: a.product.clone(), name: a.name.clone() })
                .await
                .map_err(|s| status("templates show", &s))?
                .into_inner();
            let chosen = match a.version {
                Some(v) => r.versions.iter().find(|t| t.version == v).ok_or_else(|| {
                    Error::BadInput(format!(
                        "{} {} has no version {v}; it has {}",
                        a.product,
                        a.name,
                        r.versions.iter().map(|t| t.version.to_string()).collect::<Vec<_>>().join(", ")
                    ))
                })?,
                None => r.versions.last().ok_or_else(|| Error::Failed("the coordinator sent no version".into()))?,
            };
            if a.json {
                print_json(&json!({
                    "template": template_json(chosen),
                    "versions": r.versions.iter().map(template_json).collect::<Vec<_>>(),
                }));
            } else {
                eprintln!(
                    "{} {} version {} of {} ({}, by {}{})",
                    chosen.product,
                    chosen.name,
                    chosen.version,
                    r.versions.len(),
                    chosen.source,
                    chosen.author,
                    if chosen.time.is_empty() { String::new() } else { format!(", {}", chosen.time) }
                );
                crate::output::print(&chosen.body);
                if !chosen.body.ends_with('\n') {
                    outln!("");
                }
            }
            Ok(0)
        }),
        TemplatesCmd::Edit(a) => edit(c, a),
    }
}

fn edit(c: &CoordinatorArgs, a: &TemplatesEditArgs) -> Result<u8> {
    if rewind_shared::templates::Event::from_name(&a.name).is_none() {
        return Err(Error::BadInput(format!(
            "unknown template `{}`: the templates are {}",
            a.name,
            rewind_shared::templates::Event::ALL.map(rewind_shared::templates::Event::name).join(", ")
        )));
    }
    block_on(async {
        let mut client = comms(c).await?;
        let body = match &a.file {
            Some(f) => {
                std::fs::read_to_string(f).map_err(|e| Error::BadInput(format!("--file {}: {e}", f.display())))?
            }
            None => {
                let current = client
                    .get_template(v1::GetTemplateRequest { product: a.product.clone(), name: a.name.clone() })
                    .await
                    .map_err(|s| status("templates edit", &s))?
                    .into_inner()
                    .versions
                    .pop()
                    .map(|t| t.body)
                    .unwrap_or_default();
                let edited = in_editor(&a.name, &current)?;
                if edited == current {
                    eprintln!("rewindctl: {} {}: unchanged; nothing stored", a.product, a.name);
                    return Ok(0);
                }
                edited
            }
        };
        let r = client
            .put_template(v1::PutTemplateRequest { product: a.product.clone(), name: a.name.clone(), body })
            .await
            .map_err(|s| status("templates edit", &s))?
            .into_inner();
        let t = r.template.ok_or_else(|| Error::Failed("the coordinator sent no template".into()))?;
        if a.json {
            print_json(&template_json(&t));
        } else {
            outln!("{} {}: stored version {} (by {})", t.product, t.name, t.version, t.author);
        }
        Ok(0)
    })
}

fn in_editor(name: &str, text: &str) -> Result<String> {
    let dir = tempfile::tempdir().map_err(|e| Error::Failed(format!("temporary directory: {e}")))?;
    let path = dir.path().join(format!("{name}.md"));
    std::fs::write(&path, text).map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| Error::Failed(format!("starting the editor {editor:?}: {e}; set EDITOR or pass --file")))?;
    if !st.success() {
        return Err(Error::BadInput(format!("the editor {editor:?} exited with {st}; nothing stored")));
    }
    std::fs::read_to_string(&path).map_err(|e| Error::Failed(format!("{}: {e}", path.display())))
}

/// `rewindctl incidents ...`.
///
/// # Errors
/// No such open incident or bad input (exit 2), an unreachable coordinator.
pub fn incidents(c: &CoordinatorArgs, cmd: &IncidentsCmd) -> Result<u8> {
    block_on(async {
        let mut client = comms(c).await?;
        let (one, json_out) = match cmd {
            IncidentsCmd::List(a) => {
                let r = client
                    .list_incidents(v1::ListIncidentsRequest { product: a.product.clone().unwrap_or_default() })
                    .await
                    .map_err(|s| status("incidents list", &s))?
                    .into_inner();
                if a.json {
                    print_json(&r.incidents.iter().map(incident_json).collect::<Vec<_>>());
                } else if r.incidents.is_empty() {
                    outln!("no incidents");
                } else {
                    for i in &r.incidents {
                        outln!("{}  {} {}  {}  since {}  {}", i.id, i.product, i.release, i.state, i.started, i.title);
                        for u in &i.updates {
                            outln!("    {}  {:<22} {}  ({})", u.time, u.kind, u.title, u.cause);
                        }
                    }
                }
                return Ok(0);
            }
            IncidentsCmd::Maintenance(a) => (
                client
                    .schedule_maintenance(v1::ScheduleMaintenanceRequest {
                        product: a.product.clone(),
                        version: a.version.clone(),
                        starts: a.starts.clone(),
                        wave: a.wave.clone(),
                    })
                    .await
                    .map_err(|s| status("incidents maintenance", &s))?,
                a.json,
            ),
            IncidentsCmd::Resolve(a) => (
                client
                    .resolve_incident(v1::ResolveIncidentRequest {
                        incident: a.incident.clone(),
                        reason: a.reason.clone(),
                    })
                    .await
                    .map_err(|s| status("incidents resolve", &s))?,
                a.json,
            ),
        };
        let i = one.into_inner().incident.ok_or_else(|| Error::Failed("the coordinator sent no incident".into()))?;
        if json_out {
            print_json(&incident_json(&i));
        } else {
            outln!("{}  {} {}  {}", i.id, i.product, i.release, i.state);
            crate::output::print(&i.text);
        }
        Ok(0)
    })
}

/// `rewindctl webhooks ...`.
///
/// # Errors
/// An unknown webhook (exit 2), an unreachable coordinator or refused call.
pub fn webhooks(c: &CoordinatorArgs, cmd: &WebhooksCmd) -> Result<u8> {
    block_on(async {
        let mut client = comms(c).await?;
        match cmd {
            WebhooksCmd::Deliveries(a) => {
                let r = client
                    .list_webhook_deliveries(v1::ListWebhookDeliveriesRequest {
                        limit: a.limit,
                        webhook: a.webhook.clone(),
                    })
                    .await
                    .map_err(|s| status("webhooks deliveries", &s))?
                    .into_inner();
                if a.json {
                    print_json(&r.attempts.iter().map(attempt_json).collect::<Vec<_>>());
                } else if r.attempts.is_empty() {
                    outln!("no webhook deliveries");
                } else {
                    outln!(
                        "{:<24} {:<12} {:<21} {:<28} {:>3} {:<10} RESULT",
                        "TIME",
                        "WEBHOOK",
                        "DELIVERY",
                        "EVENT",
                        "TRY",
                        "OUTCOME"
                    );
                    for x in &r.attempts {
                        let result = match (x.status, x.error.as_str()) {
                            (0, e) => e.to_string(),
                            (s, "") => format!("HTTP {s}"),
                            (_, e) => e.to_string(),
                        };
                        let retry = if x.outcome == "retrying" {
                            format!(", retry in {} ms", x.retry_in_ms)
                        } else {
                            String::new()
                        };
                        outln!(
                            "{:<24} {:<12} {:<21} {:<28} {:>3} {:<10} {result} ({} ms{retry})",
                            x.time,
                            x.webhook,
                            x.delivery,
                            x.event,
                            x.attempt,
                            x.outcome,
                            x.duration_ms
                        );
                    }
                }
            }
            WebhooksCmd::Test(a) => {
                let r = client
                    .test_webhook(v1::TestWebhookRequest { webhook: a.webhook.clone() })
                    .await
                    .map_err(|s| status("webhooks test", &s))?
                    .into_inner();
                if a.json {
                    print_json(&json!({"webhook": a.webhook, "delivery": r.delivery}));
                } else {
                    outln!(
                        "queued delivery {} to {}; follow it with rewindctl webhooks deliveries --webhook {}",
                        r.delivery,
                        a.webhook,
                        a.webhook
                    );
                }
            }
        }
        Ok(0)
    })
}
