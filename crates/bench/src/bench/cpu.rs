//! CPU time per thread of this process, for the benchmark's CPU-per-stage figures.
//!
//! Linux only, and without unsafe code: a sampler thread reads
//! `/proc/self/task/<tid>/schedstat` (nanoseconds on a CPU) and `comm` (the thread's name)
//! every few milliseconds and keeps the last value of each thread. Threads that ended
//! between two samples lose their last few milliseconds; the process total (from
//! `/proc/self/stat`, which counts ended threads too) shows what no live thread accounts
//! for. Elsewhere every figure is zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// CPU seconds of one thread over the sampled interval.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u64,
    /// Its name (`comm`, at most 15 bytes).
    pub name: String,
    /// Seconds on a CPU since sampling started (or since the thread started).
    pub seconds: f64,
}

/// What a [`Sampler`] measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUsage {
    /// Every thread that ran during the interval.
    pub threads: Vec<ThreadCpu>,
    /// CPU seconds of the whole process over the interval, ended threads included
    /// (resolution 10 ms).
    pub process_seconds: f64,
}

/// Samples per-thread CPU time until [`Sampler::stop`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<HashMap<u64, Seen>>,
    process_start: f64,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    /// On-CPU nanoseconds when `name` was read.
    named_at: u64,
    /// On-CPU nanoseconds at the first sample that saw it (0 for threads born later).
    base: u64,
    last: u64,
}

/// A thread names itself when it starts running; on a busy machine it can wait that
/// long for a CPU, and until then it has its parent's name. A name read after the thread
/// ran this long is its own.
const NAMED_AFTER_NS: u64 = 1_000_000;

impl Sampler {
    /// Takes the baseline of every live thread and starts sampling every `period`.
    pub fn start(period: Duration) -> Sampler {
        let mut seen = HashMap::new();
        sample(&mut seen, true);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mf-cpu-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(period);
                        sample(&mut seen, false);
                    }
                    sample(&mut seen, false);
                    seen
                })
                .expect("spawning the CPU sampler thread")
        };
        Sampler {
            stop,
            handle,
            process_start: process_cpu_seconds(),
        }
    }

    /// Takes a last sample and returns what each thread used since the start.
    pub fn stop(self) -> CpuUsage {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.handle.join().expect("CPU sampler panicked");
        let process_seconds = (process_cpu_seconds() - self.process_start).max(0.0);
        let mut threads: Vec<ThreadCpu> = seen
            .into_iter()
            .filter(|(_, s)| s.last > s.base)
            .map(|(tid, s)| ThreadCpu {
                tid,
                name: s.name,
                seconds: (s.last - s.base) as f64 / 1e9,
            })
            .collect();
        threads.sort_by_key(|t| t.tid);
        CpuUsage {
            threads,
            process_seconds,
        }
    }
}

fn sample(seen: &mut HashMap<u64, Seen>, baseline: bool) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let Some(ns) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue; // the thread ended meanwhile
        };
        match seen.get_mut(&tid) {
            // A smaller count means the id was reused by a new thread: keep the old one's
            // time under a key no live thread can have.
            Some(s) if ns < s.last => {
                let old = std::mem::replace(
                    s,
                    Seen {
                        name: thread_name(&path),
                        named_at: ns,
                        base: 0,
                        last: ns,
                    },
                );
                seen.insert(tid | 1 << 63, old);
            }
            Some(s) => {
                s.last = ns;
                if s.named_at < NAMED_AFTER_NS {
                    s.name = thread_name(&path);
                    s.named_at = ns;
                }
            }
            None => {
                seen.insert(
                    tid,
                    Seen {
                        name: thread_name(&path),
                        named_at: ns,
                        base: if baseline { ns } else { 0 },
                        last: ns,
                    },
                );
            }
        }
    }
}

fn thread_name(task: &std::path::Path) -> String {
    std::fs::read_to_string(task.join("comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// utime + stime of the whole process, seconds.
fn process_cpu_seconds() -> f64 {
    process_cpu_seconds_of("self")
}

/// utime + stime of process `pid` ("self" or a number), seconds, its ended threads
/// included; 0 if it is gone. `/proc/<pid>/stat` counts in clock ticks, which are
/// 1/100 s on Linux for every architecture's user ABI (`USER_HZ`).
pub(super) fn process_cpu_seconds_of(pid: &str) -> f64 {
    const USER_HZ: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The name field may hold spaces and parentheses: count fields after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the full line, utime 14 and stime 15.
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(14) + tick(15)) as f64 / USER_HZ
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_seen_with_its_name() {
        let s = Sampler::start(Duration::from_millis(5));
        let busy = std::thread::Builder::new()
            .name("mf-test-busy".into())
            .spawn(|| {
                // A fixed amount of work, not a wall-clock loop: a loaded machine only
                // makes it take longer.
                let mut x = 0u64;
                for i in 0..50_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                // Alive until the sampler has certainly seen it.
                std::thread::sleep(Duration::from_millis(30));
            })
            .unwrap();
        busy.join().unwrap();
        let usage = s.stop();
        if !cfg!(target_os = "linux") {
            return;
        }
        let t = usage
            .threads
            .iter()
            .find(|t| t.name == "mf-test-busy")
            .unwrap_or_else(|| panic!("busy thread not seen: {usage:?}"));
        assert!(t.seconds > 0.001, "{t:?}");
        assert!(usage.process_seconds >= t.seconds - 0.02, "{usage:?}");
    }
}
