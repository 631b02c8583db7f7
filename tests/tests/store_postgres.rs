//! The coordinator's PostgreSQL store against a real PostgreSQL server
//! (started by `rewind_tests::postgres`): the same conformance suite the
//! SQLite store passes, reopening without re-migrating, a newer schema
//! refused, and the guarantees that matter with several connections (and
//! several coordinator replicas) at once: a 1-use token redeemed by exactly
//! one of two racing tasks, a result stored once by id, audit appends from
//! two stores forming one valid chain, concurrent first starts migrating once.

use std::sync::Arc;

use rewind_coordinator::store::postgres::PostgresStore;
use rewind_coordinator::store::{Redeem, Store, suite};
use rewind_shared::fleet::{AgentId, Labels};
use rewind_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_store_suite_and_reopens_without_migrating_again() {
    let pg = Postgres::start();
    let s = PostgresStore::open(&pg.url()).await.unwrap();
    suite::tokens(&s).await;
    suite::agents(&s).await;
    suite::comms(&s).await;
    suite::rollouts(&s).await;
    suite::deliveries(&s).await;
    let version = pg.psql("rewind", "SELECT version FROM schema_version");
    drop(s);
    let s = PostgresStore::open(&pg.url()).await.unwrap();
    assert_eq!(s.agents().await.unwrap().len(), 3, "data kept: agt-1, agt-d and agt-d2");
    assert_eq!(pg.psql("rewind", "SELECT version FROM schema_version"), version);
    assert_eq!(pg.psql("rewind", "SELECT count(*) FROM schema_version"), "1");

    // A schema written by a newer coordinator is refused, naming the URL
    // without its password.
    pg.psql("rewind", "UPDATE schema_version SET version = 9999");
    let e = PostgresStore::open(&pg.url()).await.err().expect("a newer schema is refused").to_string();
    assert!(e.contains("schema version 9999 is newer") && e.contains("run a newer rewind-coordinator"), "{e}");
    assert!(e.contains("rewind:***@127.0.0.1") && !e.contains(rewind_tests::postgres::PASSWORD), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tasks_redeeming_a_one_use_token_exactly_one_wins() {
    let pg = Postgres::start();
    let s: Arc<dyn Store> = Arc::new(PostgresStore::open(&pg.url()).await.unwrap());
    for round in 0..25 {
        let hash = format!("tok{round}");
        s.create_token(hash.clone(), Labels::new(), 1, i64::MAX).await.unwrap();
        let (a, b) = (Arc::clone(&s), Arc::clone(&s));
        let (h1, h2) = (hash.clone(), hash.clone());
        let t1 = tokio::spawn(async move { a.redeem_token(h1, 10).await.unwrap() });
        let t2 = tokio::spawn(async move { b.redeem_token(h2, 10).await.unwrap() });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        let won = [&r1, &r2].iter().filter(|r| matches!(r, Redeem::Accepted(_))).count();
        assert_eq!(won, 1, "round {round}: {r1:?} {r2:?}");
        assert!(r1 == Redeem::UsedUp || r2 == Redeem::UsedUp, "round {round}: the loser is told UsedUp");
    }
    let left = pg.psql("rewind", "SELECT count(*) FROM enrollment_tokens WHERE uses_left <> 0");
    assert_eq!(left, "0", "every token used exactly once, none below zero");
}

fn agent(id: &str) -> rewind_coordinator::store::AgentRecord {
    rewind_coordinator::store::AgentRecord {
        id: AgentId::parse(id).unwrap(),
        hostname: "h".into(),
        labels: Labels::new(),
        fingerprint: format!("fp-{id}"),
        enrolled: "2026-01-01T00:00:00Z".into(),
        last_seen: None,
        inventory: rewind_shared::fleet::Inventory::default(),
        revoked: false,
        audit_key: String::new(),
        chain: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_store_each_result_once_and_append_one_audit_chain() {
    let pg = Postgres::start();
    let url = pg.url();
    // Two stores on one fresh database, opened at the same time, as two
    // coordinator replicas starting together: both migrate safely.
    let (a, b) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    assert_eq!(pg.psql("rewind", "SELECT count(*) FROM schema_version"), "1");

    a.insert_agent(agent("agt-1")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let result = suite::result(format!("res-{}", i / 2), AgentId::parse("agt-1").unwrap());
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move { s.store_result(result, None).await.unwrap() }));
    }
    let mut new = 0;
    for t in tasks {
        new += usize::from(t.await.unwrap());
    }
    assert_eq!(new, 20, "each of the 20 ids is new exactly once, whichever replica got it");
    assert_eq!(a.results(AgentId::parse("agt-1").unwrap()).await.unwrap().len(), 20);

    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let key = key.clone();
        tasks.push(tokio::spawn(async move { s.append_audit(format!("k{i}"), "{}".into(), key).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = b.audit_entries().await.unwrap();
    assert_eq!(chain.len(), 60);
    rewind_shared::audit::verify_chain(&chain, &key.verifying_key()).expect("one unbroken, signed chain");
}

#[tokio::test]
async fn unreachable_server_and_bad_urls_are_clear_errors_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://rewind:s3cret@127.0.0.1:{port}/rewind?connect_timeout=2");
    let e = PostgresStore::open(&url).await.err().expect("nothing listens there").to_string();
    assert!(e.contains(&format!("rewind:***@127.0.0.1:{port}/rewind")), "names the URL: {e}");
    assert!(!e.contains("s3cret"), "never the password: {e}");
    assert!(e.contains("check that the server runs"), "says what to do: {e}");

    let e = PostgresStore::open("postgres://u:s3cret@h/db?nonsense=1").await.err().unwrap().to_string();
    assert!(e.contains("u:***@h/db") && !e.contains("s3cret") && e.contains("postgres://USER:PASSWORD@HOST"), "{e}");
    let e = PostgresStore::open("postgres://u@h/db?sslmode=require").await.err().unwrap().to_string();
    assert!(e.contains("sslrootcert"), "{e}");

    // A wrong password against a real server is refused, naming the URL.
    let pg = Postgres::start();
    let bad = format!("postgres://rewind:wrong@127.0.0.1:{}/rewind", pg.port());
    let e = PostgresStore::open(&bad).await.err().expect("wrong password refused").to_string();
    assert!(e.contains("rewind:***@127.0.0.1") && e.contains("password authentication failed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_full_connects_over_tls_and_refuses_a_server_it_cannot_verify() {
    let pg = Postgres::start_tls();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}&application_name=rewind-tls-test",
        pg.url(),
        pg.ca_pem().display()
    );
    let s = PostgresStore::open(&url).await.expect("TLS to a server the CA vouches for");
    suite::tokens(&s).await;
    let seen = pg.psql(
        "rewind",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'rewind-tls-test'",
    );
    let (tls, plain) = seen.split_once('|').expect("two counts");
    assert!(tls.parse::<u32>().unwrap() >= 1 && plain == "0", "every store connection is TLS: {seen}");

    // A root that did not sign the server's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(other.path().join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    let url = format!("{}?sslmode=require&sslrootcert={}", pg.url(), other.path().join("ca.pem").display());
    let e = PostgresStore::open(&url).await.err().expect("an unknown issuer is refused").to_string();
    assert!(e.contains("certificate") && e.contains("rewind:***@127.0.0.1"), "{e}");
    // A root file that is not PEM: named.
    std::fs::write(other.path().join("junk.pem"), "not a certificate").unwrap();
    let url = format!("{}?sslmode=require&sslrootcert={}", pg.url(), other.path().join("junk.pem").display());
    let e = PostgresStore::open(&url).await.err().unwrap().to_string();
    assert!(e.contains("junk.pem") && e.contains("no PEM certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_postgres_restarts() {
    let mut pg = Postgres::start();
    let s = PostgresStore::open(&pg.url()).await.unwrap();
    s.create_token("before".into(), Labels::new(), 1, i64::MAX).await.unwrap();
    pg.shutdown();
    let e = s.redeem_token("before".into(), 10).await.expect_err("no server, no answer").to_string();
    assert!(e.contains("PostgreSQL") || e.contains("connection"), "a clear error while it is down: {e}");
    pg.restart();
    // Pooled connections broken by the restart are dropped and new ones made.
    let started = std::time::Instant::now();
    let outcome = loop {
        match s.redeem_token("before".into(), 10).await {
            Ok(o) => break o,
            Err(e) => assert!(started.elapsed() < std::time::Duration::from_secs(10), "not back after 10 s: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(matches!(outcome, Redeem::Accepted(_)), "the token written before the restart: {outcome:?}");
    assert_eq!(s.redeem_token("before".into(), 10).await.unwrap(), Redeem::UsedUp);
}

/// The leader lease and its fencing token, and the replicas' channel:
/// one holder at a time; a lapsed lease passes to another replica with a
/// larger token, after which the old holder's rollout and delivery writes
/// are refused and change nothing; a restarted replica takes its own lease
/// over at once (new token); shared values have one winner; NOTIFY reaches
/// every listener, after a first `Resync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_lease_fences_a_stale_leader_and_replicas_hear_each_other() {
    use rewind_coordinator::store::{Fence, Lease, RolloutRecord, Signal};
    let pg = Postgres::start();
    let url = pg.url();
    let (a, b) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    let ttl = 400;
    let rec = |doc: &str| RolloutRecord {
        id: "notes@7".into(),
        product: "notes".into(),
        sequence: 7,
        state: "running".into(),
        doc: doc.into(),
    };

    assert_eq!(a.lead("rpl_a/p1".into(), "https://a:7443".into(), ttl).await.unwrap(), Lease::Leader { token: 1 });
    assert_eq!(
        b.lead("rpl_b/p1".into(), "https://b:7443".into(), ttl).await.unwrap(),
        Lease::Follower { leader: Some("https://a:7443".into()) }
    );
    assert_eq!(
        a.lead("rpl_a/p1".into(), "https://a:7443".into(), ttl).await.unwrap(),
        Lease::Leader { token: 1 },
        "renewed, same token"
    );
    a.set_fence(Some(Fence { holder: "rpl_a/p1".into(), token: 1 }));
    a.put_rollout(rec("from a")).await.unwrap();

    // A stops renewing; once the lease lapses B takes it with a larger token.
    tokio::time::sleep(std::time::Duration::from_millis(ttl + 200)).await;
    assert_eq!(b.lead("rpl_b/p1".into(), "https://b:7443".into(), ttl).await.unwrap(), Lease::Leader { token: 2 });
    b.set_fence(Some(Fence { holder: "rpl_b/p1".into(), token: 2 }));
    b.put_rollout(rec("from b")).await.unwrap();
    let e = a.put_rollout(rec("stale a")).await.unwrap_err().to_string();
    assert!(e.contains("fenced") && e.contains("rpl_b/p1"), "{e}");
    let d = rewind_coordinator::store::Delivery {
        id: "dlv-stale".into(),
        agent: AgentId::parse("agt-1").unwrap(),
        bundle: "b".into(),
        kind: "apply".into(),
        part: None,
    };
    assert!(a.add_deliveries(vec![d]).await.unwrap_err().to_string().contains("fenced"));
    assert_eq!(b.rollouts().await.unwrap()[0].doc, "from b", "the stale write changed nothing");
    assert_eq!(pg.psql("rewind", "SELECT count(*) FROM deliveries"), "0");
    // A's next try finds B leading.
    assert_eq!(
        a.lead("rpl_a/p1".into(), "https://a:7443".into(), ttl).await.unwrap(),
        Lease::Follower { leader: Some("https://b:7443".into()) }
    );
    // B restarted (a new process of the same replica): it takes over at once, with a new token.
    assert_eq!(b.lead("rpl_b/p2".into(), "https://b:7443".into(), ttl).await.unwrap(), Lease::Leader { token: 3 });
    assert!(b.put_rollout(rec("old process")).await.is_err(), "the old process's fence is stale");

    // Shared values: two replicas starting at once agree on one.
    let (x, y) = tokio::join!(a.share("ca".into(), b"from a".to_vec()), b.share("ca".into(), b"from b".to_vec()));
    assert_eq!(x.unwrap(), y.unwrap());

    // The channel: a listener gets Resync once listening, then every message.
    let mut rx = a.listen().await.expect("PostgreSQL has a channel");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap();
    assert_eq!(first, Some(Signal::Resync));
    b.notify("{\"hello\":1}".into()).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap();
    assert_eq!(got, Some(Signal::Message("{\"hello\":1}".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_renews_its_lease_while_every_pooled_connection_is_busy() {
    // Thousands of agents connecting at once can keep every pooled
    // connection busy for seconds; the lease must not wait behind them
    // (a renewal held past the lease's end costs the leadership and
    // leaves the fleet without a leader: seen with 20,000 agents).
    use rewind_coordinator::store::Lease;
    let pg = Postgres::start();
    let s = Arc::new(PostgresStore::open(&pg.url()).await.unwrap());
    let ttl = 3_000;
    let lead = || s.lead("rpl_a/p1".into(), "https://a:7443".into(), ttl);
    assert_eq!(lead().await.unwrap(), Lease::Leader { token: 1 });
    // A lock held elsewhere on the agents table for 5 s, and 40 reads of
    // the table waiting for it: the pool's 16 connections all wait.
    let mut holder =
        pg.psql_background("rewind", "BEGIN; LOCK TABLE agents IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT;");
    let locked = "SELECT count(*) FROM pg_locks WHERE relation = 'agents'::regclass AND mode = 'AccessExclusiveLock' AND granted";
    while pg.psql("rewind", locked) != "1" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let readers: Vec<_> = (0..40)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.agents().await.map(|a| a.len()) })
        })
        .collect();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM agents%'";
    while pg.psql("rewind", waiting) != "16" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let renewed = tokio::time::timeout(std::time::Duration::from_secs(1), lead()).await;
    assert_eq!(renewed.expect("renewed within a second").unwrap(), Lease::Leader { token: 1 });
    assert!(readers.iter().all(|r| !r.is_finished()), "the pool was still busy when the lease was renewed");
    assert!(holder.wait().unwrap().success());
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_and_result_batches_on_the_same_agents_never_deadlock() {
    // A replica records its agents' heartbeats in one statement while its
    // ingestor moves the same agents' chain points in another transaction:
    // both lock many agent rows, and in different orders they deadlock
    // (PostgreSQL then aborts one: seen with 20,000 agents). Both lock them
    // in id order; and since the results' foreign keys share-lock the rows
    // in their own order, a transaction PostgreSQL still picks as a
    // deadlock victim runs again (with lock order alone this test failed
    // about one run in five). No call may fail.
    let pg = Postgres::start();
    let s = Arc::new(PostgresStore::open(&pg.url()).await.unwrap());
    let ids: Vec<AgentId> = (0..300).map(|i| AgentId::parse(&format!("agt-{i:04}")).unwrap()).collect();
    for id in &ids {
        s.insert_agent(agent(id.as_str())).await.unwrap();
    }
    let point = rewind_shared::report::ChainPoint { seq: 1, head: rewind_shared::audit::GENESIS };
    let mut tasks = Vec::new();
    for round in 0..40_usize {
        // Each in its own order: the heartbeats as agents happened to
        // send them, the results as they arrived.
        let mut beats = ids.clone();
        beats.rotate_left(round * 7 % ids.len());
        beats.reverse();
        let mut order = ids.clone();
        order.rotate_left(round * 13 % ids.len());
        let batch = order.iter().map(|a| (suite::result(format!("res-{round}-{a}"), a.clone()), Some(point))).collect();
        let (s1, s2) = (Arc::clone(&s), Arc::clone(&s));
        tasks.push(tokio::spawn(async move { s1.touch(beats, format!("2026-01-01T00:00:{:02}Z", round % 60)).await }));
        tasks.push(tokio::spawn(async move { s2.store_results(batch, None).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(pg.psql("rewind", "SELECT count(*) FROM results"), "12000");
}
