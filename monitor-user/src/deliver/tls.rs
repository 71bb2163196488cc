//! TLS client set-up shared by the syslog (RFC 5425) and webhook sinks:
//! rustls with the ring provider, roots from a PEM bundle.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
};

use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer};

/// The system CA bundle on Debian and most distributions.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting the certificates of `ca_file` (PEM), or
/// of the system bundle.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the CA bundle {}: {e}.\nFix: install ca-certificates, or set the sink's ca_file",
                path.display()
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    anyhow::ensure!(added > 0, "{} holds no usable CA certificate", path.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A TLS stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Performs the handshake with `server_name` over `tcp`.
pub fn connect(cfg: &Arc<ClientConfig>, server_name: &str, tcp: TcpStream) -> io::Result<TlsStream> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad TLS server name {server_name:?}: {e}"),
        )
    })?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    // Complete the handshake now, so certificate errors surface here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// A plain or TLS connection.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (rustls client) over TCP.
    Tls(Box<TlsStream>),
}

impl Conn {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}
