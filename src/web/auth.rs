//! Who may do what: the station token, loopback detection, and the request guard every route
//! passes through (token check, same-origin check for writes, Host check against DNS
//! rebinding, security headers).
//!
//! Rules:
//! - bound to a loopback address without a token: everything is open to local programs;
//! - a token is configured (always the case beyond loopback): write actions (every `POST`)
//!   need it, on loopback too;
//! - bound beyond loopback: *every* request needs it (pages, assets, events, snapshot).
//!
//! The token travels as `Authorization: Bearer T`, `X-Flashline-Token: T`, or the
//! `flashline_token` cookie that `GET /login?token=T` (or any page with `?token=T`) sets.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AppState;

/// Name of the cookie holding the token.
pub const COOKIE: &str = "flashline_token";

/// The access policy of one dashboard.
#[derive(Clone)]
pub struct Access {
    token_hash: Option<[u8; 32]>,
    /// Bound beyond loopback: every request needs the token.
    public: bool,
}

/// Whether this request proved the token (inserted as a request extension by the guard).
#[derive(Debug, Clone, Copy)]
pub struct Authorized(pub bool);

impl Access {
    /// Policy for a dashboard bound to `bind` with `token`.
    pub fn new(bind: SocketAddr, token: Option<&str>) -> Access {
        Access { token_hash: token.map(hash), public: !bind.ip().is_loopback() }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token_hash.is_some()
    }

    /// Whether every request needs the token.
    pub fn public(&self) -> bool {
        self.public
    }

    /// Constant-time check of a presented token (both sides hashed first, so neither the
    /// content nor the length of the real token leaks through timing).
    pub fn check(&self, presented: &str) -> bool {
        match &self.token_hash {
            Some(h) => ct_eq(h, &hash(presented)),
            None => false,
        }
    }
}

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compare two digests without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

/// A fresh random token (128 bits, hex), for a dashboard bound beyond loopback without one.
pub fn generate_token() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The token a request presents: header, bearer, or cookie (query tokens are handled by the
/// guard's login redirect).
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-flashline-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for kv in v.split(';') {
            if let Some((k, val)) = kv.trim().split_once('=') {
                if k == COOKIE {
                    return Some(val.trim().to_string());
                }
            }
        }
    }
    None
}

/// `token` from a query string, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hosts a loopback-bound dashboard answers to (anything else is a DNS-rebinding attempt).
fn loopback_host(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// `p` when it is a path on this server, else `/`: `//host/…` and `/\host/…` are read by
/// browsers as another host (an open redirect after login).
pub fn local_path(p: &str) -> &str {
    let b = p.as_bytes();
    if b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\')) && !p.contains('\\') {
        p
    } else {
        "/"
    }
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{msg}\n")).into_response()
}

const NEED_TOKEN: &str = "this flashline dashboard needs the station token: open /login?token=TOKEN once in this browser \
(the token is printed when the station starts, or set with --token / FLASHLINE_TOKEN), or send it as the X-Flashline-Token header";

/// The guard in front of every route.
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let access = &st.access;
    let headers = req.headers().clone();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !access.public() && !loopback_host(&host) {
        return with_headers(refuse(StatusCode::MISDIRECTED_REQUEST, "this dashboard only answers to localhost (Host header refused)"));
    }

    // `?token=T` on a page: check it, set the cookie, and redirect to the same path without it
    // (keeps the token out of history and logs).
    if let Some(q) = req.uri().query() {
        if let Some(t) = query_token(q) {
            if req.method() != Method::GET {
                return with_headers(refuse(StatusCode::BAD_REQUEST, "send the token in a header, not in the URL"));
            }
            if !access.check(&t) {
                return with_headers(refuse(StatusCode::UNAUTHORIZED, "wrong token"));
            }
            let path = match req.uri().path() {
                "/login" => "/",
                p => local_path(p),
            };
            let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            let mut resp = Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, path).body(Body::empty()).unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return with_headers(resp);
        }
    }

    let authorized = presented(&headers).map(|t| access.check(&t)).unwrap_or(false);
    if access.public() && !authorized {
        return with_headers(refuse(StatusCode::UNAUTHORIZED, NEED_TOKEN));
    }
    let write = req.method() != Method::GET && req.method() != Method::HEAD;
    if write {
        if access.has_token() && !authorized {
            return with_headers(refuse(StatusCode::UNAUTHORIZED, NEED_TOKEN));
        }
        // Same origin only: a page elsewhere must not drive the station through the
        // operator's browser.
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let o = origin.split_once("://").map(|(_, r)| r).unwrap_or(origin);
            if o != host {
                return with_headers(refuse(StatusCode::FORBIDDEN, "cross-origin request refused"));
            }
        }
        let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.starts_with("application/json")).unwrap_or(false);
        if !json {
            return with_headers(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "write actions take application/json"));
        }
    }
    req.extensions_mut().insert(Authorized(authorized || !access.has_token()));
    with_headers(next.run(req).await)
}

/// Headers on every response: strict CSP (no inline script, nothing from elsewhere), no
/// sniffing, no framing, no referrer.
fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        let a = Access::new("0.0.0.0:1".parse().unwrap(), Some("s3cret-token"));
        assert!(a.check("s3cret-token"));
        assert!(!a.check("s3cret-tokeN"));
        assert!(!a.check(""));
        assert!(a.public());
        let l = Access::new("127.0.0.1:1".parse().unwrap(), None);
        assert!(!l.check(""));
        assert!(!l.public());
    }

    #[test]
    fn hosts_and_queries() {
        assert!(loopback_host("127.0.0.1:8080"));
        assert!(loopback_host("localhost"));
        assert!(loopback_host("[::1]:80"));
        assert!(!loopback_host("evil.example:8080"));
        assert!(!loopback_host(""));
        assert_eq!(query_token("a=1&token=ab%2Bc"), Some("ab+c".into()));
        assert_eq!(query_token("tokens=1"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn generated_tokens_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
