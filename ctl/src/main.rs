//! rewindctl command line: the clap tree. Each command group lives in its
//! own module (see lib.rs); adding a command is a variant here plus its
//! module. Exit codes (DESIGN.md §5): 0 done; 1 failed, data back in a
//! verified safe state; 2 bad input or usage, nothing changed; 3 needs a
//! human (the next command is printed).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rewindctl::coordinator::CoordinatorArgs;
use rewindctl::{Result, demo, release_cmd};

#[derive(Parser)]
#[command(
    name = "rewindctl",
    version,
    about = "Rewind operator CLI: check, rehearse and roll out releases that can be rolled back, provably",
    after_help = "Example: rewindctl release lint examples/notes-app/releases/2026.11.0\n\n\
Exit codes: 0 done, 1 failed (data back in a verified safe state), 2 bad input, 3 needs a human."
)]
struct Cli {
    #[command(flatten)]
    coordinator: CoordinatorArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Release directories and bundles: lint, rehearse, build, sign, verify.
    #[command(
        subcommand,
        after_help = "Example: rewindctl release build examples/notes-app/releases/2026.11.0 --out notes.bundle.json"
    )]
    Release(ReleaseCmd),
    /// The fleet demo: embedded coordinator, agent processes, a failing canary rolled back, a good release to all.
    Demo(demo::DemoArgs),
    /// Plan-signing keys: generate.
    #[command(subcommand, after_help = "Example: rewindctl keys generate --out keys/alice")]
    Keys(KeysCmd),
    /// The trust root (trust.toml): init, rotate.
    #[command(
        subcommand,
        after_help = "Example: rewindctl trust init --threshold 2 --key alice.pub --key bob.pub --key carol.pub --out trust.toml"
    )]
    Trust(TrustCmd),
    /// Enrollment tokens (coordinator): create.
    #[command(subcommand, after_help = "Example: rewindctl token create --labels ring=canary --uses 10 --ttl 24h")]
    Token(TokenCmd),
    /// Enrolled agents with labels, connection state and installed releases (coordinator).
    Agents(rewindctl::fleet::AgentsArgs),
    /// The coordinator's hash-chained, signed audit log: export, verify.
    #[command(subcommand, after_help = "Example: rewindctl audit verify")]
    Audit(AuditCmd),
    /// Fleet-wide verification (coordinator): verify.
    #[command(subcommand, after_help = "Example: rewindctl fleet verify notes 2026.11.0")]
    Fleet(FleetCmd),
    /// Phased rollouts (coordinator): start, status, watch, pause, resume, approve, abort.
    #[command(subcommand, after_help = "Example: rewindctl rollout start notes 2026.11.0")]
    Rollout(RolloutCmd),
    /// Send pre-signed rollback plans to every endpoint in scope that applied, skipping bake and approvals (coordinator).
    Rollback(rewindctl::rollout_cmd::RollbackArgs),
    /// Feature flags of the current releases (coordinator): list, set a kill switch off fleet-wide.
    #[command(subcommand, after_help = "Example: rewindctl flags set notes new_checkout off")]
    Flags(rewindctl::flags_cmd::FlagsCmd),
    /// One endpoint's target: each release and migration applied or reversed, with digests before and after (coordinator).
    Lineage(rewindctl::lineage_cmd::LineageArgs),
    /// Operator tokens with roles (coordinator): create.
    #[command(subcommand, after_help = "Example: rewindctl operator create alice --role approver")]
    Operator(OperatorCmd),
    /// Revoke an agent: its certificate is refused from now on (coordinator).
    Revoke(rewindctl::fleet::RevokeArgs),
    /// Write a release's incident playbook: owners, rollback commands per granularity, verification, restore window, messages.
    Runbook(rewindctl::runbook::RunbookArgs),
    /// Write the post-rollout review of one rollout (Markdown and HTML): timeline, outcomes per wave, anomalies, time to rollback, incidents (coordinator).
    Report(rewindctl::report::ReportArgs),
    /// Communication templates (coordinator): list, show, edit (admin; every edit is a new version).
    #[command(subcommand, after_help = "Example: rewindctl templates list notes")]
    Templates(rewindctl::comms_cmd::TemplatesCmd),
    /// Incidents and their rendered messages (coordinator): list, maintenance, resolve.
    #[command(subcommand, after_help = "Example: rewindctl incidents list notes")]
    Incidents(rewindctl::comms_cmd::IncidentsCmd),
    /// Webhooks (coordinator): the delivery log of every attempt, a test delivery.
    #[command(subcommand, after_help = "Example: rewindctl webhooks deliveries")]
    Webhooks(rewindctl::comms_cmd::WebhooksCmd),
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Create an operator token with a role (viewer, operator, approver, admin); prints the token alone.
    Create(rewindctl::fleet::OperatorCreateArgs),
    /// Operator names and roles (tokens are stored hashed, never shown).
    List(rewindctl::fleet::OperatorListArgs),
    /// Revoke every token of an operator; their dashboard sessions end.
    Revoke(rewindctl::fleet::OperatorRevokeArgs),
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// Start the phased rollout of an uploaded release (refused while one is active, unless --supersede).
    Start(rewindctl::rollout_cmd::StartArgs),
    /// The product's rollout: state, waves, per-agent outcome.
    Status(rewindctl::rollout_cmd::StatusArgs),
    /// Follow the rollout until it ends (exit 0 done, 1 rolled back or halted, 3 needs a human).
    Watch(rewindctl::rollout_cmd::StatusArgs),
    /// Stop sending plans; bad signals still halt.
    Pause(rewindctl::rollout_cmd::ProductArgs),
    /// Continue a paused rollout.
    Resume(rewindctl::rollout_cmd::ProductArgs),
    /// Halt without rolling back (rewindctl rollback takes data back).
    Abort(rewindctl::rollout_cmd::ProductArgs),
    /// Release the wave awaiting approval (approver role).
    Approve(rewindctl::rollout_cmd::ApproveArgs),
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Group endpoints by schema digest per target against the rehearsal's prediction (exit 1 on drift).
    Verify(rewindctl::fleet::FleetVerifyArgs),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Re-check the coordinator's audit chain: hashes, links, signatures (exit 1 when broken).
    Verify(rewindctl::fleet::AuditVerifyArgs),
    /// The audit log as JSON lines for auditors.
    Export(rewindctl::fleet::AuditExportArgs),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an enrollment token for `rewind-agent enroll`; prints the token alone.
    Create(rewindctl::fleet::TokenCreateArgs),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write a new Ed25519 key pair: NAME.key (0600, never overwritten) and NAME.pub.
    Generate(rewindctl::keys::GenerateArgs),
}

