//! The dashboard's HTTP server loop: bounded in everything a network client controls.
//!
//! - **connections**: at most [`Limits::max_connections`] at once (derived from the process's
//!   file-descriptor limit, so the station's own descriptors — database, programmers, ptys —
//!   are never starved) and at most [`Limits::max_per_peer`] per client address;
//! - when a cap is reached, the connection that has been quiet the longest (first those that
//!   never got an answer: idle sockets, slow-header clients) is closed to make room, so a flood
//!   of idle sockets cannot lock the operator's browser out;
//! - **header timeout**: a request's headers must arrive within [`Limits::header_timeout`];
//! - **idle timeout**: a connection with no bytes either way for [`Limits::idle_timeout`] is
//!   closed (event streams send a keep-alive every 10 s, so they stay);
//! - accept errors (`EMFILE`) pause the loop briefly instead of spinning.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// What the server allows its clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A connection quiet for this long may be closed to make room for a new one (default:
    /// any; the quietest goes, and a fresh connection is never the quietest for long).
    pub evict_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A quarter of the descriptors this process may open, within 16..=512.
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(s, _)| s).unwrap_or(1024);
        let max_connections = (soft / 4).clamp(16, 512) as usize;
        Limits {
            max_connections,
            max_per_peer: (max_connections / 4).max(8),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            evict_after: Duration::ZERO,
        }
    }
}

struct Conn {
    peer: IpAddr,
    /// Milliseconds since the server started, at the last byte read or written.
    last: Arc<AtomicU64>,
    /// Something was written back (a response): not an idle socket.
    answered: Arc<AtomicBool>,
    kill: Arc<Notify>,
}

struct Registry {
    next: u64,
    conns: HashMap<u64, Conn>,
}

/// A TCP stream that records when bytes last moved.
struct Tracked {
    inner: TcpStream,
    epoch: Instant,
    last: Arc<AtomicU64>,
    answered: Arc<AtomicBool>,
}

impl Tracked {
    fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
            self.answered.store(true, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Serve `app` on `listener` until `shutdown` turns true; then in-flight requests get a
/// moment to finish and every connection is closed.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let epoch = Instant::now();
    let registry = Arc::new(Mutex::new(Registry { next: 0, conns: HashMap::new() }));
    let mut accept_error_logged = false;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept:
                    // wait a little instead of spinning on the error.
                    if !accept_error_logged {
                        tracing::warn!(error = %e, "dashboard: accept failed; pausing new connections briefly");
                        accept_error_logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        accept_error_logged = false;
        let now = epoch.elapsed().as_millis() as u64;
        let conn = {
            let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
            let peer_ip = peer.ip();
            let per_peer = reg.conns.values().filter(|c| c.peer == peer_ip).count();
            let full = reg.conns.len() >= limits.max_connections;
            if full || per_peer >= limits.max_per_peer {
                // Close the quietest connection (of this peer when only the peer is over its
                // cap), preferring sockets that never got an answer.
                let victim = reg
                    .conns
                    .iter()
                    .filter(|(_, c)| full || c.peer == peer_ip)
                    .filter(|(_, c)| now.saturating_sub(c.last.load(Ordering::Relaxed)) >= limits.evict_after.as_millis() as u64)
                    .min_by_key(|(_, c)| (c.answered.load(Ordering::Relaxed), c.last.load(Ordering::Relaxed)))
                    .map(|(id, _)| *id);
                match victim.and_then(|id| reg.conns.remove(&id)) {
                    Some(v) => v.kill.notify_one(),
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
            let id = reg.next;
            reg.next += 1;
            let c = Conn {
                peer: peer_ip,
                last: Arc::new(AtomicU64::new(now)),
                answered: Arc::new(AtomicBool::new(false)),
                kill: Arc::new(Notify::new()),
            };
            let handles = (id, c.last.clone(), c.answered.clone(), c.kill.clone());
            reg.conns.insert(id, c);
            handles
        };
        let (id, last, answered, kill) = conn;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Tracked { inner: stream, epoch, last: last.clone(), answered });
        let registry = registry.clone();
        let mut shutdown = shutdown.clone();
        let svc = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            let idle = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let quiet = (epoch.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
                    if quiet >= limits.idle_timeout.as_millis() as u64 {
                        break;
                    }
                }
            };
            let stopping = async move {
                let _ = shutdown.wait_for(|v| *v).await;
            };
            let graceful = tokio::select! {
                _ = &mut conn => false,
                _ = kill.notified() => false,
                _ = idle => false,
                _ = stopping => true,
            };
            if graceful {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut conn).await;
            }
            registry.lock().unwrap_or_else(|e| e.into_inner()).conns.remove(&id);
        });
    }
}
