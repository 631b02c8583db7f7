//! Fleet commands that talk to the coordinator's Admin API: `token create`
//! and `agents`. Connection flags come from [`CoordinatorArgs`]; the channel
//! is built by `rewind_shared::channel`, the one place for TLS and timeouts.

use std::time::Duration;

use clap::Args;
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::fleet::parse_labels;
use rewind_shared::wire::{labels_to_wire, v1};
use serde_json::json;
use tonic::codegen::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::coordinator::CoordinatorArgs;
use crate::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl token create --labels ring=canary,os=linux --uses 10 --ttl 2h")]
pub struct TokenCreateArgs {
    /// Labels every agent enrolled with this token gets (K=V,...).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// How many agents may enroll with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// How long it stays valid (e.g. 30m, 24h, 7d).
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// Print {"token", "expires", "uses"} instead of the token alone.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl agents --selector ring=canary --json")]
pub struct AgentsArgs {
    /// Only agents with every label K=V,...
    #[arg(long, default_value = "")]
    pub selector: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone)]
pub(crate) struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(crate) type Admin = v1::admin_client::AdminClient<InterceptedService<Channel, Bearer>>;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("starting the runtime: {e}")))
}

pub(crate) async fn admin(c: &CoordinatorArgs) -> Result<Admin> {
    let ca = c.ca.as_ref().ok_or_else(|| {
        Error::BadInput(
            "the coordinator's CA is needed: pass --ca FILE or set REWIND_CA (the coordinator writes <state>/ca.pem)"
                .into(),
        )
    })?;
    let ca_pem = std::fs::read_to_string(ca).map_err(|e| Error::BadInput(format!("--ca {}: {e}", ca.display())))?;
    let token = c
        .token()
        .map_err(|e| Error::BadInput(format!("--token-file: {e}")))?
        .ok_or_else(|| Error::BadInput("an operator token is needed: pass --token-file FILE or set REWIND_TOKEN (the coordinator writes <state>/admin.token)".into()))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::BadInput("the operator token holds characters not allowed in a header".into()))?;
    let ch = channel::connect(&c.coordinator, &ClientTls { ca_pem, identity: None }, ChannelOptions::unary())
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
    Ok(v1::admin_client::AdminClient::with_interceptor(ch, Bearer(bearer)).max_decoding_message_size(MAX_ANSWER))
}

/// Largest Admin answer rewindctl reads. Answers that list the fleet grow
/// with it (`agents`: ≈ 320 bytes per agent, 9.6 MB at 30,000 agents);
/// tonic's default of 4 MiB refused them past ≈ 13,000 agents.
const MAX_ANSWER: usize = 256 << 20;

/// Maps a call's status to an exit code: the caller's mistakes exit 2, the
/// rest 1.
pub(crate) fn status(call: &str, s: &tonic::Status) -> Error {
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

/// `rewindctl token create`: prints the token alone on stdout.
///
/// # Errors
/// Bad labels or TTL (exit 2), an unreachable coordinator or refused call.
pub fn token_create(c: &CoordinatorArgs, a: &TokenCreateArgs) -> Result<u8> {
    let labels = parse_labels(&a.labels).map_err(|e| Error::BadInput(format!("--labels: {e}")))?;
    let ttl: Duration =
        humantime::parse_duration(&a.ttl).map_err(|e| Error::BadInput(format!("--ttl {}: {e}", a.ttl)))?;
    if ttl.as_secs() == 0 || a.uses == 0 {
        return Err(Error::BadInput("--ttl and --uses must be above zero".into()));
    }
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .create_token(v1::CreateTokenRequest {
                labels: labels_to_wire(&labels),
                uses: a.uses,
                ttl_seconds: ttl.as_secs(),
            })
            .await
            .map_err(|s| status("token create", &s))?
            .into_inner();
        if a.json {
            let expires = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(r.expires_unix).unwrap_or(0));
            println!(
                "{}",
                json!({"token": r.token, "uses": r.uses, "expires": humantime::format_rfc3339(expires).to_string()})
            );
        } else {
            println!("{}", r.token);
        }
        Ok(0)
    })
}

