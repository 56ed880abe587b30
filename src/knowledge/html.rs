//! Readable text, title, links and robots directives from an HTML page: a small
//! tolerant scanner (no DOM). Scripts, styles, navigation and footers are left out;
//! block elements become paragraph breaks, so passages follow the page's structure.

/// What the crawler keeps of a page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extract {
    pub title: String,
    /// Paragraphs separated by blank lines.
    pub text: String,
    /// `href`s of links, as written.
    pub links: Vec<String>,
    /// `<meta name="robots" content="noindex">`
    pub noindex: bool,
    /// `<meta name="robots" content="nofollow">`
    pub nofollow: bool,
}

/// Elements whose content is never text for a reader.
const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "nav", "footer", "iframe", "object",
    "select", "button", "form",
];
/// Elements that end a paragraph.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "section",
    "article",
    "main",
    "header",
    "aside",
    "blockquote",
    "pre",
    "hr",
    "dd",
    "dt",
    "dl",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "body",
    "td",
    "th",
];

pub fn extract(html: &str) -> Extract {
    let mut out = Extract::default();
    let mut text = String::new();
    let mut title = String::new();
    let mut in_title = false;
    let mut skip_depth: Vec<String> = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_text(
                &mut text,
                &mut title,
                in_title,
                !skip_depth.is_empty(),
                rest,
            );
            break;
        };
        push_text(
            &mut text,
            &mut title,
            in_title,
            !skip_depth.is_empty(),
            &rest[..lt],
        );
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        let Some(gt) = tag_end(rest) else {
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let closing = tag.starts_with('/');
        let body = tag.trim_start_matches('/');
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        if SKIP.contains(&name.as_str()) {
            if closing {
                if let Some(pos) = skip_depth.iter().rposition(|n| *n == name) {
                    skip_depth.truncate(pos);
                }
            } else if !body.ends_with('/') {
                skip_depth.push(name.clone());
                // Raw-text elements: jump straight to their end tag.
                if matches!(name.as_str(), "script" | "style" | "template") {
                    let end = format!("</{name}");
                    let lower = rest.to_ascii_lowercase();
                    rest = lower.find(&end).map_or("", |i| &rest[i..]);
                }
            }
            continue;
        }
        match name.as_str() {
            "title" => in_title = !closing,
            // Links count wherever they are (menus lead to pages too).
            "a" if !closing => {
                if let Some(href) = attribute(body, "href") {
                    out.links.push(href);
                }
            }
            "meta" if !closing => {
                let is_robots =
                    attribute(body, "name").is_some_and(|n| n.eq_ignore_ascii_case("robots"));
                if is_robots {
                    let content = attribute(body, "content")
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    out.noindex |= content.contains("noindex") || content.contains("none");
                    out.nofollow |= content.contains("nofollow") || content.contains("none");
                }
            }
            _ => {}
        }
        if BLOCK.contains(&name.as_str()) {
            text.push_str("\n\n");
        }
    }
    out.title = collapse(&decode(&title));
    out.text = text
        .split("\n\n")
        .map(|p| collapse(&decode(p)))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    out
}

fn push_text(text: &mut String, title: &mut String, in_title: bool, skipping: bool, s: &str) {
    if in_title {
        title.push_str(s);
    } else if !skipping {
        text.push_str(s);
    }
}

/// The `>` closing a tag that starts at `s[0] == '<'`, skipping quoted attribute
/// values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let start = from + pos;
        from = start + name.len();
        let before_ok = start == 0
            || lower[..start]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_whitespace());
        let after = lower[from..].trim_start();
        if !before_ok || !after.starts_with('=') {
            continue;
        }
        let offset = tag.len() - after.len() + 1;
        let value = tag[offset..].trim_start();
        let parsed = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default(),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or_default(),
        };
        return Some(decode(parsed.trim()));
    }
    None
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes the common named entities and numeric references.
pub fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let num = entity.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_text_title_and_links() {
        let page = r#"<!DOCTYPE html><html><head><title>Acme &amp; Co</title>
            <style>body { color: red }</style><script>var x = "<p>not text</p>";</script>
            <meta name="Robots" content="index, follow"></head>
            <body><nav><a href="/menu">Menu</a></nav>
            <h1>Opening  hours</h1><p>We open at <b>9:00</b>&nbsp;daily.<br>Closed on &#x32;5 Dec.</p>
            <!-- <p>hidden</p> --><a href='/about?x=1&amp;y=2' class=x>About us</a>
            <a href=/faq>FAQ</a><footer>Copyright</footer></body></html>"#;
        let e = extract(page);
        assert_eq!(e.title, "Acme & Co");
        assert_eq!(
            e.text,
            "Opening hours\n\nWe open at 9:00 daily.\n\nClosed on 25 Dec.\n\nAbout us FAQ"
        );
        assert_eq!(e.links, vec!["/menu", "/about?x=1&y=2", "/faq"]);
        assert!(!e.noindex && !e.nofollow);
    }

    #[test]
    fn robots_meta_and_broken_markup() {
        let e = extract(r#"<meta name="robots" content="noindex,nofollow"><p>Text <a href="x"#);
        assert!(e.noindex && e.nofollow);
        assert_eq!(e.text, "Text");
        assert_eq!(
            decode("a &unknown; &#9999999; b"),
            "a &unknown; &#9999999; b"
        );
    }
}
