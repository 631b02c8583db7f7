//! HTML building blocks shared by the status page and the dashboard: one
//! escaping function that every value passes through, the page frame
//! (viewport meta, inline CSS, no external assets) and small widgets.
//!
//! Guarantee: text that reaches a page from the store, an agent, a release
//! or an operator goes through [`esc`] (or [`Html::text`]), so it can never
//! add markup, attributes or scripts.

use std::fmt::Write as _;

/// Escapes text for HTML element content and double- or single-quoted
/// attribute values.
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A string of HTML being built; plain text goes in with [`Html::text`].
#[derive(Default)]
pub struct Html(pub String);

impl Html {
    /// Appends trusted markup written in this crate.
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// Appends text, escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.0.push_str(&esc(s));
        self
    }

    /// Appends `<tag class="class">text</tag>`, the text escaped.
    pub fn el(&mut self, tag: &str, class: &str, text: &str) -> &mut Self {
        if class.is_empty() {
            let _ = write!(self.0, "<{tag}>{}</{tag}>", esc(text));
        } else {
            let _ = write!(self.0, "<{tag} class=\"{class}\">{}</{tag}>", esc(text));
        }
        self
    }

    /// A table with a header row; every cell is escaped text.
    pub fn table(&mut self, class: &str, head: &[&str], rows: &[Vec<String>]) -> &mut Self {
        let _ = write!(self.0, "<div class=\"scroll\"><table class=\"{class}\"><thead><tr>");
        for h in head {
            let _ = write!(self.0, "<th>{}</th>", esc(h));
        }
        self.0.push_str("</tr></thead><tbody>");
        for row in rows {
            self.0.push_str("<tr>");
            for cell in row {
                let _ = write!(self.0, "<td>{}</td>", esc(cell));
            }
            self.0.push_str("</tr>");
        }
        self.0.push_str("</tbody></table></div>");
        self
    }

    /// A progress bar of succeeded / failed / pending out of their sum.
    pub fn bar(&mut self, succeeded: u64, failed: u64, pending: u64, rolled_back: u64) -> &mut Self {
        let total = (succeeded + failed + pending).max(1);
        let pct = |n: u64| n * 100 / total;
        let _ = write!(
            self.0,
            "<div class=\"bar\" role=\"img\" aria-label=\"{succeeded} succeeded, {failed} failed, {pending} pending\">\
             <span class=\"ok\" style=\"width:{}%\"></span><span class=\"bad\" style=\"width:{}%\"></span></div>\
             <p class=\"counts\"><span class=\"succeeded\">{succeeded} succeeded</span> · \
             <span class=\"failed\">{failed} failed</span> · <span class=\"pending\">{pending} pending</span>{}</p>",
            pct(succeeded),
            pct(failed),
            if rolled_back > 0 {
                format!(" · <span class=\"rolled-back\">{rolled_back} rolled back</span>")
            } else {
                String::new()
            }
        );
        self
    }
}

/// Inline style sheet: readable from 320 px phones to desktops, nothing
/// wider than the viewport (tables scroll inside their own box).
pub const CSS: &str = "\
*{box-sizing:border-box}\
body{font:16px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1b1f24;color:#fff;padding:.75rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:baseline}\
header h1{font-size:1.2rem;margin:0}header a{color:#cfe3ff}header nav{display:flex;flex-wrap:wrap;gap:.75rem}\
main{max-width:60rem;margin:0 auto;padding:1rem}\
section.card{background:#fff;border:1px solid #dde1e6;border-radius:.5rem;padding:1rem;margin:0 0 1rem;overflow-wrap:anywhere}\
h2{font-size:1.15rem;margin:.2rem 0 .6rem}h3{font-size:1rem;margin:.8rem 0 .4rem}\
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;background:#e7eaee;font-size:.85rem}\
.state.done,.state.applied{background:#d8f3dc}.state.halted,.state.failed,.state.rolling_back{background:#ffd6d6}\
.state.paused,.state.awaiting_approval,.state.baking{background:#fff1c2}.state.rolled_back{background:#e0e7ff}\
.bar{display:flex;height:.8rem;background:#e7eaee;border-radius:.4rem;overflow:hidden;max-width:100%}\
.bar .ok{background:#2f9e44}.bar .bad{background:#e03131}\
.counts{margin:.25rem 0 .6rem;font-size:.9rem}\
.scroll{overflow-x:auto;max-width:100%}\
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e7eaee;vertical-align:top}\
.muted{color:#5c6670}.warn{color:#b42318}\
.flash{padding:.6rem 1rem}.flash.ok{background:#d8f3dc}.flash.warn{background:#ffd6d6;color:#1b1f24}\
.incident{border-left:4px solid #e03131;padding:.2rem .75rem;margin:.5rem 0}\
.incident.resolved,.incident.scheduled{border-color:#2f9e44}.incident p{white-space:pre-line;margin:.3rem 0}.timeline{margin:.3rem 0;padding-left:1.2rem;font-size:.9rem}\
form.inline{display:inline}button{font:inherit;padding:.3rem .8rem;margin:.15rem;border-radius:.3rem;border:1px solid #8892a0;background:#fff;cursor:pointer}\
input{font:inherit;padding:.4rem;max-width:100%}\
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f1f3f5;padding:.5rem;border-radius:.3rem}\
@media (max-width:40rem){main{padding:.5rem}section.card{padding:.75rem}}";

/// A whole page: `head_extra` is trusted markup for `<head>` (meta refresh
/// fallback), `title` is escaped, `body` is already-built HTML.
#[must_use]
pub fn page(title: &str, head_extra: &str, nav: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>{head_extra}<style>{CSS}</style></head>\
         <body><header><h1>{}</h1>{nav}</header><main>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        let mut h = Html::default();
        h.el("td", "c", "<b>").table("t", &["<h>"], &[vec!["\"><img src=x onerror=alert(1)>".into()]]);
        assert!(!h.0.contains("<b>") && !h.0.contains("<img") && !h.0.contains("<h>"), "{}", h.0);
    }

    #[test]
    fn the_page_frame_is_self_contained_and_phone_ready() {
        let p = page("a <title>", "", "", "<p>x</p>");
        assert!(p.contains("name=\"viewport\""));
        assert!(p.contains("<title>a &lt;title&gt;</title>"));
        assert!(!p.contains("http://") && !p.contains("https://"), "no external assets");
    }
}
