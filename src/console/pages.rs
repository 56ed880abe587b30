//! The console's pages (maud). Everything shown comes from the admin API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;

use super::{safe_id, Console, Session};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM UTC`.
fn when(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return String::new() };
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · omnigate console" }
                style { (PreEscaped(crate::web::STYLE)) }
            }
            body {
                header { h1 { "omnigate console" } }
                @if let Some(session) = session {
                    nav aria-label="Console" {
                        a href="/console/conversations" { "Conversations" }
                        a href="/console/channels" { "Channels" }
                        a href="/console/settings" { "Settings" }
                        a href="/console/audit" { "Audit log" }
                        form method="post" action="/console/logout" {
                            (csrf(session))
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { h2 { (title) } (body) }
                script { (PreEscaped(LIVE)) }
            }
        }
    }
}

/// How many conversations the list shows.
pub const LIST_LIMIT: i64 = 100;

/// Live updates: a page's `#live` region names a fingerprint URL; when the
/// fingerprint changes the page is fetched again and the region swapped in (forms
/// outside it keep what is being typed).
const LIVE: &str = r#"
const live = document.getElementById('live');
if (live && live.dataset.stampUrl) setInterval(async () => {
  if (document.hidden) return;
  try {
    const s = await fetch(live.dataset.stampUrl, {credentials: 'same-origin'});
    const stamp = s.ok ? await s.text() : '';
    if (!stamp || stamp === live.dataset.stamp) return;
    const r = await fetch(location.href, {credentials: 'same-origin'});
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
    const next = doc.getElementById('live');
    live.dataset.stamp = stamp;
    if (next && next.innerHTML !== live.innerHTML) live.innerHTML = next.innerHTML;
  } catch (_) {}
}, 2000);
"#;

fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

fn page(title: &str, session: &Session, body: Markup) -> Response {
    Html(layout(title, Some(session), body).into_string()).into_response()
}

