//! Running a built binary in a test.

use std::{
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

use crate::{TestBroker, TestDatabase, grpcurl::Grpcurl};

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
    // Keep draining, by bytes: a reader that stopped (at a line that is not
    // UTF-8, say) would leave the process blocked on a full pipe.
    let mut rest = lines.into_inner().split(b'\n');
    tokio::spawn(async move { while let Ok(Some(_)) = rest.next_segment().await {} });
    (child, value)
}

/// A service binary (`env!("CARGO_BIN_EXE_<name>")`), run as operators do.
#[derive(Debug, Clone, Copy)]
pub struct ServiceBinary {
    path: &'static str,
}

impl ServiceBinary {
    pub const fn new(path: &'static str) -> Self {
        Self { path }
    }

    /// `<binary> <subcommand>`, with nothing else set.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(self.path);
        cmd.arg(subcommand);
        cmd
    }

    /// `<binary> migrate` on `db`.
    ///
    /// # Panics
    /// When it does not succeed.
    pub async fn migrate(&self, db: &TestDatabase) {
        let status = self
            .command("migrate")
            .env("DATABASE_URL", db.url())
            .status()
            .await
            .expect("the binary starts");
        assert!(status.success(), "{} migrate failed", self.name());
    }

    /// `<binary> serve` on `db` and `broker`, on a port of its choosing that
    /// is read from its log, so no port is guessed and nothing sleeps.
    ///
    /// # Panics
    /// As [`spawn_until_logged`].
    pub async fn serve(&self, db: &TestDatabase, broker: &TestBroker) -> ServedBinary {
        let mut cmd = self.command("serve");
        cmd.env("DATABASE_URL", db.url())
            .env("AMQP_URL", broker.url())
            .env("GRPC_LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_LISTEN_ADDR", "127.0.0.1:0")
            .env("SHUTDOWN_GRACE_PERIOD", "5s")
            .env("GRPC_ADMIN_TOKEN", crate::ADMIN_TOKEN)
            .env("GRPC_RATE_LIMIT", "0");
        let (child, addr) = spawn_until_logged(&mut cmd, "grpc.addr").await;
        ServedBinary { child, addr }
    }

    fn name(&self) -> &str {
        std::path::Path::new(self.path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(self.path)
    }
}

/// A `serve` process (killed on drop) and the gRPC address it bound.
pub struct ServedBinary {
    child: Child,
    addr: String,
}

impl ServedBinary {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// grpcurl against this server; `call` targets `service`.
    pub fn grpcurl(&self, service: &str) -> Grpcurl {
        Grpcurl::new(&self.addr, service)
    }

    /// Sends SIGTERM and returns the exit status.
    ///
    /// # Panics
    /// When the signal cannot be sent or the process is still running 15 s later.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("pid").to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(kill.success());
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status")
    }
}
