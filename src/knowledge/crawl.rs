//! A website crawl into a tenant's knowledge base: robots.txt first, then the start
//! page and the sitemap's pages, then links within the same site, breadth first,
//! within the page, depth and size limits. Each page's readable text is split into
//! passages; a page whose text did not change is left as it is, a changed one is
//! replaced, and a complete crawl removes pages of the site it no longer finds.
//! Progress is written to the job row after every page.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};

use super::fetch::{FetchError, Fetcher};
use super::html;
use super::robots::Robots;
use crate::assistant::passages;
use crate::config;
use crate::store::{now_ms, CrawlJob, CrawledPage, PageChange, Store};

/// Most sitemap files read (an index may point to more).
const MAX_SITEMAPS: usize = 5;

/// Tenants with a crawl running in this process: one at a time each.
static RUNNING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A tenant's turn to crawl; the turn ends when this is dropped.
pub struct Slot(String);

impl Slot {
    /// `None` while the tenant already has a crawl running.
    pub fn take(tenant_id: &str) -> Option<Self> {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running
            .insert(tenant_id.to_string())
            .then(|| Self(tenant_id.to_string()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// Runs `job` to its end, recording progress and the outcome on the job row.
pub async fn run(
    store: Arc<dyn Store>,
    settings: config::Knowledge,
    mut job: CrawlJob,
    slot: Slot,
) {
    let result = crawl(&*store, &settings, &mut job).await;
    // Free the tenant's turn before the job reads as finished, so a crawl started
    // right after it finds the turn free.
    drop(slot);
    job.finished_at = Some(now_ms());
    match result {
        Ok(()) => job.state = "done".into(),
        Err(e) => {
            job.state = "failed".into();
            job.error = Some(e.to_string());
        }
    }
    if let Err(e) = store.update_crawl_job(&job).await {
        tracing::error!(job = %job.id, error = %e, "could not record the end of a crawl");
    }
    tracing::info!(
        job = %job.id,
        state = %job.state,
        fetched = job.pages_fetched,
        indexed = job.pages_indexed,
        skipped = job.pages_skipped,
        "crawl finished"
    );
}

#[derive(Debug, thiserror::Error)]
enum CrawlError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("storage failed")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Setup(String),
}

async fn crawl(
    store: &dyn Store,
    settings: &config::Knowledge,
    job: &mut CrawlJob,
) -> Result<(), CrawlError> {
    let start = Url::parse(&job.url).map_err(|_| CrawlError::Setup("bad start URL".into()))?;
    let fetcher = Fetcher::new(
        settings.allow_private_targets,
        Duration::from_millis(settings.fetch_timeout_ms),
        settings.max_page_bytes,
    )
    .map_err(|e| CrawlError::Setup(e.to_string()))?;
    let root = origin(&start);
    super::fetch::check_resolved(&start, settings.allow_private_targets).await?;

    // robots.txt: missing (4xx) allows all; a server error or no answer denies all.
    let robots_url = start
        .join("/robots.txt")
        .map_err(|_| CrawlError::Setup("bad start URL".into()))?;
    let robots = match fetcher.get(&robots_url).await {
        Ok(page) => Robots::parse(&String::from_utf8_lossy(&page.body)),
        Err(FetchError::Status(code)) if (400..500).contains(&code) => Robots::allow_all(),
        // The start URL itself is refused: nothing to crawl.
        Err(e @ FetchError::Refused(_)) => return Err(e.into()),
        Err(_) => Robots::deny_all(),
    };

    let mut queue: VecDeque<(Url, usize)> = VecDeque::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut enqueue = |url: Url, depth: usize, queue: &mut VecDeque<(Url, usize)>| {
        if origin(&url) == root && seen.insert(url.as_str().to_string()) {
            queue.push_back((url, depth));
        }
    };
    enqueue(normalize(start.clone()), 0, &mut queue);
    for url in sitemap_urls(&fetcher, &start, &robots).await {
        enqueue(url, 1, &mut queue);
    }

    let max_pages = job.max_pages.max(0) as usize;
    let mut kept: Vec<String> = Vec::new();
    let mut complete = true;
    while let Some((url, depth)) = queue.pop_front() {
        if job.pages_fetched as usize >= max_pages {
            complete = false;
            break;
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        if !robots.allowed(&path) {
            job.pages_skipped += 1;
            store.update_crawl_job(job).await?;
            continue;
        }
        job.pages_fetched += 1;
        let page = match fetcher.get(&url).await {
            Ok(page) if origin(&page.url) == root => page,
            Ok(_) => {
                // Redirected to another site: not this site's page.
                job.pages_skipped += 1;
                store.update_crawl_job(job).await?;
                continue;
            }
            Err(FetchError::Status(404 | 410)) => {
                // Gone from the site: nothing to keep, and the crawl stays complete.
                job.pages_skipped += 1;
                store.update_crawl_job(job).await?;
                continue;
            }
            Err(e) => {
                tracing::debug!(job = %job.id, error = %e, "page skipped");
                job.pages_skipped += 1;
                complete = false;
                store.update_crawl_job(job).await?;
                continue;
            }
        };
        if !page.content_type.starts_with("text/html") {
            job.pages_skipped += 1;
            store.update_crawl_job(job).await?;
            continue;
        }
        let extract = html::extract(&String::from_utf8_lossy(&page.body));
        if !extract.nofollow && depth < settings.max_depth {
            for href in &extract.links {
                if let Ok(link) = page.url.join(href) {
                    if matches!(link.scheme(), "http" | "https") {
                        enqueue(normalize(link), depth + 1, &mut queue);
                    }
                }
            }
        }
        let chunks = passages(&extract.text);
        if extract.noindex || chunks.is_empty() {
            job.pages_skipped += 1;
            store.update_crawl_job(job).await?;
            continue;
        }
        let url = page.url.as_str().to_string();
        let title = if extract.title.is_empty() {
            url.clone()
        } else {
            extract.title.chars().take(300).collect()
        };
        let change = store
            .upsert_page(&CrawledPage {
                tenant_id: job.tenant_id.clone(),
                root: root.clone(),
                hash: hex::encode(Sha256::digest(format!("{title}\n{}", extract.text))),
                url: url.clone(),
                title,
                text: extract.text,
                passages: chunks,
                now: now_ms(),
            })
            .await?;
        kept.push(url);
        match change {
            PageChange::New | PageChange::Changed => job.pages_indexed += 1,
            PageChange::Unchanged => job.pages_unchanged += 1,
        }
        store.update_crawl_job(job).await?;
    }
    // Only a crawl that saw the whole site knows which pages are gone.
    if complete {
        job.pages_removed = store.prune_pages(&job.tenant_id, &root, &kept).await? as i64;
    }
    Ok(())
}

/// scheme://host:port, the unit "same site" is judged by.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A URL without its fragment (the same page).
fn normalize(mut url: Url) -> Url {
    url.set_fragment(None);
    url
}

/// Page URLs listed in the site's sitemaps (`Sitemap:` lines, else /sitemap.xml),
/// following sitemap indexes.
async fn sitemap_urls(fetcher: &Fetcher, start: &Url, robots: &Robots) -> Vec<Url> {
    let mut files: VecDeque<Url> = robots
        .sitemaps
        .iter()
        .filter_map(|s| start.join(s).ok())
        .collect();
    if files.is_empty() {
        if let Ok(url) = start.join("/sitemap.xml") {
            files.push_back(url);
        }
    }
    let mut pages = Vec::new();
    let mut read = 0;
    while let Some(file) = files.pop_front() {
        if read >= MAX_SITEMAPS {
            break;
        }
        read += 1;
        if origin(&file) != origin(start) {
            continue;
        }
        let Ok(page) = fetcher.get(&file).await else {
            continue;
        };
        let xml = String::from_utf8_lossy(&page.body);
        let index = xml.contains("<sitemapindex");
        for loc in locs(&xml) {
            if let Ok(url) = start.join(&loc) {
                if index {
                    files.push_back(url);
                } else {
                    pages.push(normalize(url));
                }
            }
        }
    }
    pages
}

/// The `<loc>` values of a sitemap.
fn locs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find("<loc>") {
        rest = &rest[open + 5..];
        let Some(close) = rest.find("</loc>") else {
            break;
        };
        let value = rest[..close].trim();
        let value = value
            .strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(value);
        out.push(html::decode(value.trim()));
        rest = &rest[close..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sitemap_locations() {
        let xml = r#"<?xml version="1.0"?><urlset><url><loc> https://a.example/x?a=1&amp;b=2 </loc></url>
            <url><loc><![CDATA[https://a.example/y]]></loc></url></urlset>"#;
        assert_eq!(
            locs(xml),
            vec!["https://a.example/x?a=1&b=2", "https://a.example/y"]
        );
    }

    #[test]
    fn same_site_is_scheme_host_and_port() {
        let a = Url::parse("http://127.0.0.1:8080/a").expect("url");
        let b = Url::parse("http://127.0.0.1:8080/b#top").expect("url");
        let c = Url::parse("http://127.0.0.1:9090/a").expect("url");
        assert_eq!(origin(&a), origin(&b));
        assert_ne!(origin(&a), origin(&c));
        assert_eq!(normalize(b).as_str(), "http://127.0.0.1:8080/b");
    }
}
