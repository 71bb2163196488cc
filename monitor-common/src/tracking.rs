//! Which processes the kernel tracks, and why.

/// Slots of the `TRACKED_HINT` map: a process `tgid` may be tracked only
/// if slot `tgid % TRACKED_HINT_SLOTS` is set.
pub const TRACKED_HINT_SLOTS: u32 = 65536;

/// Why the kernel tracks a process (value of [`ProcState::reason`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackReason {
    /// Not tracked (also any unknown wire value).
    None = 0,
    /// Userspace asked (pid selector, or confirmed MCP traffic).
    Userspace = 1,
    /// Inherited from a tracked parent at fork.
    Inherited = 2,
    /// Executable name selector matched at exec.
    CommSelector = 3,
    /// The process read or wrote a stream that looked like JSON-RPC.
    Discovered = 4,
    /// Cgroup selector.
    CgroupSelector = 5,
    /// Port selector: the process bound or connected to a selected TCP port.
    PortSelector = 6,
}

impl TrackReason {
    /// Decodes the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Userspace,
            2 => Self::Inherited,
            3 => Self::CommSelector,
            4 => Self::Discovered,
            5 => Self::CgroupSelector,
            6 => Self::PortSelector,
            _ => Self::None,
        }
    }

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Userspace => "userspace",
            Self::Inherited => "inherited",
            Self::CommSelector => "exe_selector",
            Self::Discovered => "discovered",
            Self::CgroupSelector => "cgroup_selector",
            Self::PortSelector => "port_selector",
        }
    }

    /// The reason of a [`TrackReason::name`]; [`TrackReason::None`] for a
    /// name this version does not know.
    pub fn from_name(name: &str) -> Self {
        (0..=6)
            .map(Self::from_u32)
            .find(|r| r.name() == name)
            .unwrap_or(Self::None)
    }
}

/// Value of the kernel's tracked-process map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcState {
    /// A [`TrackReason`] value.
    pub reason: u32,
    /// Explicit padding so the `#[repr(C)]` layout is identical in the kernel and userspace.
    pub _pad: u32,
    /// Start time of the process this entry was made for; an entry whose
    /// start time does not match the current task is stale (pid reuse).
    pub start_ns: u64,
}
