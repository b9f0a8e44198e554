//! A RabbitMQ vhost per test, through the management API (port 15672,
//! enabled by `cargo xtask up|test`). Deleting the vhost removes every
//! exchange, queue and binding the test made.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::Rng as _;

const MANAGEMENT: &str = "127.0.0.1:15672";
/// base64("guest:guest")
const AUTH: &str = "Z3Vlc3Q6Z3Vlc3Q=";

/// One test's own vhost.
pub struct TestBroker {
    vhost: String,
}

impl TestBroker {
    /// # Panics
    /// When the management API is unreachable: the test cannot run.
    pub fn new() -> Self {
        sweep_stale();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(8)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let vhost = format!("of_t_{now}_{suffix}");
        let put = |path: &str, body: &str| {
            let (status, text) = request("PUT", path, body)
                .unwrap_or_else(|e| panic!("RabbitMQ management API unreachable at {MANAGEMENT} ({e}); `cargo xtask test` enables it"));
            assert!((200..300).contains(&status), "PUT {path}: {status} {text}");
        };
        put(&format!("/api/vhosts/{vhost}"), "");
        put(
            &format!("/api/permissions/{vhost}/guest"),
            r#"{"configure":".*","write":".*","read":".*"}"#,
        );
        Self { vhost }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.vhost)
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// Names of the connections to this vhost whose client-given name
    /// starts with `prefix`. The management API lists a connection only
    /// after its next stats tick (about 5 s), so poll for it.
    pub fn connections_named(&self, prefix: &str) -> Vec<String> {
        let Ok((200, body)) = request(
            "GET",
            &format!("/api/vhosts/{}/connections", self.vhost),
            "",
        ) else {
            return Vec::new();
        };
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| {
                let given = c["user_provided_name"]
                    .as_str()
                    .or_else(|| c["client_properties"]["connection_name"].as_str())
                    .unwrap_or_default();
                given.starts_with(prefix)
            })
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Closes one connection, as a broker restart or a network cut would.
    pub fn close_connection(&self, name: &str) -> bool {
        matches!(
            request("DELETE", &format!("/api/connections/{}", encode(name)), ""),
            Ok((200..=299, _))
        )
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Err(e) = request("DELETE", &format!("/api/vhosts/{}", self.vhost), "") {
            eprintln!("warning: could not delete vhost {}: {e}", self.vhost);
        }
    }
}

/// Deletes test vhosts older than an hour (left by crashed runs).
fn sweep_stale() {
    let Ok((200, body)) = request("GET", "/api/vhosts?columns=name", "") else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let vhosts = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default();
    for name in vhosts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
    {
        let created = name
            .strip_prefix("of_t_")
            .and_then(|rest| rest.split('_').next()?.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > 3600) {
            let _ = request("DELETE", &format!("/api/vhosts/{name}"), "");
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A minimal HTTP/1.0 request: HTTP/1.0 keeps the response unchunked and
/// closes the connection, so reading to the end is the whole body.
fn request(method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(MANAGEMENT)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {MANAGEMENT}\r\nAuthorization: Basic {AUTH}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