#[derive(Subcommand)]
enum TrustCmd {
    /// Write a trust root: the keys that may sign plans (with owners) and the threshold k.
    Init(rewindctl::trust::InitArgs),
    /// Sign a new trust root (version old+1) with keys of the old one.
    Rotate(rewindctl::trust::RotateArgs),
}

#[derive(Subcommand)]
enum ReleaseCmd {
    /// Validate a release directory and summarise it (errors exit 2; warnings do not fail).
    Lint(release_cmd::LintArgs),
    /// Apply and roll back a release on copies of sample databases, twice; never touches the samples.
    Rehearse(release_cmd::RehearseArgs),
    /// Lint, rehearse on samples and write a bundle: an apply plan and pre-signed rollback plans.
    Build(rewindctl::bundle_cmd::BuildArgs),
    /// Add one signature (one key) to every plan of a bundle.
    Sign(rewindctl::bundle_cmd::SignArgs),
    /// Check a bundle's signatures and expiry against a trust root (exit 0 accepted, 2 not).
    Verify(rewindctl::bundle_cmd::VerifyArgs),
    /// Upload a signed bundle to the coordinator (refused unless its trust root accepts it).
    Upload(rewindctl::fleet::UploadArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rewindctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let _ = &cli.coordinator;
    match cli.command {
        Command::Release(ReleaseCmd::Lint(a)) => release_cmd::lint(&a),
        Command::Release(ReleaseCmd::Rehearse(a)) => release_cmd::rehearse(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Release(ReleaseCmd::Build(a)) => rewindctl::bundle_cmd::build(&a),
        Command::Release(ReleaseCmd::Sign(a)) => rewindctl::bundle_cmd::sign(&a),
        Command::Release(ReleaseCmd::Verify(a)) => rewindctl::bundle_cmd::verify(&a),
        Command::Keys(KeysCmd::Generate(a)) => rewindctl::keys::generate(&a),
        Command::Trust(TrustCmd::Init(a)) => rewindctl::trust::init(&a),
        Command::Trust(TrustCmd::Rotate(a)) => rewindctl::trust::rotate(&a),
        Command::Runbook(a) => rewindctl::runbook::run(&a),
        Command::Report(a) => rewindctl::report::run(&cli.coordinator, &a),
        Command::Token(TokenCmd::Create(a)) => rewindctl::fleet::token_create(&cli.coordinator, &a),
        Command::Agents(a) => rewindctl::fleet::agents(&cli.coordinator, &a),
        Command::Audit(AuditCmd::Verify(a)) => rewindctl::fleet::audit_verify(&cli.coordinator, &a),
        Command::Audit(AuditCmd::Export(a)) => rewindctl::fleet::audit_export(&cli.coordinator, &a),
        Command::Fleet(FleetCmd::Verify(a)) => rewindctl::fleet::fleet_verify(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Start(a)) => rewindctl::rollout_cmd::start(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Status(a)) => rewindctl::rollout_cmd::show(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Watch(a)) => rewindctl::rollout_cmd::watch(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Pause(a)) => rewindctl::rollout_cmd::pause(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Resume(a)) => rewindctl::rollout_cmd::resume(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Abort(a)) => rewindctl::rollout_cmd::abort(&cli.coordinator, &a),
        Command::Rollout(RolloutCmd::Approve(a)) => rewindctl::rollout_cmd::approve(&cli.coordinator, &a),
        Command::Rollback(a) => rewindctl::rollout_cmd::rollback(&cli.coordinator, &a),
        Command::Flags(c) => rewindctl::flags_cmd::run(&cli.coordinator, &c),
        Command::Lineage(a) => rewindctl::lineage_cmd::run(&cli.coordinator, &a),
        Command::Release(ReleaseCmd::Upload(a)) => rewindctl::fleet::upload(&cli.coordinator, &a),
        Command::Operator(OperatorCmd::Create(a)) => rewindctl::fleet::operator_create(&cli.coordinator, &a),
        Command::Operator(OperatorCmd::List(a)) => rewindctl::fleet::operator_list(&cli.coordinator, &a),
        Command::Operator(OperatorCmd::Revoke(a)) => rewindctl::fleet::operator_revoke(&cli.coordinator, &a),
        Command::Revoke(a) => rewindctl::fleet::revoke(&cli.coordinator, &a),
        Command::Templates(c) => rewindctl::comms_cmd::templates(&cli.coordinator, &c),
        Command::Incidents(c) => rewindctl::comms_cmd::incidents(&cli.coordinator, &c),
        Command::Webhooks(c) => rewindctl::comms_cmd::webhooks(&cli.coordinator, &c),
    }
}
