use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn labels(s: &str) -> Labels {
    rewind_shared::fleet::parse_labels(s).unwrap()
}

fn wave(name: &str, selector: Option<&str>, percent: Option<f64>) -> Wave {
    Wave { name: name.into(), selector: selector.map(Into::into), percent, bake: Duration::ZERO, approval: false }
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn equality_and_conjunction() {
    let l = labels("ring=canary,os=windows");
    assert!(sel("ring=canary,os=windows").matches(&l));
    assert!(sel("ring==canary").matches(&l));
    assert!(sel(" ring = canary , os = windows ").matches(&l));
    assert!(!sel("ring=canary,os=linux").matches(&l));
    assert!(sel("").matches(&l));
    assert!(sel("  ").matches(&Labels::new()));
}

#[test]
fn inequality_matches_absent_labels() {
    assert!(!sel("ring!=canary").matches(&labels("ring=canary")));
    assert!(sel("ring!=canary").matches(&labels("ring=beta")));
    assert!(sel("ring!=canary").matches(&labels("os=linux")));
}

#[test]
fn set_membership() {
    let s = sel("ring in (canary, beta)");
    assert!(s.matches(&labels("ring=canary")));
    assert!(s.matches(&labels("ring=beta")));
    assert!(!s.matches(&labels("ring=broad")));
    assert!(!s.matches(&labels("os=linux")));
    let n = sel("ring notin (canary,beta)");
    assert!(!n.matches(&labels("ring=canary")));
    assert!(n.matches(&labels("ring=broad")));
    assert!(n.matches(&labels("os=linux")));
}

#[test]
fn existence() {
    assert!(sel("ring").matches(&labels("ring=x")));
    assert!(!sel("ring").matches(&labels("os=x")));
    assert!(sel("!ring").matches(&labels("os=x")));
    assert!(!sel("!ring").matches(&labels("ring=x")));
    assert!(sel("ring,!beta,os in (linux)").matches(&labels("ring=1,os=linux")));
}

#[test]
fn errors_name_the_column() {
    let cases = [
        ("ring in (canary", 9, "no closing `)`"),
        ("ring in canary", 9, "expected `(`"),
        ("ring=", 6, "expected a label value"),
        ("ring=canary,", 13, "expected a label key"),
        ("ring=can ary", 10, "expected `,` or the end"),
        ("ring ~ canary", 6, "expected an operator"),
        ("ring between (a)", 6, "found `between`"),
        ("ring!canary", 5, "expected `!=`"),
        ("ring in (a b)", 12, "expected `,` or `)`"),
        ("=x", 1, "expected a label key"),
        ("ring in ()", 10, "expected a label value"),
    ];
    for (input, column, needle) in cases {
        let e = Selector::parse(input).expect_err(input);
        assert_eq!(e.column, column, "{input}: {e}");
        assert!(e.to_string().contains(needle), "{input}: {e}");
        assert!(e.to_string().starts_with(&format!("selector `{input}`: column {column}: ")), "{e}");
    }
}

#[test]
fn selector_serde_is_its_source() {
    let s = sel("ring in (a,b),!x");
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(j, "\"ring in (a,b),!x\"");
    assert_eq!(serde_json::from_str::<Selector>(&j).unwrap(), s);
    assert!(serde_json::from_str::<Selector>("\"ring in (\"").is_err());
}

/// Pins the bucket bytes documented in docs/rollouts.md: a change here
/// moves devices between cohorts and must be a new context string.
#[test]
fn bucket_is_the_documented_blake3() {
    let mut input = b"rewind-cohort-1\0".to_vec();
    input.extend_from_slice(b"notes\0agt-0001");
    let h = blake3::hash(&input);
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
    let expected = u32::try_from(n % 10_000).unwrap();
    assert_eq!(bucket("agt-0001", "notes"), expected);
    assert_eq!(bucket("agt-0001", "notes"), bucket("agt-0001", "notes"));
    // Per product: the same device gets an independent bucket elsewhere.
    let differs =
        (0..50).filter(|i| bucket(&format!("agt-{i}"), "notes") != bucket(&format!("agt-{i}"), "mail")).count();
    assert!(differs > 45, "{differs}");
}

#[test]
fn percent_bounds() {
    assert_eq!(percent_bound(5.0), 500);
    assert_eq!(percent_bound(50.0), 5000);
    assert_eq!(percent_bound(100.0), 10_000);
    assert_eq!(percent_bound(0.25), 25);
    assert_eq!(percent_bound(0.0), 0);
    assert_eq!(percent_bound(150.0), 10_000);
}

fn example_cohorts() -> Cohorts {
    Cohorts::new(
        "notes",
        &[
            wave("canary", Some("ring=canary"), None),
            wave("early", None, Some(5.0)),
            wave("broad", None, Some(50.0)),
            wave("all", None, Some(100.0)),
        ],
    )
    .unwrap()
}

#[test]
fn first_matching_wave_wins() {
    let c = example_cohorts();
    let canary = labels("ring=canary");
    // A canary is a canary whatever its bucket.
    for i in 0..100 {
        assert_eq!(c.wave_of(&format!("agt-{i}"), &canary), Some(0));
    }
    let plain = Labels::new();
    for i in 0..2000 {
        let id = format!("agt-{i}");
        let b = bucket(&id, "notes");
        let expected = if b < 500 {
            1
        } else if b < 5000 {
            2
        } else {
            3
        };
        assert_eq!(c.wave_of(&id, &plain), Some(expected), "{id} bucket {b}");
    }
}

#[test]
fn selector_and_percent_together_need_both() {
    let c = Cohorts::new("notes", &[wave("win10", Some("os=windows"), Some(10.0))]).unwrap();
    let win = labels("os=windows");
    let (mut inside, mut outside) = (0, 0);
    for i in 0..1000 {
        let id = format!("agt-{i}");
        let got = c.wave_of(&id, &win);
        assert_eq!(got.is_some(), bucket(&id, "notes") < 1000);
        if got.is_some() {
            inside += 1
        } else {
            outside += 1
        }
        assert_eq!(c.wave_of(&id, &labels("os=linux")), None);
    }
    assert!(inside > 0 && outside > 0);
}

#[test]
fn untargeted_agents_have_no_wave() {
    let c =
        Cohorts::new("notes", &[wave("canary", Some("ring=canary"), None), wave("half", None, Some(50.0))]).unwrap();
    let none = (0..1000).filter(|i| c.wave_of(&format!("agt-{i}"), &Labels::new()).is_none()).count();
    assert!((400..600).contains(&none), "{none}");
}

#[test]
fn bad_waves_are_named() {
    let e = Cohorts::new("notes", &[wave("canary", Some("ring in (a"), None)]).unwrap_err();
    assert_eq!(e.to_string(), "wave canary: selector `ring in (a`: column 9: the set opened here has no closing `)`");
    let e = Cohorts::new("notes", &[wave("x", None, None)]).unwrap_err();
    assert!(e.to_string().contains("wave x: give a `selector` or a `percent`"));
}

fn agent_id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,40}"
}

