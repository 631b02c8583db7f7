//! A small SQLite tokenizer used for two normalisations:
//!
//! - [`script_checksum`]: a migration script's checksum ignores comments and
//!   whitespace, so editing a comment never invalidates an applied migration;
//! - [`normalize_schema_sql`]: the schema digest hashes each object's
//!   `CREATE` statement as a token stream with identifiers case-folded and
//!   unquoted, so `ALTER TABLE ... ADD COLUMN` followed by `DROP COLUMN` gives
//!   back the original digest however SQLite re-spaced the text.
//!
//! The tokenizer never fails: unterminated strings or comments run to the end
//! of the input (SQLite itself rejects such scripts when they are run).

/// What a token is; only the distinctions the normalisations need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word: keyword, identifier, number, parameter or blob literal.
    Word,
    /// `'...'`: kept byte for byte.
    String,
    /// `"..."`, `[...]` or `` `...` ``: content without the quotes.
    QuotedIdent,
    /// Any other single character.
    Punct,
}

/// One token with its text (for `QuotedIdent`, the unescaped content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub text: String,
}

/// SQLite's whitespace: space, tab, newline, form feed, carriage return.
/// Anything non-ASCII is an identifier character to SQLite (so a no-break
/// space starts or continues a name), and must be one here too.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Splits SQL into tokens, dropping whitespace and comments.
#[must_use]
pub fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_space(c) {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i = (i + 2).min(chars.len());
        } else if c == '\'' {
            let (text, next) = quoted(&chars, i, '\'');
            out.push(Token { kind: TokenKind::String, text });
            i = next;
        } else if c == '"' || c == '`' {
            let (text, next) = quoted(&chars, i, c);
            out.push(Token { kind: TokenKind::QuotedIdent, text });
            i = next;
        } else if c == '[' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j] != ']' {
                j += 1;
            }
            out.push(Token { kind: TokenKind::QuotedIdent, text: chars[start..j].iter().collect() });
            i = (j + 1).min(chars.len());
        } else if is_word_char(c) || ((c == '?' || c == ':' || c == '@') && i + 1 < chars.len()) {
            let start = i;
            i += 1;
            // Numbers like 1.5e-3 and blob literals x'00ff' stay one word.
            while i < chars.len() {
                let d = chars[i];
                let in_number = chars[start].is_ascii_digit()
                    && (d == '.' || ((d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E')));
                if is_word_char(d) || in_number {
                    i += 1;
                } else if d == '\'' && i == start + 1 && matches!(chars[start], 'x' | 'X') {
                    let (_, next) = quoted(&chars, i, '\'');
                    i = next;
                    break;
                } else {
                    break;
                }
            }
            out.push(Token { kind: TokenKind::Word, text: chars[start..i].iter().collect() });
        } else {
            out.push(Token { kind: TokenKind::Punct, text: c.to_string() });
            i += 1;
        }
    }
    out
}

/// Reads a quoted run starting at `chars[start] == q`, with `qq` as an
/// escaped quote. Returns the raw text including quotes for strings and the
/// unescaped content for identifiers, and the index after the closing quote.
fn quoted(chars: &[char], start: usize, q: char) -> (String, usize) {
    let mut content = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            if chars.get(i + 1) == Some(&q) {
                content.push(q);
                i += 2;
                continue;
            }
            i += 1;
            break;
        }
        content.push(chars[i]);
        i += 1;
    }
    if q == '\'' {
        let escaped = content.replace('\'', "''");
        (format!("'{escaped}'"), i)
    } else {
        (content, i)
    }
}

/// The text a script's checksum covers: its tokens joined by single spaces,
/// so comments and whitespace never change it but any token does.
#[must_use]
pub fn normalize_script(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for t in tokens(sql) {
        if !out.is_empty() {
            out.push(' ');
        }
        match t.kind {
            TokenKind::QuotedIdent => {
                out.push('"');
                out.push_str(&t.text.replace('"', "\"\""));
                out.push('"');
            }
            _ => out.push_str(&t.text),
        }
    }
    out
}

