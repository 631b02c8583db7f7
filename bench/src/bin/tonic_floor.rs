//! `tonic_floor`: the bare tonic + rustls fan-out server that `fleet_load`
//! measures the coordinator against (the floor of this stack). It speaks the
//! same `rewind.v1.Fleet/Connect` wire messages over the same mutual TLS
//! (its server certificate and the client CA come from the coordinator's
//! CA), with the same HTTP/2 settings, but does nothing else: it answers the
//! hello with a welcome, keeps a sender per stream, discards what agents
//! send, and on a `push` line on stdin sends one plan message carrying the
//! given payload bytes to every stream. No store, no authentication beyond
//! TLS, no audit.
//!
//! stdin commands (one per line): `push` → answers `pushed N`; `count` →
//! answers `connected N`. EOF on stdin stops the server. The bound address
//! is printed first as `listening ADDR`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rewind_shared::wire::v1;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

#[derive(Parser)]
#[command(about = "Bare tonic TLS fan-out server: the floor fleet_load compares the coordinator with")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The CA certificate (PEM) that signs this server's certificate and the clients' certificates.
    #[arg(long)]
    ca_cert: PathBuf,
    /// The CA's private key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
    /// Bytes pushed in each plan message (e.g. the release bundle the coordinator sends).
    #[arg(long)]
    payload: PathBuf,
}

type Outbound = mpsc::Sender<Result<v1::CoordinatorMessage, Status>>;

struct Floor {
    streams: Arc<Mutex<Vec<Outbound>>>,
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::fleet_server::Fleet for Floor {
    async fn enroll(&self, _: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        Err(Status::unimplemented("the floor does not enroll; enroll with the coordinator"))
    }

    type ConnectStream = ConnectStream;

    async fn connect(&self, request: Request<Streaming<v1::AgentMessage>>) -> Result<Response<ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = inbound.message().await?.ok_or_else(|| Status::invalid_argument("stream ended before hello"))?;
        let Some(v1::agent_message::Body::Hello(hello)) = hello.body else {
            return Err(Status::invalid_argument("the first message must be a hello"));
        };
        let (tx, rx) = mpsc::channel(64);
        let welcome = v1::CoordinatorMessage {
            body: Some(v1::coordinator_message::Body::Welcome(v1::Welcome {
                agent_id: hello.agent_id,
                heartbeat_seconds: 30,
                server_time_unix_ms: 0,
            })),
        };
        tx.send(Ok(welcome)).await.map_err(|_| Status::cancelled("stream closed"))?;
        self.streams.lock().expect("lock").push(tx);
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    rewind_shared::channel::install_crypto();
    let ca_cert = std::fs::read_to_string(&args.ca_cert).with_context(|| args.ca_cert.display().to_string())?;
    let ca_key = std::fs::read_to_string(&args.ca_key).with_context(|| args.ca_key.display().to_string())?;
    let payload = std::fs::read(&args.payload).with_context(|| args.payload.display().to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, KeyPair::from_pem(&ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, "tonic floor");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    // The coordinator's runtime: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let local = listener.local_addr()?;
        // The coordinator's server settings (coordinator/src/server.rs).
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert.pem(), key.serialize_pem()))
            .client_ca_root(Certificate::from_pem(&ca_cert))
            .client_auth_optional(true)
            .timeout(Duration::from_secs(10));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let fleet = v1::fleet_server::FleetServer::new(Floor { streams: Arc::clone(&streams) })
            .max_decoding_message_size(4 << 20);
        let server = Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .add_service(fleet)
            .serve_with_incoming(TcpIncoming::from(listener));
        let server = tokio::spawn(server);
        let mut out = tokio::io::stdout();
        out.write_all(format!("listening {local}\n").as_bytes()).await?;
        out.flush().await?;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut n = 0u64;
        while let Some(line) = lines.next_line().await? {
            let answer = match line.trim() {
                "push" => {
                    n += 1;
                    let msg = v1::CoordinatorMessage {
                        body: Some(v1::coordinator_message::Body::Plan(v1::PlanDelivery {
                            id: format!("floor-{n}"),
                            plan_id: "floor".into(),
                            product: "bench".into(),
                            sequence: n,
                            kind: "apply".into(),
                            envelope: payload.clone(),
                            ..Default::default()
                        })),
                    };
                    let mut live = streams.lock().expect("lock");
                    live.retain(|tx| !tx.is_closed());
                    let mut sent = 0;
                    for tx in live.iter() {
                        if tx.try_send(Ok(msg.clone())).is_ok() {
                            sent += 1;
                        }
                    }
                    format!("pushed {sent}\n")
                }
                "count" => {
                    let mut live = streams.lock().expect("lock");
                    live.retain(|tx| !tx.is_closed());
                    format!("connected {}\n", live.len())
                }
                other => format!("unknown command {other:?}: expected push or count\n"),
            };
            out.write_all(answer.as_bytes()).await?;
            out.flush().await?;
        }
        server.abort();
        Ok(())
    })
}
