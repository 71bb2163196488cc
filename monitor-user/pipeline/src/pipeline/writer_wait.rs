//! Messages that wait for the writer of their stream.
//!
//! A client's inbound stream belongs to the session of the process that
//! writes into it, and only that writer's notice names it. The kernel sends
//! the notice when the writer's first write ends, and the reader, woken by
//! the write, may have taken the bytes and had them sent before: a first
//! write larger than the pipe ends only after the reader has taken its
//! earlier pieces, and a writer can be preempted before its exit. The
//! sensor hands each drain of the ring notices first, which covers a notice
//! and its chunks in one drain; a notice in a later drain is covered here.
//! Until the writer is known, such a stream's messages wait, framed and
//! decoded but not routed to a session, and go on when the notice names
//! the writer, or when `writer_wait_ns` has passed without one (then as
//! before: a session with no server, which the next message joins to its
//! writer's), or when the waiting outgrows its bound, or when the server
//! that reads them sends its client a message that may answer them (see
//! `Pipeline::release_overtaken`). A stream waits once: after that its
//! messages never wait again (unless it is judged afresh). A pipe whose
//! named writer has exited since (`printf ... | server`: the bytes outlive
//! the writer) is not waited on: its notice came, and the exit forgot it.

use rustc_hash::FxHashMap;

use super::stdio::StreamId;
use crate::{
    buffer_budget::{Budget, Charge},
    observation::ProcKey,
};

/// Channel key of the stdio tables: (is a pipe, channel).
pub(super) type ChannelKey = (bool, u64);

/// Most messages one stream holds while it waits; past it they go on.
pub(super) const MAX_WAITING_MESSAGES: usize = 64;

/// Why a stream's waiting ended, the `outcome` label of
/// `mcp_monitor_writer_waits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The writer's notice came.
    Named,
    /// `writer_wait_ns` passed without a notice.
    TimedOut,
    /// The stream held [`MAX_WAITING_MESSAGES`], or the partial-message
    /// budget had no room for the next.
    Full,
    /// The server reading the stream had a message routed to its client,
    /// which may answer what waits.
    Overtaken,
    /// The reading process exited.
    ReaderExited,
    /// The stream was evicted to make room for others.
    Evicted,
    /// The run ended (a replay's end).
    Finished,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Outcome::Named => "named",
            Outcome::TimedOut => "timed_out",
            Outcome::Full => "full",
            Outcome::Overtaken => "overtaken",
            Outcome::ReaderExited => "reader_exited",
            Outcome::Evicted => "evicted",
            Outcome::Finished => "finished",
        }
    }
}

/// One stream's waiting messages.
#[derive(Debug)]
pub(super) struct Waiting {
    channel: ChannelKey,
    /// When the first message came (`CLOCK_BOOTTIME` ns).
    since_ns: u64,
    /// Whether the stream carries client-to-server messages, as the first
    /// message whose method tells said (see [`WriterWaits::push`]).
    server_inbound: Option<bool>,
    /// Each message's bytes and time, in the order they came.
    pub(super) messages: Vec<(Box<[u8]>, u64)>,
    bytes: usize,
    /// What the messages hold, charged to the partial-message budget.
    charge: Charge,
}

/// Streams whose messages wait for their writer, by stream and by channel.
#[derive(Default)]
pub(super) struct WriterWaits {
    streams: FxHashMap<StreamId, Waiting>,
    channels: FxHashMap<ChannelKey, Vec<StreamId>>,
    /// Bytes all waiting messages hold.
    bytes: usize,
}

impl WriterWaits {
    /// Does `id` hold waiting messages? (Then its next ones wait too, in order.)
    pub(super) fn holds(&self, id: &StreamId) -> bool {
        self.streams.contains_key(id)
    }

