use super::*;

fn values() -> Values {
    Values::default()
        .with(Variable::Release, "notes 2026.11.0")
        .with(Variable::Product, "notes")
        .with(Variable::Version, "2026.11.0")
        .with(Variable::Wave, "canary")
        .with(Variable::AffectedCount, 12)
        .with(Variable::RestoreWindow, "40 ms per endpoint")
        .with(Variable::Owner, "storage-team")
        .with(Variable::OnCall, "pager:storage")
        .with(Variable::StartedAt, "2026-11-25 08:00 UTC")
        .with(Variable::Reason, "app.crash_count above 3 within 10m")
}

fn parse(src: &str) -> Result<Template, Vec<TemplateError>> {
    Template::parse(Event::RollbackStarted, Path::new("templates/rollback_started.md"), src)
}

#[test]
fn event_and_variable_names_round_trip() {
    for e in Event::ALL {
        assert_eq!(Event::from_name(e.name()), Some(e));
    }
    for v in Variable::ALL {
        assert_eq!(Variable::from_name(v.name()), Some(v));
    }
    assert_eq!(Event::from_name("incident"), None);
    assert_eq!(
        Variable::names(),
        "release, product, version, wave, affected_count, restore_window, owner, on_call, started_at, reason"
    );
}

#[test]
fn front_matter_title_and_body_render_as_markdown_and_text() {
    let t = parse("---\ntitle: Rolling back {{ release }}\n---\n\n# Rollback\n\nWave **{{wave}}**: {{affected_count}} endpoints, see [status](https://status.example).\n")
        .unwrap();
    let r = t.render(&values());
    assert_eq!(r.title, "Rolling back notes 2026.11.0");
    assert_eq!(r.title_markdown, "Rolling back notes 2026.11.0");
    assert_eq!(r.markdown, "# Rollback\n\nWave **canary**: 12 endpoints, see [status](https://status.example).\n");
    assert_eq!(
        r.text,
        "Rolling back notes 2026.11.0\n\nRollback\n\nWave canary: 12 endpoints, see status (https://status.example).\n"
    );
    assert_eq!(t.variables(), [Variable::Release, Variable::Wave, Variable::AffectedCount]);
}

#[test]
fn without_front_matter_the_default_title_is_used() {
    let r = parse("Rolling back now: {{reason}}\n").unwrap().render(&values());
    assert_eq!(r.title, "Rolling back notes 2026.11.0");
    assert_eq!(r.markdown, "Rolling back now: app.crash\\_count above 3 within 10m\n");
    assert_eq!(r.text, "Rolling back notes 2026.11.0\n\nRolling back now: app.crash_count above 3 within 10m\n");
}

#[test]
fn values_are_escaped_for_markdown_and_kept_on_one_line() {
    let v = values().with(Variable::Reason, "# [click](http://evil) <script>x</script> *now*\n- item");
    let r = parse("Reason: {{reason}}\n").unwrap().render(&v);
    assert_eq!(r.markdown, "Reason: \\# \\[click\\](http://evil) \\<script\\>x\\</script\\> \\*now\\* - item\n");
    // Plain text carries the value as given, but still on one line.
    assert_eq!(
        r.text,
        "Rolling back notes 2026.11.0\n\nReason: # [click](http://evil) <script>x</script> *now* - item\n"
    );
    assert_eq!(escape_markdown("1. first"), "1\\. first");
    assert_eq!(escape_markdown("- x"), "\\- x");
    assert_eq!(escape_markdown("---"), "\\---");
    assert_eq!(escape_markdown("-x"), "-x");
    assert_eq!(escape_markdown("2026.11.0"), "2026.11.0");
    assert_eq!(escape_markdown("3) x"), "3\\) x");
    assert_eq!(escape_markdown("storage-team"), "storage-team");
    assert_eq!(escape_markdown("a|b & c"), "a\\|b \\& c");
}

#[test]
fn unset_values_render_as_unknown() {
    let r = parse("Wave {{wave}}.\n").unwrap().render(&Values::default());
    assert_eq!(r.markdown, "Wave unknown.\n");
}

#[test]
fn unknown_variable_is_an_error_at_file_line_column_listing_the_allowed_ones() {
    let errs =
        parse("---\ntitle: {{release}}\n---\nfine line\nSeverity: {{severity}} and {{wave}}\n{{ownr}}\n").unwrap_err();
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with(
            "templates/rollback_started.md:5:11: unknown variable `{{severity}}`; the variables are: release, product,"
        ),
        "{msgs:?}"
    );
    assert!(msgs[0].ends_with("started_at, reason"), "{msgs:?}");
    assert!(msgs[1].starts_with("templates/rollback_started.md:6:1: unknown variable `{{ownr}}`"), "{msgs:?}");
}

