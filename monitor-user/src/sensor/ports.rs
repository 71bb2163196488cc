//! Port selectors for processes that were already running: which processes
//! hold a TCP socket listening on, or connected to, a selected port.
//!
//! The kernel tracks processes that `bind` or `connect` to a selected port
//! from the moment the monitor runs; this finds the ones that did so
//! before. Sockets are read from `/proc/<pid>/net/tcp{,6}` once per network
//! namespace (containers have their own), and tied to processes through the
//! `socket:[inode]` links in `/proc/<pid>/fd`.

use std::{collections::HashSet, path::Path};

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// Socket inodes in one `/proc/net/tcp` or `tcp6` table that listen on a
/// port of `ports` or are connected to one (remote port).
pub fn selected_sockets(table: &str, ports: &HashSet<u16>) -> HashSet<u64> {
    let mut out = HashSet::new();
    for line in table.lines().skip(1) {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when
        // retrnsmt uid timeout inode ...
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let port = |addr: &str| addr.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let (Some(local), Some(remote), Ok(state), Ok(inode)) = (
            port(f[1]),
            port(f[2]),
            u8::from_str_radix(f[3], 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        let listens = state == TCP_LISTEN && ports.contains(&local);
        let connected = state != TCP_LISTEN && remote != 0 && ports.contains(&remote);
        if inode != 0 && (listens || connected) {
            out.insert(inode);
        }
    }
    out
}

/// Processes under `proc_root` (normally `/proc`) with a socket that
/// listens on or is connected to one of `ports`.
pub fn processes_on_ports(proc_root: &Path, ports: &HashSet<u16>) -> Vec<u32> {
    if ports.is_empty() {
        return Vec::new();
    }
    let pids: Vec<u32> = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // One table read per network namespace.
    let mut namespaces: HashSet<std::path::PathBuf> = HashSet::new();
    let mut inodes: HashSet<u64> = HashSet::new();
    for pid in &pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(ns) = std::fs::read_link(dir.join("ns/net")) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        for table in ["net/tcp", "net/tcp6"] {
            if let Ok(t) = std::fs::read_to_string(dir.join(table)) {
                inodes.extend(selected_sockets(&t, ports));
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    pids.into_iter()
        .filter(|pid| {
            let fds = proc_root.join(pid.to_string()).join("fd");
            std::fs::read_dir(fds).into_iter().flatten().flatten().any(|fd| {
                std::fs::read_link(fd.path()).ok().is_some_and(|l| {
                    l.to_str()
                        .and_then(|s| s.strip_prefix("socket:["))
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|i| inodes.contains(&i))
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1
   garbage line
";

    #[test]
    fn listeners_and_clients_of_selected_ports() {
        let ports: HashSet<u16> = [8000].into();
        // 1111 listens on 8000; 2222 is a client connected to 8000; 4444 is
        // the server end of that connection (local 8000, not listening: its
        // process is the listener's anyway); 3333 listens on 80.
        assert_eq!(selected_sockets(TCP, &ports), [1111, 2222].into());
        assert!(selected_sockets(TCP, &HashSet::new()).is_empty());
    }

    #[test]
    fn this_process_is_found_by_its_listening_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = processes_on_ports(Path::new("/proc"), &[port].into());
        assert!(found.contains(&std::process::id()), "{found:?}");
    }
}