    /// Streams waiting now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Does no stream wait?
    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds one message of `id`, whose writer writes into `channel`;
    /// `server_inbound` is what its method tells of the stream's direction,
    /// if anything. False, adding nothing, when the stream already holds
    /// [`MAX_WAITING_MESSAGES`] or an eighth of the partial-message budget,
    /// when all waiting streams together would hold more than a quarter of
    /// it, or when it has no room: the caller lets the stream's messages go
    /// on. (The budget is for messages in progress; waiting ones may not
    /// starve them.)
    pub(super) fn push(
        &mut self,
        id: StreamId,
        channel: ChannelKey,
        raw: &[u8],
        server_inbound: Option<bool>,
        ts_ns: u64,
        budget: &Budget,
    ) -> bool {
        if self.bytes.saturating_add(raw.len()) > budget.max() / 4 {
            return false;
        }
        let w = match self.streams.get_mut(&id) {
            Some(w) => w,
            None => {
                self.channels.entry(channel).or_default().push(id);
                self.streams.entry(id).or_insert(Waiting {
                    channel,
                    since_ns: ts_ns,
                    server_inbound: None,
                    messages: Vec::new(),
                    bytes: 0,
                    charge: Charge::new(budget),
                })
            }
        };
        let bytes = w.bytes.saturating_add(raw.len());
        if w.messages.len() >= MAX_WAITING_MESSAGES || bytes > budget.max() / 8 || !w.charge.fits(bytes) {
            // A stream refused its first message is taken at once by the
            // caller, which lets it go on.
            return false;
        }
        w.messages.push((raw.into(), ts_ns));
        w.bytes = bytes;
        w.charge.set(bytes);
        w.server_inbound = w.server_inbound.or(server_inbound);
        self.bytes += raw.len();
        true
    }

