//! The page and its assets, compiled into the binary: the dashboard works with no internet
//! and serves nothing from the filesystem (an unknown name is a 404, never a path).

/// One embedded file.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The dashboard page.
pub const INDEX: &str = include_str!("assets/index.html");

/// The asset called `name` (`app.js`, `app.css`, `favicon.svg`), if there is one.
pub fn get(name: &str) -> Option<Asset> {
    Some(match name {
        "app.js" => Asset { body: include_bytes!("assets/app.js"), content_type: "text/javascript; charset=utf-8" },
        "app.css" => Asset { body: include_bytes!("assets/app.css"), content_type: "text/css; charset=utf-8" },
        "favicon.svg" => Asset { body: include_bytes!("assets/favicon.svg"), content_type: "image/svg+xml" },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_known_names() {
        assert!(super::get("app.js").is_some());
        assert!(super::get("../Cargo.toml").is_none());
        assert!(super::get("").is_none());
        // The page loads nothing from elsewhere and runs no inline script.
        assert!(!super::INDEX.contains("http://") && !super::INDEX.contains("https://"));
        assert!(!super::INDEX.contains("<script>"));
    }
}
