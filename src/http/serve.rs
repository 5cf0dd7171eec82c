//! Serving connections: hyper's HTTP/1 server under the app, as
//! `axum::serve` does, plus three bounds it does not set.
//!
//! - A cap on connections served at once. Past it the server stops
//!   accepting, and new connections wait in the kernel's accept queue
//!   (and, once that is full, are refused by the kernel) until one closes:
//!   each connection holds a file descriptor, a task and its buffers, and
//!   without a cap a flood of connections exhausts them.
//!
//! - A deadline for reading each request head. Without one, a client that
//!   sends its headers a byte at a time, or opens a connection and sends
//!   nothing, holds a connection and its task forever (slowloris). The same
//!   deadline closes idle keep-alive connections.
//! - A cap of [`HEAD_MAX_BYTES`] on a request head (request line and
//!   headers), which also bounds what a slow client can make the server
//!   buffer; larger heads get 431 and the connection is closed.
//!
//! A request whose head has arrived is bounded by the request timeout and
//! the body limit of the router's layers.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::App;

/// The largest request head, request line and headers together.
pub const HEAD_MAX_BYTES: usize = 64 * 1024;

/// The bounds [`serve`] puts on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request head, and for an idle keep-alive
    /// connection to send its next one.
    pub head_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish. Handlers see the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // `stop` tells connections to finish; each connection holds a clone of
    // `running`, so `running_tx.closed()` completes when the last is done.
    let (stop_tx, stop_rx) = watch::channel(());
    let (running_tx, running_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A free connection slot first, then a connection: at the cap the
        // server does not accept at all.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.map(Body::new)
            });
        let mut stop = stop_rx.clone();
        let running = running_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_header_size(HEAD_MAX_BYTES)
                // Answers are small: one flattened write per answer measured
                // 5 % more requests/s than a vectored write of head and body.
                .writev(false);
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
            drop(running);
        });
    }
    drop(listener);
    drop(stop_rx);
    // No receivers left means no connections left: nothing to tell.
    let _ = stop_tx.send(());
    drop(running_rx);
    running_tx.closed().await;
    Ok(())
}

/// As in `axum::serve`: a failed accept of one connection is skipped; any
/// other failure (such as running out of file descriptors) is logged and
/// retried after a second, rather than ending the server.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
