//! The web UI and JSON API (tiny_http, a few worker threads, each with its own read connection
//! to the database). The UI is three embedded files (HTML, CSS, JS) that call the API; nothing is
//! fetched from elsewhere. Routes and payloads are documented in docs/collector-openapi.yaml.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use tiny_http::{Header, Request, Response};

use super::store::{self, AddrFilter, DbUrl, Filter, Store};
use super::validate::parse_time_us;
use super::{CollectorConfig, CollectorError, Metrics};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Alerts or incidents per page when `limit` is not given, and the most a page may hold.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1000;
/// Each incident of a page costs one more query (its newest alert ids): fewer per page.
const MAX_INCIDENT_LIMIT: u64 = 200;

pub struct Server {
    http: Arc<tiny_http::Server>,
    db: DbUrl,
    /// The accepted `Authorization` header values, when auth is on.
    auth: Option<Arc<[String; 2]>>,
    metrics: Arc<Metrics>,
}

impl Server {
    pub fn bind(
        cfg: &CollectorConfig,
        db: &DbUrl,
        metrics: Arc<Metrics>,
    ) -> Result<Server, CollectorError> {
        let http = tiny_http::Server::http(&cfg.listen).map_err(|e| CollectorError::Listen {
            addr: cfg.listen.clone(),
            message: e.to_string(),
        })?;
        let auth = if cfg.http_user.is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(&cfg.http_password_file).map_err(|e| {
                CollectorError::Invalid(format!(
                    "cannot read http_password_file {}: {e}",
                    cfg.http_password_file
                ))
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            let basic = base64(format!("{}:{password}", cfg.http_user).as_bytes());
            Some(Arc::new([
                format!("Basic {basic}"),
                format!("Bearer {password}"),
            ]))
        };
        Ok(Server {
            http: Arc::new(http),
            db: db.clone(),
            auth,
            metrics,
        })
    }

    /// The address actually bound (the port, when `listen` asked for port 0).
    pub fn addr(&self) -> String {
        match self.http.server_addr().to_ip() {
            Some(a) => a.to_string(),
            None => "?".to_string(),
        }
    }

    /// Starts `n` worker threads; they serve until the process ends.
    pub fn spawn(self, n: usize) -> Result<Vec<JoinHandle<()>>, CollectorError> {
        (0..n.max(1))
            .map(|i| {
                let (http, db, auth, metrics) = (
                    self.http.clone(),
                    self.db.clone(),
                    self.auth.clone(),
                    self.metrics.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("ew-col-http{i}"))
                    .spawn(move || {
                        let mut store: Option<Box<dyn Store>> = None;
                        while let Ok(request) = http.recv() {
                            Metrics::add(&metrics.http_requests, 1);
                            handle(request, &db, &mut store, auth.as_deref(), &metrics);
                        }
                    })
                    .map_err(CollectorError::Spawn)
            })
            .collect()
    }
}

/// A response before it is sent.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }

    fn json(value: &impl Serialize) -> Reply {
        Reply::new(
            200,
            "application/json",
            serde_json::to_vec(value).expect("serializes"),
        )
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::new(
            status,
            "application/json",
            serde_json::to_vec(&serde_json::json!({ "error": message })).expect("serializes"),
        )
    }
}

fn handle(
    request: Request,
    db: &DbUrl,
    store: &mut Option<Box<dyn Store>>,
    auth: Option<&[String; 2]>,
    metrics: &Metrics,
) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = parse_query(query);
    let authorized = path == "/healthz"
        || auth.is_none_or(|accepted| {
            request.headers().iter().any(|h| {
                h.field.equiv("Authorization") && accepted.iter().any(|a| a == h.value.as_str())
            })
        });
    let reply = if !authorized {
        let reply = Reply::error(401, "authentication required");
        let response = Response::from_data(reply.body)
            .with_status_code(401)
            .with_header(header("Content-Type", reply.content_type))
            .with_header(header("WWW-Authenticate", "Basic realm=\"edgewatch\""));
        let _ = request.respond(response);
        return;
    } else if *request.method() != tiny_http::Method::Get
        && *request.method() != tiny_http::Method::Head
    {
        Reply::error(405, "only GET")
    } else {
        route(path, &query, db, store, metrics)
    };
    let response = Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type))
        .with_header(header("Cache-Control", "no-store"));
    let _ = request.respond(response);
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn route(
    path: &str,
    query: &HashMap<String, String>,
    db: &DbUrl,
    store: &mut Option<Box<dyn Store>>,
    metrics: &Metrics,
) -> Reply {
    match path {
        "/" | "/alerts" | "/sensors" => {
            return Reply::new(200, "text/html; charset=utf-8", INDEX_HTML);
        }
        p if p.starts_with("/alerts/") => {
            return Reply::new(200, "text/html; charset=utf-8", INDEX_HTML);
        }
        "/static/app.js" => return Reply::new(200, "text/javascript; charset=utf-8", APP_JS),
        "/static/style.css" => return Reply::new(200, "text/css; charset=utf-8", STYLE_CSS),
        "/metrics" => {
            return Reply::new(200, "text/plain; version=0.0.4", metrics.prometheus());
        }
        _ => {}
    }
    if store.is_none() {
        match store::open(db, false) {
            Ok(s) => *store = Some(s),
            Err(e) => {
                return Reply::error(503, &format!("database unavailable: {e}"));
            }
        }
    }
    let s = store.as_mut().expect("opened above");
    let result = api(path, query, s.as_mut());
    match result {
        Ok(reply) => reply,
        Err(ApiError::BadRequest(m)) => Reply::error(400, &m),
        Err(ApiError::NotFound) => Reply::error(404, "not found"),
        Err(ApiError::Store(e)) => {
            Metrics::add(&metrics.db_errors, 1);
            // The next request opens a fresh connection.
            *store = None;
            Reply::error(503, &format!("database error: {e}"))
        }
    }
}

