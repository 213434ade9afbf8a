//! The accept loop: HTTP/1.1 connections served by hyper, each watched so that no
//! client can hold one for long without sending a request (invariant 7: bounded
//! resources). Routing, the concurrency bound and the per-request limits are the
//! router's (`http::guard`); this module only owns connections.
//!
//! A connection is in one of three phases, tracked from its reads and its requests:
//! - *head*: a request's headers are expected (a new connection, or bytes of the next
//!   request arrived on a kept-alive one): closed after `header_read`;
//! - *idle*: kept alive with nothing sent since the last answer: closed after `idle`;
//! - *busy*: a request is being handled: the router's request and body timeouts apply.
//!
//! (hyper's own `header_read_timeout` starts as soon as a connection is idle, so it
//! cannot tell a slow header from a quiet keep-alive connection: we keep both here.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection limits (`[server]` `header_read_timeout_secs`, `idle_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting,
/// closes idle connections, lets requests in flight finish, and returns once every
/// connection is closed.
pub(crate) async fn serve(listener: TcpListener, router: Router, timeouts: Timeouts, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve_connection(tcp, router.clone(), timeouts, stop.clone()));
            }
            // Out of file descriptors, or a connection reset before it was accepted:
            // keep serving the others; back off a moment so a full table can drain.
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(tcp: TcpStream, router: Router, timeouts: Timeouts, stop: CancellationToken) {
    let phase = Arc::new(Watch::new());
    let io = TokioIo::new(Watched { inner: tcp, phase: phase.clone() });
    let router = TowerToHyperService::new(router);
    let requests = phase.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // Busy until the answer is ready (also when the future is dropped unfinished).
        let busy = Busy::begin(requests.clone());
        let fut = hyper::service::Service::call(&router, req.map(axum::body::Body::new));
        async move {
            let resp = fut.await;
            drop(busy);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Our watchdog below replaces hyper's (which has no timer here anyway).
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let expired = expired(&phase, timeouts);
    tokio::pin!(expired);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                // Idle connections close now; a request in flight is answered first.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            why = &mut expired => {
                // Dropping the connection closes the socket.
                tracing::debug!(why, "closing a connection");
                return;
            }
        }
    }
}

/// Resolves when the connection has been in its current phase for too long.
///
/// The phase changes three times a request and wakes nothing: the watchdog sleeps
/// until the deadline of the phase it last saw, and never longer than the shorter of
/// the two limits, then looks again. So a phase that began meanwhile (the headers of a
/// request on a connection that was idle, whose limit is shorter) is seen before its
/// own deadline and ends on time.
async fn expired(phase: &Watch, t: Timeouts) -> &'static str {
    let every = t.header_read.min(t.idle);
    loop {
        let now = Instant::now();
        let (deadline, why) = match phase.now() {
            Phase::Head(since) => (Some(since + t.header_read), "headers not received within header_read_timeout_secs"),
            Phase::Idle(since) => (Some(since + t.idle), "idle for idle_timeout_secs"),
            Phase::Busy(_) => (None, ""),
        };
        if deadline.is_some_and(|d| d <= now) {
            return why;
        }
        tokio::time::sleep_until(deadline.map_or(now + every, |d| d.min(now + every))).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request's headers, since then.
    Head(Instant),
    /// Kept alive, nothing received since the last answer, since then.
    Idle(Instant),
    /// Requests being handled.
    Busy(usize),
}

/// A connection's phase, shared by its socket, its requests and its watchdog (all on
/// the connection's task, so the lock is never contended).
struct Watch(std::sync::Mutex<Phase>);

impl Watch {
    fn new() -> Watch {
        Watch(std::sync::Mutex::new(Phase::Head(Instant::now())))
    }

    fn now(&self) -> Phase {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn change(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut p = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *p = f(*p);
    }
}

/// A request being handled on a connection; back to idle when the last one ends.
struct Busy(Arc<Watch>);

impl Busy {
    fn begin(phase: Arc<Watch>) -> Busy {
        phase.change(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        });
        Busy(phase)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.change(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// The socket, noting when bytes of a new request arrive on an idle connection.
struct Watched {
    inner: TcpStream,
    phase: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.change(|p| match p {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                p => p,
            });
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
