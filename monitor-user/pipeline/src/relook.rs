//! Looking again at streams judged not MCP.
//!
//! No stream or connection is judged for good by what came first: a banner,
//! an OAuth discovery request (`mcp-remote`), or a throwaway request sent
//! to blind the monitor may come before the MCP traffic. The kernel runs its
//! discovery stages again on every transfer of an ignored stream that starts
//! like MCP and resumes the stream on a hit (`chunk_flags::RESUMED`); the
//! pipeline applies the same test to the lines that follow a rejection in a
//! chunk it already holds. Each re-judgement is paid from a per-stream
//! budget per minute, so a stream that looks like MCP at every transfer but
//! is not costs a bounded amount of capture.

/// The kernel's discovery test, in userspace: the bytes start a JSON value
/// or an HTTP request or response, and their first `window` bytes hold
/// `"jsonrpc"` (or, for HTTP, `text/event-stream`, which MCP clients accept
/// on every POST).
pub fn looks_like_mcp(data: &[u8], window: usize) -> bool {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    let head = &data[start..];
    let w = &head[..head.len().min(window)];
    let http = w.starts_with(b"POST ") || w.starts_with(b"HTTP/1.");
    let json = matches!(w.first(), Some(b'{' | b'['));
    (json || http) && (contains(w, b"\"jsonrpc\"") || (http && contains(w, b"text/event-stream")))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Re-judgements a stream may have per minute.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelookBudget {
    window_start_ns: u64,
    used: u32,
    /// The kernel was told to stop looking for the rest of the window.
    quieted: bool,
}

impl RelookBudget {
    const WINDOW_NS: u64 = 60 * 1_000_000_000;

    /// Takes one re-judgement at `now_ns` if fewer than `per_minute` were
    /// taken in the current minute.
    pub fn take(&mut self, now_ns: u64, per_minute: u32) -> bool {
        if now_ns.saturating_sub(self.window_start_ns) >= Self::WINDOW_NS || self.used == 0 {
            self.window_start_ns = now_ns;
            self.used = 0;
            self.quieted = false;
        }
        if self.used >= per_minute {
            return false;
        }
        self.used += 1;
        true
    }

    /// After a refused [`take`](Self::take): true the first time in the
    /// window, when the kernel is to stop looking until [`Self::window_end`].
    pub fn first_refusal(&mut self) -> bool {
        !std::mem::replace(&mut self.quieted, true)
    }

    /// When the current window ends (boot-clock ns).
    pub fn window_end(&self) -> u64 {
        self.window_start_ns + Self::WINDOW_NS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_test_in_userspace() {
        assert!(looks_like_mcp(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
            1024
        ));
        assert!(looks_like_mcp(b"  \n[{\"jsonrpc\":\"2.0\"}]", 1024));
        assert!(looks_like_mcp(
            b"POST /mcp HTTP/1.1\r\naccept: application/json, text/event-stream\r\n\r\n",
            1024
        ));
        assert!(looks_like_mcp(b"HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\"}", 1024));
        assert!(!looks_like_mcp(
            b"GET /.well-known/oauth-protected-resource HTTP/1.1\r\n\r\n",
            1024
        ));
        assert!(!looks_like_mcp(br#"{"level":"info","msg":"started"}"#, 1024));
        assert!(!looks_like_mcp(b"garbage {\"jsonrpc\":\"2.0\"}", 1024));
        assert!(!looks_like_mcp(b"", 1024));
        // Only the window counts, as in the kernel.
        let mut late = br#"{"pad":""#.to_vec();
        late.extend(std::iter::repeat_n(b'x', 2000));
        late.extend(br#"","jsonrpc":"2.0"}"#);
        assert!(!looks_like_mcp(&late, 1024));
        assert!(looks_like_mcp(&late, 4096));
    }

    proptest::proptest! {
        /// Any bytes, any window: no panic, and only the window counts.
        #[test]
        fn only_the_window_counts(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), window in 1usize..1500) {
            let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
            let cut = &data[..data.len().min(start + window)];
            proptest::prop_assert_eq!(looks_like_mcp(&data, window), looks_like_mcp(cut, window));
        }
    }

    #[test]
    fn budget_per_minute() {
        let mut b = RelookBudget::default();
        let s = 1_000_000_000;
        assert!((0..3).all(|i| b.take(10 * s + i, 3)));
        assert!(!b.take(20 * s, 3), "spent within the minute");
        assert!(b.take(71 * s, 3), "a new minute");
        assert!(b.take(72 * s, 3));
        let mut none = RelookBudget::default();
        assert!(!none.take(s, 0));
    }
}
