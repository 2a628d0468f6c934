//! Stale shared-memory regions of libfabric's shm provider.
//!
//! shm names an endpoint's region `/dev/shm/<pid>:<domain>:<endpoint>` and unlinks it
//! when the endpoint closes, or from its signal handlers. A process killed with SIGKILL
//! leaves its regions behind: 16 MiB of tmpfs each, and a trap for the next process
//! the kernel gives the same pid, whose fi_enable then fails with EBUSY (pids wrap at
//! 32768 here, well within a test suite that kills servers on purpose). Before this
//! process opens its first shm endpoint, regions named after a pid that no longer
//! runs, or after this process's own pid (which it has not used yet), are removed.

use std::sync::Once;

const SHM_DIR: &str = "/dev/shm";

/// Sweeps once per process (later calls return at once).
pub fn sweep_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(sweep);
}

fn sweep() {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = region_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid == me || process_gone(pid) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed a stale shm region {}", entry.path().display()),
                Err(e) => tracing::debug!("stale shm region {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Whether the process behind an shm fabric name (`fi_shm://<pid>:<uid>:<endpoint>`
/// and a NUL, as the peer's HELLO carried it; its region is the part after the prefix)
/// has exited. False for
/// any other name (tcp, sockets: a process elsewhere cannot be looked at) and while the
/// process runs. shm peers share this host, and nacre's processes one pid namespace.
pub fn shm_peer_gone(name: &[u8]) -> bool {
    // Called once a second per session on a polling core: no allocation.
    shm_peer_pid(name).is_some_and(process_gone)
}

/// The process behind an shm fabric name (as [`shm_peer_gone`] reads it); None for any
/// other name.
pub fn shm_peer_pid(name: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(name).ok()?.trim_end_matches('\0');
    region_pid(text.strip_prefix("fi_shm://").unwrap_or(text))
}

/// Whether process `pid` has exited: no longer in /proc, or a zombie whose parent has
/// not reaped it yet (a server killed by a test that waits on its client first: it
/// will never answer, nor touch anyone's memory again).
fn process_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // `pid (comm) state ...`: comm may hold anything, so the state follows the last ')'.
    let state = stat
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|at| stat.get(at + 2));
    matches!(state, Some(b'Z' | b'X'))
}

/// The pid of a region named `<pid>:<domain>:<endpoint>` (all decimal), if it is one.
fn region_pid(name: &str) -> Option<u32> {
    let mut parts = name.split(':');
    let pid = parts.next()?.parse().ok()?;
    let rest: Vec<&str> = parts.collect();
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (rest.len() == 2 && rest.iter().all(numeric)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_gone_when_its_process_is() {
        let me = std::process::id();
        assert!(!shm_peer_gone(format!("fi_shm://{me}:0:1\0").as_bytes()));
        assert!(!shm_peer_gone(format!("{me}:0:1\0\0").as_bytes()));
        // Past pid_max (at most 2^22 on Linux): no such process.
        assert!(shm_peer_gone(b"fi_shm://99999999:0:1\0"));
        assert!(shm_peer_gone(b"99999999:0:1\0"));
        assert!(!shm_peer_gone(&[2, 0, 0x1f, 0x90, 127, 0, 0, 1]));
        assert!(!shm_peer_gone(b"fi_ns://x"));
        // A child that exited and was not reaped yet (a zombie) is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !shm_peer_gone(format!("fi_shm://{pid}:0:1\0").as_bytes()) {
            assert!(
                std::time::Instant::now() < until,
                "the zombie was never seen as gone"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
    }

    #[test]
    fn only_shm_region_names_are_taken() {
        assert_eq!(region_pid("19983:0:1"), Some(19983));
        assert_eq!(region_pid("19983:0"), None);
        assert_eq!(region_pid("19983:0:1:2"), None);
        assert_eq!(region_pid("sem.foo"), None);
        assert_eq!(region_pid("12:a:3"), None);
        assert_eq!(region_pid("fi_shm_ep"), None);
    }
}
