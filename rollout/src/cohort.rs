//! Cohorts: which wave of a rollout an endpoint belongs to.
//!
//! Two inputs decide it, both stable for a device: its labels (matched by a
//! [`Selector`]) and its [`bucket`], a number in `[0, 10000)` derived from
//! BLAKE3 of the product and the agent id only — never of the release — so
//! a device keeps its cohort across releases and coordinator restarts.
//!
//! [`Cohorts::wave_of`] puts an agent in the first wave that takes it.
//! Percent waves are cumulative (`5`, `50`, `100` cover buckets `< 500`,
//! `< 5000`, `< 10000`), so widening a later wave never moves an agent out
//! of an earlier one, and an agent that joins mid-rollout lands in the same
//! wave it would have had from the start.

use std::collections::BTreeSet;
use std::fmt;

use rewind_shared::fleet::Labels;
use rewind_shared::release::Wave;
use serde::{Deserialize, Serialize};

/// Number of buckets: percentages resolve to 1/100 of a percent.
pub const BUCKETS: u32 = 10_000;

/// Domain-separation prefix hashed before the product and the agent id.
pub const BUCKET_CONTEXT: &[u8] = b"rewind-cohort-1\0";

/// The stable hash bucket of an agent for a product, in `[0, 10000)`.
///
/// Exactly: `h = BLAKE3("rewind-cohort-1" 0x00 || product || 0x00 ||
/// agent_id)` (strings as UTF-8, no length prefixes; neither may hold NUL),
/// then the first 8 bytes of `h` read as a little-endian `u64`, modulo
/// 10000. The modulo bias is below 10⁻¹⁵.
#[must_use]
pub fn bucket(agent_id: &str, product: &str) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(BUCKET_CONTEXT);
    h.update(product.as_bytes());
    h.update(&[0]);
    h.update(agent_id.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    // The remainder is below 10000, so it always fits.
    u32::try_from(u64::from_le_bytes(first) % u64::from(BUCKETS)).unwrap_or(0)
}

/// The cumulative bucket bound of a wave's percent: buckets below it are in.
/// `5` gives 500, `0.25` gives 25, `100` gives 10000.
#[must_use]
pub fn percent_bound(percent: f64) -> u32 {
    let b = (percent * f64::from(BUCKETS) / 100.0).round();
    if b.is_nan() || b <= 0.0 {
        0
    } else if b >= f64::from(BUCKETS) {
        BUCKETS
    } else {
        // In (0, 10000): exact in u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let v = b as u32;
        v
    }
}

/// A selector that does not parse: the input, the 1-based column (in
/// characters) where it went wrong, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector `{input}`: column {column}: {message}")]
pub struct SelectorError {
    pub input: String,
    pub column: usize,
    pub message: String,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` (or `key==value`): the label is present with that value.
    Eq(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEq(String, String),
    /// `key in (a,b)`: the label is present with one of the values.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key`: the label is present, whatever its value.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Eq(k, v) => labels.get(k) == Some(v),
            Self::NotEq(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector: comma-separated requirements that must all hold.
///
/// Grammar (Kubernetes' set-based selectors; whitespace around tokens is
/// ignored; keys and values are `[A-Za-z0-9._/-]+`):
///
/// ```text
/// selector    := "" | requirement ("," requirement)*
/// requirement := key ("=" | "==" | "!=") value
///              | key ("in" | "notin") "(" value ("," value)* ")"
///              | key | "!" key
/// ```
///
/// `!=` and `notin` also match agents that lack the label, as in
/// Kubernetes. The empty selector matches every agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    source: String,
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the column of the first problem.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let requirements = Parser { input: s, chars: s.char_indices().collect(), pos: 0 }.selector()?;
        Ok(Self { source: s.to_string(), requirements })
    }

