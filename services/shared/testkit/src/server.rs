//! A service's gRPC server in the test's process.

use std::{collections::HashMap, future::Future, net::SocketAddr, pin::Pin};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use crate::TestDatabase;

/// The variables of a service serving `db` on a port of its choosing, with a
/// short grace period; add the service's own before parsing.
pub fn service_env(db: &TestDatabase) -> HashMap<&str, &str> {
    HashMap::from([
        ("DATABASE_URL", db.url()),
        ("GRPC_LISTEN_ADDR", "127.0.0.1:0"),
        ("METRICS_LISTEN_ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_GRACE_PERIOD", "5s"),
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
