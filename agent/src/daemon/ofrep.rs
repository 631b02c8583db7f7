//! OpenFeature Remote Evaluation Protocol (OFREP) over the flags this agent
//! set (DESIGN.md §5 "Flags"): the values are read from `agent.db` on every
//! request, so a flag a plan (or a rollback, or `rewindctl flags set`)
//! changed is seen by the next evaluation.
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: `{"key", "value", "reason":
//!   "STATIC", "variant", "metadata": {"product", "sequence", "updated"}}`;
//!   404 `FLAG_NOT_FOUND` for a flag this endpoint does not have.
//! - `POST /ofrep/v1/evaluate/flags`: `{"flags": [...]}` with an `ETag`;
//!   `If-None-Match` with the same tag gets `304 Not Modified`.
//!
//! Flags are per product. A key names a flag of any product this endpoint
//! has; when two products have a flag of that name, the request's
//! `context.product` chooses (else `INVALID_CONTEXT` naming the products).
//! Values do not depend on the rest of the evaluation context: every
//! endpoint of a cohort holds the same values.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// One flag value as stored by [`crate::flags`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlagRow {
    pub product: String,
    pub name: String,
    pub value: Value,
    pub updated: String,
    pub sequence: i64,
}

/// Every flag of every product, from `agent.db`, read without the state
/// lock. Empty when there is no `agent.db` yet.
///
/// # Errors
/// When `agent.db` exists but cannot be read.
pub fn read_flags(state: &Path) -> rusqlite::Result<Vec<FlagRow>> {
    let db = state.join("agent.db");
    if !db.is_file() {
        return Ok(Vec::new());
    }
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    let mut stmt = conn.prepare(
        "SELECT f.product, f.name, f.value, f.updated, coalesce(i.sequence, 0)
         FROM flags f LEFT JOIN installed i ON i.product = f.product ORDER BY f.product, f.name",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(FlagRow {
                product: r.get(0)?,
                name: r.get(1)?,
                value: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
                updated: r.get(3)?,
                sequence: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().filter(|f| !f.value.is_null()).collect())
}

/// An OFREP answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn error(status: u16, key: Option<&str>, code: &str, details: String) -> Answer {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    Answer { status, body }
}

/// The request body's `context`, or an OFREP `PARSE_ERROR` / `INVALID_CONTEXT`.
///
/// # Errors
/// The answer to send instead.
pub fn context(body: &[u8], key: Option<&str>) -> Result<BTreeMap<String, Value>, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        error(400, key, "PARSE_ERROR", format!("request body is not JSON ({e}); send {{\"context\": {{...}}}}"))
    })?;
    match doc.get("context") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m.clone().into_iter().collect()),
        Some(_) => Err(error(400, key, "INVALID_CONTEXT", "`context` must be a JSON object".into())),
    }
}

fn variant(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => format!("b3:{}", &blake3::hash(other.to_string().as_bytes()).to_hex()[..16]),
    }
}

fn success(f: &FlagRow) -> Value {
    json!({
        "key": f.name,
        "value": f.value,
        "reason": "STATIC",
        "variant": variant(&f.value),
        "metadata": {"product": f.product, "sequence": f.sequence, "updated": f.updated},
    })
}

fn product_filter(ctx: &BTreeMap<String, Value>) -> Option<&str> {
    ctx.get("product").and_then(Value::as_str)
}

/// Evaluates one flag.
#[must_use]
pub fn evaluate(flags: &[FlagRow], key: &str, ctx: &BTreeMap<String, Value>) -> Answer {
    let product = product_filter(ctx);
    let hits: Vec<&FlagRow> =
        flags.iter().filter(|f| f.name == key && product.is_none_or(|p| f.product == p)).collect();
    match hits.as_slice() {
        [one] => Answer { status: 200, body: success(one) },
        [] => {
            let products: std::collections::BTreeSet<&str> = flags.iter().map(|f| f.product.as_str()).collect();
            let within = product.map_or_else(
                || format!("any product here ({})", products.into_iter().collect::<Vec<_>>().join(", ")),
                |p| format!("product {p}"),
            );
            error(404, Some(key), "FLAG_NOT_FOUND", format!("flag {key} is not set for {within} on this endpoint"))
        }
        many => error(
            400,
            Some(key),
            "INVALID_CONTEXT",
            format!(
                "flag {key} exists in products {}: give context.product",
                many.iter().map(|f| f.product.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

/// Evaluates every flag (of `context.product` when given) and the body's
/// ETag.
#[must_use]
pub fn evaluate_all(flags: &[FlagRow], ctx: &BTreeMap<String, Value>) -> (Value, String) {
    let product = product_filter(ctx);
    let chosen: Vec<&FlagRow> = flags.iter().filter(|f| product.is_none_or(|p| f.product == p)).collect();
    let mut names: BTreeMap<&str, Vec<&FlagRow>> = BTreeMap::new();
    for f in &chosen {
        names.entry(f.name.as_str()).or_default().push(f);
    }
    let entries: Vec<Value> = names
        .into_iter()
        .map(|(name, rows)| match rows.as_slice() {
            [one] => success(one),
            many => json!({
                "key": name,
                "errorCode": "INVALID_CONTEXT",
                "errorDetails": format!(
                    "flag {name} exists in products {}: give context.product",
                    many.iter().map(|f| f.product.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        })
        .collect();
    let body = json!({"flags": entries});
    let etag = format!("\"{}\"", &blake3::hash(body.to_string().as_bytes()).to_hex()[..32]);
    (body, etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(product: &str, name: &str, value: Value) -> FlagRow {
        FlagRow { product: product.into(), name: name.into(), value, updated: "t".into(), sequence: 7 }
    }

    #[test]
    fn single_bulk_and_errors_have_the_ofrep_shapes() {
        let flags = vec![
            row("notes", "new_checkout", json!(true)),
            row("notes", "theme", json!("dark")),
            row("chat", "theme", json!("light")),
        ];
        let none = BTreeMap::new();
        let a = evaluate(&flags, "new_checkout", &none);
        assert_eq!(a.status, 200);
        assert_eq!(
            (a.body["value"].clone(), a.body["reason"].clone(), a.body["variant"].clone()),
            (json!(true), json!("STATIC"), json!("true"))
        );
        assert_eq!(a.body["metadata"]["product"], "notes");
        let a = evaluate(&flags, "nope", &none);
        assert_eq!((a.status, a.body["errorCode"].clone()), (404, json!("FLAG_NOT_FOUND")));
        let a = evaluate(&flags, "theme", &none);
        assert_eq!((a.status, a.body["errorCode"].clone()), (400, json!("INVALID_CONTEXT")));
        let chat: BTreeMap<String, Value> = [("product".to_string(), json!("chat"))].into();
        assert_eq!(evaluate(&flags, "theme", &chat).body["value"], "light");
        let (body, etag) = evaluate_all(&flags, &chat);
        assert_eq!(body["flags"].as_array().unwrap().len(), 1);
        let (body2, etag2) = evaluate_all(&flags, &none);
        assert_ne!(etag, etag2);
        assert_eq!(body2["flags"][1]["errorCode"], "INVALID_CONTEXT", "{body2}");
        assert_eq!(evaluate_all(&flags, &none).1, etag2, "same flags, same tag");
        assert!(context(b"{", None).unwrap_err().body["errorCode"] == "PARSE_ERROR");
        assert!(context(b"{\"context\": 1}", None).unwrap_err().body["errorCode"] == "INVALID_CONTEXT");
        assert!(context(b"", None).unwrap().is_empty());
    }
}
