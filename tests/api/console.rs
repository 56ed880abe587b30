//! The operator console without a browser: its session cookie, CSRF checks and
//! tenant scoping, over plain HTTP.

use reqwest::redirect::Policy;
use serde_json::Value;

use crate::helpers::{wa_texts, wait_until, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(console_sessions_forms_and_tenants);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Signs in; returns the cookie header value.
async fn sign_in(http: &reqwest::Client, url: &str, key: &str) -> String {
    let res = http
        .post(format!("{url}/console/login"))
        .form(&[("api_key", key)])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 303);
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    cookie.split(';').next().expect("pair").to_string()
}

async fn console_sessions_forms_and_tenants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = client();
    let a = app.create_tenant("Acme").await;
    let b = app.create_tenant("Bolt").await;
    let channel = app
        .create_whatsapp(&a, "106540352242922", Some("acme-secret"))
        .await;
    let body = wa_texts(
        "106540352242922",
        &[("16505551234", "wamid.console.1", "hello")],
    );
    assert_eq!(app.deliver(&channel, "acme-secret", &body).await, 200);
    wait_until("conversation", || async {
        app.conversations(&a).await.len() == 1
    })
    .await;
    let conversation = app.conversations(&a).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Without a session every page leads to the sign-in form.
    let res = http
        .get(format!("{}/console/conversations", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/console/login");

    // A wrong key gets no cookie.
    let res = http
        .post(format!("{}/console/login", app.url))
        .form(&[("api_key", "og_wrong")])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());

    let session_a = sign_in(&http, &app.url, &a.key).await;
    let page = http
        .get(format!("{}/console/conversations/{conversation}", app.url))
        .header("cookie", &session_a)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("hello"), "the transcript shows the message");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the forms")
        .to_string();

    // With no knowledge base the assistant handed the conversation to a person.
    let status = |c: Value| c["status"].as_str().unwrap_or_default().to_string();
    assert_eq!(status(app.conversations(&a).await[0].clone()), "human");

    // A form without the right token changes nothing.
    let res = http
        .post(format!(
            "{}/console/conversations/{conversation}/release",
            app.url
        ))
        .header("cookie", &session_a)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 403);
    assert_eq!(status(app.conversations(&a).await[0].clone()), "human");

    // With it, the conversation goes back to the assistant.
    let res = http
        .post(format!(
            "{}/console/conversations/{conversation}/release",
            app.url
        ))
        .header("cookie", &session_a)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 303);
    assert_ne!(status(app.conversations(&a).await[0].clone()), "human");

    // Another tenant's operator neither sees nor acts on it, even with their own token.
    let session_b = sign_in(&http, &app.url, &b.key).await;
    let page = http
        .get(format!("{}/console/conversations/{conversation}", app.url))
        .header("cookie", &session_b)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 404);
    assert!(!page.text().await.expect("html").contains("hello"));
    let list = http
        .get(format!("{}/console/conversations", app.url))
        .header("cookie", &session_b)
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("html");
    assert!(!list.contains(&conversation));
    // Erasure needs the confirmation box.
    let contact = app.conversations(&a).await[0]["contact_id"]
        .as_str()
        .expect("contact")
        .to_string();
    let res = http
        .post(format!("{}/console/contacts/{contact}/erase", app.url))
        .header("cookie", &session_a)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("erase");
    assert_eq!(res.status(), 422);
    assert_eq!(app.conversations(&a).await.len(), 1);
}
