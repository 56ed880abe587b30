//! Extracts the admin API's route table from the source for its OpenAPI document
//! (`src/http/openapi.rs`): every `.route("/api/v1/...", method(handler)...)` under
//! `src/`, with what each handler's signature says (operator or tenant key, query
//! struct, JSON body struct and their fields), its `///` summary, and the success
//! status its body names. The table is written to `$OUT_DIR/api_routes.rs`.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=src");
    let mut files = Vec::new();
    collect(Path::new("src"), &mut files)?;
    files.sort();
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| std::fs::read_to_string(&f).map(|s| (f, s)))
        .collect::<Result<_, _>>()?;
    let mut out = String::from("&[\n");
    for (_, source) in &sources {
        for (path, methods) in routes(source) {
            if !path.starts_with("/api/v1") {
                continue;
            }
            for (method, handler) in methods {
                let found = find_fn(source, &handler)
                    .map(|f| (source.as_str(), f))
                    .or_else(|| {
                        sources
                            .iter()
                            .find_map(|(_, s)| find_fn(s, &handler).map(|f| (s.as_str(), f)))
                    });
                let op = found
                    .map(|(file, f)| describe(file, f, &sources))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "    ApiRoute {{ method: {method:?}, path: {path:?}, handler: {handler:?}, summary: {:?}, auth: {:?}, status: {}, query: &[{}], body: {} }},",
                    op.summary,
                    op.auth,
                    op.status,
                    fields_literal(&op.query),
                    match &op.body {
                        Some(fields) => format!("Some(&[{}])", fields_literal(fields)),
                        None => "None".into(),
                    }
                )?;
            }
        }
    }
    out.push(']');
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("api_routes.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// A struct field: name, JSON type, required.
type Field = (String, &'static str, bool);

#[derive(Default)]
struct Op {
    summary: String,
    auth: &'static str,
    status: u16,
    query: Vec<Field>,
    body: Option<Vec<Field>>,
}

fn fields_literal(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|(n, t, r)| format!("({n:?}, {t:?}, {r})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text between the bracket at `open` and its match (strings skipped).
fn balanced(text: &str, open: usize) -> Option<&str> {
    let bytes = text.as_bytes();
    let (left, right) = match bytes.get(open)? {
        b'(' => (b'(', b')'),
        b'{' => (b'{', b'}'),
        _ => return None,
    };
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == left {
            depth += 1;
        } else if b == right {
            depth -= 1;
            if depth == 0 {
                return text.get(open + 1..i);
            }
        }
        i += 1;
    }
    None
}

/// `(path, [(METHOD, handler)])` of every `.route(...)` call in `source`.
fn routes(source: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = source[from..].find(".route(") {
        let open = from + at + ".route".len();
        from = open;
        let line_start = source[..open].rfind('\n').map_or(0, |n| n + 1);
        if source[line_start..open].contains("//") {
            continue;
        }
        let Some(inner) = balanced(source, open) else {
            continue;
        };
        let Some(start) = inner.find('"') else {
            continue;
        };
        let Some(len) = inner[start + 1..].find('"') else {
            continue;
        };
        let path = inner[start + 1..start + 1 + len].to_string();
        let rest = &inner[start + 1 + len + 1..];
        let mut methods = Vec::new();
        for method in ["get", "post", "put", "delete", "patch"] {
            let mut i = 0;
            while let Some(pos) = rest[i..].find(&format!("{method}(")) {
                let p = i + pos;
                i = p + method.len();
                let before = rest[..p].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                if let Some(arg) = balanced(rest, p + method.len()) {
                    let handler = arg
                        .trim()
                        .rsplit("::")
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    methods.push((method.to_uppercase(), handler));
                }
            }
        }
        found.push((path, methods));
    }
    found
}

/// Where `fn name(` starts in `source`.
fn find_fn(source: &str, name: &str) -> Option<usize> {
    let needle = format!("fn {name}(");
    let mut from = 0;
    while let Some(at) = source[from..].find(&needle) {
        let pos = from + at;
        let before = source[..pos].chars().last();
        if before.is_none_or(|c| c.is_whitespace()) {
            return Some(pos);
        }
        from = pos + needle.len();
    }
    None
}

fn describe(source: &str, at: usize, sources: &[(PathBuf, String)]) -> Op {
    let mut op = Op {
        status: 200,
        ..Op::default()
    };
    // The `///` lines right above the function (attributes and `async`/`pub` skipped).
    let mut docs = Vec::new();
    for line in source[..at].lines().rev().skip(1) {
        let line = line.trim();
        if let Some(doc) = line.strip_prefix("///") {
            docs.push(doc.trim().to_string());
        } else if !(line.starts_with("#[") || line.is_empty() && docs.is_empty()) {
            break;
        }
    }
    docs.reverse();
    op.summary = docs.join(" ");
    let Some(open) = source[at..].find('(').map(|p| at + p) else {
        return op;
    };
    let params = balanced(source, open).unwrap_or_default();
    op.auth = auth_of(params, sources);
    if let Some(name) = generic_arg(params, "Query<") {
        op.query = struct_fields(source, &name);
    }
    if let Some(name) = generic_arg(params, "JsonBody<").or_else(|| generic_arg(params, "Json<")) {
        op.body = Some(struct_fields(source, &name));
    }
    let body_start = source[open..].find('{').map(|p| open + p);
    if let Some(body) = body_start.and_then(|b| balanced(source, b)) {
        for (name, code) in [("CREATED", 201), ("ACCEPTED", 202), ("NO_CONTENT", 204)] {
            if body.contains(&format!("StatusCode::{name}")) {
                op.status = code;
                break;
            }
        }
    }
    op
}

/// The key a handler needs: named in its parameters, or inside the extractor a
/// parameter's type is (`impl FromRequestParts<App> for Caller` using `TenantAuth`).
fn auth_of(params: &str, sources: &[(PathBuf, String)]) -> &'static str {
    let direct = |text: &str| {
        if text.contains("OperatorAuth") {
            Some("operator")
        } else if text.contains("TenantAuth") {
            Some("tenant")
        } else {
            None
        }
    };
    if let Some(auth) = direct(params) {
        return auth;
    }
    for param in params.split(',') {
        let Some((_, ty)) = param.split_once(':') else {
            continue;
        };
        let ty = ty.trim();
        if ty.is_empty() || !ty.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let needle = format!("for {ty} {{");
        for (_, source) in sources {
            let Some(at) = source.find(&needle) else {
                continue;
            };
            let open = at + needle.len() - 1;
            if let Some(auth) = balanced(source, open).and_then(direct) {
                return auth;
            }
        }
    }
    "none"
}

fn generic_arg(params: &str, prefix: &str) -> Option<String> {
    let at = params.find(prefix)?;
    let rest = &params[at + prefix.len()..];
    let end = rest.find('>')?;
    Some(rest[..end].trim().to_string())
}

/// The fields of `struct name { ... }` in `source`, as JSON types.
fn struct_fields(source: &str, name: &str) -> Vec<Field> {
    let Some(at) = source.find(&format!("struct {name} {{")) else {
        return Vec::new();
    };
    let open = at + format!("struct {name} ").len();
    let Some(inner) = balanced(source, open) else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    let mut defaulted = false;
    let mut flattened = false;
    for line in inner.lines() {
        let line = line.trim();
        if line.starts_with("#[serde(") && line.contains("default") {
            defaulted = true;
        }
        if line.starts_with("#[serde(") && line.contains("flatten") {
            // Its fields are the request's other keys: allowed, not listed.
            flattened = true;
        }
        if line.starts_with("//") || line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((field, ty)) = line.trim_end_matches(',').split_once(':') else {
            continue;
        };
        if std::mem::take(&mut flattened) {
            defaulted = false;
            continue;
        }
        let field = field.trim().trim_start_matches("pub ").trim().to_string();
        let ty = ty.trim();
        let optional = ty.starts_with("Option<") || defaulted;
        let inner_ty = ty.trim_start_matches("Option<").trim_end_matches('>');
        let json = match inner_ty {
            t if t.starts_with("Vec<") => "array",
            "String" | "&str" | "SecretString" => "string",
            "bool" => "boolean",
            "f32" | "f64" => "number",
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "integer",
            _ => "object",
        };
        fields.push((field, json, !optional));
        defaulted = false;
    }
    fields
}