enum ApiError {
    BadRequest(String),
    NotFound,
    Store(store::StoreError),
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        ApiError::Store(e)
    }
}

fn api(path: &str, query: &HashMap<String, String>, s: &mut dyn Store) -> Result<Reply, ApiError> {
    match path {
        "/healthz" => {
            s.ping()?;
            Ok(Reply::new(200, "text/plain", "ok\n"))
        }
        "/api/alerts" => {
            let filter = filter(query)?;
            let (limit, offset) = page(query, MAX_LIMIT)?;
            let page = s.alerts(&filter, limit, offset)?;
            // The stored bodies are the alerts' JSON as the sensors sent it: pasted, not re-encoded.
            let mut body = format!(
                "{{\"total\":{},\"limit\":{limit},\"offset\":{offset},\"alerts\":[",
                page.total
            );
            for (i, alert) in page.alerts.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(alert);
            }
            body.push_str("]}");
            Ok(Reply::new(200, "application/json", body))
        }
        "/api/incidents" => {
            let filter = filter(query)?;
            let (limit, offset) = page(query, MAX_INCIDENT_LIMIT)?;
            let page = s.incidents(&filter, limit, offset)?;
            Ok(Reply::json(&serde_json::json!({
                "total": page.total,
                "limit": limit,
                "offset": offset,
                "incidents": page.incidents,
            })))
        }
        "/api/sensors" => Ok(Reply::json(&serde_json::json!({ "sensors": s.sensors()? }))),
        "/api/timeline" => {
            let filter = filter(query)?;
            // At most about 10 years a bucket: the µs of a bucket fit an i64 with room to spare.
            let bucket = match number(query, "bucket_s")? {
                Some(b) if b > MAX_BUCKET_S => {
                    return Err(ApiError::BadRequest(format!(
                        "bucket_s={b}: at most {MAX_BUCKET_S} seconds"
                    )));
                }
                b => b.map(|b| b.max(1) as i64 * 1_000_000),
            };
            let (bucket_us, buckets) = s.timeline(&filter, bucket)?;
            Ok(Reply::json(&serde_json::json!({
                "bucket_s": bucket_us / 1_000_000,
                "buckets": buckets,
            })))
        }
        p if p.starts_with("/api/alerts/") => {
            let id = &p["/api/alerts/".len()..];
            match s.alert(id)? {
                Some(body) => Ok(Reply::new(200, "application/json", body)),
                None => Err(ApiError::NotFound),
            }
        }
        _ => Err(ApiError::NotFound),
    }
}

/// `limit` (default [`DEFAULT_LIMIT`], at most `max`) and `offset` (default 0).
fn page(query: &HashMap<String, String>, max: u64) -> Result<(u64, u64), ApiError> {
    let limit = number(query, "limit")?.unwrap_or(DEFAULT_LIMIT).min(max);
    Ok((limit, number(query, "offset")?.unwrap_or(0)))
}

fn number(query: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("{key}={v:?}: expected a whole number"))),
    }
}

/// The alert filters of a query string; empty values mean "any", and `*` as an address means
/// "none" (the alerts about many sources or many hosts).
fn filter(query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let text = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
    let addr = |k: &str| text(k).map(|v| AddrFilter::parse(&v));
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        match query.get(k).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => parse_when(v).map(Some).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{k}={v:?}: expected an RFC 3339 time (2024-05-01T12:00:00Z) or Unix seconds"
                ))
            }),
        }
    };
    let severity = match query.get("severity").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("severity={v:?}: expected 1, 2 or 3")))?,
        ),
    };
    Ok(Filter {
        sensor: text("sensor"),
        category: text("category"),
        class: text("class"),
        severity,
        src_ip: addr("src_ip"),
        dest_ip: addr("dest_ip"),
        since_us: time("since")?,
        until_us: time("until")?,
    })
}

/// The longest timeline bucket a query may ask for (about 10 years).
const MAX_BUCKET_S: u64 = 315_576_000;

/// RFC 3339 (seconds optional, as an HTML datetime-local gives it) or Unix seconds.
fn parse_when(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        // Finite and within ±292,000 years: the µs fit an i64.
        return (secs.is_finite() && secs.abs() < 9.2e12).then_some((secs * 1e6) as i64);
    }
    parse_time_us(v).or_else(|| parse_time_us(&format!("{}:00", v.trim_end_matches('Z'))))
}

/// `a=1&b=x%20y` -> {a: "1", b: "x y"}.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query("sensor=r%2F1&category=port+scan&x=%zz&y=%4");
        assert_eq!(q["sensor"], "r/1");
        assert_eq!(q["category"], "port scan");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["y"], "%4");
        assert_eq!(base64(b"ew:secret"), "ZXc6c2VjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(parse_when("2024-05-01T12:00"), Some(1_714_564_800_000_000));
        assert_eq!(parse_when("1714564800"), Some(1_714_564_800_000_000));
        for out_of_range in ["NaN", "inf", "-inf", "1e300"] {
            assert_eq!(parse_when(out_of_range), None, "{out_of_range}");
        }
    }
}
