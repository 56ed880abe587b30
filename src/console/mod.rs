//! The operator console (`/console`): server-rendered pages over the admin API.
//!
//! Signing in checks a tenant API key against the admin API and keeps it in an
//! HttpOnly, SameSite=Strict cookie scoped to `/console`. Every page and action
//! calls the admin API in-process with that key, so the console sees exactly what
//! the key may see (tenant scoping, audit of access, validation all stay there).
//! Every form carries a CSRF token derived from the key.

mod pages;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tower::ServiceExt as _;

const COOKIE: &str = "og_console";

/// The console's state: the gateway's own router, called in-process.
#[derive(Clone)]
pub struct Console {
    app: crate::app::App,
    api: Router,
    /// `Secure` on the cookie when the gateway is reached over HTTPS.
    secure: bool,
}

pub fn router(app: crate::app::App, api: Router) -> Router {
    let console = Console {
        secure: app.public_url.starts_with("https://"),
        app,
        api,
    };
    Router::new()
        .route("/console", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/conversations", get(pages::conversations))
        .route("/console/conversations/{id}", get(pages::conversation))
        .route("/console/conversations/{id}/handoff", post(handoff))
        .route("/console/conversations/{id}/release", post(release))
        .route("/console/conversations/{id}/reply", post(reply))
        .route("/console/contacts/{id}", get(pages::contact))
        .route("/console/contacts/{id}/export", get(export))
        .route("/console/contacts/{id}/erase", post(erase))
        .route("/console/channels", get(pages::channels))
        .route("/console/settings", get(pages::settings))
        .route("/console/settings/retention", post(retention))
        .route("/console/settings/assistant", post(assistant))
        .route("/console/audit", get(pages::audit))
        .route("/console/stamp/conversations", get(stamp_list))
        .route("/console/stamp/conversations/{id}", get(stamp_conversation))
        .with_state(console)
}

/// A signed-in operator: the tenant API key from the cookie.
pub struct Session {
    key: String,
}

impl Session {
    /// The CSRF token of this session's forms.
    pub fn csrf(&self) -> String {
        hex::encode(Sha256::digest(format!(
            "omnigate-console-csrf:{}",
            self.key
        )))
    }

    fn check_csrf(&self, token: &str) -> Result<(), Box<Response>> {
        if bool::from(self.csrf().as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    "the form expired: reload the page and try again",
                )
                    .into_response(),
            ))
        }
    }
}

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Console) -> Result<Self, Response> {
        match cookie_key(&parts.headers) {
            Some(key) => Ok(Session { key }),
            None => Err(Redirect::to("/console/login").into_response()),
        }
    }
}

/// An admin API answer.
pub struct ApiAnswer {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiAnswer {
    /// The admin API's error message, for the page.
    pub fn message(&self) -> String {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("the request failed ({})", self.status))
    }
}

impl Console {
    /// Calls the admin API in-process as `session`.
    pub async fn api(
        &self,
        session: &Session,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<ApiAnswer, Response> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.key))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            // The key was revoked or the tenant deleted: sign in again.
            return Err(signed_out(self.secure, "/console/login"));
        }
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY.into_response())?;
        Ok(ApiAnswer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// Calls the admin API and answers with a page on failure.
    pub async fn get(&self, session: &Session, path: &str) -> Result<Value, Response> {
        let answer = self.api(session, "GET", path, None).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(pages::error_page(session, answer.status, &answer.message()))
        }
    }
}

fn cookie(secure: bool, value: &str, max_age: Option<i64>) -> String {
    let mut cookie = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

fn signed_out(secure: bool, to: &str) -> Response {
    (
        [(header::SET_COOKIE, cookie(secure, "", Some(0)))],
        Redirect::to(to),
    )
        .into_response()
}

async fn home(headers: HeaderMap) -> Redirect {
    if cookie_key(&headers).is_some() {
        Redirect::to("/console/conversations")
    } else {
        Redirect::to("/console/login")
    }
}

async fn login_page() -> Html<String> {
    Html(pages::login(None).into_string())
}

#[derive(Deserialize)]
struct LoginForm {
    api_key: String,
}

async fn login(State(console): State<Console>, Form(form): Form<LoginForm>) -> Response {
    let key = form.api_key.trim().to_string();
    // A key is only a cookie value if it is plain printable ASCII without separators.
    let plausible = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    let session = Session { key };
    let valid = plausible
        && console
            .api(&session, "GET", "/api/v1/channels", None)
            .await
            .is_ok_and(|a| a.status.is_success());
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("That API key was not accepted.")).into_string()),
        )
            .into_response();
    }
    (
        [(
            header::SET_COOKIE,
            cookie(console.secure, &session.key, None),
        )],
        Redirect::to("/console/conversations"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = session.check_csrf(&form.csrf) {
        return *e;
    }
    signed_out(console.secure, "/console/login")
}

/// Runs one admin API action for a form and redirects back (with the error shown
/// on a page when it failed).
async fn act(
    console: &Console,
    session: &Session,
    csrf: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    back: &str,
) -> Response {
    if let Err(e) = session.check_csrf(csrf) {
        return *e;
    }
    match console.api(session, method, path, body).await {
        Ok(answer) if answer.status.is_success() => Redirect::to(back).into_response(),
        Ok(answer) => pages::error_page(session, answer.status, &answer.message()),
        Err(response) => response,
    }
}

fn safe_id(id: &str) -> Result<&str, Box<Response>> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(Box::new(StatusCode::NOT_FOUND.into_response()))
    }
}

