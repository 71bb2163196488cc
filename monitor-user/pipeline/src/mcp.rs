//! MCP method knowledge: which methods exist, who sends them, and the
//! bounded set of labels metrics may use.
//!
//! Covers the spec revisions 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25
//! and the stateless 2026-07-28 revision (`server/discover`,
//! `subscriptions/listen`).

/// Who originates a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Sent by the client to the server.
    Client,
    /// Sent by the server to the client.
    Server,
    /// Either side (ping, progress, cancellation, task status).
    Either,
}

/// Broad purpose of a method, for reports and detectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Session set-up: `initialize`, `notifications/initialized`, `server/discover`.
    Lifecycle,
    /// `tools/list`, `tools/call` and the tool list change notification.
    Tools,
    /// `resources/*`, resource templates, `subscriptions/listen` and the resource notifications.
    Resources,
    /// `prompts/list`, `prompts/get` and the prompt list change notification.
    Prompts,
    /// `tasks/*` and task status notifications.
    Tasks,
    /// Argument completion (`completion/complete`).
    Completion,
    /// `logging/setLevel` and log messages (`notifications/message`).
    Logging,
    /// `roots/list` (the server asks the client) and the roots change notification.
    Roots,
    /// `sampling/createMessage`: the server asks the client's model for a completion.
    Sampling,
    /// `elicitation/create` (the server asks the user for input) and its completion notification.
    Elicitation,
    /// `ping`, progress and cancellation notifications.
    Utility,
}

/// A method the monitor knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method name, also its metrics label.
    pub name: &'static str,
    /// Which side sends it.
    pub origin: Origin,
    /// Its broad purpose.
    pub category: Category,
    /// True for notifications (`notifications/...`).
    pub notification: bool,
}

macro_rules! methods {
    ($($name:literal => $origin:ident, $cat:ident;)*) => {
        /// Every known method.
        pub const METHODS: &[MethodInfo] = &[
            $(MethodInfo {
                name: $name,
                origin: Origin::$origin,
                category: Category::$cat,
                notification: $name.len() > 14 && matches!($name.as_bytes().split_at(14).0, b"notifications/"),
            },)*
        ];
    };
}

methods! {
    "initialize" => Client, Lifecycle;
    "ping" => Either, Utility;
    "server/discover" => Client, Lifecycle;
    "completion/complete" => Client, Completion;
    "logging/setLevel" => Client, Logging;
    "tools/list" => Client, Tools;
    "tools/call" => Client, Tools;
    "resources/list" => Client, Resources;
    "resources/read" => Client, Resources;
    "resources/subscribe" => Client, Resources;
    "resources/unsubscribe" => Client, Resources;
    "resources/templates/list" => Client, Resources;
    "subscriptions/listen" => Client, Resources;
    "prompts/list" => Client, Prompts;
    "prompts/get" => Client, Prompts;
    "tasks/get" => Either, Tasks;
    "tasks/list" => Either, Tasks;
    "tasks/result" => Either, Tasks;
    "tasks/cancel" => Either, Tasks;
    "roots/list" => Server, Roots;
    "sampling/createMessage" => Server, Sampling;
    "elicitation/create" => Server, Elicitation;
    "notifications/initialized" => Client, Lifecycle;
    "notifications/cancelled" => Either, Utility;
    "notifications/progress" => Either, Utility;
    "notifications/message" => Server, Logging;
    "notifications/tools/list_changed" => Server, Tools;
    "notifications/prompts/list_changed" => Server, Prompts;
    "notifications/resources/list_changed" => Server, Resources;
    "notifications/resources/updated" => Server, Resources;
    "notifications/roots/list_changed" => Client, Roots;
    "notifications/tasks/status" => Either, Tasks;
    "notifications/elicitation/complete" => Server, Elicitation;
}

/// First path segments of all known methods (`tools`, `notifications`,
/// `initialize`...): the kernel's discovery recognises messages that start
/// with one of these as the value of `"method"`.
pub fn method_roots() -> Vec<&'static str> {
    let mut roots: Vec<&str> = METHODS
        .iter()
        .map(|m| m.name.split('/').next().unwrap_or(m.name))
        .collect();
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// Label used for methods the monitor does not know.
pub const OTHER: &str = "other";

/// Looks up a method by name.
pub fn lookup(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// Bounded metrics label of a method: the method itself if known, else
/// [`OTHER`] (attacker-chosen method names must not grow label sets).
pub fn label(name: &str) -> &'static str {
    lookup(name).map_or(OTHER, |m| m.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for m in METHODS {
            assert_eq!(m.notification, m.name.starts_with("notifications/"), "{}", m.name);
            assert_eq!(lookup(m.name), Some(m));
        }
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METHODS.len(), "duplicate method");
    }

    #[test]
    fn method_roots_fit_the_kernel_key() {
        let roots = method_roots();
        assert!(roots.contains(&"tools") && roots.contains(&"notifications") && roots.contains(&"initialize"));
        for r in roots {
            assert!(
                r.len() < monitor_common::METHOD_ROOT_LEN,
                "{r} too long for the kernel's key"
            );
        }
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("tools/call"), "tools/call");
        assert_eq!(label("textDocument/didOpen"), OTHER);
        assert_eq!(label("server/discover"), "server/discover");
        assert_eq!(lookup("sampling/createMessage").unwrap().origin, Origin::Server);
        assert_eq!(lookup("notifications/initialized").unwrap().origin, Origin::Client);
    }
}