    /// Whether an agent with these labels is selected.
    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    #[must_use]
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The selector as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> Self {
        s.source
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<(usize, char)>,
    /// Index into `chars`.
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> SelectorError {
        SelectorError { input: self.input.to_string(), column: at + 1, message: message.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end".to_string(), |c| format!("`{c}`"))
    }

    /// A key or value; `what` names it in errors.
    fn name(&mut self, what: &str) -> Result<String, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err(start, format!("expected {what} ([A-Za-z0-9._/-]), found {}", self.found())));
        }
        let s: String = self.chars[start..self.pos].iter().map(|&(_, c)| c).collect();
        if s.len() > 63 {
            return Err(self.err(start, format!("`{s}` is longer than 63 characters")));
        }
        Ok(s)
    }

    fn selector(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(out),
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.err(self.pos, format!("expected `,` or the end, found {}", self.found()))),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.eat('!') {
            return Ok(Requirement::NotExists(self.name("a label key")?));
        }
        let key = self.name("a label key")?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => Ok(Requirement::Exists(key)),
            Some('=') => {
                self.pos += 1;
                self.eat('=');
                Ok(Requirement::Eq(key, self.name("a label value")?))
            }
            Some('!') => {
                let at = self.pos;
                self.pos += 1;
                if !self.eat('=') {
                    return Err(self.err(at, "expected `!=`"));
                }
                Ok(Requirement::NotEq(key, self.name("a label value")?))
            }
            Some(_) => {
                let at = self.pos;
                let word = self.name("an operator")?;
                match word.as_str() {
                    "in" => Ok(Requirement::In(key, self.set()?)),
                    "notin" => Ok(Requirement::NotIn(key, self.set()?)),
                    _ => {
                        Err(self.err(at, format!("expected `=`, `!=`, `in` or `notin` after `{key}`, found `{word}`")))
                    }
                }
            }
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.skip_ws();
        let open = self.pos;
        if !self.eat('(') {
            return Err(self.err(self.pos, format!("expected `(` to open a set of values, found {}", self.found())));
        }
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.name("a label value")?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(values);
                }
                None => return Err(self.err(open, "the set opened here has no closing `)`")),
                Some(_) => {
                    return Err(self.err(self.pos, format!("expected `,` or `)` in a set, found {}", self.found())));
                }
            }
        }
    }
}

/// Why a rollout's waves cannot be turned into cohorts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CohortError {
    #[error("wave {wave}: {source}")]
    Selector { wave: String, source: SelectorError },
    #[error("wave {wave}: give a `selector` or a `percent`")]
    Empty { wave: String },
}

/// One wave's membership rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveRule {
    pub name: String,
    pub selector: Option<Selector>,
    /// Cumulative bucket bound from `percent`: buckets below it are in.
    pub bound: Option<u32>,
}

impl WaveRule {
    /// Whether an agent with these labels and bucket falls in this wave
    /// (ignoring earlier waves). With both a selector and a percent, both
    /// must hold: `{ selector = "os=windows", percent = 10 }` is the
    /// Windows devices among the first 10 % of buckets.
    #[must_use]
    pub fn takes(&self, labels: &Labels, bucket: u32) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels)) && self.bound.is_none_or(|b| bucket < b)
    }
}

/// The compiled waves of one product's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohorts {
    pub product: String,
    pub waves: Vec<WaveRule>,
}

impl Cohorts {
    /// Compiles the waves of a `[rollout]`.
    ///
    /// # Errors
    /// When a selector does not parse or a wave has neither selector nor
    /// percent.
    pub fn new(product: &str, waves: &[Wave]) -> Result<Self, CohortError> {
        let waves = waves
            .iter()
            .map(|w| {
                if w.selector.is_none() && w.percent.is_none() {
                    return Err(CohortError::Empty { wave: w.name.clone() });
                }
                let selector = w
                    .selector
                    .as_deref()
                    .map(Selector::parse)
                    .transpose()
                    .map_err(|source| CohortError::Selector { wave: w.name.clone(), source })?;
                Ok(WaveRule { name: w.name.clone(), selector, bound: w.percent.map(percent_bound) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { product: product.to_string(), waves })
    }

    /// The index of the first wave that takes this agent, or `None` when no
    /// wave does (the rollout does not target it).
    #[must_use]
    pub fn wave_of(&self, agent_id: &str, labels: &Labels) -> Option<usize> {
        let b = bucket(agent_id, &self.product);
        self.waves.iter().position(|w| w.takes(labels, b))
    }
}

#[cfg(test)]
mod tests;