/// `b3:<hex>` checksum of a migration script, ignoring comments and whitespace.
#[must_use]
pub fn script_checksum(sql: &str) -> String {
    format!("b3:{}", blake3::hash(normalize_script(sql).as_bytes()).to_hex())
}

fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalises a `CREATE` statement for the schema digest (see docs/digest.md):
/// tokens joined by one space; words and quoted identifiers ASCII-lowercased;
/// a quoted identifier that is a plain identifier loses its quotes, any other
/// keeps double quotes; string literals are kept exactly.
#[must_use]
pub fn normalize_schema_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for t in tokens(sql) {
        if !out.is_empty() {
            out.push(' ');
        }
        match t.kind {
            TokenKind::Word => out.push_str(&t.text.to_ascii_lowercase()),
            TokenKind::QuotedIdent => {
                let lower = t.text.to_ascii_lowercase();
                if is_plain_ident(&lower) {
                    out.push_str(&lower);
                } else {
                    out.push('"');
                    out.push_str(&lower.replace('"', "\"\""));
                    out.push('"');
                }
            }
            TokenKind::String | TokenKind::Punct => out.push_str(&t.text),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_whitespace_do_not_change_the_checksum() {
        let a = "ALTER TABLE orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR';";
        let b = "-- add currency\nALTER  TABLE orders\n  ADD COLUMN currency /* ISO */ TEXT NOT NULL DEFAULT 'EUR' ;\n";
        assert_eq!(script_checksum(a), script_checksum(b));
    }

    #[test]
    fn any_token_change_changes_the_checksum() {
        let a = "UPDATE t SET c = 'EUR';";
        for b in ["UPDATE t SET c = 'eur';", "UPDATE t SET c = 'EUR' ;;", "UPDATE t SET d = 'EUR';"] {
            assert_ne!(script_checksum(a), script_checksum(b), "{b}");
        }
        // Whitespace inside a string literal is data, not layout.
        assert_ne!(script_checksum("SELECT 'a b'"), script_checksum("SELECT 'a  b'"));
    }

    #[test]
    fn schema_normalisation_folds_case_and_quotes() {
        assert_eq!(
            normalize_schema_sql("CREATE TABLE \"Orders\" (\n  Id INTEGER PRIMARY KEY, [Note] text DEFAULT 'X')"),
            normalize_schema_sql("create table orders(id integer primary key,note TEXT default 'X')"),
        );
        assert_ne!(
            normalize_schema_sql("CREATE TABLE t(a DEFAULT 'X')"),
            normalize_schema_sql("CREATE TABLE t(a DEFAULT 'x')")
        );
        assert_eq!(normalize_schema_sql("CREATE TABLE \"my table\"(a)"), "create table \"my table\" ( a )");
    }

    #[test]
    fn only_sqlite_whitespace_separates_tokens() {
        // SQLite reads U+00A0 as part of a name: `t(\u{a0}x)` has a column
        // named "\u{a0}x", a different schema from `t(x)`.
        assert_ne!(normalize_schema_sql("CREATE TABLE t(\u{a0}x)"), normalize_schema_sql("CREATE TABLE t(x)"));
        assert_ne!(script_checksum("SELECT\u{2003}1"), script_checksum("SELECT 1"));
        assert_eq!(script_checksum("SELECT\t1\r\n\x0c"), script_checksum("SELECT 1"));
    }

    #[test]
    fn numbers_and_blobs_are_single_tokens() {
        let t = tokens("SELECT 1.5e-3, x'00ff', :p");
        let words: Vec<_> = t.iter().filter(|t| t.kind == TokenKind::Word).map(|t| t.text.as_str()).collect();
        assert_eq!(words, ["SELECT", "1.5e-3", "x'00ff'", ":p"]);
    }
}
