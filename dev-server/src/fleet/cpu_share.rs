//! Lambda's CPU: a function gets CPU time in proportion to its memory, one vCPU-second a second at 1,769 MB
//! (AWS Lambda Developer Guide, "Configuring Lambda function memory"), so a 256 MB instance has about a
//! seventh of a core however idle the machine is. With `INFEREX_FLEET_CPU_SHARE=true` the fleet gives each
//! instance that share through a CPU cgroup of its own (Linux's CFS bandwidth control: a quota per 100 ms
//! period, the kernel's default; Lambda does not publish its period), so that latency and cold starts are
//! measured at the template's `MemorySize`. It needs a writable CPU controller (root, cgroup v1 or v2); without
//! one the fleet says so at start and `GET /_fleet` reports `cpu_share: false`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The memory at which a function has one whole vCPU.
const MB_PER_VCPU: u64 = 1_769;
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts.
const MIN_QUOTA_US: u64 = 1_000;

/// This fleet's parent group, under which each instance gets one.
#[derive(Debug)]
pub struct CpuShares {
    parent: PathBuf,
    version: Version,
    next: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Version {
    /// `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1,
    /// `cpu.max`.
    V2,
}

/// One instance's group, removed when dropped (after its process ended: a group with a process stays).
#[derive(Debug)]
pub struct CpuGroup(PathBuf);

impl Drop for CpuGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Drop for CpuShares {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// Names this process's parent group, with its process id.
const GROUP_PREFIX: &str = "inferex-fleet-";

/// Removes the groups of fleets that ended: a fleet stopped by a signal kills its instances as it exits,
/// before their groups (and so its own) can be removed; one killed outright leaves them running (or frozen
/// for good), and they are killed here first.
fn remove_stale(controller: &Path) {
    let Ok(entries) = std::fs::read_dir(controller) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(GROUP_PREFIX)).and_then(|p| p.parse::<u32>().ok());
        if pid.is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        let groups = child_groups(&entry.path());
        for group in &groups {
            kill_members(group);
        }
        remove_when_empty(&groups);
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// The groups below a group (a group's files are files; its child groups, directories).
fn child_groups(parent: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(parent).into_iter().flatten().flatten();
    entries.map(|entry| entry.path()).filter(|path| path.is_dir()).collect()
}

/// Kills every process of a group.
fn kill_members(group: &Path) {
    let members = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    for pid in members.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes groups whose processes were killed, waiting up to a second for them to end.
fn remove_when_empty(groups: &[PathBuf]) {
    for _ in 0..20 {
        if groups.iter().filter(|group| group.exists() && std::fs::remove_dir(group).is_err()).count() == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An instance's quota in each period: its memory's share of one vCPU.
pub fn quota_us(memory_mb: u64) -> u64 {
    (PERIOD_US * memory_mb / MB_PER_VCPU).max(MIN_QUOTA_US)
}

impl CpuShares {
    /// This fleet's group under the machine's CPU controller, or why there is none.
    pub fn new() -> Result<Self, String> {
        let name = format!("{GROUP_PREFIX}{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_has_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"));
        let (controller, version) = if v2_has_cpu {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (v2.to_path_buf(), Version::V2)
        } else {
            (PathBuf::from("/sys/fs/cgroup/cpu"), Version::V1)
        };
        remove_stale(&controller);
        let parent = controller.join(name);
        std::fs::create_dir(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        if matches!(version, Version::V2)
            && let Err(e) = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu")
        {
            let _ = std::fs::remove_dir(&parent);
            return Err(format!("{}: the CPU controller cannot be enabled below it: {e}", parent.display()));
        }
        Ok(Self { parent, version, next: AtomicU64::new(0) })
    }

    /// Removes every instance's group and this fleet's, once their processes (killed) have ended: waits up
    /// to a second for them.
    pub fn remove_all(&self) {
        let groups = child_groups(&self.parent);
        remove_when_empty(&groups);
        let _ = std::fs::remove_dir(&self.parent);
    }

    /// Moves a just-started process into a group of its own with `memory_mb`'s share of a vCPU.
    pub fn confine(&self, pid: u32, memory_mb: u64) -> Result<CpuGroup, String> {
        let group = CpuGroup(self.parent.join(self.next.fetch_add(1, Ordering::Relaxed).to_string()));
        let write = |file: &str, value: String| {
            std::fs::write(group.0.join(file), value).map_err(|e| format!("{}/{file}: {e}", group.0.display()))
        };
        std::fs::create_dir(&group.0).map_err(|e| format!("{}: {e}", group.0.display()))?;
        match self.version {
            Version::V1 => {
                write("cpu.cfs_period_us", PERIOD_US.to_string())?;
                write("cpu.cfs_quota_us", quota_us(memory_mb).to_string())?;
            }
            Version::V2 => write("cpu.max", format!("{} {PERIOD_US}", quota_us(memory_mb)))?,
        }
        write("cgroup.procs", pid.to_string())?;
        Ok(group)
    }
}

#[cfg(test)]
mod tests {
    use super::quota_us;

    #[test]
    fn a_function_gets_its_memorys_share_of_a_vcpu() {
        assert_eq!(quota_us(1_769), 100_000);
        assert_eq!(quota_us(3_538), 200_000);
        assert_eq!(quota_us(256), 14_471);
        // 10 MB would be 565 us: the kernel's floor applies.
        assert_eq!(quota_us(10), 1_000);
    }
}
