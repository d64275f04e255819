//! The database server's machine: memory, CPUs, storage kind, and what the workload is like.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Memory and CPUs of the machine PostgreSQL runs on (None: unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Ssd,
    Hdd,
    San,
}

impl StorageKind {
    pub fn label(self) -> &'static str {
        match self {
            StorageKind::Ssd => "ssd",
            StorageKind::Hdd => "hdd",
            StorageKind::San => "san",
        }
    }
}

impl std::str::FromStr for StorageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ssd" | "nvme" => Ok(StorageKind::Ssd),
            "hdd" => Ok(StorageKind::Hdd),
            "san" => Ok(StorageKind::San),
            other => Err(format!("unknown storage `{other}` (ssd, hdd, san)")),
        }
    }
}

/// PGTune's database types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Web application: many short queries.
    Web,
    /// Online transaction processing.
    Oltp,
    /// Data warehouse: few large queries.
    Dw,
    /// Mixed type of application.
    Mixed,
    /// A developer's desktop.
    Desktop,
}

impl std::str::FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "web" => Ok(WorkloadKind::Web),
            "oltp" => Ok(WorkloadKind::Oltp),
            "dw" => Ok(WorkloadKind::Dw),
            "mixed" => Ok(WorkloadKind::Mixed),
            "desktop" => Ok(WorkloadKind::Desktop),
            other => Err(format!("unknown workload type `{other}` (web, oltp, dw, mixed, desktop)")),
        }
    }
}

impl WorkloadKind {
    pub fn label(self) -> &'static str {
        match self {
            WorkloadKind::Web => "web",
            WorkloadKind::Oltp => "oltp",
            WorkloadKind::Dw => "dw",
            WorkloadKind::Mixed => "mixed",
            WorkloadKind::Desktop => "desktop",
        }
    }
}

/// This machine's memory and CPUs (used when the server is local).
pub fn detect_local() -> MachineSpec {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t));
    let cpus = std::thread::available_parallelism().ok().map(|n| n.get() as u32);
    MachineSpec { memory_bytes, cpus }
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether the block device holding `dir` spins (Linux sysfs); None when it cannot be told.
pub fn detect_storage(dir: &Path) -> Option<StorageKind> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let base = format!("/sys/dev/block/{major}:{minor}");
    // A partition's queue/ lives on its parent disk.
    let rotational = std::fs::read_to_string(format!("{base}/queue/rotational"))
        .or_else(|_| std::fs::read_to_string(format!("{base}/../queue/rotational")))
        .ok()?;
    Some(if rotational.trim() == "1" { StorageKind::Hdd } else { StorageKind::Ssd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        assert_eq!(parse_meminfo("MemTotal:       16314564 kB\nMemFree: 1 kB\n"), Some(16314564 * 1024));
    }
}
