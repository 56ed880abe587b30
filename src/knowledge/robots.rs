//! robots.txt (RFC 9309): the group for our product token, else the `*` group;
//! the longest matching Allow/Disallow rule wins, Allow on a tie; `*` and `$` in
//! patterns. Also the `Sitemap:` lines.

/// The token our crawler answers to in `User-agent` lines.
pub const AGENT: &str = "omnigate";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Robots {
    /// (allow, pattern) of the group that applies to us.
    rules: Vec<(bool, String)>,
    /// Refuse everything (robots.txt could not be read for a server-side reason).
    deny_all: bool,
    pub sitemaps: Vec<String>,
}

impl Robots {
    /// Everything allowed (no robots.txt).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Nothing allowed (robots.txt unreachable: RFC 9309 §2.3.1.4).
    pub fn deny_all() -> Self {
        Self {
            deny_all: true,
            ..Self::default()
        }
    }

    pub fn parse(text: &str) -> Self {
        let mut ours: Vec<(bool, String)> = Vec::new();
        let mut star: Vec<(bool, String)> = Vec::new();
        let mut sitemaps = Vec::new();
        // The agents of the group being read, and whether its rules started.
        let mut agents: Vec<String> = Vec::new();
        let mut in_rules = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                "user-agent" => {
                    if in_rules {
                        agents.clear();
                        in_rules = false;
                    }
                    agents.push(value.to_ascii_lowercase());
                }
                "allow" | "disallow" => {
                    in_rules = true;
                    if value.is_empty() {
                        continue; // an empty Disallow allows everything
                    }
                    let rule = (key == "allow", value.to_string());
                    if agents.iter().any(|a| a == AGENT || a.starts_with(AGENT)) {
                        ours.push(rule.clone());
                    }
                    if agents.iter().any(|a| a == "*") {
                        star.push(rule);
                    }
                }
                "sitemap" => sitemaps.push(value.to_string()),
                _ => {}
            }
        }
        let mentions_us = text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or_default().to_ascii_lowercase();
            l.trim_start().starts_with("user-agent")
                && l.split_once(':')
                    .is_some_and(|(_, v)| v.trim().starts_with(AGENT))
        });
        Self {
            rules: if mentions_us { ours } else { star },
            deny_all: false,
            sitemaps,
        }
    }

    /// Whether `path` (path and query of a URL) may be fetched.
    pub fn allowed(&self, path: &str) -> bool {
        if self.deny_all {
            return false;
        }
        if path == "/robots.txt" {
            return true;
        }
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, path) {
                let len = pattern.len();
                best = match best {
                    Some((l, a)) if l > len || (l == len && a) => Some((l, a)),
                    _ => Some((len, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

/// Whether a robots pattern matches the start of `path` (`*` any run, `$` end).
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !path.starts_with(part) {
                return false;
            }
            pos = part.len();
            continue;
        }
        let last = i == parts.len() - 1;
        if last && anchored {
            return path.len() >= pos + part.len() && path.ends_with(part);
        }
        match path[pos..].find(part) {
            Some(at) => pos += at + part.len(),
            None => return false,
        }
    }
    !anchored || pos == path.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_group_longest_match_and_allow_on_tie() {
        let r = Robots::parse(
            "User-agent: somebot\nDisallow: /\n\nUser-agent: *\nDisallow: /private\nAllow: /private/open\n\
             Disallow: /*.pdf$\nDisallow: /tmp/*/x\nSitemap: https://example.com/sitemap.xml # main\n",
        );
        assert!(r.allowed("/"));
        assert!(r.allowed("/about"));
        assert!(!r.allowed("/private"));
        assert!(!r.allowed("/private/secret"));
        assert!(r.allowed("/private/open/page"));
        assert!(!r.allowed("/docs/a.pdf"));
        assert!(r.allowed("/docs/a.pdf?v=1"));
        assert!(!r.allowed("/tmp/abc/x1"));
        assert!(r.allowed("/robots.txt"));
        assert_eq!(r.sitemaps, vec!["https://example.com/sitemap.xml"]);
    }

    #[test]
    fn our_own_group_wins_over_star() {
        let r = Robots::parse("User-agent: *\nDisallow: /\n\nUser-agent: Omnigate\nUser-agent: other\nDisallow: /no\n");
        assert!(r.allowed("/yes"));
        assert!(!r.allowed("/no"));
        let r = Robots::parse("User-agent: *\nDisallow:\n");
        assert!(r.allowed("/anything"));
        assert!(!Robots::deny_all().allowed("/"));
        let tie = Robots::parse("User-agent: *\nDisallow: /page\nAllow: /page\n");
        assert!(tie.allowed("/page"));
    }
}
