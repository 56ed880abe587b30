//! Splitting outbound text at a platform's length limit.

/// Splits `text` into parts of at most `limit` characters (Unicode scalar values),
/// preferring to break after a paragraph, line or sentence end, then at whitespace,
/// and only mid-word when a single word is longer than the limit. Parts are trimmed;
/// empty text yields no parts.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= limit {
            parts.push(rest.to_string());
            break;
        }
        // Byte offset just past the `limit`-th character.
        let hard = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..hard];
        let cut = ["\n\n", "\n", ". ", "! ", "? ", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .map(|i| i + sep.len())
                    .filter(|&i| window[..i].trim().chars().count() >= limit / 2)
            })
            .unwrap_or(hard);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim();
        if !head.is_empty() {
            parts.push(head.to_string());
        }
        rest = tail.trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 10), vec!["hello"]);
        assert!(split("   ", 10).is_empty());
    }

    #[test]
    fn parts_respect_the_limit_and_keep_every_word() {
        let text = "word ".repeat(2000);
        let parts = split(&text, 4096);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert_eq!(parts.join(" ").split_whitespace().count(), 2000);
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        let text = "é".repeat(10_000);
        let parts = split(&text, 4096);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
    }

    #[test]
    fn prefers_sentence_ends() {
        let text = format!("{}. {}", "a".repeat(70), "b".repeat(50));
        let parts = split(&text, 100);
        assert_eq!(parts, vec![format!("{}.", "a".repeat(70)), "b".repeat(50)]);
    }
}
