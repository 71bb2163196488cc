//! Stdio streams: the bytes processes read from pipes and unix sockets,
//! framed into lines, judged MCP or not, and tied to sessions by the role of
//! the reader (the server reads client-to-server messages).
//!
//! A stream starts *pending*; valid JSON-RPC confirms it; up to
//! `max_prelude_frames` lines that are not JSON (a banner) are skipped
//! first, JSON that is not JSON-RPC rejects it at once. A rejected stream is
//! judged afresh when the kernel resumes it, within its budget. A stream
//! whose session only its writer can name waits for the writer's notice
//! (see [`super::writer_wait`]).

use monitor_common::{chunk_flags, Direction, FdKind};
use rustc_hash::FxHashMap;

use super::{
    make_room,
    sessions::RecentSet,
    writer_wait::{ChannelKey, Outcome, Waiting, WriterWaits},
    Control, KernelStream, Pipeline, Route, Sink,
};
use crate::{
    event::Flow,
    framing::{Frame, LineFramer},
    jsonrpc::{self, Message},
    mcp::{self, Origin},
    observation::{Chunk, ProcKey},
    relook::{self, RelookBudget},
    session::SessionKey,
};

/// The stdio stage's tables.
#[derive(Default)]
pub(super) struct StdioTables {
    /// Streams by (process, fd, inode, direction).
    pub(super) streams: FxHashMap<StreamId, Stream>,
    /// Who writes into a channel, from writer notices, keyed by (is_pipe,
    /// channel).
    pub(super) writers: FxHashMap<ChannelKey, Writer>,
    /// Processes that exited lately: a writer notice or an identity that
    /// comes after its process's exit (the leader's exit is reported while
    /// another thread can still be inside a write) must not bring it back.
    pub(super) exited: RecentSet<ProcKey>,
    /// Pipes whose named writer exited lately, until another writer is
    /// named. A writer that writes and exits before its reader reads
    /// (`printf ... | server`) is forgotten at its exit, so the stream read
    /// after it has no writer; it has had its notice, and no other is
    /// coming for those bytes: the stream does not wait. Pipes only: a
    /// socket's channel is its address, which the kernel reuses for
    /// unrelated sockets at once.
    pub(super) writer_gone: RecentSet<ChannelKey>,
    /// Streams whose messages wait for their writer's notice.
    pub(super) waits: WriterWaits,
}

/// The writer of a channel, as its notice named it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Writer {
    pub(super) proc: ProcKey,
    pub(super) fd: i32,
    /// When the notice came (evictions take the oldest).
    pub(super) ts_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct StreamId {
    pub(super) proc: ProcKey,
    pub(super) fd: i32,
    pub(super) inode: u64,
    pub(super) direction: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Pending,
    Confirmed,
    Rejected,
}

/// Which side of a session the reading process is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The reader is the server: it reads client-to-server messages.
    ServerInbound,
    /// The reader is the client.
    ClientInbound,
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: StreamId,
    pub(super) kind: FdKind,
    pub(super) channel: u64,
    pub(super) peer: u64,
    pub(super) framer: LineFramer,
    pub(super) verdict: Verdict,
    /// Joined mid-stream: the first partial line is expected, not an error.
    pub(super) expect_partial: bool,
    pub(super) role: Option<Role>,
    pub(super) session: Option<SessionKey>,
    pub(super) pending_bytes: u64,
    /// Lines that were not JSON-RPC before the first that was.
    pub(super) prelude: u32,
    pub(super) relooks: RelookBudget,
    pub(super) last_ns: u64,
    /// The stream has waited for its writer once; its messages never wait again.
    pub(super) waited: bool,
}

impl StreamId {
    pub(super) fn kernel(&self) -> KernelStream {
        KernelStream {
            pid: self.proc.pid,
            fd: self.fd,
            inode: self.inode,
            direction: if self.direction == Direction::Ingress as u8 {
                Direction::Ingress
            } else {
                Direction::Egress
            },
        }
    }
}

/// What judging a rejected stream afresh decided for one of its chunks.
enum Relook {
    /// The kernel resumed it and the budget allows: a new stream, judged
    /// from this chunk on.
    Afresh(Stream),
    /// Still not MCP: the chunk is dropped and the stream kept as it was.
    StillRejected(Stream),
}

