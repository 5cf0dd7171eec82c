//! Serving connections: hyper's HTTP/1 server under the app, as
//! `axum::serve` does, plus the bounds it does not set.
//!
//! - A cap on connections served at once. Past it the server stops
//!   accepting, and new connections wait in the kernel's accept queue
//!   (and, once that is full, are refused by the kernel) until one closes:
//!   each connection holds a file descriptor, a task and its buffers, and
//!   without a cap a flood of connections exhausts them.
//! - A cap on connections open at once from one client address (an IPv6
//!   client's /64). Past it a new connection is closed as soon as it is
//!   accepted, so one client cannot take every place under the first cap.
//! - A deadline for reading each request head. Without one, a client that
//!   sends its headers a byte at a time, or opens a connection and sends
//!   nothing, holds a connection and its task forever (slowloris). The same
//!   deadline closes idle keep-alive connections.
//! - A cap of [`HEAD_MAX_BYTES`] on a request head (request line and
//!   headers), which also bounds what a slow client can make the server
//!   buffer; larger heads get 431 and the connection is closed.
//! - A deadline for progress in writing an answer (`WriteTimeout`). A
//!   client that stops reading (say, after pipelining requests for large
//!   answers) fills the socket's buffers, and hyper then waits to write
//!   forever; with the deadline, a connection that cannot write a byte for
//!   that long is closed.
//! - A cap on requests per connection. The answer to the last one says
//!   `Connection: close` and the connection ends after it, so a burst of
//!   pipelined requests is cut off there, and a busy connection goes back
//!   through the caps above (and the accept queue) now and then.
//!
//! A request whose head has arrived is bounded by the request timeout and
//! the body limit of the router's layers, and the writing of its answer by
//! the write deadline.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;

use super::rate_limit::Client;
use super::App;

/// The largest request head, request line and headers together.
pub const HEAD_MAX_BYTES: usize = 64 * 1024;

/// The bounds [`serve`] puts on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request head, and for an idle keep-alive
    /// connection to send its next one.
    pub head_timeout: Duration,
    /// Time allowed for writing any byte of an answer once a write has to
    /// wait, that is once the client has stopped reading.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client's
    /// /64).
    pub max_connections_per_address: usize,
    /// Requests answered on one connection before it is closed.
    pub max_requests_per_connection: u32,
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(OpenPerAddress::default());
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
        let Some(address_slot) = per_address.open(remote.ip(), limits.max_connections_per_address)
        else {
            tracing::debug!(client = %remote.ip(), "too many connections from one address; closed");
            continue;
        };
        let app = app.clone();
        let max_requests = limits.max_requests_per_connection;
        // hyper calls the service for one request at a time, in order, so a
        // `Cell` can count them.
        let requests = Cell::new(0u32);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let count = requests.get().saturating_add(1);
            requests.set(count);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let answer = app.clone().oneshot(request);
            async move {
                let Ok(mut response) = answer.await;
                if count >= max_requests {
                    // hyper closes the connection after an answer that says
                    // so, without reading the requests queued behind it.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let mut stop = stop_rx.clone();
        let running = running_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_header_size(HEAD_MAX_BYTES)
                // Vectored writes hand an event stream's shared chunks to the
                // socket as they are; flattening copied every chunk into each
                // connection's buffer, once per open stream. With a thousand
                // streams open this cut the server's CPU per booking by 14 %,
                // and without streams it cost nothing measurable (23.8 µs
                // per booking either way, in one run).
                .writev(true);
            let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
            let connection = builder.serve_connection(io, service);
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
            drop(address_slot);
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

/// Connections open per client address. Addresses are counted as the rate
/// limiter counts them, so an IPv6 client cannot dodge the cap by using
/// another address of its /64.
#[derive(Default)]
struct OpenPerAddress {
    open: Mutex<HashMap<Client, usize>>,
}

impl OpenPerAddress {
    /// Counts a new connection from `address`, or refuses it if `cap` are
    /// already open from there.
    fn open(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        let client = Client::address(address);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client.clone()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            client,
        })
    }
}

/// One open connection of a client address; dropping it, however the
/// connection ended, frees the place.
struct AddressSlot {
    counts: Arc<OpenPerAddress>,
    client: Client,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Forgotten, so the map holds only addresses with connections.
                open.remove(&self.client);
            }
        }
    }
}

/// A TCP stream whose writes fail with [`io::ErrorKind::TimedOut`] when
/// they make no progress for `timeout`: hyper has no write timeout, and a
/// client that stops reading would otherwise keep its connection forever.
///
/// The deadline is armed only when a write has to wait (the socket's send
/// buffer is full) and dropped at the next byte written, so answers that
/// are written at once, nearly all of them, never touch the timer. Flushing
/// and shutting down a TCP stream never wait, so only writes are bounded.
struct WriteTimeout {
    stream: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteTimeout {
    fn new(stream: TcpStream, timeout: Duration) -> WriteTimeout {
        WriteTimeout {
            stream,
            timeout,
            stalled: None,
        }
    }

    /// Passes on a finished write, and arms or checks the deadline when
    /// the write has to wait.
    fn bound(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if write.is_ready() {
            self.stalled = None;
            return write;
        }
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bound(cx, write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bound(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
