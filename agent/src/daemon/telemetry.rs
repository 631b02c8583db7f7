//! Telemetry on the endpoint (DESIGN.md §5, docs/telemetry.md): every
//! `telemetry_seconds` the daemon takes one [`Sample`] per product it serves,
//! made of
//! - its own metrics (`agent.*`) from `agent.db`: plans applied, failed,
//!   rolled back, the installed sequence, the last apply's duration;
//! - the latest plan's `[[check]]` results (`check.<name>.ok` 1 or 0, and
//!   `check.<name>.value` when numeric);
//! - the app's metrics (`app.*`): the file `<metrics_dir>/<product>.json`
//!   (a JSON object of name -> number) and the latest `POST /metrics`.
//!
//! Samples are kept in memory for the longest trigger window (at most a
//! day), judged by local revert, and sent to the coordinator.
//!
//! Guarantees: a malformed metrics file or push is logged with the file and
//! the reason and ignored (the rest of the sample is still taken); every
//! sample passes [`rewind_shared::telemetry::check_metrics`].

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rewind_shared::telemetry::{MAX_METRICS, Sample, check_metrics, check_name};
use rusqlite::OptionalExtension;
use serde_json::Value;
use tokio::sync::{Notify, watch};

/// Samples older than this are dropped, whatever the trigger windows.
const KEEP_MS: i64 = 24 * 3600 * 1000;
/// Most samples kept per product.
const KEEP_SAMPLES: usize = 4096;

/// The daemon's metrics, shared by the collector, the local endpoint, local
/// revert and the stream.
pub struct Hub {
    inner: Mutex<Inner>,
    /// Bumped on every new set of samples; the stream sends [`Hub::latest`].
    pub changed: watch::Sender<u64>,
    /// Woken by a push, so that pushed metrics go out at once.
    pub pushed: Notify,
}

#[derive(Default)]
struct Inner {
    /// Latest push per product (already `app.`-prefixed).
    pushes: BTreeMap<String, BTreeMap<String, f64>>,
    history: BTreeMap<String, VecDeque<Sample>>,
    /// Metrics files found malformed, by modification time: logged once.
    bad_files: BTreeMap<PathBuf, Option<SystemTime>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { inner: Mutex::new(Inner::default()), changed: watch::channel(0).0, pushed: Notify::new() }
    }
}

impl Hub {
    /// Records an app's pushed metrics (`POST /metrics`) for `product`.
    ///
    /// # Errors
    /// A message naming the metric at fault; nothing is recorded then.
    pub fn push(&self, product: &str, body: &Value) -> Result<usize, String> {
        let metrics = app_metrics(body)?;
        let n = metrics.len();
        self.inner.lock().expect("hub lock").pushes.insert(product.to_string(), metrics);
        self.pushed.notify_one();
        Ok(n)
    }

    fn pushed_for(&self, product: &str) -> BTreeMap<String, f64> {
        self.inner.lock().expect("hub lock").pushes.get(product).cloned().unwrap_or_default()
    }

    /// Keeps a new set of samples and tells the stream.
    pub fn record(&self, samples: Vec<Sample>) {
        {
            let mut inner = self.inner.lock().expect("hub lock");
            for s in samples {
                let h = inner.history.entry(s.product.clone()).or_default();
                let oldest = s.time_unix_ms - KEEP_MS;
                h.push_back(s);
                while h.len() > KEEP_SAMPLES || h.front().is_some_and(|f| f.time_unix_ms < oldest) {
                    h.pop_front();
                }
            }
        }
        self.changed.send_modify(|g| *g += 1);
    }

    /// The newest sample of each product.
    #[must_use]
    pub fn latest(&self) -> Vec<Sample> {
        self.inner.lock().expect("hub lock").history.values().filter_map(|h| h.back().cloned()).collect()
    }

    /// `(unix ms, value)` of one metric of one product, oldest first.
    #[must_use]
    pub fn series(&self, product: &str, metric: &str) -> Vec<(i64, f64)> {
        self.inner
            .lock()
            .expect("hub lock")
            .history
            .get(product)
            .map(|h| h.iter().filter_map(|s| s.metrics.get(metric).map(|v| (s.time_unix_ms, *v))).collect())
            .unwrap_or_default()
    }

