//! Both ends of a connection on this host: the server's view of a
//! connection names the local client process at its other end.
//!
//! Through the connection's tuple when the kernel named both sockets, else
//! (TLS, where a client that was not tracked during its handshake writes
//! before the kernel names its socket) through the request body both ends
//! carry, in either order: two CPUs share one ring, so the server's read can
//! reach the agent before the client's write.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::http_wire::{body_digest, ConnId, Endpoint};
use crate::observation::ProcKey;

/// Requests kept for pairing by body, per order, and for how long.
const MAX_UNPAIRED: usize = 256;
const PAIRING_NS: u64 = 10 * 1_000_000_000;

/// The local ends of connections, and requests waiting for the other end.
#[derive(Default)]
pub(super) struct LocalEnds {
    /// Client processes by their connection's (local, remote) end.
    clients: FxHashMap<(Endpoint, Endpoint), ProcKey>,
    /// Server processes by the local end of connections they serve.
    servers: FxHashMap<Endpoint, ProcKey>,
    /// Requests clients wrote on connections whose ends cannot pair them:
    /// (body hash, client, time).
    written: VecDeque<(u64, ProcKey, u64)>,
    /// Requests servers read on such connections before the client's write
    /// came: (body hash, the server's connection, time).
    read_first: VecDeque<(u64, ConnId, u64)>,
    /// TLS requests whose server named their client otherwise (the ends,
    /// or the connection's earlier pairing) before the client's write
    /// came: (body hash, client, time). That write pairs nothing.
    named_first: VecDeque<(u64, ProcKey, u64)>,
}

impl LocalEnds {
    /// A connection's ends, once the kernel named them, for the process
    /// that `serves` it or calls through it. At most `max` of each are
    /// kept (all forgotten past it: connections come back with traffic).
    pub(super) fn register(&mut self, ends: (Endpoint, Endpoint), proc: ProcKey, serves: bool, max: usize) {
        if self.clients.len() >= max {
            self.clients.clear();
        }
        if self.servers.len() >= max {
            self.servers.clear();
        }
        if serves {
            self.servers.insert(ends.0, proc);
        } else {
            self.clients.insert(ends, proc);
        }
    }

    /// The local client of the connection a server sees as `ends`.
    pub(super) fn client_of(&self, (local, remote): (Endpoint, Endpoint)) -> Option<ProcKey> {
        self.clients.get(&(remote, local)).copied()
    }

    /// A local process serves the end `remote`.
    pub(super) fn serves(&self, remote: &Endpoint) -> bool {
        self.servers.contains_key(remote)
    }

    /// A client wrote `body` on a connection its ends cannot pair. Returns
    /// the server connection that already read it, to be named now: the one
    /// read within the last seconds whose connection still `wants` a client.
    /// When none or several do (identical bodies are common:
    /// `notifications/initialized`), the write waits for its server's read.
    pub(super) fn client_wrote(
        &mut self,
        body: &[u8],
        client: ProcKey,
        ts_ns: u64,
        wants: impl Fn(ConnId) -> bool,
    ) -> Option<ConnId> {
        let digest = body_digest(body);
        let mut candidates = self
            .read_first
            .iter()
            .enumerate()
            .filter(|(_, (d, c, t))| *d == digest && t.abs_diff(ts_ns) <= PAIRING_NS && wants(*c))
            .map(|(i, _)| i);
        if let (Some(i), None) = (candidates.next(), candidates.next()) {
            return self.read_first.remove(i).map(|(_, conn, _)| conn);
        }
        let named = self
            .named_first
            .iter()
            .position(|(d, c, t)| *d == digest && *c == client && t.abs_diff(ts_ns) <= PAIRING_NS);
        if let Some(i) = named {
            self.named_first.remove(i);
            return None;
        }
        if self.written.len() >= MAX_UNPAIRED {
            self.written.pop_front();
        }
        self.written.push_back((digest, client, ts_ns));
        None
    }

    /// A server read the TLS request `body` from `client`, named by the
    /// connection's ends or its earlier pairing. The client's write of it
    /// (before or after this, in ring order) is this request, and must not
    /// wait in `written`: every TLS request of a client is offered for
    /// pairing by body (its socket may not be named yet), and one left
    /// there would pair the next server read of the same body (`tools/list`
    /// with the same id, `notifications/initialized`) within the pairing
    /// window with this client instead of that read's own.
    pub(super) fn server_named(&mut self, body: &[u8], client: ProcKey, ts_ns: u64) {
        let digest = body_digest(body);
        let waiting = self
            .written
            .iter()
            .position(|(d, c, t)| *d == digest && *c == client && ts_ns.saturating_sub(*t) <= PAIRING_NS);
        if let Some(i) = waiting {
            self.written.remove(i);
            return;
        }
        if self.named_first.len() >= MAX_UNPAIRED {
            self.named_first.pop_front();
        }
        self.named_first.push_back((digest, client, ts_ns));
    }

    /// A server read `body` on `conn`, whose client its ends cannot name:
    /// the client that wrote it within the last seconds (taken out of the
    /// list), else, when the client may be on this host and the ends cannot
    /// pair them (`remember`: ends unknown, or TLS from a loopback peer), the
    /// read waits for that client's write.
    pub(super) fn server_read(&mut self, body: &[u8], conn: ConnId, ts_ns: u64, remember: bool) -> Option<ProcKey> {
        let digest = body_digest(body);
        // The oldest: identical bodies of two clients (the same agent
        // started twice) reach their servers in the order they were
        // written, as far as one can tell.
        let found = self
            .written
            .iter()
            .position(|(d, _, t)| *d == digest && ts_ns.saturating_sub(*t) <= PAIRING_NS);
        if let Some(i) = found {
            return self.written.remove(i).map(|(_, client, _)| client);
        }
        if !remember {
            return None;
        }
        if self.read_first.len() >= MAX_UNPAIRED {
            self.read_first.pop_front();
        }
        self.read_first.push_back((digest, conn, ts_ns));
        None
    }
}
