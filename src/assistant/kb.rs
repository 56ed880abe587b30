//! The offline knowledge answerer: replies with the tenant's best-matching knowledge
//! passage, found through the database's own full-text search, or hands the
//! conversation to a person when nothing matches well. Needs no network.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Answer, Assistant, Question};
use crate::store::Store;

/// What the customer is told when the knowledge base has no good answer.
pub const HANDOFF_TEXT: &str =
    "I don't have a good answer to that yet, so I've passed your message to our team. \
     A person will reply here as soon as possible.";

/// Longest passage stored, in characters.
const PASSAGE_MAX: usize = 1000;

pub struct KbAnswerer {
    store: Arc<dyn Store>,
}

impl KbAnswerer {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl KbAnswerer {
    /// The best-matching passage, if one covers enough of what was asked.
    pub async fn best(&self, tenant_id: &str, text: &str) -> anyhow::Result<Option<String>> {
        let terms = terms(text);
        let candidates = self.store.search_passages(tenant_id, &terms, 5).await?;
        // The database ranks; a passage counts as an answer only if it covers enough
        // of what was asked.
        Ok(candidates
            .into_iter()
            .find(|p| coverage(&terms, &p.text) >= 0.5)
            .map(|p| p.text))
    }
}

impl KbAnswerer {
    /// The answer to give: the passage found, or the hand-off when there is none.
    pub fn reply(best: Option<String>) -> Answer {
        let handoff = best.is_none();
        Answer {
            text: best.unwrap_or_else(|| HANDOFF_TEXT.into()),
            produced_by: "kb".into(),
            handoff,
            draft: false,
            usage: Vec::new(),
        }
    }
}

#[async_trait]
impl Assistant for KbAnswerer {
    async fn answer(&self, question: &Question<'_>) -> anyhow::Result<Option<Answer>> {
        let best = self.best(question.tenant_id, question.text).await?;
        Ok(Some(Self::reply(best)))
    }
}

/// The distinct searchable words of a question: alphanumeric, lowercased, at least
/// three characters, common function words removed.
pub fn terms(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "but", "not", "you", "your", "with", "have", "this", "that",
        "from", "they", "was", "were", "what", "when", "where", "which", "who", "why", "how",
        "can", "could", "would", "should", "does", "did", "has", "had", "its", "our", "out",
        "about", "there", "their", "then", "than", "them", "will", "just", "any", "all", "get",
        "also", "into", "some", "more", "very", "hello", "please", "thanks", "thank", "want",
        "need", "tell", "know",
    ];
    let set: BTreeSet<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .take(32)
        .collect();
    set.into_iter().collect()
}

/// Share of `terms` that occur in `passage`, allowing for word endings (a term
/// matches a word that starts with the term's first five characters, or with the
/// whole term when it is shorter).
fn coverage(terms: &[String], passage: &str) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    let words: Vec<String> = passage
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let hits = terms
        .iter()
        .filter(|t| {
            let stem: String = t.chars().take(5).collect();
            words.iter().any(|w| w.starts_with(&stem))
        })
        .count();
    hits as f64 / terms.len() as f64
}

/// Splits a document into passages: paragraphs, merged while short, cut when long.
pub fn passages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let paragraph = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        match out.last_mut() {
            Some(last) if last.chars().count() + paragraph.chars().count() < 200 => {
                last.push(' ');
                last.push_str(&paragraph);
            }
            _ => out.extend(channels::text::split(&paragraph, PASSAGE_MAX)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_noise_and_repeat() {
        assert_eq!(
            terms("What are your opening hours? Hours!"),
            vec!["hours", "opening"]
        );
        assert!(terms("hi ok").is_empty());
    }

    #[test]
    fn coverage_allows_word_endings() {
        let t = terms("shipping cost");
        assert_eq!(
            coverage(&t, "We ship worldwide; shipping costs are 5 EUR."),
            1.0
        );
        assert_eq!(coverage(&t, "Returns are free."), 0.0);
    }

    #[test]
    fn passages_merge_short_and_split_long() {
        let doc = format!("Short one.\n\nShort two.\n\n{}", "long words ".repeat(300));
        let p = passages(&doc);
        assert_eq!(p[0], "Short one. Short two.");
        assert!(p.len() >= 3);
        assert!(p.iter().all(|x| x.chars().count() <= PASSAGE_MAX));
    }
}
