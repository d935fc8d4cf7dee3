//! `stats`: cgroup counters in Docker's stats shape (`cpu_stats`, `memory_stats`,
//! `pids_stats`, `blkio_stats`), read from the container's cgroup by the runtime.

use std::sync::Arc;

use wharf_api::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerMemoryStats, ContainerPidsStats, ContainerStatsResponse, ContainerThrottlingData,
};
use wharf_runtime::cgroup::{self, Cgroup, Stats};

use super::ContainerError;
use crate::Engine;
use crate::util::ZERO_TIME;

/// Linux's USER_HZ: the unit of `/proc/stat`.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

impl Engine {
    /// One sample of the container's counters. `previous` (an earlier sample) becomes the
    /// `precpu_stats`/`preread` that clients compute the CPU percentage against; without one
    /// they are zero, as Docker's first frame.
    pub async fn stats(
        self: &Arc<Self>,
        key: &str,
        previous: Option<&ContainerStatsResponse>,
    ) -> Result<ContainerStatsResponse, ContainerError> {
        let c = self.registry().lookup(key)?;
        let r = c.snapshot();
        let mut out = ContainerStatsResponse {
            id: Some(r.id.clone()),
            name: Some(format!("/{}", r.name)),
            os_type: Some("linux".into()),
            read: Some(ZERO_TIME.into()),
            preread: Some(ZERO_TIME.into()),
            cpu_stats: Some(ContainerCpuStats::default()),
            precpu_stats: Some(ContainerCpuStats::default()),
            memory_stats: Some(ContainerMemoryStats::default()),
            pids_stats: Some(ContainerPidsStats::default()),
            blkio_stats: Some(ContainerBlkioStats::default()),
            num_procs: Some(0),
            ..Default::default()
        };
        if let Some(p) = previous {
            out.precpu_stats = p.cpu_stats.clone();
            out.preread = p.read.clone();
        }
        if !r.state.status.is_running() {
            // Docker answers a stopped container with zeroes.
            return Ok(out);
        }
        let cg = Cgroup::system(cgroup::container_path(&self.cfg.cgroup_parent, &r.id));
        let sample = tokio::task::spawn_blocking(move || {
            let stats = cg.stats();
            (stats, system_cpu_usage(), host_memory())
        })
        .await
        .map_err(|e| ContainerError::Io(std::io::Error::other(e)))?;
        let (stats, system, host_mem) = sample;
        out.read = Some(crate::util::now_rfc3339());
        fill(&mut out, &stats?, system, host_mem);
        Ok(out)
    }
}

/// Docker's shape of the runtime's counters.
fn fill(out: &mut ContainerStatsResponse, s: &Stats, system: Option<u64>, host_mem: Option<u64>) {
    let per_cpu = &s.cpu.usage.per_core_usage_total;
    out.cpu_stats = Some(ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: Some(s.cpu.usage.usage_total),
            percpu_usage: (!per_cpu.is_empty()).then(|| per_cpu.clone()),
            usage_in_kernelmode: Some(s.cpu.usage.usage_kernel),
            usage_in_usermode: Some(s.cpu.usage.usage_user),
        }),
        system_cpu_usage: system,
        online_cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        throttling_data: Some(ContainerThrottlingData {
            periods: Some(s.cpu.throttling.periods),
            throttled_periods: Some(s.cpu.throttling.throttled_periods),
            throttled_time: Some(s.cpu.throttling.throttled_time),
        }),
    });
    let mem = &s.memory.memory;
    // An unlimited cgroup reports a huge limit; Docker shows the host's memory instead.
    let limit = match host_mem {
        Some(host) if mem.limit == 0 || mem.limit > host => host,
        _ => mem.limit,
    };
    out.memory_stats = Some(ContainerMemoryStats {
        usage: Some(mem.usage),
        max_usage: (mem.max_usage > 0).then_some(mem.max_usage),
        stats: Some(s.memory.stats.clone()),
        failcnt: Some(mem.fail_count),
        limit: Some(limit),
        ..Default::default()
    });
    out.pids_stats = Some(ContainerPidsStats {
        current: Some(s.pids.current),
        limit: (s.pids.limit > 0).then_some(s.pids.limit),
    });
    let entries =
        |v: &[wharf_runtime::cgroup::BlkioDeviceStat]| -> Option<Vec<ContainerBlkioStatEntry>> {
            Some(
                v.iter()
                    .map(|d| ContainerBlkioStatEntry {
                        major: Some(d.major),
                        minor: Some(d.minor),
                        op: Some(d.op_type.clone().unwrap_or_default()),
                        value: Some(d.value),
                    })
                    .collect(),
            )
        };
    out.blkio_stats = Some(ContainerBlkioStats {
        io_service_bytes_recursive: entries(&s.blkio.service_bytes),
        io_serviced_recursive: entries(&s.blkio.serviced),
        io_queue_recursive: entries(&s.blkio.queued),
        io_service_time_recursive: entries(&s.blkio.service_time),
        io_wait_time_recursive: entries(&s.blkio.wait_time),
        io_merged_recursive: entries(&s.blkio.merged),
        io_time_recursive: entries(&s.blkio.time),
        sectors_recursive: entries(&s.blkio.sectors),
    });
}

/// The host's total CPU time in nanoseconds (the first line of `/proc/stat`), what Docker's
/// `system_cpu_usage` holds.
fn system_cpu_usage() -> Option<u64> {
    parse_system_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_system_cpu(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(7)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some(ticks * (1_000_000_000 / CLOCK_TICKS_PER_SECOND))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn host_memory() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_counters_parse() {
        let stat = "cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_system_cpu(stat), Some(280 * 10_000_000));
        assert_eq!(parse_system_cpu("intr 1\n"), None);
        let meminfo = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_576_000 * 1024));
    }

    #[test]
    fn runtime_counters_take_dockers_shape() {
        let mut s = Stats::default();
        s.cpu.usage.usage_total = 5_000;
        s.cpu.usage.per_core_usage_total = vec![2_000, 3_000];
        s.memory.memory.usage = 4096;
        s.memory.memory.limit = u64::MAX / 2;
        s.memory.stats.insert("total_inactive_file".into(), 1024);
        s.pids.current = 3;
        s.blkio.service_bytes = vec![wharf_runtime::cgroup::BlkioDeviceStat {
            major: 8,
            minor: 0,
            op_type: Some("Read".into()),
            value: 512,
        }];
        let mut out = ContainerStatsResponse::default();
        fill(&mut out, &s, Some(7), Some(1 << 30));
        let cpu = out.cpu_stats.unwrap();
        assert_eq!(cpu.cpu_usage.unwrap().total_usage, Some(5_000));
        assert_eq!(cpu.system_cpu_usage, Some(7));
        let mem = out.memory_stats.unwrap();
        assert_eq!(mem.usage, Some(4096));
        assert_eq!(mem.limit, Some(1 << 30));
        assert_eq!(mem.stats.unwrap()["total_inactive_file"], 1024);
        let pids = out.pids_stats.unwrap();
        assert_eq!((pids.current, pids.limit), (Some(3), None));
        let blk = out.blkio_stats.unwrap().io_service_bytes_recursive.unwrap();
        assert_eq!(blk[0].op.as_deref(), Some("Read"));
        assert_eq!(blk[0].value, Some(512));
    }
}
