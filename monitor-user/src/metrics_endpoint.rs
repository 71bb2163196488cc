//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz` (probes attached).

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::Metrics;

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is
/// dropped. A deliberately small HTTP/1.1 responder: one request per
/// connection, bounded request size, no request bodies.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for metrics on {addr}: {e}. Pick another address with --metrics-addr")
    })?;
    log::info!("metrics on http://{addr}/metrics");
    loop {
        let (mut sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("metrics accept failed: {e}");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    let r = sock.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = buf[..n].split(|&b| b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
                ("GET", "/readyz") if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_owned())
                }
                ("GET", "/readyz") => (
                    "503 Service Unavailable",
                    "text/plain",
                    "probes not attached yet\n".to_owned(),
                ),
                ("GET", _) => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
                _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_readiness() {
        let m = Metrics::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        tokio::spawn(serve(addr, m.clone()));
        let get = |path: &'static str| async move {
            for _ in 0..50 {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    return out;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("no server");
        };
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        m.ready.store(true, Ordering::Relaxed);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("mcp_monitor_sessions_active"));
    }
}
