//! The little HTTP/1.1 client the webhook sink needs: one POST per
//! connection (`Connection: close`), plain or TLS, with timeouts.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use rustls::ClientConfig;

use super::tls::{self, Conn};

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `https://`: connect with TLS.
    pub tls: bool,
    /// Host name or IP address (IPv6 without its brackets).
    pub host: String,
    /// Port from the URL; default 443 for `https`, 80 for `http`.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `url`; user:password@ is refused (use a header).
    pub fn parse(url: &str) -> anyhow::Result<Url> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            anyhow::bail!("URL {url:?} must start with http:// or https://");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        anyhow::ensure!(
            !authority.contains('@'),
            "URL must not carry credentials (user:password@); put them in the sink's headers"
        );
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("bad port in URL {url:?}"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        anyhow::ensure!(!host.is_empty(), "URL {url:?} has no host");
        Ok(Url {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// Sends one POST and returns the response status.
pub fn post(
    url: &Url,
    tls_cfg: Option<&Arc<ClientConfig>>,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<u16> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} does not resolve", url.host)))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    let mut conn = match (url.tls, tls_cfg) {
        (true, Some(cfg)) => Conn::Tls(Box::new(tls::connect(cfg, &url.host, tcp)?)),
        (true, None) => return Err(io::Error::other("https URL without a TLS configuration")),
        (false, _) => Conn::Plain(tcp),
    };
    let host = if (url.tls && url.port == 443) || (!url.tls && url.port == 80) {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mcp-monitor/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        // Header injection through configuration is refused at the source.
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid header {k:?}"),
            ));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()?;
    let mut r = BufReader::new(conn);
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    // Drain the headers and a bounded body so the server sees a clean close.
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let _ = r.take(64 * 1024).read_to_end(&mut Vec::new());
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://hec.example:8088/services/collector/event?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hec.example", 8088, "/services/collector/event?x=1")
        );
        let u = Url::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("https://user:pw@host/").is_err());
        assert!(Url::parse("http://host:notaport/").is_err());
    }
}