proptest! {
    /// A device's wave depends only on product, id and labels: the same
    /// answer after a serde round trip of the cohorts (a coordinator
    /// restart) and for the next release of the product.
    #[test]
    fn assignment_is_stable(id in agent_id(), canary in any::<bool>()) {
        let c = example_cohorts();
        let l = if canary { labels("ring=canary") } else { Labels::new() };
        let restored: Cohorts = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        let next_release = example_cohorts();
        prop_assert_eq!(c.wave_of(&id, &l), restored.wave_of(&id, &l));
        prop_assert_eq!(c.wave_of(&id, &l), next_release.wave_of(&id, &l));
        prop_assert!(bucket(&id, "notes") < BUCKETS);
    }

    /// Cumulative percents only ever grow the covered set: an agent in a
    /// wave with percent p is also covered by any larger percent, and a
    /// larger first wave never pushes an agent into a later wave.
    #[test]
    fn percent_waves_grow_monotonically(id in agent_id(), a in 0.01f64..100.0, d in 0.0f64..100.0) {
        let b = a + d;
        let small = Cohorts::new("notes", &[wave("w", None, Some(a))]).unwrap();
        let large = Cohorts::new("notes", &[wave("w", None, Some(b.min(100.0)))]).unwrap();
        if small.wave_of(&id, &Labels::new()).is_some() {
            prop_assert!(large.wave_of(&id, &Labels::new()).is_some());
        }
        let two = Cohorts::new("notes", &[wave("first", None, Some(a)), wave("second", None, Some(b.min(100.0)))]).unwrap();
        let got = two.wave_of(&id, &Labels::new());
        prop_assert_eq!(got == Some(0), small.wave_of(&id, &Labels::new()).is_some());
    }

    /// Parsing what the grammar produces never fails and the source is kept.
    #[test]
    fn generated_selectors_parse(keys in proptest::collection::vec(("[a-z][a-z0-9._/-]{0,8}", "[a-z0-9]{1,8}", 0..6u8), 0..5)) {
        let parts: Vec<String> = keys.iter().map(|(k, v, op)| match op {
            0 => format!("{k}={v}"),
            1 => format!("{k} != {v}"),
            2 => format!("{k} in ({v}, x)"),
            3 => format!("{k} notin ({v})"),
            4 => k.clone(),
            _ => format!("!{k}"),
        }).collect();
        let s = parts.join(",");
        let parsed = Selector::parse(&s);
        prop_assert!(parsed.is_ok(), "{s}: {parsed:?}");
        prop_assert_eq!(parsed.unwrap().requirements().len(), keys.len());
    }
}

/// For 10,000 ids each percent wave holds its share within tolerance
/// (binomial standard deviation for n = 10,000 is at most 0.5 %).
#[test]
fn fractions_match_percents_for_10k_ids() {
    let c = example_cohorts();
    let mut counts = [0usize; 4];
    for i in 0..10_000 {
        let w = c.wave_of(&format!("agt-{i:05}"), &Labels::new()).unwrap();
        counts[w] += 1;
    }
    assert_eq!(counts[0], 0);
    let frac = |n: usize| n as f64 / 10_000.0;
    assert!((frac(counts[1]) - 0.05).abs() < 0.01, "{counts:?}");
    assert!((frac(counts[1] + counts[2]) - 0.50).abs() < 0.02, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 10_000);
}

/// The vectors docs/rollouts.md lists: first 8 bytes of the BLAKE3 hash
/// (hex) and the bucket.
#[test]
fn documented_bucket_vectors() {
    for (agent, product, first8, b) in [
        ("agt-0001", "notes", "1f5f534b01045041", 1759),
        ("agt-0002", "notes", "dc13931ceadb4a03", 3484),
        ("agt-0001", "mail", "8827443cc405f228", 4616),
        ("agt-0123456789abcdef", "notes", "523f84e00b91d784", 9714),
    ] {
        let mut input = BUCKET_CONTEXT.to_vec();
        input.extend_from_slice(product.as_bytes());
        input.push(0);
        input.extend_from_slice(agent.as_bytes());
        let h = blake3::hash(&input);
        let hex: String = h.as_bytes()[..8].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, first8);
        assert_eq!(bucket(agent, product), b);
        assert_eq!(u64::from_str_radix(&hex, 16).unwrap().swap_bytes() % 10_000, u64::from(b));
    }
}