    /// Whether `path` (with this modification time) was already reported
    /// as malformed; remembers it.
    fn seen_bad(&self, path: &Path, mtime: Option<SystemTime>) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.bad_files.insert(path.to_path_buf(), mtime) == Some(mtime)
    }

    fn forget_bad(&self, path: &Path) {
        self.inner.lock().expect("hub lock").bad_files.remove(path);
    }
}

/// An app's metrics document: a JSON object of name -> finite number. Names
/// are reported as `app.<name>` (a name already starting with `app.` is
/// kept as it is).
///
/// # Errors
/// A message naming the metric or value at fault.
pub fn app_metrics(doc: &Value) -> Result<BTreeMap<String, f64>, String> {
    let obj = doc
        .as_object()
        .ok_or_else(|| "expected a JSON object of metric name -> number, e.g. {\"crash_count\": 0}".to_string())?;
    if obj.len() > MAX_METRICS {
        return Err(format!("{} metrics: at most {MAX_METRICS}", obj.len()));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let name = if k.starts_with("app.") { k.clone() } else { format!("app.{k}") };
        check_name(&name)?;
        let n = v.as_f64().ok_or_else(|| format!("metric {k}: {v} is not a number"))?;
        if !n.is_finite() {
            return Err(format!("metric {k}: {v} is not a finite number"));
        }
        out.insert(name, n);
    }
    Ok(out)
}

/// Reads `<dir>/<product>.json`; `Ok(None)` when there is no such file.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn read_metrics_file(path: &Path) -> Result<Option<BTreeMap<String, f64>>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("metrics file {}: cannot read: {e}", path.display())),
    };
    if bytes.len() > 1024 * 1024 {
        return Err(format!("metrics file {}: {} bytes, over the 1 MiB limit", path.display(), bytes.len()));
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!("metrics file {}: not JSON ({e}); write a JSON object of name -> number", path.display())
    })?;
    app_metrics(&doc).map(Some).map_err(|e| format!("metrics file {}: {e}", path.display()))
}

/// `check.<name>`: a check name with every character outside the metric
/// alphabet turned into `_` ("orders survive" -> `check.orders_survive`).
#[must_use]
pub fn check_metric(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') { c } else { '_' })
        .take(100)
        .collect();
    format!("check.{clean}")
}