/// `rewindctl agents`.
///
/// # Errors
/// A bad selector (exit 2), an unreachable coordinator or refused call.
pub fn agents(c: &CoordinatorArgs, a: &AgentsArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .list_agents(v1::ListAgentsRequest { selector: a.selector.clone() })
            .await
            .map_err(|s| status("agents", &s))?
            .into_inner();
        if a.json {
            let list: Vec<_> = r
                .agents
                .iter()
                .map(|ag| {
                    let labels: std::collections::BTreeMap<_, _> = ag.labels.iter().collect();
                    json!({
                        "id": ag.id, "labels": labels, "connected": ag.connected, "hostname": ag.hostname,
                        "last_seen": (!ag.last_seen.is_empty()).then_some(&ag.last_seen), "enrolled": ag.enrolled, "audit_key": ag.audit_public_key, "results": ag.results, "alarms": ag.alarms,
                        "products": ag.products.iter().map(|p| json!({"name": p.name, "sequence": p.sequence, "release": p.release})).collect::<Vec<_>>(),
                        "targets": ag.targets.iter().map(|t| json!({"product": t.product, "name": t.name, "schema": t.schema_digest, "digest": t.data_digest})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        } else if r.agents.is_empty() {
            println!("no agents");
        } else {
            for ag in &r.agents {
                let labels: Vec<String> = ag.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                let products: Vec<String> = ag.products.iter().map(|p| format!("{}@{}", p.name, p.sequence)).collect();
                println!(
                    "{}  {}  {}  [{}]  {}  last seen {}",
                    ag.id,
                    if ag.connected { "connected" } else { "offline" },
                    ag.hostname,
                    labels.join(","),
                    if products.is_empty() { "-".to_string() } else { products.join(" ") },
                    if ag.last_seen.is_empty() { "never" } else { &ag.last_seen }
                );
            }
        }
        Ok(0)
    })
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl operator create alice --role viewer")]
pub struct OperatorCreateArgs {
    /// Who the token is for (shown in the coordinator's log).
    pub name: String,
    /// viewer | operator | approver | admin
    #[arg(long)]
    pub role: String,
    /// Print {"token"} instead of the token alone.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl revoke agt-0123456789abcdef")]
pub struct RevokeArgs {
    /// The agent id (see rewindctl agents).
    pub agent: String,
    #[arg(long)]
    pub json: bool,
}

/// `rewindctl operator create`: prints the new operator token alone.
///
/// # Errors
/// A bad role or name (exit 2), a caller who is not admin (exit 2), an
/// unreachable coordinator (exit 1).
pub fn operator_create(c: &CoordinatorArgs, a: &OperatorCreateArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .create_operator(v1::CreateOperatorRequest { name: a.name.clone(), role: a.role.clone() })
            .await
            .map_err(|s| status("operator create", &s))?
            .into_inner();
        if a.json {
            println!("{}", json!({"token": r.token}));
        } else {
            println!("{}", r.token);
        }
        Ok(0)
    })
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl operator list --json\n\nNeeds an admin token. Tokens are stored hashed and never shown again."
)]
pub struct OperatorListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl operator revoke vera\n\n\
Needs an admin token. Every token of that operator is refused from the next call on and their dashboard sessions end; \
the last admin cannot be revoked.")]
pub struct OperatorRevokeArgs {
    /// The operator's name (as given to operator create).
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

/// `rewindctl operator list`.
///
/// # Errors
/// A caller who is not admin (exit 2), an unreachable coordinator (exit 1).
pub fn operator_list(c: &CoordinatorArgs, a: &OperatorListArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .list_operators(v1::ListOperatorsRequest {})
            .await
            .map_err(|s| status("operator list", &s))?
            .into_inner();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&r.json)
            .map_err(|e| Error::Failed(format!("operator list: bad JSON from the coordinator: {e}")))?;
        if a.json {
            crate::output::print_json(&rows);
        } else {
            println!("{:<24} {:<9} TOKENS", "NAME", "ROLE");
            for o in &rows {
                println!(
                    "{:<24} {:<9} {}",
                    o["name"].as_str().unwrap_or(""),
                    o["role"].as_str().unwrap_or(""),
                    o["tokens"]
                );
            }
        }
        Ok(0)
    })
}

