//! The page, its assets (embedded: the relay serves them itself, no CDN)
//! and the login form.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

const INDEX: &str = include_str!("../../assets/index.html");
const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

pub async fn index() -> Response {
    Html(INDEX).into_response()
}

pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The login form (self-contained: its assets need the token too), answered
/// with `status`, and with `message` above the form.
pub fn login(status: StatusCode, message: Option<&str>, dashboard_on: bool) -> Response {
    let message = message
        .map(|m| {
            format!(
                r#"<p class="msg" role="alert" data-testid="login-message">{}</p>"#,
                escape(m)
            )
        })
        .unwrap_or_default();
    let form = if dashboard_on {
        r#"<form method="post" action="/login" data-testid="login-form">
<label>Your name <input name="operator" autocomplete="username" required maxlength="64" data-testid="login-operator"></label>
<label>Admin token <input name="token" type="password" autocomplete="current-password" required data-testid="login-token"></label>
<button type="submit" data-testid="login-submit">Log in</button>
</form>"#
    } else {
        ""
    };
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>orderflow relay: log in</title>
<style>
body{{font:16px/1.4 system-ui,sans-serif;background:#f4f5f7;color:#1d2330;display:flex;min-height:100vh;margin:0;align-items:center;justify-content:center}}
main{{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002;width:min(22rem,90vw)}}
h1{{font-size:1.2rem;margin:0 0 1rem}} label{{display:block;margin:.8rem 0}} input{{display:block;width:100%;box-sizing:border-box;padding:.5rem;margin-top:.3rem;font:inherit}}
button{{padding:.5rem 1rem;font:inherit;background:#2456c7;color:#fff;border:0;border-radius:4px;cursor:pointer}} .msg{{color:#a31515}}
</style></head>
<body><main><h1>orderflow relay</h1>{message}{form}</main></body></html>"#
    );
    let mut res = (status, Html(body)).into_response();
    // The one page with inline style.
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    res
}
