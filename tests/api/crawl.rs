//! The website crawler against a small site served on loopback: what it indexes,
//! what robots.txt keeps it from, re-crawls, page limits, and refusing private
//! addresses when the operator has not allowed them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    crawl_indexes_the_site_skips_disallowed_pages_and_recrawl_replaces_changes,
    crawler_refuses_private_addresses_unless_allowed,
    crawl_progress_is_visible_while_it_runs,
);

#[derive(Default)]
struct SiteState {
    pages: HashMap<String, (&'static str, String)>,
    log: Vec<String>,
    /// Paths answered only once `released`.
    slow: Vec<String>,
    released: bool,
}

/// A website on loopback whose pages the test can change.
#[derive(Clone)]
struct Site {
    url: String,
    state: Arc<Mutex<SiteState>>,
}

impl Site {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind site");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(SiteState::default()));
        let router = Router::new().fallback(serve).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    fn page(&self, path: &str, content_type: &'static str, body: &str) {
        self.state
            .lock()
            .expect("lock")
            .pages
            .insert(path.to_string(), (content_type, body.to_string()));
    }

    fn html(&self, path: &str, title: &str, body: &str) {
        self.page(
            path,
            "text/html; charset=utf-8",
            &format!("<html><head><title>{title}</title></head><body>{body}</body></html>"),
        );
    }

    fn remove(&self, path: &str) {
        self.state.lock().expect("lock").pages.remove(path);
    }

    fn slow(&self, path: &str) {
        self.state.lock().expect("lock").slow.push(path.to_string());
    }

