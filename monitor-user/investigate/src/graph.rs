//! Who talked to whom: agents → servers → tools, with calls as edge
//! weights and alerts that tie one message to another as extra edges.

use std::collections::BTreeMap;

use crate::model::{Investigation, Severity};

/// Column of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A client process (an agent).
    Agent,
    /// A server process, or a remote server.
    Server,
    /// A tool (or prompt, resource, or other method) of one server.
    Tool,
}

impl Kind {
    /// CSS class and `data-kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Server => "server",
            Kind::Tool => "tool",
        }
    }
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// DOM id (`n0`, `n1`, …).
    pub id: String,
    /// Column.
    pub kind: Kind,
    /// Text.
    pub label: String,
    /// Second line: identity for agents and servers, call count for tools.
    pub detail: String,
    /// Most severe alert touching it.
    pub worst: Option<Severity>,
}

/// A call edge.
#[derive(Clone, Debug)]
pub struct Edge {
    /// Node index.
    pub from: usize,
    /// Node index.
    pub to: usize,
    /// Requests along it.
    pub calls: u64,
}

/// An alert drawn from the first message it cites to the last one.
#[derive(Clone, Debug)]
pub struct AlertEdge {
    /// Node index (tool of the first message).
    pub from: usize,
    /// Node index (tool of the last message).
    pub to: usize,
    /// Alert index ([`Investigation::alert`]).
    pub alert: usize,
}

/// The graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Nodes, agents first, then servers, then tools.
    pub nodes: Vec<Node>,
    /// Calls.
    pub edges: Vec<Edge>,
    /// Relay and chain alerts.
    pub alert_edges: Vec<AlertEdge>,
}

impl Graph {
    /// Builds the graph of everything the model holds.
    pub fn of(m: &Investigation) -> Graph {
        let sessions = m.sessions_in_order();
        let mut agents: BTreeMap<String, usize> = BTreeMap::new();
        let mut servers: BTreeMap<String, usize> = BTreeMap::new();
        let mut tools: BTreeMap<(usize, String), usize> = BTreeMap::new();
        let mut g = Graph::default();
        let mut calls: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        // Nodes in session order, so a server's tools sit near it.
        let add = |g: &mut Graph, kind: Kind, label: String, detail: String| {
            g.nodes.push(Node {
                id: String::new(),
                kind,
                label,
                detail,
                worst: None,
            });
            g.nodes.len() - 1
        };
        for s in &sessions {
            let a = *agents
                .entry(s.client.key())
                .or_insert_with(|| add(&mut g, Kind::Agent, s.client.label(), s.client.identity()));
            let v = *servers
                .entry(s.server.key())
                .or_insert_with(|| add(&mut g, Kind::Server, s.server.label(), s.server.identity()));
            *calls.entry((a, v)).or_default() += s.requests;
            for w in [a, v] {
                g.nodes[w].worst = g.nodes[w].worst.max(s.worst);
            }
            for (name, st) in &s.tools {
                if st.calls == 0 || st.kind == "method" {
                    continue;
                }
                let t = *tools
                    .entry((v, name.clone()))
                    .or_insert_with(|| add(&mut g, Kind::Tool, name.clone(), String::new()));
                *calls.entry((v, t)).or_default() += st.calls;
            }
        }
        for ((from, to), n) in calls {
            if n > 0 {
                g.edges.push(Edge { from, to, calls: n });
            }
        }
        for e in &g.edges {
            if g.nodes[e.to].kind == Kind::Tool {
                g.nodes[e.to].detail = format!("{} call{}", e.calls, if e.calls == 1 { "" } else { "s" });
            }
        }
        // Alerts: flows between two messages as edges; the others mark
        // the tool (or server) of their message.
        for (i, a) in m.alerts.iter().enumerate() {
            let index = i + m.alerts_base();
            let node_of = |r: &crate::model::MessageRef| -> Option<usize> {
                let s = m.sessions.get(&r.session)?;
                let v = *servers.get(&s.server.key())?;
                let tool = r
                    .tool
                    .clone()
                    .or_else(|| m.message(r).and_then(|(_, msg)| msg.tool.clone()));
                Some(tool.and_then(|t| tools.get(&(v, t)).copied()).unwrap_or(v))
            };
            let ends: Vec<usize> = a.messages.iter().filter_map(node_of).collect();
            // A flow is drawn only when both its first and its last message
            // are known: a missing end would move the arrow.
            if a.is_flow() {
                if let (Some(from), Some(to)) = (
                    a.messages.first().and_then(node_of),
                    a.messages.last().and_then(node_of),
                ) {
                    g.alert_edges.push(AlertEdge { from, to, alert: index });
                }
            }
            for n in ends {
                g.nodes[n].worst = g.nodes[n].worst.max(Some(a.severity));
            }
        }
        // Ids in column order, as drawn.
        let mut order: Vec<usize> = (0..g.nodes.len()).collect();
        order.sort_by_key(|&i| (g.nodes[i].kind, i));
        for (n, i) in order.into_iter().enumerate() {
            g.nodes[i].id = format!("n{n}");
        }
        g
    }

    /// Nodes of one column, in drawing order.
    pub fn column(&self, kind: Kind) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].kind == kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;
    use serde_json::json;

    #[test]
    fn agents_servers_and_tools_with_call_weights_and_a_relay_edge() {
        let mut m = Investigation::new(Limits::REPORT, true);
        let ev = |session: &str, server_pid: u64, id: u64, dir: &str, kind: &str, tool: &str| {
            json!({"time": format!("2026-01-01T00:00:0{id}Z"), "direction": dir, "type": kind,
                "method": "tools/call", "id": id, "tool": tool, "session": session, "bytes": 10,
                "server": {"pid": server_pid, "start_time": "s", "name": format!("srv{server_pid}")},
                "client": {"pid": 1, "start_time": "c", "name": "agent"}})
        };
        m.ingest(ev("a", 20, 1, "client_to_server", "request", "read"));
        m.ingest(ev("a", 20, 1, "server_to_client", "response", "read"));
        m.ingest(ev("a", 20, 2, "client_to_server", "request", "read"));
        m.ingest(ev("b", 30, 3, "client_to_server", "request", "send"));
        m.ingest(json!({"id": "x", "rule": "credential.relay", "severity": "critical", "time": "2026-01-01T00:00:03Z",
            "messages": [
              {"session": "a", "direction": "server_to_client", "type": "response", "id": 1, "tool": "read", "time": "2026-01-01T00:00:01Z"},
              {"session": "b", "direction": "client_to_server", "type": "request", "id": 3, "tool": "send", "time": "2026-01-01T00:00:03Z"}]}));
        let g = Graph::of(&m);
        let labels: Vec<(&str, &str)> = g.nodes.iter().map(|n| (n.kind.as_str(), n.label.as_str())).collect();
        assert_eq!(labels.len(), 5, "{labels:?}");
        assert_eq!(g.column(Kind::Agent).len(), 1);
        assert_eq!(g.column(Kind::Server).len(), 2);
        let read = g.nodes.iter().position(|n| n.label == "read").unwrap();
        let send = g.nodes.iter().position(|n| n.label == "send").unwrap();
        assert!(g.edges.iter().any(|e| e.to == read && e.calls == 2));
        assert_eq!(g.alert_edges.len(), 1);
        assert_eq!((g.alert_edges[0].from, g.alert_edges[0].to), (read, send));
        assert_eq!(g.nodes[send].worst, Some(Severity::Critical));
        assert_eq!(g.nodes[read].detail, "2 calls");
    }
}
