//! Slack's message formatting, to plain text and back.
//!
//! Inbound text carries Slack's markup: `<@U123>` user mentions, `<#C123|general>`
//! channel links, `<!here>` and other special mentions, `<https://x|label>` links, and
//! `&`, `<`, `>` escaped as `&amp;`, `&lt;`, `&gt;`. The assistant and the admin API see
//! plain text; outbound text is escaped so that Slack shows it literally.

/// Slack markup to plain text. Mentions of `strip_user` (the bot itself) are removed.
pub fn to_plain(text: &str, strip_user: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&unescape(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            // An unmatched `<` cannot come from Slack (it escapes them); keep it.
            out.push_str(&unescape(&rest[open..]));
            rest = "";
            break;
        };
        out.push_str(&token(&after[..close], strip_user));
        rest = &after[close + 1..];
    }
    out.push_str(&unescape(rest));
    if strip_user.is_some() {
        // Removing a mention can leave doubled or leading spaces.
        return out
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    out
}

/// Plain text to Slack text: only the three control characters are escaped.
pub fn to_slack(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// One `<...>` token.
fn token(inner: &str, strip_user: Option<&str>) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((target, label)) => (target, Some(unescape(label)).filter(|l| !l.is_empty())),
        None => (inner, None),
    };
    if let Some(user) = target.strip_prefix('@') {
        if strip_user == Some(user) {
            return String::new();
        }
        return format!("@{}", label.unwrap_or_else(|| user.to_string()));
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or_else(|| channel.to_string()));
    }
    if let Some(special) = target.strip_prefix('!') {
        return match special {
            "here" | "channel" | "everyone" => format!("@{special}"),
            _ => label.unwrap_or_else(|| {
                // `<!subteam^S123>`, `<!date^...>` without a fallback label.
                let name = special.split('^').next().unwrap_or(special);
                format!("@{name}")
            }),
        };
    }
    let url = unescape(target);
    if let Some(address) = url.strip_prefix("mailto:") {
        return label.unwrap_or_else(|| address.to_string());
    }
    match label {
        Some(label) if label != url => format!("{label} ({url})"),
        _ => url,
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_becomes_plain_text() {
        let cases = [
            ("Hello <@U123>!", "Hello @U123!"),
            ("ask <@U123|alice>", "ask @alice"),
            (
                "in <#C024BE7LR|general> and <#C024BE7LR>",
                "in #general and #C024BE7LR",
            ),
            ("<!here> and <!channel>", "@here and @channel"),
            ("<!subteam^SAZ94GDB8|@support> help", "@support help"),
            (
                "<!date^1392734382^{date_num}|2014-02-18> ok",
                "2014-02-18 ok",
            ),
            (
                "see <https://example.com/a?b=1&amp;c=2|the docs>",
                "see the docs (https://example.com/a?b=1&c=2)",
            ),
            ("<https://example.com>", "https://example.com"),
            (
                "<https://example.com|https://example.com>",
                "https://example.com",
            ),
            ("mail <mailto:a@b.example|a@b.example>", "mail a@b.example"),
            ("fish &amp; chips &lt;3 a&gt;b", "fish & chips <3 a>b"),
            ("&amp;lt; stays literal", "&lt; stays literal"),
            ("no markup at all", "no markup at all"),
            ("broken < open", "broken < open"),
        ];
        for (slack, plain) in cases {
            assert_eq!(to_plain(slack, None), plain, "{slack}");
        }
    }

    #[test]
    fn the_bots_own_mention_is_removed() {
        assert_eq!(
            to_plain(
                "<@U0LAN0Z89> what are your  opening hours?",
                Some("U0LAN0Z89")
            ),
            "what are your opening hours?"
        );
        assert_eq!(
            to_plain("hey <@U0LAN0Z89|bot>, ask <@U1>", Some("U0LAN0Z89")),
            "hey , ask @U1"
        );
    }

    #[test]
    fn plain_text_is_escaped_and_comes_back_unchanged() {
        let plain = "Fish & chips <3 -> <@U123> &amp; done";
        let slack = to_slack(plain);
        assert_eq!(
            slack,
            "Fish &amp; chips &lt;3 -&gt; &lt;@U123&gt; &amp;amp; done"
        );
        assert_eq!(to_plain(&slack, None), plain);
    }
}