    /// Takes the waiting of `id`, if any.
    pub(super) fn take(&mut self, id: &StreamId) -> Option<Waiting> {
        let w = self.streams.remove(id)?;
        if let Some(ids) = self.channels.get_mut(&w.channel) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.channels.remove(&w.channel);
            }
        }
        self.bytes -= w.bytes;
        Some(w)
    }

    /// Takes the streams that wait for the writer of `channel`.
    pub(super) fn take_channel(&mut self, channel: ChannelKey) -> Vec<(StreamId, Waiting)> {
        let ids = self.channels.get(&channel).cloned().unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| self.take(&id).map(|w| (id, w)))
            .collect()
    }

    /// Takes the streams that satisfy `pred`, oldest first.
    fn take_where(&mut self, pred: impl Fn(&StreamId, &Waiting) -> bool) -> Vec<(StreamId, Waiting)> {
        if self.streams.is_empty() {
            return Vec::new();
        }
        let mut ids: Vec<(u64, StreamId)> = self
            .streams
            .iter()
            .filter(|(id, w)| pred(id, w))
            .map(|(id, w)| (w.since_ns, *id))
            .collect();
        ids.sort_unstable_by_key(|(since, id)| (*since, id.proc.pid, id.proc.start_ns, id.fd, id.inode));
        ids.into_iter()
            .filter_map(|(_, id)| self.take(&id).map(|w| (id, w)))
            .collect()
    }

    /// Takes the streams that have waited `wait_ns` or longer at `now_ns`.
    pub(super) fn take_due(&mut self, now_ns: u64, wait_ns: u64) -> Vec<(StreamId, Waiting)> {
        self.take_where(|_, w| now_ns.saturating_sub(w.since_ns) >= wait_ns)
    }

    /// Takes the streams read by `proc`.
    pub(super) fn take_reader(&mut self, proc: ProcKey) -> Vec<(StreamId, Waiting)> {
        self.take_where(|id, _| id.proc == proc)
    }

    /// Takes the streams read by `server` that carry client-to-server
    /// messages: those whose first message that tells said so, or, if none
    /// did, its standard input (the stdio convention).
    pub(super) fn take_server_inbound(&mut self, server: ProcKey) -> Vec<(StreamId, Waiting)> {
        self.take_where(|id, w| id.proc == server && w.server_inbound.unwrap_or(id.fd == 0))
    }

    /// Takes every waiting stream.
    pub(super) fn take_all(&mut self) -> Vec<(StreamId, Waiting)> {
        self.take_where(|_, _| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::Direction;

    fn id(pid: u32, fd: i32) -> StreamId {
        StreamId {
            proc: ProcKey { pid, start_ns: 1 },
            fd,
            inode: 7,
            direction: Direction::Ingress as u8,
        }
    }

    #[test]
    fn a_stream_holds_its_messages_in_order_and_within_its_bounds() {
        let budget = Budget::new(1000);
        let mut w = WriterWaits::default();
        assert!(w.push(id(1, 3), (true, 7), b"{\"a\":1}", None, 10, &budget));
        assert!(w.push(id(1, 3), (true, 7), b"{\"b\":2}", Some(true), 20, &budget));
        assert_eq!(budget.used(), 14);
        // Past an eighth of the budget for one stream: refused, nothing added.
        assert!(!w.push(id(1, 3), (true, 7), &[b' '; 112], None, 30, &budget));
        // Past a quarter for all streams together.
        assert!(w.push(id(2, 3), (true, 8), &[b' '; 120], None, 30, &budget));
        assert!(w.push(id(3, 3), (true, 9), &[b' '; 110], None, 30, &budget));
        assert!(!w.push(id(4, 3), (true, 9), &[b' '; 10], None, 30, &budget));
        assert!(!w.holds(&id(4, 3)));
        let got = w.take(&id(1, 3)).unwrap();
        assert_eq!(got.server_inbound, Some(true));
        assert_eq!(
            got.messages.iter().map(|(m, t)| (&m[..], *t)).collect::<Vec<_>>(),
            vec![(&b"{\"a\":1}"[..], 10), (&b"{\"b\":2}"[..], 20)]
        );
        drop(got);
        assert_eq!(budget.used(), 230, "taken and dropped, the charge is given back");
        assert!(w.take_channel((true, 7)).is_empty(), "the channel index forgot it");
        assert!(
            w.push(id(4, 3), (true, 9), &[b' '; 10], None, 30, &budget),
            "room again"
        );

        let mut w = WriterWaits::default();
        let unlimited = Budget::unlimited();
        for i in 0..MAX_WAITING_MESSAGES {
            assert!(w.push(id(1, 3), (true, 7), b"{}", None, i as u64, &unlimited));
        }
        assert!(!w.push(id(1, 3), (true, 7), b"{}", None, 99, &unlimited));
    }

    #[test]
    fn waiting_streams_are_taken_by_channel_time_and_reader() {
        let budget = Budget::unlimited();
        let mut w = WriterWaits::default();
        w.push(id(1, 3), (true, 7), b"{}", None, 100, &budget);
        w.push(id(2, 3), (true, 7), b"{}", None, 50, &budget);
        w.push(id(3, 4), (false, 7), b"{}", None, 10, &budget);
        w.push(id(4, 4), (true, 8), b"{}", None, 200, &budget);
        let named: Vec<StreamId> = w.take_channel((true, 7)).into_iter().map(|(i, _)| i).collect();
        assert_eq!(
            named,
            vec![id(1, 3), id(2, 3)],
            "a pipe's notice does not take a socket's streams"
        );
        assert_eq!(w.len(), 2);
        let due: Vec<StreamId> = w.take_due(1_010, 1_000).into_iter().map(|(i, _)| i).collect();
        assert_eq!(due, vec![id(3, 4)]);
        assert!(w.take_reader(id(9, 0).proc).is_empty());
        assert_eq!(w.take_reader(id(4, 0).proc).len(), 1);
        assert_eq!(w.len(), 0);
        assert!(w.take_all().is_empty());
        // A server's inbound streams: what a method told, else its stdin.
        w.push(id(5, 0), (true, 1), b"{}", None, 1, &budget);
        w.push(id(5, 6), (true, 2), b"{}", None, 1, &budget);
        w.push(id(5, 6), (true, 2), b"{}", Some(true), 1, &budget);
        w.push(id(5, 7), (true, 3), b"{}", Some(false), 1, &budget);
        w.push(id(5, 8), (true, 4), b"{}", None, 1, &budget);
        let inbound: Vec<StreamId> = w
            .take_server_inbound(id(5, 0).proc)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(inbound, vec![id(5, 0), id(5, 6)]);
        assert_eq!(w.len(), 2);
    }
}
