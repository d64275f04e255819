//! PGTune's formulas (le0pard/pgtune, MIT): recommended settings from memory, CPUs, connections,
//! storage and workload type. Memory is computed in kB, as PGTune does, so results match it exactly.

use super::machine::{StorageKind, WorkloadKind};

const KB: u64 = 1;
const MB: u64 = 1024 * KB;
const GB: u64 = 1024 * MB;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuneInput {
    pub memory_kb: u64,
    pub cpus: u32,
    /// None: PGTune's default for the workload type.
    pub connections: Option<u32>,
    pub storage: StorageKind,
    pub workload: WorkloadKind,
    /// server_version_num, to leave out settings older servers lack.
    pub version_num: i32,
}

/// One recommended value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A memory size in kB.
    Memory(u64),
    Number(f64),
    Text(&'static str),
}

impl Value {
    /// As postgresql.conf would say it: 2GB, 768MB, 2621kB, 0.9, try. Sizes of a gigabyte or more
    /// that are not whole gigabytes are rounded down to megabytes (6026MB, not 6171021kB).
    pub fn render(&self) -> String {
        match self {
            Value::Memory(kb) if kb % GB == 0 => format!("{}GB", kb / GB),
            Value::Memory(kb) if kb % MB == 0 || *kb >= GB => format!("{}MB", kb / MB),
            Value::Memory(kb) => format!("{kb}kB"),
            Value::Number(n) if n.fract() == 0.0 => format!("{n:.0}"),
            Value::Number(n) => format!("{n}"),
            Value::Text(t) => t.to_string(),
        }
    }
}

/// The default max_connections per workload type.
pub fn default_connections(workload: WorkloadKind) -> u32 {
    match workload {
        WorkloadKind::Web => 200,
        WorkloadKind::Oltp => 300,
        WorkloadKind::Dw => 40,
        WorkloadKind::Desktop => 20,
        WorkloadKind::Mixed => 100,
    }
}