/// The agent's own metrics and the latest check results of `product`, read
/// from `agent.db` without taking the state lock (WAL readers do not block
/// a running plan). Empty when there is no `agent.db` yet.
///
/// # Errors
/// When `agent.db` exists but cannot be read.
pub fn own_metrics(state: &Path, product: &str) -> rusqlite::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let db = state.join("agent.db");
    if !db.is_file() {
        return Ok(out);
    }
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    let count = |sql: &str| -> rusqlite::Result<f64> {
        conn.query_row(sql, [product], |r| r.get::<_, i64>(0)).map(|n| n as f64)
    };
    out.insert(
        "agent.plans_applied".into(),
        count("SELECT count(*) FROM plans WHERE product = ?1 AND kind = 'apply' AND state = 'applied'")?,
    );
    out.insert(
        "agent.plans_failed".into(),
        count("SELECT count(*) FROM plans WHERE product = ?1 AND state IN ('reverted', 'needs_human')")?,
    );
    out.insert(
        "agent.plans_rolled_back".into(),
        count("SELECT count(*) FROM plans WHERE product = ?1 AND kind = 'rollback' AND state = 'rolled_back'")?,
    );
    out.insert(
        "agent.needs_human".into(),
        count("SELECT count(*) FROM plans WHERE product = ?1 AND state = 'needs_human'")?,
    );
    let seq: Option<i64> =
        conn.query_row("SELECT sequence FROM installed WHERE product = ?1", [product], |r| r.get(0)).optional()?;
    out.insert("agent.installed_sequence".into(), seq.unwrap_or(0) as f64);
    let last_apply: Option<String> = conn
        .query_row(
            "SELECT result FROM plans WHERE product = ?1 AND kind = 'apply' AND result IS NOT NULL
             ORDER BY finished DESC LIMIT 1",
            [product],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(report) = last_apply.and_then(|r| serde_json::from_str::<Value>(&r).ok()) {
        let ms: f64 = report["steps"].as_array().map_or(0.0, |s| s.iter().filter_map(|x| x["millis"].as_f64()).sum());
        out.insert("agent.last_apply_ms".into(), ms);
    }
    let last: Option<String> = conn
        .query_row(
            "SELECT result FROM plans WHERE product = ?1 AND result IS NOT NULL ORDER BY finished DESC LIMIT 1",
            [product],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(report) = last.and_then(|r| serde_json::from_str::<Value>(&r).ok()) {
        for c in report["checks"].as_array().into_iter().flatten() {
            let Some(name) = c["name"].as_str() else { continue };
            let base = check_metric(name);
            out.insert(format!("{base}.ok"), if c["ok"] == Value::Bool(true) { 1.0 } else { 0.0 });
            if let Some(v) = c["value"].as_f64().filter(|v| v.is_finite()) {
                out.insert(format!("{base}.value"), v);
            }
        }
    }
    Ok(out)
}

/// Takes one sample per product: own metrics, check results, the metrics
/// file and the latest push. Blocking (reads files and `agent.db`).
#[must_use]
pub fn collect(hub: &Hub, state: &Path, metrics_dir: &Path, products: &[String], now_ms: i64) -> Vec<Sample> {
    products
        .iter()
        .map(|product| {
            let mut metrics = own_metrics(state, product).unwrap_or_else(|e| {
                tracing::warn!(product, "reading agent metrics from {}: {e}", state.join("agent.db").display());
                BTreeMap::new()
            });
            let path = metrics_dir.join(format!("{product}.json"));
            match read_metrics_file(&path) {
                Ok(Some(m)) => {
                    hub.forget_bad(&path);
                    metrics.extend(m);
                }
                Ok(None) => {}
                Err(e) => {
                    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    if !hub.seen_bad(&path, mtime) {
                        tracing::warn!(product, "{e}; ignored until it is fixed");
                        eprintln!("rewind-agent: {e}; ignored until it is fixed");
                    }
                }
            }
            metrics.extend(hub.pushed_for(product));
            // Own + check + app names are disjoint; the cap still holds.
            while metrics.len() > MAX_METRICS {
                metrics.pop_last();
            }
            debug_assert!(check_metrics(&metrics).is_ok());
            Sample { product: product.clone(), time_unix_ms: now_ms, metrics }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metrics_are_prefixed_and_checked() {
        let m = app_metrics(&serde_json::json!({"crash_count": 2, "app.latency_ms": 1.5})).unwrap();
        assert_eq!(m["app.crash_count"], 2.0);
        assert_eq!(m["app.latency_ms"], 1.5);
        assert!(app_metrics(&serde_json::json!({"x": "high"})).unwrap_err().contains("not a number"));
        assert!(app_metrics(&serde_json::json!([1])).unwrap_err().contains("JSON object"));
        assert!(app_metrics(&serde_json::json!({"a b": 1})).unwrap_err().contains("not allowed"));
        assert_eq!(check_metric("orders survive"), "check.orders_survive");
    }

    #[test]
    fn a_malformed_file_is_named_and_the_rest_of_the_sample_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.json"), "{not json").unwrap();
        let e = read_metrics_file(&dir.path().join("notes.json")).unwrap_err();
        assert!(e.contains("notes.json") && e.contains("not JSON"), "{e}");
        assert_eq!(read_metrics_file(&dir.path().join("none.json")).unwrap(), None);
        let hub = Hub::default();
        hub.push("notes", &serde_json::json!({"pushed": 1})).unwrap();
        let s = collect(&hub, dir.path(), dir.path(), &["notes".into()], 5);
        assert_eq!(s[0].metrics["app.pushed"], 1.0);
        assert!(!s[0].metrics.contains_key("app.crash_count"));
        hub.record(s);
        assert_eq!(hub.series("notes", "app.pushed"), vec![(5, 1.0)]);
    }
}