/// `rewindctl operator revoke NAME`.
///
/// # Errors
/// An unknown operator or the last admin (exit 2), a caller who is not
/// admin (exit 2), an unreachable coordinator (exit 1).
pub fn operator_revoke(c: &CoordinatorArgs, a: &OperatorRevokeArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .revoke_operator(v1::RevokeOperatorRequest { name: a.name.clone() })
            .await
            .map_err(|s| crate::rollout_cmd::refused("operator revoke", &s))?
            .into_inner();
        if a.json {
            println!("{}", json!({"name": a.name, "revoked": r.revoked}));
        } else {
            println!("revoked {} token(s) of {}; they are refused from now on", r.revoked, a.name);
        }
        Ok(0)
    })
}

/// `rewindctl revoke AGENT`: the agent's certificate is refused from now on.
///
/// # Errors
/// An unknown agent (exit 2), an unreachable coordinator (exit 1).
pub fn revoke(c: &CoordinatorArgs, a: &RevokeArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .revoke_agent(v1::RevokeAgentRequest { agent_id: a.agent.clone() })
            .await
            .map_err(|s| status("revoke", &s))?
            .into_inner();
        if a.json {
            println!("{}", json!({"agent": a.agent, "revoked": true, "already": !r.revoked}));
        } else if r.revoked {
            println!("revoked {}", a.agent);
        } else {
            println!("{} was already revoked", a.agent);
        }
        Ok(0)
    })
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release upload notes-2026.11.0.bundle.json")]
pub struct UploadArgs {
    /// A bundle from `release build`, signed with `release sign`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: std::path::PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// `rewindctl release upload`.
///
/// # Errors
/// An unreadable or refused bundle (exit 2), an unreachable coordinator.
pub fn upload(c: &CoordinatorArgs, a: &UploadArgs) -> Result<u8> {
    let bytes = std::fs::read(&a.bundle).map_err(|e| Error::BadInput(format!("{}: {e}", a.bundle.display())))?;
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .upload_bundle(v1::UploadBundleRequest { bundle: bytes })
            .await
            .map_err(|s| status("release upload", &s))?
            .into_inner();
        if a.json {
            println!("{}", json!({"product": r.product, "version": r.version, "sequence": r.sequence}));
        } else {
            println!("uploaded {} {} (sequence {})", r.product, r.version, r.sequence);
        }
        Ok(0)
    })
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl fleet verify notes 2026.11.0 --json\n\nExit 0 when every endpoint has the predicted schema digest per target; 1 listing the drifted endpoints."
)]
pub struct FleetVerifyArgs {
    pub product: String,
    pub version: String,
    #[arg(long)]
    pub json: bool,
}

