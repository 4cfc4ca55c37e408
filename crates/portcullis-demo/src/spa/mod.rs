//! The sample single-page app the gateway serves in the demo: one HTML page, one script and
//! one stylesheet. No inline script or style anywhere, because the gateway's CSP has no
//! `'unsafe-inline'`.

/// Each file as (path, content type, bytes); `/index.html` is the page.
pub fn files() -> &'static [(&'static str, &'static str, &'static [u8])] {
    FILES
}

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("style.css"),
    ),
];

#[cfg(test)]
mod tests {
    use super::files;

    fn text(path: &str) -> &'static str {
        let (_, _, bytes) = files()
            .iter()
            .find(|(p, _, _)| *p == path)
            .expect("file present");
        std::str::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn page_has_every_control_and_no_inline_code() {
        let html = text("/index.html");
        assert!(html.contains("<title>portcullis demo</title>"));
        for id in [
            "user",
            "login",
            "me",
            "whoami",
            "admin",
            "hr",
            "echo",
            "stream",
            "logout",
            "output",
            "timeline",
            "countdown",
            "gateway-holds",
            "browser-cookies",
            "idp-logout",
            "users",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "missing #{id}");
        }
        assert!(html.contains("<script src=\"/app.js\" defer></script>"));
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
        let inline_handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!inline_handler, "no inline event handlers");
    }

    #[test]
    fn user_table_matches_the_idp_users() {
        let html = text("/index.html");
        let table = &html[html.find("<table id=\"users\">").expect("user table")..];
        for user in crate::DEMO_USERS {
            let roles = match user.roles {
                [] => "(none)".to_string(),
                roles => roles.join(", "),
            };
            let row = format!("<tr><td>{}</td><td>{roles}</td>", user.username);
            assert!(table.contains(&row), "no row {row}");
        }
    }

    #[test]
    fn script_uses_the_gateway_contract() {
        let js = text("/app.js");
        for needle in [
            "/auth/login?return_to=/",
            "/auth/me",
            "/auth/logout",
            "X-XSRF-TOKEN",
            "XSRF-TOKEN",
            "same-origin",
            "EventSource",
            "logout_url",
            "/demo/events",
            "/demo/session",
        ] {
            assert!(js.contains(needle), "app.js lacks {needle}");
        }
    }
}
