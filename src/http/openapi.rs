//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the admin API, generated
//! from the code. `build.rs` reads the route table out of the source (every
//! `.route("/api/v1/...")`, its methods and handlers, and from each handler's
//! signature and doc comment: the key it needs, its query and JSON body structs with
//! their fields, its success status); this module assembles the document from it. A
//! route added anywhere under `src/` is documented without further work.

use axum::Json;
use serde_json::{json, Map, Value};

/// One method on one path of the admin API, as found in the source.
#[derive(Debug)]
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: &'static str,
    /// The handler's `///` comment.
    pub summary: &'static str,
    /// `tenant` (API key), `operator` (admin token) or `none`.
    pub auth: &'static str,
    /// Success status.
    pub status: u16,
    /// Query parameters: name, JSON type, required.
    pub query: &'static [(&'static str, &'static str, bool)],
    /// JSON body fields: name, JSON type, required.
    pub body: Option<&'static [(&'static str, &'static str, bool)]>,
}

/// The admin API's routes, extracted from the source at build time.
pub static ROUTES: &[ApiRoute] = include!(concat!(env!("OUT_DIR"), "/api_routes.rs"));

pub async fn endpoint() -> Json<Value> {
    Json(document())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "omnigate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, channels, conversations, contacts, knowledge, settings and audit. \
                The tenant always comes from the API key; another tenant's ids are answered 404."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "tenantKey": {"type": "http", "scheme": "bearer", "description": "A tenant's API key."},
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "The operator's admin_token."}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                    }}
                }
            }
        }
    })
}

fn operation(route: &ApiRoute) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(route.query.iter().map(|(name, kind, required)| {
        json!({"name": name, "in": "query", "required": required, "schema": {"type": kind}})
    }));
    let mut responses = Map::new();
    let success = match route.status {
        201 => "Created",
        202 => "Accepted",
        204 => "No content",
        _ => "OK",
    };
    responses.insert(
        route.status.to_string(),
        if route.status == 204 {
            json!({"description": success})
        } else {
            json!({"description": success, "content": {"application/json": {"schema": {"type": "object"}}}})
        },
    );
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    if route.auth != "none" {
        responses.insert("401".into(), error("Missing or invalid credentials"));
    }
    if route.path.contains('{') {
        responses.insert("404".into(), error("No such object for this tenant"));
    }
    if route.body.is_some() || !route.query.is_empty() {
        responses.insert("400".into(), error("Malformed request"));
        responses.insert("422".into(), error("Missing or invalid field"));
    }
    if route.body.is_some() {
        responses.insert("413".into(), error("Body over limits.admin_body_bytes"));
    }
    if route.auth == "tenant" {
        responses.insert(
            "429".into(),
            json!({"description": "Over the tenant's rate limit; retry after Retry-After seconds",
                   "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    let summary = match route.summary.split(". ").next() {
        Some(first) if !first.is_empty() => first.trim_end_matches('.').to_string(),
        _ => format!("{} {}", route.method, route.path),
    };
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": summary,
        "description": route.summary,
        "tags": [route.path.split('/').nth(3).unwrap_or("api")],
        "parameters": parameters,
        "responses": responses,
    });
    match route.auth {
        "tenant" => op["security"] = json!([{"tenantKey": []}]),
        "operator" => op["security"] = json!([{"operatorToken": []}]),
        _ => op["security"] = json!([]),
    }
    if let Some(fields) = route.body {
        let properties: Map<String, Value> = fields
            .iter()
            .map(|(name, kind, _)| (name.to_string(), json!({"type": kind})))
            .collect();
        let required: Vec<&str> = fields.iter().filter(|f| f.2).map(|f| f.0).collect();
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    op
}

fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// `GET /api/v1/conversations/{id}/messages` → `get_conversations_id_messages`.
fn operation_id(route: &ApiRoute) -> String {
    let path: Vec<&str> = route
        .path
        .trim_start_matches("/api/v1/")
        .split('/')
        .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
        .collect();
    format!("{}_{}", route.method.to_ascii_lowercase(), path.join("_")).replace('.', "_")
}
