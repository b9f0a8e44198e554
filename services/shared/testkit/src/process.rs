//! Running a built binary in a test.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// Starts `cmd` with JSON logs on stdout and waits (30 s at most) for the
/// first log line that carries `field`, such as the address it bound to
/// when given port 0. Returns the child (killed on drop) and that value;
/// the rest of stdout keeps being drained so the child never blocks on it.
///
/// # Panics
/// When the binary cannot start, exits first, or never logs `field`.
pub async fn spawn_until_logged(cmd: &mut Command, field: &str) -> (Child, String) {
    let mut child = cmd
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let value = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(v) = log["fields"][field].as_str() {
                return v.to_owned();
            }
        }
        panic!("the binary exited before logging {field}");
    })
    .await
    .unwrap_or_else(|_| panic!("the binary did not log {field} within 30 s"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, value)
}
