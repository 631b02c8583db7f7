//! End-to-end: operator tokens with roles on a real coordinator — created
//! by an admin, listed by name and role (never the tokens), revoked (every
//! token of the name refused from the next call on, audited), the last
//! admin protected, and roles enforced on each call.

mod fleet_rollout_common;

use fleet_rollout_common::{Fleet, ok};

#[test]
fn operator_tokens_are_listed_revoked_and_the_last_admin_is_kept() {
    let tmp = fleet_rollout_common::tempdir();
    let fleet = Fleet::new(tmp.path());
    let vera = fleet.operator("vera", "viewer");
    let vera2 = fleet.operator("vera", "viewer");
    let alice = fleet.operator("alice", "admin");

    let list = fleet.ctl(&["operator", "list", "--json"]);
    ok(&list);
    let rows = list.json();
    let row = |name: &str| rows.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!((row("vera")["role"].as_str(), row("vera")["tokens"].as_u64()), (Some("viewer"), Some(2)), "{rows:#}");
    assert_eq!(row("admin")["role"], "admin");
    assert!(!list.stdout.contains("rwo"), "tokens are never shown: {}", list.stdout);
    // A viewer reads, but neither lists operators nor revokes.
    ok(&fleet.ctl_as(&vera, &["agents", "--json"]));
    assert_eq!(fleet.ctl_as(&vera, &["operator", "list"]).code, 2);
    assert_eq!(fleet.ctl_as(&vera, &["operator", "revoke", "alice"]).code, 2);

    // Revoking a name revokes each of its tokens.
    let r = fleet.ctl_as(&alice, &["operator", "revoke", "vera", "--json"]);
    ok(&r);
    assert_eq!(r.json()["revoked"], 2, "{r:?}");
    for t in [&vera, &vera2] {
        let r = fleet.ctl_as(t, &["agents"]);
        assert_eq!(r.code, 2, "a revoked token is refused: {r:?}");
        assert!(r.stderr.contains("Unauthenticated"), "{r:?}");
    }
    let r = fleet.ctl_as(&alice, &["operator", "revoke", "vera"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no operator \"vera\"") && r.stderr.contains("alice"), "{r:?}");

    // The first admin can go once another exists; the last one cannot.
    ok(&fleet.ctl_as(&alice, &["operator", "revoke", "admin"]));
    assert_eq!(fleet.ctl(&["agents"]).code, 2, "admin.token no longer works");
    let r = fleet.ctl_as(&alice, &["operator", "revoke", "alice"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("last admin"), "{r:?}");
    ok(&fleet.ctl_as(&alice, &["agents"]));

    let export = fleet.ctl_as(&alice, &["audit", "export", "--format", "jsonl"]);
    ok(&export);
    let revokes: Vec<serde_json::Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "operator.revoke")
        .map(|e| serde_json::from_str(e["params"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(revokes.len(), 2, "{revokes:?}");
    assert_eq!((revokes[0]["name"].as_str(), revokes[0]["by"].as_str()), (Some("vera"), Some("alice")));
}
