//! The dashboard's access rules with a plain HTTP client (raw requests, paths sent as-is):
//! beyond loopback every request needs the token; with a token on loopback, writes need it;
//! no traversal out of the embedded assets; same-origin JSON only for writes; security headers.

mod web_support;

use std::path::Path;
use std::time::Duration;

use web_support::*;

const STATION: &str = "station: web-sec
slots:
  - { name: S1, programmer: sim }
  - { name: S2, programmer: sim }
";

fn start(dir: &Path, serve: &str, token: Option<&str>) -> Proc {
    let recipe = repo().join("recipes/planck-rev4/recipe.yaml");
    let station = station_file(dir, STATION);
    let db = dir.join("line.db");
    let mut args = vec![
        "run".to_string(),
        recipe.display().to_string(),
        "--station".into(),
        station.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--scans".into(),
        "-".into(),
        "--serve".into(),
        serve.into(),
    ];
    if let Some(t) = token {
        args.push("--token".into());
        args.push(t.into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(&args, dir)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn beyond_loopback_every_request_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), "0.0.0.0:0", None);
    let token = p.token.clone().expect("a token is generated and printed when binding beyond loopback");
    assert_eq!(token.len(), 32, "{}", p.stderr());
    let a = p.addr;

    for path in ["/", "/api/snapshot", "/api/events", "/api/today", "/api/charts.svg", "/assets/app.js", "/login", "/nothing"] {
        let r = http(a, "GET", path, &[], None);
        assert_eq!(r.status, 401, "GET {path} without the token: {r:?}");
        assert!(r.body.contains("token"), "the refusal says what is missing: {}", r.body);
        let r = http(a, "GET", path, &[("X-Flashline-Token", "0123456789abcdef0123456789abcdef")], None);
        assert_eq!(r.status, 401, "GET {path} with a wrong token");
    }
    let r = http(a, "POST", "/api/scan", &[JSON], Some(r#"{"line":"PL4-000001"}"#));
    assert_eq!(r.status, 401);
    // A prefix or extension of the real token is not the token.
    let r = http(a, "GET", "/api/snapshot", &[("X-Flashline-Token", &token[..31])], None);
    assert_eq!(r.status, 401);
    let r = http(a, "GET", "/api/snapshot", &[("X-Flashline-Token", &format!("{token}0"))], None);
    assert_eq!(r.status, 401);

    // The real token: header, bearer, or the cookie that /login?token= sets.
    let r = http(a, "GET", "/api/snapshot", &[("X-Flashline-Token", &token)], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["model"]["station"], "web-sec");
    let bearer = format!("Bearer {token}");
    assert_eq!(http(a, "GET", "/", &[("Authorization", &bearer)], None).status, 200);
    let r = http(a, "GET", &format!("/login?token={token}"), &[], None);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("login sets a cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = http(a, "GET", "/", &[("Cookie", &cookie)], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"scan\""));
    assert_eq!(http(a, "GET", "/login?token=wrong-token-000", &[], None).status, 401);

    // Writes with the token work (and the scan reaches a slot).
    let r = http(a, "POST", "/api/scan", &[JSON, ("Cookie", &cookie)], Some(r#"{"line":"PL4-000001"}"#));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    // Refused scans come back with the reason.
    let r = http(a, "POST", "/api/scan", &[JSON, ("X-Flashline-Token", &token)], Some(r#"{"line":"NOT-A-SERIAL"}"#));
    assert_eq!(r.json()["ok"], false);
    assert!(r.json()["message"].as_str().unwrap().contains("pattern"), "{}", r.body);
    // Not JSON, or from another origin: refused even with the token.
    let r = http(a, "POST", "/api/scan", &[("Content-Type", "text/plain"), ("X-Flashline-Token", &token)], Some(r#"{"line":"PL4-000002"}"#));
    assert_eq!(r.status, 415);
    let r = http(a, "POST", "/api/scan", &[JSON, ("Cookie", &cookie), ("Origin", "http://evil.example")], Some(r#"{"line":"PL4-000002"}"#));
    assert_eq!(r.status, 403);
}

#[test]
fn a_token_on_loopback_guards_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let token = "line1-st3-0123456789";
    let p = start(dir.path(), "127.0.0.1:0", Some(token));
    assert!(p.token.is_none(), "a given token is not printed");
    let a = p.addr;
    assert_eq!(http(a, "GET", "/", &[], None).status, 200);
    let snap = http(a, "GET", "/api/snapshot", &[], None);
    assert_eq!(snap.json()["access"]["needs_token"], true);
    for (path, body) in [("/api/scan", r#"{"line":"PL4-000001"}"#), ("/api/retest", r#"{"slot":"S1"}"#), ("/api/stop", "{}")] {
        let r = http(a, "POST", path, &[JSON], Some(body));
        assert_eq!(r.status, 401, "POST {path} without the token");
    }
    let r = http(a, "POST", "/api/retest", &[JSON, ("X-Flashline-Token", token)], Some(r#"{"slot":"S1"}"#));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], false, "nothing failed in S1 yet: {}", r.body);
    let snap = http(a, "GET", "/api/snapshot", &[("X-Flashline-Token", token)], None);
    assert_eq!(snap.json()["access"]["needs_token"], false);
    // DNS rebinding: a loopback dashboard answers to localhost names only.
    let r = http(a, "GET", "/api/snapshot", &[("Host", "evil.example:8080")], None);
    assert_eq!(r.status, 421);
}

#[test]
fn only_embedded_assets_and_strict_headers() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), "127.0.0.1:0", None);
    let a = p.addr;
    // No token configured on loopback: a local write works.
    let r = http(a, "POST", "/api/scan", &[JSON], Some(r#"{"line":"S2:PL4-000009"}"#));
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    assert_eq!(r.json()["slot"], "S2");

    let js = http(a, "GET", "/assets/app.js", &[], None);
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(js.body.contains("textContent"));
    for path in [
        "/assets/../Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/../../../../etc/passwd",
        "/assets//etc/passwd",
        "/assets/index.html",
        "/src/web/assets/app.js",
        "/Cargo.toml",
    ] {
        let r = http(a, "GET", path, &[], None);
        assert!(r.status == 404 || r.status == 400, "GET {path}: {} {}", r.status, r.body);
        assert!(!r.body.contains("[package]") && !r.body.contains("root:"), "GET {path} leaked a file");
    }
    let page = http(a, "GET", "/", &[], None);
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    // The page pulls nothing from elsewhere.
    assert!(!page.body.contains("http://") && !page.body.contains("https://") && !page.body.contains("//cdn"));
    // Quit from the scan box does not stop the station: Stop does.
    let r = http(a, "POST", "/api/scan", &[JSON], Some(r#"{"line":"quit"}"#));
    assert_eq!(r.json()["ok"], false);
    let r = http(a, "POST", "/api/stop", &[JSON], Some("{}"));
    assert_eq!(r.json()["ok"], true);
    let mut p = p;
    let st = p.terminate(Duration::from_secs(20));
    assert!(st.map(|s| s.success()).unwrap_or(false), "the station exits 0 after Stop: {}", p.stderr());
}

#[test]
fn a_bad_token_or_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = repo().join("recipes/planck-rev4/recipe.yaml");
    let station = station_file(dir.path(), STATION);
    let out = std::process::Command::new(bin())
        .args(["run", recipe.to_str().unwrap(), "--station", station.to_str().unwrap(), "--db"])
        .arg(dir.path().join("x.db"))
        .args(["--scans", "-", "--serve", "0.0.0.0:0", "--token", "short"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token") && err.contains("12 characters"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = std::process::Command::new(bin())
        .args(["run", recipe.to_str().unwrap(), "--station", station.to_str().unwrap(), "--db"])
        .arg(dir.path().join("y.db"))
        .args(["--scans", "-", "--serve", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}