async fn handoff(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id,
        Err(e) => return *e,
    };
    let back = format!("/console/conversations/{id}");
    let path = format!("/api/v1/conversations/{id}/handoff");
    act(&console, &session, &form.csrf, "POST", &path, None, &back).await
}

async fn release(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id,
        Err(e) => return *e,
    };
    let back = format!("/console/conversations/{id}");
    let path = format!("/api/v1/conversations/{id}/release");
    act(&console, &session, &form.csrf, "POST", &path, None, &back).await
}

#[derive(Deserialize)]
struct ReplyForm {
    csrf: String,
    text: String,
}

async fn reply(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id,
        Err(e) => return *e,
    };
    let back = format!("/console/conversations/{id}");
    let path = format!("/api/v1/conversations/{id}/messages");
    let body = json!({"text": form.text});
    act(
        &console,
        &session,
        &form.csrf,
        "POST",
        &path,
        Some(body),
        &back,
    )
    .await
}

async fn export(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id,
        Err(e) => return *e,
    };
    match console
        .get(&session, &format!("/api/v1/contacts/{id}/export"))
        .await
    {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"contact-{id}.json\""),
                ),
            ],
            serde_json::to_string_pretty(&body).unwrap_or_default(),
        )
            .into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct EraseForm {
    csrf: String,
    /// The confirmation checkbox.
    confirm: Option<String>,
}

async fn erase(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<EraseForm>,
) -> Response {
    let id = match safe_id(&id) {
        Ok(id) => id,
        Err(e) => return *e,
    };
    if form.confirm.as_deref() != Some("yes") {
        return pages::error_page(
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Tick the confirmation box to erase this contact.",
        );
    }
    let path = format!("/api/v1/contacts/{id}");
    act(
        &console,
        &session,
        &form.csrf,
        "DELETE",
        &path,
        None,
        "/console/conversations?erased=1",
    )
    .await
}

#[derive(Deserialize)]
struct RetentionForm {
    csrf: String,
    messages_days: i64,
    raw_events_days: i64,
    analytics_days: i64,
    audit_days: i64,
}

async fn retention(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<RetentionForm>,
) -> Response {
    let body = json!({
        "messages_days": form.messages_days,
        "raw_events_days": form.raw_events_days,
        "analytics_days": form.analytics_days,
        "audit_days": form.audit_days,
    });
    act(
        &console,
        &session,
        &form.csrf,
        "PUT",
        "/api/v1/settings/retention",
        Some(body),
        "/console/settings?saved=1",
    )
    .await
}

#[derive(Deserialize)]
struct AssistantForm {
    csrf: String,
    disclosure: String,
    human_words: String,
}

async fn assistant(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<AssistantForm>,
) -> Response {
    let words: Vec<String> = form
        .human_words
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let body = json!({"disclosure": form.disclosure, "human_words": words});
    act(
        &console,
        &session,
        &form.csrf,
        "PUT",
        "/api/v1/settings/privacy",
        Some(body),
        "/console/settings?saved=1",
    )
    .await
}

/// A fingerprint of what a live page shows, so the page refetches (an audited read
/// of personal data) only when something changed. Holds no personal data itself.
impl Console {
    async fn tenant(&self, session: &Session) -> Option<String> {
        let hash = crate::crypto::hash_api_key(&session.key);
        self.app
            .store
            .tenant_by_key_hash(&hash)
            .await
            .ok()
            .flatten()
    }

    pub async fn stamp(&self, session: &Session, conversation: Option<&str>) -> Option<String> {
        let tenant = self.tenant(session).await?;
        let mut digest = Sha256::new();
        match conversation {
            None => {
                let filter = crate::store::ConversationFilter {
                    platform: None,
                    status: None,
                    after: None,
                    limit: pages::LIST_LIMIT,
                };
                for c in self
                    .app
                    .store
                    .list_conversations(&tenant, &filter)
                    .await
                    .ok()?
                {
                    digest.update(format!("{}|{}|{};", c.id, c.status, c.last_message_at));
                }
            }
            Some(id) => {
                let c = self.app.store.conversation(&tenant, id).await.ok()??;
                digest.update(format!("{}|{};", c.status, c.last_message_at));
                for m in self.app.store.messages(&tenant, id).await.ok()? {
                    digest.update(format!("{}|{};", m.id, m.status));
                }
            }
        }
        Some(hex::encode(&digest.finalize()[..12]))
    }
}

async fn stamp_list(State(console): State<Console>, session: Session) -> Response {
    console
        .stamp(&session, None)
        .await
        .unwrap_or_default()
        .into_response()
}

async fn stamp_conversation(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    console
        .stamp(&session, Some(&id))
        .await
        .unwrap_or_default()
        .into_response()
}
