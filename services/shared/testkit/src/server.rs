//! A service's gRPC server in the test's process.

use std::{collections::HashMap, future::Future, net::SocketAddr, pin::Pin};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use crate::TestDatabase;

/// The admin token every test service is configured with
/// (`GRPC_ADMIN_TOKEN`): admin RPCs need `authorization: Bearer <it>`.
pub const ADMIN_TOKEN: &str = "orderflow-test-admin-token-0123456789";

/// `message` as an admin RPC's request: with the bearer token.
///
/// # Panics
/// Never: the token is a valid header value.
pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("a valid header value"),
    );
    request
}

/// A channel whose every request carries the admin token: for test
/// clients that call admin and customer RPCs alike.
pub type AdminChannel = tonic::service::interceptor::InterceptedService<
    Channel,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

/// `channel` with the admin token on every request.
pub fn admin_channel(channel: Channel) -> AdminChannel {
    fn add_token(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = request;
        let value = format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .map_err(|_| tonic::Status::internal("invalid admin token header"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
    tonic::service::interceptor::InterceptedService::new(channel, add_token)
}

/// The same header for grpcurl: `grpcurl -H <this> ...`.
pub fn admin_header() -> String {
    format!("authorization: Bearer {ADMIN_TOKEN}")
}

/// The variables of a service serving `db` on a port of its choosing, with a
/// short grace period; add the service's own before parsing.
pub fn service_env(db: &TestDatabase) -> HashMap<&str, &str> {
    HashMap::from([
        ("DATABASE_URL", db.url()),
        ("GRPC_LISTEN_ADDR", "127.0.0.1:0"),
        ("METRICS_LISTEN_ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_GRACE_PERIOD", "5s"),
        ("GRPC_ADMIN_TOKEN", ADMIN_TOKEN),
        // Tests drive load from one address; the limit has its own test.
        ("GRPC_RATE_LIMIT", "0"),
    ])
}

/// What a server is given to await: it completes when the test stops it.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server task on a listener bound already: stopped and awaited by
/// [`TestServer::shutdown`], aborted on drop.
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Spawns `serve` for the listener bound at `addr`.
    pub fn spawn<F>(addr: SocketAddr, serve: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async {
            let _ = stopped.await;
        })));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel to the server. The listener is bound already, so a lazy
    /// channel needs no wait.
    ///
    /// # Panics
    /// Never for a socket address.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_lazy()
    }

    /// Stops the server and waits for it, as SIGTERM would.
    ///
    /// # Panics
    /// When the server does not stop cleanly.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