pub fn error_page(session: &Session, status: StatusCode, message: &str) -> Response {
    let body = html! {
        p.error role="alert" { (message) }
        p { a href="javascript:history.back()" { "Go back" } }
    };
    (
        status,
        Html(layout("Something went wrong", Some(session), body).into_string()),
    )
        .into_response()
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/console/login" {
                label for="api_key" { "Tenant API key" }
                input id="api_key" name="api_key" type="password" autocomplete="current-password" required;
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct ListQuery {
    erased: Option<String>,
}

pub async fn conversations(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let stamp = console.stamp(&session, None).await.unwrap_or_default();
    let list = match console
        .get(
            &session,
            &format!("/api/v1/conversations?limit={LIST_LIMIT}"),
        )
        .await
    {
        Ok(list) => list,
        Err(e) => return e,
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    page(
        "Conversations",
        &session,
        html! {
            @if q.erased.is_some() { p.notice role="status" { "The contact was erased." } }
            div id="live" aria-live="polite" data-stamp=(stamp) data-stamp-url="/console/stamp/conversations" {
                @if items.is_empty() { p { "No conversations yet." } } @else {
                    table {
                        thead { tr { th { "Conversation" } th { "Platform" } th { "Status" } th { "Last message" } } }
                        tbody {
                            @for c in &items {
                                tr {
                                    td { a href={ "/console/conversations/" (s(c, "id")) } { "Conversation " (short(s(c, "id"))) } }
                                    td { (s(c, "platform")) }
                                    td { (s(c, "status")) }
                                    td { (when(c["last_message_at"].as_i64())) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

fn author_label(m: &Value) -> String {
    match s(m, "author") {
        "customer" => "Customer".into(),
        "agent" => "Agent".into(),
        "system" => "System".into(),
        "assistant" => match m.get("produced_by").and_then(Value::as_str) {
            Some("kb") => "Assistant (offline answerer)".into(),
            Some(p) => format!("Assistant ({p})"),
            None => "Assistant".into(),
        },
        other => other.to_string(),
    }
}

pub async fn conversation(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id.to_string(),
        Err(e) => return *e,
    };
    let stamp = console.stamp(&session, Some(&id)).await.unwrap_or_default();
    let conv = match console
        .get(&session, &format!("/api/v1/conversations/{id}"))
        .await
    {
        Ok(v) => v,
        Err(e) => return e,
    };
    let messages = match console
        .get(&session, &format!("/api/v1/conversations/{id}/messages"))
        .await
    {
        Ok(v) => v["items"].as_array().cloned().unwrap_or_default(),
        Err(e) => return e,
    };
    let human = s(&conv, "status") == "human";
    page(
        &format!("Conversation {}", short(&id)),
        &session,
        html! {
            p {
                (s(&conv, "platform")) " · contact "
                a href={ "/console/contacts/" (s(&conv, "contact_id")) } { "view contact" }
            }
            div id="live" aria-live="polite" data-stamp=(stamp) data-stamp-url={ "/console/stamp/conversations/" (id) } {
                p { "Status: " strong id="conversation-status" { (s(&conv, "status")) } }
                ol aria-label="Transcript" {
                    @for m in &messages {
                        li class={ "msg " (s(m, "direction")) } {
                            span.by { (author_label(m)) }
                            p.text { (m.get("text").and_then(Value::as_str).unwrap_or_else(|| s(m, "kind"))) }
                            span.meta { (when(m["created_at"].as_i64())) " · " (s(m, "status")) }
                        }
                    }
                }
            }
            div.actions {
                @if human {
                    form method="post" action={ "/console/conversations/" (id) "/release" } {
                        (csrf(&session)) button.secondary type="submit" { "Release to the assistant" }
                    }
                } @else {
                    form method="post" action={ "/console/conversations/" (id) "/handoff" } {
                        (csrf(&session)) button type="submit" { "Take over" }
                    }
                }
            }
            form method="post" action={ "/console/conversations/" (id) "/reply" } {
                (csrf(&session))
                label for="reply" { "Reply as an agent" }
                textarea id="reply" name="text" rows="3" required {}
                p { button type="submit" { "Send reply" } }
            }
        },
    )
}

pub async fn contact(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id.to_string(),
        Err(e) => return *e,
    };
    let contact = match console
        .get(&session, &format!("/api/v1/contacts/{id}"))
        .await
    {
        Ok(v) => v,
        Err(e) => return e,
    };
    let identities = contact["identities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let consent = contact["consent"].as_object().cloned().unwrap_or_default();
    page(
        "Contact",
        &session,
        html! {
            dl {
                dt { "Name" } dd { (s(&contact, "display_name")) }
                dt { "Restricted" } dd { (if contact["restricted"].as_bool() == Some(true) { "yes" } else { "no" }) }
            }
            h3 { "Channel identities" }
            ul { @for i in &identities { li { (s(i, "platform")) ": " (s(i, "external_user_id")) } } }
            h3 { "Consent" }
            table {
                thead { tr { th { "Purpose" } th { "State" } } }
                tbody {
                    @for (purpose, state) in &consent {
                        tr { td { (purpose) } td id={ "consent-" (purpose) } { (consent_text(state)) } }
                    }
                }
            }
            h3 { "Data rights" }
            p { a href={ "/console/contacts/" (id) "/export" } download { "Export everything about this contact (JSON)" } }
            form method="post" action={ "/console/contacts/" (id) "/erase" } {
                (csrf(&session))
                p {
                    input type="checkbox" id="confirm" name="confirm" value="yes" required style="width:auto";
                    " "
                    label for="confirm" style="display:inline" {
                        "I understand that erasing deletes this person's messages, identities and profile everywhere and cannot be undone."
                    }
                }
                button.danger type="submit" { "Erase this contact" }
            }
        },
    )
}

fn consent_text(state: &Value) -> String {
    match state {
        Value::Bool(true) => "granted".into(),
        Value::Bool(false) => "withdrawn".into(),
        Value::Null => "not recorded".into(),
        Value::Object(o) => match o.get("granted") {
            Some(Value::Bool(true)) => "granted".into(),
            Some(Value::Bool(false)) => "withdrawn".into(),
            _ => "not recorded".into(),
        },
        other => other.to_string(),
    }
}

pub async fn channels(State(console): State<Console>, session: Session) -> Response {
    let list = match console.get(&session, "/api/v1/channels").await {
        Ok(v) => v["items"].as_array().cloned().unwrap_or_default(),
        Err(e) => return e,
    };
    page(
        "Channels",
        &session,
        html! {
            table {
                thead { tr { th { "Platform" } th { "Status" } th { "Webhook URL" } } }
                tbody {
                    @for c in &list {
                        tr {
                            td { (s(c, "platform")) }
                            td { (s(c, "status")) @if let Some(d) = c.get("status_detail").and_then(Value::as_str) { " (" (d) ")" } }
                            td { code { (s(c, "webhook_url")) } }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct SavedQuery {
    saved: Option<String>,
}

pub async fn settings(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<SavedQuery>,
) -> Response {
    let retention = match console.get(&session, "/api/v1/settings/retention").await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let privacy = match console.get(&session, "/api/v1/settings/privacy").await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let words = privacy["human_words"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let fields = [
        ("messages_days", "Messages (days)"),
        ("raw_events_days", "Raw webhook events (days)"),
        ("analytics_days", "Analytics (days)"),
        ("audit_days", "Audit log (days)"),
    ];
    page(
        "Settings",
        &session,
        html! {
            @if q.saved.is_some() { p.notice role="status" { "Saved." } }
            h3 { "Retention" }
            form method="post" action="/console/settings/retention" {
                (csrf(&session))
                @for (key, label) in fields {
                    label for=(key) { (label) " — at most " (retention["maximums"][key].as_i64().unwrap_or_default()) }
                    input id=(key) name=(key) type="number" min="0" required value=(retention[key].as_i64().unwrap_or_default());
                }
                p { button type="submit" { "Save retention" } }
            }
            h3 { "Assistant" }
            form method="post" action="/console/settings/assistant" {
                (csrf(&session))
                label for="disclosure" { "AI disclosure (first message of every conversation)" }
                textarea id="disclosure" name="disclosure" rows="3" required { (s(&privacy, "disclosure")) }
                label for="human_words" { "Extra words that hand a conversation to a person (comma-separated)" }
                input id="human_words" name="human_words" type="text" value=(words);
                p { button type="submit" { "Save assistant settings" } }
            }
        },
    )
}

pub async fn audit(State(console): State<Console>, session: Session) -> Response {
    let log = match console.get(&session, "/api/v1/audit").await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let items = log["items"].as_array().cloned().unwrap_or_default();
    let ok = log["chain_ok"].as_bool() == Some(true);
    page(
        "Audit log",
        &session,
        html! {
            p role="status" id="chain-status" {
                @if ok { "Chain verified: no entry was changed or removed." }
                @else { strong.error { "Chain broken" } " at entry " (log["first_bad"].to_string()) }
            }
            table {
                thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Action" } th { "Target" } } }
                tbody {
                    @for e in &items {
                        tr {
                            td { (e["n"].to_string()) }
                            td { (when(e["at"].as_i64())) }
                            td { (s(e, "actor")) }
                            td { (s(e, "action")) }
                            td { (s(e, "target")) }
                        }
                    }
                }
            }
        },
    )
}