#[test]
fn unknown_variable_in_the_title_names_the_title_line() {
    let errs = parse("---\n# comment\ntitle: Down: {{relase}}\n---\nbody\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (3, 7), "{errs:?}");
}

#[test]
fn malformed_templates_are_errors() {
    let cases = [
        ("---\ntitle: x\nbody without end\n", "templates/rollback_started.md:3:1: front matter lines are"),
        ("---\ntitle: x\n", "templates/rollback_started.md:1:1: the front matter opened here is never closed"),
        (
            "---\nsubject: x\n---\nbody\n",
            "templates/rollback_started.md:2:1: unknown front-matter key `subject`; the only key is `title`",
        ),
        ("---\ntitle:\n---\nbody\n", "templates/rollback_started.md:2:1: `title` is empty"),
        ("---\ntitle: x\n---\n\n", "templates/rollback_started.md:4:1: the message body is empty"),
        ("a {{release\n", "templates/rollback_started.md:1:3: `{{` is not closed on this line"),
    ];
    for (src, want) in cases {
        let errs = parse(src).unwrap_err();
        assert!(errs.iter().any(|e| e.to_string().starts_with(want)), "{src:?}: {errs:?}");
    }
}

#[test]
fn every_default_renders_and_uses_only_known_values() {
    for e in Event::ALL {
        let t = Template::default_for(e);
        assert_eq!(t.origin, Origin::Default);
        let r = t.render(&values());
        assert!(!r.markdown.contains("{{") && !r.text.contains("unknown"), "{e}: {r:?}");
        assert!(r.text.starts_with(&format!("{}\n\n", r.title)));
        // The default's source parses back to the same template.
        let again = Template::parse(e, Path::new("x.md"), &t.source).unwrap();
        assert_eq!(again.render(&values()), r);
    }
}

#[test]
fn default_rollback_started_snapshot() {
    let r = Template::default_for(Event::RollbackStarted).render(&values());
    assert_eq!(r.title, "Rolling back notes 2026.11.0");
    assert_eq!(
        r.markdown,
        "We are rolling back **notes 2026.11.0** on 12 endpoint(s) in wave canary.\n\n\
Reason: app.crash\\_count above 3 within 10m\n\n\
Each endpoint returns to its state before the update and proves it by checksum. \
A restore takes about 40 ms per endpoint. Started at 2026-11-25 08:00 UTC; pager:storage leads the response.\n"
    );
    assert_eq!(
        r.text,
        "Rolling back notes 2026.11.0\n\n\
We are rolling back notes 2026.11.0 on 12 endpoint(s) in wave canary.\n\n\
Reason: app.crash_count above 3 within 10m\n\n\
Each endpoint returns to its state before the update and proves it by checksum. \
A restore takes about 40 ms per endpoint. Started at 2026-11-25 08:00 UTC; pager:storage leads the response.\n"
    );
}

#[test]
fn load_reads_event_files_rejects_unknown_names_and_falls_back_to_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("templates");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(t.join("resolved.md"), "---\ntitle: All good\n---\nResolved: {{release}}\n").unwrap();
    std::fs::write(t.join(".gitkeep"), "").unwrap();
    let loaded = Templates::load(dir.path()).unwrap();
    assert!(!loaded.is_empty());
    assert_eq!(loaded.get(Event::Resolved).origin, Origin::File(t.join("resolved.md")));
    assert_eq!(loaded.render(Event::Resolved, &values()).text, "All good\n\nResolved: notes 2026.11.0\n");
    assert_eq!(loaded.get(Event::IncidentStarted), Template::default_for(Event::IncidentStarted));

    std::fs::write(t.join("incident.md"), "x\n").unwrap();
    std::fs::write(t.join("rollback_started.md"), "x {{nope}}\n").unwrap();
    let errs = Templates::load(dir.path()).unwrap_err();
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("incident.md:1:1: unknown template `incident.md`: templates/ holds only incident_started.md, rollback_started.md"), "{msgs:?}");
    assert!(msgs[1].contains("rollback_started.md:1:3: unknown variable `{{nope}}`"), "{msgs:?}");

    assert!(Templates::load(&dir.path().join("missing")).unwrap().is_empty());
}

#[test]
fn templates_serialize_as_sources_and_parse_back() {
    let mut ts = Templates::default();
    ts.set(parse("---\ntitle: T {{wave}}\n---\nBody {{owner}}\n").unwrap());
    let json = serde_json::to_string(&ts).unwrap();
    assert_eq!(
        json,
        r#"{"rollback_started":{"file":"templates/rollback_started.md","source":"---\ntitle: T {{wave}}\n---\nBody {{owner}}\n"}}"#
    );
    let back: Templates = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ts);
    let bad = r#"{"resolved":{"file":"resolved.md","source":"{{x}}"}}"#;
    let e = serde_json::from_str::<Templates>(bad).unwrap_err().to_string();
    assert!(e.contains("resolved.md:1:1: unknown variable `{{x}}`"), "{e}");
}

#[test]
fn docs_quote_the_defaults_as_they_are() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/communication.md")).unwrap();
    for (event, title, body) in DEFAULTS {
        let heading = format!("**{event}** — title `{title}`\n\n```markdown\n{body}```");
        assert!(doc.contains(&heading), "docs/communication.md does not quote the default of {event} as:\n{heading}");
    }
}

/// The built-in defaults as every channel shows them (title, Markdown for
/// the status page, plain text for chat webhooks), reviewed as snapshots.
#[test]
fn built_in_templates_render_as_reviewed() {
    for e in Event::ALL {
        let r = Template::default_for(e).render(&values());
        insta::assert_snapshot!(
            format!("default_{}", e.name()),
            format!("title: {}\n\n--- markdown ---\n{}\n--- text ---\n{}", r.title, r.markdown, r.text)
        );
    }
}