/// PGTune's recommendations, in PGTune's order.
pub fn recommend(input: &TuneInput) -> Vec<(&'static str, Value)> {
    use WorkloadKind::*;
    let mem = input.memory_kb;
    let connections = input.connections.unwrap_or_else(|| default_connections(input.workload)) as u64;
    let shared_buffers = if input.workload == Desktop { mem / 16 } else { mem / 4 };
    let effective_cache = if input.workload == Desktop { mem / 4 } else { mem * 3 / 4 };
    let maintenance = if input.workload == Dw { mem / 8 } else { mem / 16 }.min(2 * GB);
    let wal_buffers = {
        let v = 3 * shared_buffers / 100;
        if v > 16 * MB || (v > 14 * MB && v < 16 * MB) {
            16 * MB
        } else {
            v.max(32)
        }
    };
    let (min_wal, max_wal) = match input.workload {
        Web | Mixed => (GB, 4 * GB),
        Oltp => (2 * GB, 8 * GB),
        Dw => (4 * GB, 16 * GB),
        Desktop => (100 * MB, 2 * GB),
    };
    let parallel = input.cpus >= 2;
    let per_gather = {
        let half = input.cpus.div_ceil(2);
        if input.workload != Dw {
            half.min(4)
        } else {
            half
        }
    };
    let work_mem = {
        let divisor = if parallel { per_gather.max(1) as u64 } else { 1 };
        let base = (mem - shared_buffers) / (connections * 3) / divisor;
        let typed = match input.workload {
            Web | Oltp => base,
            Dw | Mixed => base / 2,
            Desktop => base / 6,
        };
        typed.max(64)
    };

    let mut out = vec![
        ("max_connections", Value::Number(connections as f64)),
        ("shared_buffers", Value::Memory(shared_buffers)),
        ("effective_cache_size", Value::Memory(effective_cache)),
        ("maintenance_work_mem", Value::Memory(maintenance)),
        ("checkpoint_completion_target", Value::Number(0.9)),
        ("wal_buffers", Value::Memory(wal_buffers)),
        ("default_statistics_target", Value::Number(if input.workload == Dw { 500.0 } else { 100.0 })),
        ("random_page_cost", Value::Number(if input.storage == StorageKind::Hdd { 4.0 } else { 1.1 })),
        (
            "effective_io_concurrency",
            Value::Number(match input.storage {
                StorageKind::Hdd => 2.0,
                StorageKind::Ssd => 200.0,
                StorageKind::San => 300.0,
            }),
        ),
        ("work_mem", Value::Memory(work_mem)),
    ];
    if mem >= 32 * GB {
        out.push(("huge_pages", Value::Text("try")));
    }
    out.push(("min_wal_size", Value::Memory(min_wal)));
    out.push(("max_wal_size", Value::Memory(max_wal)));
    if parallel {
        out.push(("max_worker_processes", Value::Number(input.cpus as f64)));
        out.push(("max_parallel_workers_per_gather", Value::Number(per_gather as f64)));
        out.push(("max_parallel_workers", Value::Number(input.cpus as f64)));
        if input.version_num >= 110000 {
            out.push(("max_parallel_maintenance_workers", Value::Number(per_gather.min(4) as f64)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(v: &[(&'static str, Value)], name: &str) -> String {
        v.iter().find(|(n, _)| *n == name).map(|(_, v)| v.render()).unwrap_or_default()
    }

    fn run(
        gb: u64,
        cpus: u32,
        connections: Option<u32>,
        storage: StorageKind,
        workload: WorkloadKind,
    ) -> Vec<(&'static str, Value)> {
        recommend(&TuneInput {
            memory_kb: gb * GB,
            cpus,
            connections,
            storage,
            workload,
            version_num: 150000,
        })
    }

    // Expected values are PGTune's own output for the same inputs.
    #[test]
    fn dw_8gb_8cpu_hdd() {
        let v = run(8, 8, Some(100), StorageKind::Hdd, WorkloadKind::Dw);
        assert_eq!(get(&v, "shared_buffers"), "2GB");
        assert_eq!(get(&v, "effective_cache_size"), "6GB");
        assert_eq!(get(&v, "maintenance_work_mem"), "1GB");
        assert_eq!(get(&v, "wal_buffers"), "16MB");
        assert_eq!(get(&v, "default_statistics_target"), "500");
        assert_eq!(get(&v, "random_page_cost"), "4");
        assert_eq!(get(&v, "effective_io_concurrency"), "2");
        assert_eq!(get(&v, "work_mem"), "2621kB");
        assert_eq!(get(&v, "max_parallel_workers_per_gather"), "4");
        assert_eq!(get(&v, "max_parallel_workers"), "8");
    }

    #[test]
    fn dw_6gb_2cpu_ssd() {
        let v = run(6, 2, Some(100), StorageKind::Ssd, WorkloadKind::Dw);
        assert_eq!(get(&v, "shared_buffers"), "1536MB");
        assert_eq!(get(&v, "effective_cache_size"), "4608MB");
        assert_eq!(get(&v, "maintenance_work_mem"), "768MB");
        assert_eq!(get(&v, "random_page_cost"), "1.1");
        assert_eq!(get(&v, "work_mem"), "7864kB");
        assert_eq!(get(&v, "max_parallel_workers_per_gather"), "1");
    }

    #[test]
    fn desktop_32gb_8cpu_hdd() {
        let v = run(32, 8, Some(100), StorageKind::Hdd, WorkloadKind::Desktop);
        assert_eq!(get(&v, "shared_buffers"), "2GB");
        assert_eq!(get(&v, "effective_cache_size"), "8GB");
        assert_eq!(get(&v, "maintenance_work_mem"), "2GB");
        assert_eq!(get(&v, "work_mem"), "4369kB");
        assert_eq!(get(&v, "min_wal_size"), "100MB");
        assert_eq!(get(&v, "max_wal_size"), "2GB");
        assert_eq!(get(&v, "max_parallel_maintenance_workers"), "4");
        assert_eq!(get(&v, "huge_pages"), "try");
    }

    #[test]
    fn web_2gb_8cpu_ssd_default_connections() {
        let v = run(2, 8, None, StorageKind::Ssd, WorkloadKind::Web);
        assert_eq!(get(&v, "max_connections"), "200");
        assert_eq!(get(&v, "shared_buffers"), "512MB");
        assert_eq!(get(&v, "effective_cache_size"), "1536MB");
        assert_eq!(get(&v, "maintenance_work_mem"), "128MB");
        assert_eq!(get(&v, "wal_buffers"), "16MB");
        assert_eq!(get(&v, "work_mem"), "655kB");
        assert_eq!(get(&v, "huge_pages"), "");
    }

    #[test]
    fn odd_memory_sizes_round_to_megabytes() {
        assert_eq!(Value::Memory(6_171_021).render(), "6026MB");
        assert_eq!(Value::Memory(30_855).render(), "30855kB");
    }

    #[test]
    fn maintenance_work_mem_caps_at_2gb() {
        let v = run(128, 16, Some(300), StorageKind::San, WorkloadKind::Oltp);
        assert_eq!(get(&v, "maintenance_work_mem"), "2GB");
        assert_eq!(get(&v, "effective_io_concurrency"), "300");
        assert_eq!(get(&v, "max_parallel_workers_per_gather"), "4");
        assert_eq!(get(&v, "min_wal_size"), "2GB");
    }
}