/// `rewindctl fleet verify PRODUCT VERSION`: exit 0 when no endpoint
/// drifted, 1 otherwise.
///
/// # Errors
/// No such bundle (exit 2), an unreachable coordinator.
pub fn fleet_verify(c: &CoordinatorArgs, a: &FleetVerifyArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .fleet_verify(v1::FleetVerifyRequest { product: a.product.clone(), version: a.version.clone() })
            .await
            .map_err(|s| status("fleet verify", &s))?
            .into_inner();
        let v: serde_json::Value = serde_json::from_str(&r.json)
            .map_err(|e| Error::Failed(format!("fleet verify: bad JSON from the coordinator: {e}")))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        } else {
            for g in v["groups"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  {} endpoint(s){}",
                    g["target"].as_str().unwrap_or(""),
                    g["digest"].as_str().unwrap_or(""),
                    g["agents"].as_array().map_or(0, Vec::len),
                    if g["expected"] == true { "" } else { "  DRIFT" }
                );
            }
            for d in v["drift"].as_array().into_iter().flatten() {
                println!(
                    "drift: {} {} has {}, expected {}",
                    d["agent"].as_str().unwrap_or(""),
                    d["target"].as_str().unwrap_or(""),
                    d["digest"].as_str().unwrap_or(""),
                    d["expected"].as_str().unwrap_or("?")
                );
            }
            println!(
                "{}",
                if r.ok { "fleet verified: every endpoint matches" } else { "fleet verify FAILED: digest drift" }
            );
        }
        Ok(if r.ok { 0 } else { 1 })
    })
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl audit export --format jsonl > audit.jsonl")]
pub struct AuditExportArgs {
    /// Only jsonl: every entry, then every checkpoint, one JSON object per line (docs/reports.md).
    #[arg(long, default_value = "jsonl")]
    pub format: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl audit verify --key /var/lib/rewind-coordinator/coordinator.pub\n\nExit 0 when the coordinator's chain, its signatures and checkpoints verify, 1 naming the first broken line."
)]
pub struct AuditVerifyArgs {
    /// The coordinator's public key (its <state>/coordinator.pub). Without
    /// it, the key the coordinator names in its answer is used (which only
    /// proves the log is consistent with the key the coordinator claims).
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

async fn audit_lines(c: &CoordinatorArgs) -> Result<(Vec<String>, Option<String>)> {
    let mut client = admin(c).await?;
    let response = client.audit_export(v1::AuditExportRequest {}).await.map_err(|s| status("audit export", &s))?;
    let key = response.metadata().get("x-rewind-audit-key").and_then(|v| v.to_str().ok()).map(String::from);
    let mut stream = response.into_inner();
    let mut lines = Vec::new();
    while let Some(r) = stream.message().await.map_err(|s| status("audit export", &s))? {
        lines.push(r.json);
    }
    Ok((lines, key))
}

/// `rewindctl audit export`: the coordinator's audit log as JSON lines.
///
/// # Errors
/// An unknown format (exit 2), an unreachable coordinator.
pub fn audit_export(c: &CoordinatorArgs, a: &AuditExportArgs) -> Result<u8> {
    if a.format != "jsonl" {
        return Err(Error::BadInput(format!("--format {}: only jsonl", a.format)));
    }
    runtime()?.block_on(async {
        for line in audit_lines(c).await?.0 {
            println!("{line}");
        }
        Ok(0)
    })
}

/// `rewindctl audit verify`: re-checks the coordinator's chain — every hash,
/// link, signature and checkpoint — with public keys only.
///
/// # Errors
/// An unreadable key file (exit 2), an unreachable coordinator; a broken
/// chain is exit 1, not an error.
pub fn audit_verify(c: &CoordinatorArgs, a: &AuditVerifyArgs) -> Result<u8> {
    let given = a
        .key
        .as_ref()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).map_err(|e| Error::BadInput(format!("--key {}: {e}", f.display())))?;
            rewind_shared::trust::parse_public_key(&text)
                .map_err(|e| Error::BadInput(format!("--key {}: {e}", f.display())))
        })
        .transpose()?;
    runtime()?.block_on(async {
        let (lines, named) = audit_lines(c).await?;
        let key = match given {
            Some(k) => k,
            None => rewind_shared::report::public_key_from_hex(named.as_deref().unwrap_or(""))
                .map_err(|e| Error::Failed(format!("the coordinator named no usable audit key ({e}); pass --key coordinator.pub")))?,
        };
        let text = lines.join("\n");
        match rewind_shared::audit::verify_export(text.as_bytes(), &[key]) {
            Ok(chains) => {
                if a.json {
                    println!("{}", json!({"ok": true, "chains": chains}));
                } else {
                    for ch in &chains {
                        println!(
                            "coordinator audit chain ok: {} entries, head {}, {} checkpoint(s), {} entries after the last one",
                            ch.entries, ch.head, ch.checkpoints, ch.after_last_checkpoint
                        );
                    }
                }
                Ok(0)
            }
            Err(e) => {
                if a.json {
                    println!("{}", json!({"ok": false, "error": e.to_string()}));
                } else {
                    println!("coordinator audit chain BROKEN: {e}");
                }
                Ok(1)
            }
        }
    })
}