    fn release(&self) {
        self.state.lock().expect("lock").released = true;
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().expect("lock").log.clone()
    }
}

async fn serve(State(state): State<Arc<Mutex<SiteState>>>, uri: Uri) -> impl IntoResponse {
    let (page, slow) = {
        let mut s = state.lock().expect("lock");
        s.log.push(uri.path().to_string());
        let slow = s.slow.iter().any(|p| p == uri.path());
        (s.pages.get(uri.path()).cloned(), slow)
    };
    // A slow page waits for the test's go-ahead (polled: no wake-up can be missed).
    while slow && !state.lock().expect("lock").released {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    match page {
        Some((content_type, body)) => {
            (StatusCode::OK, [("content-type", content_type)], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_crawl(app: &TestApp, tenant: &Tenant, url: &str, max_pages: i64) -> (u16, Value) {
    let res = app
        .http
        .post(format!("{}/api/v1/knowledge/crawl", app.url))
        .bearer_auth(&tenant.key)
        .json(&json!({"url": url, "max_pages": max_pages}))
        .send()
        .await
        .expect("crawl");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn crawl_to_end(app: &TestApp, tenant: &Tenant, url: &str, max_pages: i64) -> Value {
    let (status, body) = start_crawl(app, tenant, url, max_pages).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("job id").to_string();
    let path = format!("/api/v1/knowledge/crawl/{id}");
    wait_until("crawl finished", || async {
        app.get_json(tenant, &path).await.1["state"] != "running"
    })
    .await;
    let (_, job) = app.get_json(tenant, &path).await;
    assert_eq!(job["state"], "done", "{job}");
    job
}

async fn search(app: &TestApp, tenant: &Tenant, q: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(tenant, &format!("/api/v1/knowledge/search?q={q}"))
        .await;
    assert_eq!(status, 200);
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn crawl_indexes_the_site_skips_disallowed_pages_and_recrawl_replaces_changes(
    backend: Backend,
) {
    let site = Site::start().await;
    let app = TestApp::spawn_with(backend, "[knowledge]\nallow_private_targets = true\n").await;
    let tenant = app.create_tenant("Acme").await;
    site.page(
        "/robots.txt",
        "text/plain",
        "User-agent: *\nDisallow: /private\n",
    );
    site.page(
        "/sitemap.xml",
        "application/xml",
        &format!(
            "<?xml version=\"1.0\"?><urlset><url><loc>{}/faq</loc></url></urlset>",
            site.url
        ),
    );
    site.html(
        "/",
        "Home",
        "<nav><a href=\"/about\">About</a></nav><p>Welcome to Acme bicycles.</p>\
         <a href=\"/private/secret\">Staff</a> <a href=\"http://elsewhere.example/out\">Partner</a>\
         <a href=\"#top\">Top</a><script>var tandemTrap = 1;</script>",
    );
    site.html(
        "/about",
        "About",
        "<h1>About</h1><p>Our workshop repairs tandem bicycles since 1990.</p>",
    );
    site.html("/faq", "FAQ", "<p>Deliveries take two days by courier.</p>");
    site.html(
        "/private/secret",
        "Secret",
        "<p>The vault code is PRIVATE-CANARY.</p>",
    );

    let job = crawl_to_end(&app, &tenant, &format!("{}/", site.url), 20).await;
    assert_eq!(job["pages_indexed"], 3, "{job}");
    assert!(
        job["pages_skipped"].as_i64().expect("skipped") >= 1,
        "{job}"
    );
    assert!(
        site.log().iter().all(|p| !p.starts_with("/private")),
        "robots.txt is obeyed: {:?}",
        site.log()
    );
    let found = search(&app, &tenant, "tandem").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["url"], format!("{}/about", site.url));
    assert_eq!(found[0]["title"], "About");
    assert!(found[0]["text"]
        .as_str()
        .expect("text")
        .contains("repairs tandem bicycles"));
    assert_eq!(
        search(&app, &tenant, "courier").await.len(),
        1,
        "sitemap pages are crawled"
    );
    assert!(search(&app, &tenant, "vault").await.is_empty());
    assert!(
        search(&app, &tenant, "tandemTrap").await.is_empty(),
        "scripts are not text"
    );
    let other = app.create_tenant("Other").await;
    assert!(
        search(&app, &other, "tandem").await.is_empty(),
        "another tenant's knowledge"
    );

    // The site changes: one page rewritten, one gone.
    site.html(
        "/about",
        "About",
        "<p>Our workshop now repairs cargo bicycles.</p>",
    );
    site.page(
        "/sitemap.xml",
        "application/xml",
        "<?xml version=\"1.0\"?><urlset></urlset>",
    );
    site.remove("/faq");
    let job = crawl_to_end(&app, &tenant, &format!("{}/", site.url), 20).await;
    assert_eq!(job["pages_indexed"], 1, "{job}");
    assert_eq!(job["pages_unchanged"], 1, "{job}");
    assert_eq!(job["pages_removed"], 1, "{job}");
    assert!(search(&app, &tenant, "tandem").await.is_empty());
    assert_eq!(search(&app, &tenant, "cargo").await.len(), 1);
    assert!(search(&app, &tenant, "courier").await.is_empty());

    // The page limit holds, and a partial crawl removes nothing.
    let job = crawl_to_end(&app, &tenant, &format!("{}/", site.url), 1).await;
    assert_eq!(job["pages_fetched"], 1, "{job}");
    assert_eq!(job["pages_removed"], 0, "{job}");
    assert_eq!(search(&app, &tenant, "cargo").await.len(), 1);
}

async fn crawler_refuses_private_addresses_unless_allowed(backend: Backend) {
    let canary = Site::start().await;
    canary.html("/", "Canary", "<p>internal</p>");
    let app = TestApp::spawn(backend).await;
    let tenant = app.create_tenant("Acme").await;
    let port = canary.url.rsplit(':').next().expect("port").to_string();
    for url in [
        canary.url.clone(),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://localhost:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        let (status, body) = start_crawl(&app, &tenant, &url, 5).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_value");
    }
    assert!(
        canary.log().is_empty(),
        "the private server got requests: {:?}",
        canary.log()
    );
}

async fn crawl_progress_is_visible_while_it_runs(backend: Backend) {
    let site = Site::start().await;
    let app = TestApp::spawn_with(backend, "[knowledge]\nallow_private_targets = true\n").await;
    let tenant = app.create_tenant("Acme").await;
    site.html(
        "/",
        "Home",
        "<p>Welcome to the bicycle shop.</p><a href=\"/slow\">More</a>",
    );
    site.html("/slow", "Slow", "<p>Spare parts for every frame.</p>");
    site.slow("/slow");
    let (status, body) = start_crawl(&app, &tenant, &format!("{}/", site.url), 10).await;
    assert_eq!(status, 202);
    let path = format!(
        "/api/v1/knowledge/crawl/{}",
        body["id"].as_str().expect("id")
    );
    wait_until("first page indexed while the crawl runs", || async {
        let job = app.get_json(&tenant, &path).await.1;
        job["state"] == "running" && job["pages_indexed"] == 1
    })
    .await;
    wait_until("slow page asked for", || async {
        site.log().iter().any(|p| p == "/slow")
    })
    .await;
    let (status, _) = start_crawl(&app, &tenant, &format!("{}/", site.url), 10).await;
    assert_eq!(status, 409, "one crawl at a time per tenant");
    site.release();
    wait_until("crawl done", || async {
        app.get_json(&tenant, &path).await.1["state"] == "done"
    })
    .await;
    let (_, job) = app.get_json(&tenant, &path).await;
    assert_eq!(job["pages_indexed"], 2, "{job}");
    assert!(job["finished_at"].as_i64().is_some());
}
