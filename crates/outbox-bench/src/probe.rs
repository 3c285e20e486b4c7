//! What the machine was doing during a measurement: the CPU time of PostgreSQL,
//! nats-server and this process, the whole machine's busy and I/O-wait share,
//! and this process's resident memory.
//!
//! Everything is read from `/proc`, so the probes work only on Linux. CPU time
//! is counted in the kernel's clock ticks, 100 a second on every Linux that
//! exposes `/proc` to user space.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Clock ticks per second in `/proc/*/stat` and `/proc/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    postgres: u64,
    nats: u64,
    bench: u64,
    machine_busy: u64,
    machine_iowait: u64,
    machine_total: u64,
}

/// CPU use between two snapshots, each in percent of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// All `postgres` processes together, backends that exited meanwhile
    /// included; on a shared server that is other clients' work too.
    pub postgres: f64,
    /// The `nats-server` process.
    pub nats: f64,
    /// This process: the relay and, where the measurement has them, the
    /// writers and the consumer.
    pub bench: f64,
    /// Everything else that ran on the machine, such as compilers.
    pub other: f64,
    /// Time the machine's cores spent waiting for the disk.
    pub iowait: f64,
    /// Cores available, for scale: 200 % means both cores busy.
    pub capacity: f64,
}

impl CpuSnapshot {
    /// Reads the counters now.
    pub fn take() -> Self {
        let mut postgres = 0;
        let mut nats = 0;
        if let Ok(entries) = fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                match comm.trim_end() {
                    // With the reaped children's time, which the postmaster
                    // holds for every backend that has exited.
                    "postgres" => postgres += process_ticks(pid) + children_ticks(pid),
                    "nats-server" => nats += process_ticks(pid),
                    _ => {}
                }
            }
        }
        let (machine_busy, machine_iowait, machine_total) = machine_ticks();
        CpuSnapshot {
            at: Instant::now(),
            postgres,
            nats,
            bench: process_ticks("self"),
            machine_busy,
            machine_iowait,
            machine_total,
        }
    }

    /// The CPU used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds * 100.0;
        let postgres = later.postgres.saturating_sub(self.postgres);
        let nats = later.nats.saturating_sub(self.nats);
        let bench = later.bench.saturating_sub(self.bench);
        let busy = later.machine_busy.saturating_sub(self.machine_busy);
        let total = later
            .machine_total
            .saturating_sub(self.machine_total)
            .max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // Machine-wide ticks are summed over cores; scale them to one core's
        // percent like the per-process figures.
        let per_core = |ticks: u64| ticks as f64 / total as f64 * cores * 100.0;
        let iowait = later.machine_iowait.saturating_sub(self.machine_iowait);
        CpuUse {
            postgres: pct(postgres),
            nats: pct(nats),
            bench: pct(bench),
            other: (per_core(busy) - pct(postgres + nats + bench)).max(0.0),
            iowait: per_core(iowait),
            capacity: cores * 100.0,
        }
    }
}

impl CpuUse {
    /// The figures as JSON, rounded to whole percent.
    pub fn to_json(self) -> Value {
        json!({
            "postgres_pct": self.postgres.round(),
            "nats_pct": self.nats.round(),
            "bench_pct": self.bench.round(),
            "other_pct": self.other.round(),
            "iowait_pct": self.iowait.round(),
            "capacity_pct": self.capacity,
        })
    }

    /// One line for the human summary.
    pub fn line(self) -> String {
        format!(
            "cpu (% of one core, {:.0} available): postgres {:.0}, nats-server {:.0}, \
             bench {:.0}, other {:.0}; iowait {:.0}",
            self.capacity, self.postgres, self.nats, self.bench, self.other, self.iowait
        )
    }
}

/// utime + stime of `/proc/<pid>/stat`, in ticks; zero when the process is gone.
fn process_ticks(pid: &str) -> u64 {
    let fields = stat_fields(pid);
    // Counted after the name: the state (field 3 of the line) is 0, so utime
    // (field 14) is 11 and stime 12.
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// cutime + cstime: the time of the children that the process has reaped.
fn children_ticks(pid: &str) -> u64 {
    let fields = stat_fields(pid);
    fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0)
}

/// The numeric fields after the command name of `/proc/<pid>/stat`, with 0
/// for the state; empty when the process is gone.
fn stat_fields(pid: &str) -> Vec<u64> {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    // The command name may hold spaces and parentheses; fields after it do not.
    let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return Vec::new();
    };
    after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// Busy, I/O-wait and total ticks of all cores, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal; guest time is in user.
    let idle = at(3);
    let iowait = at(4);
    let total: u64 = (0..8).map(at).sum();
    (total - idle - iowait, iowait, total)
}

/// This process's resident set size in KiB, from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// The resident memory seen by an [`RssSampler`].
#[derive(Debug, Clone)]
pub struct RssSeries {
    /// At the first sample.
    pub start_kib: u64,
    /// The highest sample.
    pub peak_kib: u64,
    /// At the last sample.
    pub end_kib: u64,
    /// Every sample, as (seconds since the start, KiB).
    pub samples: Vec<(f64, u64)>,
}

impl RssSeries {
    /// A few evenly spaced samples, enough to show whether memory grows.
    pub fn thinned(&self, points: usize) -> Vec<(f64, u64)> {
        if self.samples.len() <= points || points < 2 {
            return self.samples.clone();
        }
        let last = self.samples.len() - 1;
        (0..points)
            .map(|i| self.samples[i * last / (points - 1)])
            .collect()
    }

    /// The figures as JSON, in MiB.
    pub fn to_json(&self) -> Value {
        let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
        json!({
            "start_mib": mib(self.start_kib),
            "peak_mib": mib(self.peak_kib),
            "end_mib": mib(self.end_kib),
            "samples": self.samples.len(),
            "series_mib": self
                .thinned(11)
                .iter()
                .map(|(t, kib)| json!([(t * 10.0).round() / 10.0, mib(*kib)]))
                .collect::<Vec<_>>(),
        })
    }
}

/// Samples this process's resident memory on a thread of its own, so that a
/// busy async runtime cannot delay the samples.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<RssSeries>,
}

impl RssSampler {
    /// Starts sampling every `every`.
    pub fn start(every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            loop {
                samples.push((started.elapsed().as_secs_f64(), rss_kib()));
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(every);
            }
            RssSeries {
                start_kib: samples.first().map_or(0, |s| s.1),
                peak_kib: samples.iter().map(|s| s.1).max().unwrap_or(0),
                end_kib: samples.last().map_or(0, |s| s.1),
                samples,
            }
        });
        RssSampler { stop, thread }
    }

    /// Takes a last sample and returns the series.
    pub fn finish(self) -> RssSeries {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the rss sampler does not panic")
    }
}