/// The reader's role when `msg`'s method tells it: a method only clients
/// send is read by a server, one only servers send by a client.
fn told_role(msg: &Message<'_>) -> Option<Role> {
    match msg.method.as_deref().and_then(mcp::lookup)?.origin {
        Origin::Client => Some(Role::ServerInbound),
        Origin::Server => Some(Role::ClientInbound),
        Origin::Either => None,
    }
}

fn first_json_byte(data: &[u8]) -> Option<u8> {
    data.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

impl Pipeline {
    /// A chunk of local IPC: framed on its stream, where it is read.
    pub(super) fn on_stdio_chunk(&mut self, c: Chunk, sink: &mut impl Sink) {
        // Local IPC is captured where it is read.
        if c.direction != Direction::Ingress || !c.fd_kind.is_local_ipc() {
            return;
        }
        let id = StreamId {
            proc: c.proc,
            fd: c.fd,
            inode: c.inode,
            direction: c.direction as u8,
        };
        let mut stream = match self.stdio.streams.remove(&id) {
            Some(s) if s.verdict == Verdict::Rejected => match self.relook_stream(s, &c, sink) {
                Relook::Afresh(fresh) => fresh,
                Relook::StillRejected(s) => return self.insert_stream(s, sink),
            },
            Some(s) => s,
            None => self.new_stream(id, &c),
        };
        stream.last_ns = c.ts_ns;
        if stream.verdict != Verdict::Rejected {
            if stream.verdict == Verdict::Pending {
                stream.pending_bytes += c.data.len() as u64;
            }
            // The framer lives in the stream; lend it out so frame handling
            // can borrow the pipeline.
            let mut framer = std::mem::replace(&mut stream.framer, LineFramer::new(1));
            if c.flag(chunk_flags::GAP_BEFORE) {
                // Records of this stream were lost (ring buffer full).
                let aligned = matches!(first_json_byte(&c.data), Some(b'{' | b'['));
                framer.hole(aligned, |frame| self.on_frame(&mut stream, frame, c.ts_ns, sink));
            }
            framer.push(&c.data, |frame| self.on_frame(&mut stream, frame, c.ts_ns, sink));
            if c.has_gap() {
                framer.gap();
            }
            // A stream rejected in this chunk frees its buffer.
            if stream.verdict != Verdict::Rejected {
                stream.framer = framer;
            }
            if stream.verdict == Verdict::Pending && stream.pending_bytes > self.cfg.max_pending_stream_bytes {
                self.reject(&mut stream, "no_frame", sink);
            }
        }
        self.insert_stream(stream, sink);
    }

    /// A chunk of a stream judged not MCP: judged afresh when the kernel
    /// resumed it, within the stream's budget. Chunks that were already on
    /// their way when the stream was ignored are dropped: resuming on them
    /// would have the kernel capture a lookalike stream again and again
    /// (line streams write fast; connections, see `relook_conn`, do not).
    fn relook_stream(&mut self, mut old: Stream, c: &Chunk, sink: &mut impl Sink) -> Relook {
        let resumed = c.flag(chunk_flags::RESUMED);
        if !resumed {
            return Relook::StillRejected(old);
        }
        if !old.relooks.take(c.ts_ns, self.cfg.max_relooks_per_minute) {
            self.metrics
                .pipeline
                .stream_relooks
                .with_label_values(&["over_budget"])
                .inc();
            if old.relooks.first_refusal() {
                self.quiet(&[old.id.kernel()], old.relooks.window_end(), sink);
            }
            return Relook::StillRejected(old);
        }
        let budget = old.relooks;
        self.metrics
            .pipeline
            .stream_relooks
            .with_label_values(&["resumed"])
            .inc();
        let mut fresh = self.new_stream(old.id, c);
        fresh.relooks = budget;
        Relook::Afresh(fresh)
    }

    pub(super) fn new_stream(&mut self, id: StreamId, c: &Chunk) -> Stream {
        // A stream that starts with a JSON value is aligned on a message;
        // anything else was joined mid-message and resyncs on a newline.
        let aligned = c.flag(chunk_flags::NEW_STREAM) && matches!(first_json_byte(&c.data), Some(b'{' | b'['));
        Stream {
            id,
            kind: c.fd_kind,
            channel: c.channel,
            peer: c.peer,
            framer: if aligned {
                LineFramer::new(self.cfg.max_frame)
            } else {
                LineFramer::new_resync(self.cfg.max_frame)
            }
            .with_budget(&self.budget),
            verdict: Verdict::Pending,
            expect_partial: !aligned,
            prelude: 0,
            relooks: RelookBudget::default(),
            role: None,
            session: None,
            pending_bytes: 0,
            last_ns: c.ts_ns,
            waited: false,
        }
    }

    /// Keeps `stream`, making room first: the messages of an evicted
    /// stream that waited for its writer go on without it.
    pub(super) fn insert_stream(&mut self, stream: Stream, sink: &mut impl Sink) {
        let evicted = make_room(
            &mut self.stdio.streams,
            self.cfg.max_streams,
            |s| s.last_ns,
            &self.metrics,
        );
        for (id, mut old) in evicted {
            if let Some(w) = self.stdio.waits.take(&id) {
                self.release_waiting(&mut old, w, Outcome::Evicted, sink);
            }
        }
        self.stdio.streams.insert(stream.id, stream);
    }

    pub(super) fn reject(&mut self, stream: &mut Stream, reason: &str, sink: &mut impl Sink) {
        stream.verdict = Verdict::Rejected;
        stream.framer = LineFramer::new(1); // free the buffer
        self.metrics
            .pipeline
            .streams
            .with_label_values(&[&format!("rejected:{reason}")])
            .inc();
        sink.control(Control::IgnoreStream(stream.id.kernel()));
    }

    pub(super) fn on_frame(&mut self, stream: &mut Stream, frame: Frame<'_>, ts_ns: u64, sink: &mut impl Sink) {
        if stream.verdict == Verdict::Rejected {
            // Rejected earlier in this chunk: a later line that starts like
            // MCP is judged afresh (the kernel only looks again at the
            // start of the next transfer).
            let Frame::Line(bytes) = &frame else { return };
            if !relook::looks_like_mcp(bytes, self.cfg.discovery_window) {
                return;
            }
            if !stream.relooks.take(ts_ns, self.cfg.max_relooks_per_minute) {
                self.metrics
                    .pipeline
                    .stream_relooks
                    .with_label_values(&["over_budget"])
                    .inc();
                if stream.relooks.first_refusal() {
                    self.quiet(&[stream.id.kernel()], stream.relooks.window_end(), sink);
                }
                return;
            }
            self.metrics
                .pipeline
                .stream_relooks
                .with_label_values(&["resumed"])
                .inc();
            sink.control(Control::CaptureStream(stream.id.kernel()));
            stream.verdict = Verdict::Pending;
            stream.prelude = 0;
            stream.pending_bytes = 0;
            stream.role = None;
            stream.session = None;
        }
        match frame {
            Frame::Oversized(_) => {
                self.metrics
                    .pipeline
                    .frame_errors
                    .with_label_values(&["oversized"])
                    .inc();
                if stream.verdict == Verdict::Pending {
                    self.reject(stream, "oversized", sink);
                }
            }
            Frame::Damaged(_) => {
                if std::mem::take(&mut stream.expect_partial) {
                    return;
                }
                self.metrics
                    .pipeline
                    .frame_errors
                    .with_label_values(&["capture_gap"])
                    .inc();
            }
            Frame::OverBudget(n) => {
                // Not the stream's fault: no verdict on it.
                self.metrics
                    .pipeline
                    .frame_errors
                    .with_label_values(&["memory_budget"])
                    .inc();
                log::debug!(
                    "pid {} fd {}: skipped a {n}-byte line: partial messages hold {} of {} bytes",
                    stream.id.proc.pid,
                    stream.id.fd,
                    self.budget.used(),
                    self.budget.max()
                );
            }
            Frame::NotJson | Frame::Binary => {
                // A line that cannot be JSON, held nowhere: text that starts
                // otherwise (a banner written in pieces), or a binary stream
                // (libuv's signal pipe, an event loop's wake-ups). Before
                // any JSON-RPC it is a prelude frame; after, a frame error.
                let reason = if frame == Frame::Binary { "binary" } else { "not_json" };
                stream.expect_partial = false;
                log::debug!(
                    "pid {} fd {}: a line that cannot be JSON ({reason}, {:?})",
                    stream.id.proc.pid,
                    stream.id.fd,
                    stream.kind
                );
                if stream.verdict == Verdict::Pending {
                    self.prelude(stream, reason, sink);
                } else {
                    self.metrics.pipeline.frame_errors.with_label_values(&[reason]).inc();
                }
            }
            Frame::Line(bytes) => {
                stream.expect_partial = false;
                match jsonrpc::decode(bytes, &self.cfg.limits) {
                    Err(e) => {
                        self.metrics
                            .pipeline
                            .frame_errors
                            .with_label_values(&[e.reason()])
                            .inc();
                        if stream.verdict == Verdict::Pending {
                            self.prelude(stream, e.reason(), sink);
                        } else {
                            log::debug!("pid {} fd {}: skipped a frame: {e}", stream.id.proc.pid, stream.id.fd);
                        }
                    }
                    Ok(decoded) => {
                        if stream.verdict == Verdict::Pending {
                            stream.verdict = Verdict::Confirmed;
                            self.metrics.pipeline.streams.with_label_values(&["confirmed"]).inc();
                        }
                        for msg in decoded.into_messages() {
                            self.on_message(stream, msg, ts_ns, sink);
                            if stream.verdict == Verdict::Rejected {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A frame of a stream not judged yet that is not JSON-RPC. Streams
    /// are not judged on their first lines: a banner, or garbage written to
    /// blind the monitor, may come before the JSON-RPC (bounded, and
    /// counted). JSON that is not JSON-RPC (structured logs) is judged at
    /// once: such streams write fast, and until the verdict every line
    /// costs a capture. A rejected stream is looked at again when the
    /// kernel sees a transfer that starts like JSON.
    fn prelude(&mut self, stream: &mut Stream, reason: &str, sink: &mut impl Sink) {
        stream.prelude += 1;
        self.metrics.pipeline.prelude_frames.inc();
        if stream.prelude > self.cfg.max_prelude_frames || reason == "not_jsonrpc" {
            self.reject(stream, reason, sink);
        }
    }

    pub(super) fn writer_of(&self, stream: &Stream) -> Option<(ProcKey, i32)> {
        self.stdio
            .writers
            .get(&(stream.kind == FdKind::Pipe, stream.channel))
            .map(|w| (w.proc, w.fd))
    }

    /// Conversation part of a session key. A server's stdio (pipes, or the
    /// socketpairs Node/libuv hands its children, one per fd) is a single
    /// session: 0. Any other socket, e.g. a server accepting several clients
    /// on a unix socket, is its own session, keyed by the server-side socket.
    /// `server_fd` is the server's descriptor for this stream, if known.
    pub(super) fn conversation(stream: &Stream, role: Role, server_fd: Option<i32>) -> u64 {
        if stream.kind == FdKind::Pipe || matches!(server_fd, Some(0 | 1)) {
            return 0;
        }
        match role {
            Role::ServerInbound => stream.channel,
            Role::ClientInbound => stream.peer,
        }
    }

    pub(super) fn infer_role(&self, stream: &Stream, msg: &Message<'_>) -> Role {
        if let Some(role) = told_role(msg) {
            return role;
        }
        // A message that does not tell (ping, progress, a response): the
        // stream belongs to a session already known from the other side.
        let (k, peer) = self.session_key(stream, Role::ClientInbound);
        if k.server.is_some() && self.existing_session(stream, k, peer).is_some() {
            return Role::ClientInbound;
        }
        let (k, peer) = self.session_key(stream, Role::ServerInbound);
        if self.existing_session(stream, k, peer).is_some() {
            return Role::ServerInbound;
        }
        // Last resort, the stdio convention: servers read their stdin.
        if stream.id.fd == 0 {
            Role::ServerInbound
        } else {
            Role::ClientInbound
        }
    }

    /// The session `key` stands for, if there is one already. Over unix
    /// sockets the two directions of one stdio session can cross on two
    /// sockets: node gives its child a socketpair per descriptor, and a
    /// server that reads and writes copies of them (the Python SDK 2.x
    /// moves stdin and stdout to fds 6 and 7) is keyed by its inbound
    /// socket on one side and its outbound one on the other. A key not
    /// found is then the session of the same server and client processes.
    pub(super) fn existing_session(
        &self,
        stream: &Stream,
        key: SessionKey,
        peer: Option<ProcKey>,
    ) -> Option<SessionKey> {
        if self.sessions.contains_key(&key) {
            return Some(key);
        }
        if stream.kind != FdKind::UnixStream || key.transport_kind != 0 {
            return None;
        }
        // `peer` is the client in both roles: the writer of a server's
        // inbound stream, the reader of a client's.
        let (server, client) = (key.server?, peer?);
        self.sessions
            .values()
            .filter(|st| {
                let s = &st.session;
                s.key.transport_kind == 0
                    && s.key.server == Some(server)
                    && s.key.conversation != 0
                    && s.client == Some(client)
            })
            .min_by_key(|st| st.session.key.conversation)
            .map(|st| st.session.key)
    }

    /// The session a stream belongs to in `role`, and the process at the
    /// other end when known.
    pub(super) fn session_key(&self, stream: &Stream, role: Role) -> (SessionKey, Option<ProcKey>) {
        let writer = self.writer_of(stream);
        let key = match role {
            Role::ServerInbound => SessionKey {
                transport_kind: 0,
                server: Some(stream.id.proc),
                conversation: Self::conversation(stream, role, Some(stream.id.fd)),
            },
            Role::ClientInbound => match writer {
                Some((w, wfd)) => SessionKey {
                    transport_kind: 0,
                    server: Some(w),
                    conversation: Self::conversation(stream, role, Some(wfd)),
                },
                None => SessionKey {
                    transport_kind: 0,
                    server: None,
                    conversation: stream.channel,
                },
            },
        };
        let peer = match role {
            Role::ServerInbound => writer.map(|(w, _)| w),
            Role::ClientInbound => Some(stream.id.proc),
        };
        (key, peer)
    }

    /// One decoded message of `stream`: routed to its session, or held
    /// while the stream waits for its writer.
    pub(super) fn on_message(&mut self, stream: &mut Stream, msg: Message<'_>, ts_ns: u64, sink: &mut impl Sink) {
        if self.waits_for_writer(stream) {
            let channel = (stream.kind == FdKind::Pipe, stream.channel);
            let server_inbound = told_role(&msg).map(|r| r == Role::ServerInbound);
            if self
                .stdio
                .waits
                .push(stream.id, channel, msg.raw, server_inbound, ts_ns, &self.budget)
            {
                return;
            }
            self.stop_waiting(stream, Outcome::Full, sink);
            if stream.verdict == Verdict::Rejected {
                return;
            }
        }
        self.route_message(stream, msg, ts_ns, sink);
    }

    /// Must the next message of `stream` wait for its writer (see
    /// [`super::writer_wait`])? Yes while earlier ones wait; otherwise
    /// when the stream has not waited yet, has no session yet and its
    /// writer is unknown (not named, or named and exited since). The writer is the server of a client's inbound
    /// stream, so its session, and the client of a server's (its identity
    /// in every event, and the join of the two directions of a server that
    /// reads and writes copies of two socketpairs).
    fn waits_for_writer(&self, stream: &Stream) -> bool {
        if !self.stdio.waits.is_empty() && self.stdio.waits.holds(&stream.id) {
            return true;
        }
        !stream.waited
            && self.cfg.writer_wait_ns != 0
            && stream.session.is_none()
            && self.writer_of(stream).is_none()
            && !self
                .stdio
                .writer_gone
                .contains((stream.kind == FdKind::Pipe, stream.channel))
    }

    /// The messages of `stream` that wait for its writer go on now; the
    /// stream waits no more.
    pub(super) fn stop_waiting(&mut self, stream: &mut Stream, outcome: Outcome, sink: &mut impl Sink) {
        stream.waited = true;
        if let Some(w) = self.stdio.waits.take(&stream.id) {
            self.release_waiting(stream, w, outcome, sink);
        }
    }

    /// Lets the messages of streams taken from the waits go on, each stream
    /// in turn; those of a stream that is gone (never, as exits and
    /// evictions release first) are lost, and counted. Returns the sessions
    /// of the streams their messages showed not to be MCP.
    pub(super) fn release_streams(
        &mut self,
        taken: Vec<(StreamId, Waiting)>,
        outcome: Outcome,
        sink: &mut impl Sink,
    ) -> Vec<SessionKey> {
        let mut not_mcp = Vec::new();
        for (id, w) in taken {
            match self.stdio.streams.remove(&id) {
                Some(mut stream) => {
                    self.release_waiting(&mut stream, w, outcome, sink);
                    if stream.verdict == Verdict::Rejected {
                        not_mcp.extend(stream.session);
                    }
                    self.stdio.streams.insert(id, stream);
                }
                None => self
                    .metrics
                    .pipeline
                    .state_evictions
                    .with_label_values(&["held_event"])
                    .inc_by(w.messages.len() as u64),
            }
        }
        not_mcp
    }

    /// The waiting messages of `stream` go on, each as the line it came in
    /// would have: a stream rejected on the way judges the rest afresh
    /// (see `on_frame`).
    fn release_waiting(&mut self, stream: &mut Stream, w: Waiting, outcome: Outcome, sink: &mut impl Sink) {
        stream.waited = true;
        self.metrics
            .pipeline
            .writer_waits
            .with_label_values(&[outcome.label()])
            .inc();
        for (raw, ts_ns) in &w.messages {
            // Each was decoded once already; decoding again is the price of
            // not keeping borrowed messages.
            self.on_frame(stream, Frame::Line(raw), *ts_ns, sink);
        }
    }

    /// Before a message from `server` goes to its session, the messages
    /// waiting on streams that server reads go on (without their writer
    /// if it is still unknown): they came first, and this one may answer
    /// them. A client writes and reads on one thread, so its notice comes
    /// before it reads the answer; a client whose write and read run on
    /// two threads need not.
    /// Only the streams that carry client-to-server messages go (see
    /// `WriterWaits::take_server_inbound`): a server that is also a client
    /// of another server (a proxy) has that server's answers waiting too,
    /// which must keep waiting for their own writer. Returns the sessions
    /// the released streams showed not to be MCP.
    fn release_overtaken(&mut self, server: ProcKey, sink: &mut impl Sink) -> Vec<SessionKey> {
        let taken = self.stdio.waits.take_server_inbound(server);
        self.release_streams(taken, Outcome::Overtaken, sink)
    }

    /// One message of `stream` to its session.
    fn route_message(&mut self, stream: &mut Stream, msg: Message<'_>, ts_ns: u64, sink: &mut impl Sink) {
        let role = match stream.role {
            Some(r) => r,
            None => {
                let r = self.infer_role(stream, &msg);
                stream.role = Some(r);
                r
            }
        };
        // (The table of waits is empty but for moments: no lookup then.)
        let not_mcp = match role {
            Role::ClientInbound if !self.stdio.waits.is_empty() => match self.writer_of(stream) {
                Some((server, _)) => self.release_overtaken(server, sink),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        // Recompute while the server is unknown: a writer notice may have
        // named it since.
        let (computed, peer) = self.session_key(stream, role);
        // Keep the session once the server is known; recompute while it is
        // not (a writer notice may have named it since).
        let key = match stream.session {
            Some(k) if k.server.is_some() => k,
            _ => self.existing_session(stream, computed, peer).unwrap_or(computed),
        };
        stream.session = Some(key);
        if not_mcp.contains(&key) {
            // The other direction's messages, just let go, showed the
            // session not to be MCP and dropped it; this stream was out
            // of the table then.
            self.reject(stream, "not_mcp", sink);
            return;
        }
        let flow = match role {
            Role::ServerInbound => Flow::ClientToServer,
            Role::ClientInbound => Flow::ServerToClient,
        };
        let route = Route {
            key,
            flow,
            peer,
            mirror: false,
        };
        if !self.handle_message(route, msg, ts_ns, None, sink) {
            // JSON-RPC, but no MCP method in max_held messages: another
            // JSON-RPC user. Stop capturing it.
            self.reject(stream, "not_mcp", sink);
            self.drop_session(key, sink);
        }
    }
}
