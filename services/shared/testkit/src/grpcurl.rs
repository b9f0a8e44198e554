//! grpcurl against a served binary, through server reflection (no proto files).

use serde_json::Value;
use tokio::process::Command;

/// `GRPCURL`, else `grpcurl` on PATH; `cargo xtask test` installs it.
pub fn path() -> String {
    std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned())
}

/// grpcurl against the server at `addr`; `call` targets `service`.
pub struct Grpcurl {
    addr: String,
    service: String,
    /// Sends [`crate::ADMIN_TOKEN`] (the default), so admin RPCs pass.
    admin: bool,
}

/// What one grpcurl run printed, and whether it succeeded.
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Grpcurl {
    pub fn new(addr: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            service: service.into(),
            admin: true,
        }
    }

    /// The same grpcurl without the admin token: a customer.
    pub fn without_token(mut self) -> Self {
        self.admin = false;
        self
    }

    /// `grpcurl -plaintext <flags> <address> <args>`.
    ///
    /// # Panics
    /// When grpcurl cannot be started.
    pub async fn run(&self, flags: &[&str], args: &[&str]) -> Output {
        let mut command = Command::new(path());
        command.arg("-plaintext");
        if self.admin {
            command.args(["-H", &crate::admin_header()]);
        }
        let out = command
            .args(flags)
            .arg(&self.addr)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run grpcurl ({}): {e}; `cargo xtask test` installs it",
                    path()
                )
            });
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// What every served binary must offer: the service, health and both
    /// reflection versions listed; `rpc` in the service's description; the
    /// service SERVING on the health check.
    ///
    /// # Panics
    /// When one of them is missing.
    pub async fn assert_reflection_and_health(&self, rpc: &str) {
        let list = self.run(&[], &["list"]).await;
        assert!(list.ok, "grpcurl list: {}{}", list.stdout, list.stderr);
        for service in [
            self.service.as_str(),
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                list.stdout.lines().any(|l| l == service),
                "{service} not listed:\n{}",
                list.stdout
            );
        }
        let describe = self.run(&[], &["describe", &self.service]).await;
        assert!(
            describe.stdout.contains(&format!("rpc {rpc}")),
            "{}",
            describe.stdout
        );
        let body = serde_json::json!({ "service": self.service }).to_string();
        let health = self
            .run(&["-d", &body], &["grpc.health.v1.Health/Check"])
            .await;
        assert!(health.stdout.contains("\"SERVING\""), "{}", health.stdout);
    }

    /// Calls `method` with a JSON body and returns the JSON response.
    ///
    /// # Panics
    /// When the call fails or the answer is not JSON.
    pub async fn call(&self, method: &str, body: &Value) -> Value {
        let out = self.call_raw(method, body).await;
        assert!(out.ok, "{method} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{method}: {e}: {}", out.stdout))
    }

    /// Calls `method` with a JSON body, whatever the outcome.
    pub async fn call_raw(&self, method: &str, body: &Value) -> Output {
        let body = body.to_string();
        self.run(&["-d", &body], &[&format!("{}/{method}", self.service)])
            .await
    }
}
