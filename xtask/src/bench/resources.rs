//! Memory and CPU of the platform's processes, read from `/proc`: `VmRSS` and `VmHWM`
//! of `/proc/<pid>/status`, `utime + stime` of `/proc/<pid>/stat`. PostgreSQL and
//! RabbitMQ are many processes (PostgreSQL's backends come and go): each is the sum of
//! the processes named `beam.smp`, resp. `postgres` (the server's own and the backends of
//! the bench's database, not those of the machine's other databases), alive when sampled.
//! A thread of this process (the load generator, the Novu stand-in) is read apart from
//! `/proc/self/task/<tid>/stat`.

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    sync::{Arc, Mutex},
    time::Duration,
};

/// A process, or a family of processes found by name.
#[derive(Clone, Debug)]
pub enum Who {
    Pid(u32),
    /// A thread of this process: its CPU only (memory is the process's).
    Thread(u32),
    Comm(&'static str),
    /// PostgreSQL's own processes (postmaster, checkpointer, WAL writer, ...) and its
    /// client backends of this database.
    Postgres {
        database: &'static str,
    },
}

#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub who: Who,
}

impl Watched {
    fn pids(&self) -> Vec<u32> {
        match &self.who {
            Who::Pid(pid) => vec![*pid],
            Who::Thread(_) => Vec::new(),
            Who::Comm(comm) => pids_named(comm),
            Who::Postgres { database } => pids_named("postgres")
                .into_iter()
                .filter(|pid| {
                    let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    backend_database(&String::from_utf8_lossy(&title)).is_none_or(|db| db == *database)
                })
                .collect(),
        }
    }
}

/// The database a PostgreSQL client backend serves, from its process title
/// (`postgres: 15/main: <user> <database> <host>(<port>) <state>`, or `[local]` for a
/// socket); `None` for the server's own processes, which name no client.
fn backend_database(title: &str) -> Option<&str> {
    let words: Vec<&str> = title.split(['\0', ' ']).filter(|w| !w.is_empty()).collect();
    let client = words.iter().position(|w| *w == "[local]" || (w.contains('(') && w.ends_with(')')))?;
    words.get(client.checked_sub(1)?).copied()
}

fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm))
        .collect()
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// `utime + stime` of a `stat` file of /proc (a process's or a thread's), in clock ticks.
fn stat_cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15), 1-based in proc(5).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds the calling thread has spent (to a clock tick, 10 ms).
pub fn thread_cpu_secs() -> f64 {
    stat_cpu_ticks("/proc/thread-self/stat").unwrap_or(0) as f64 / ticks_per_second()
}

/// The calling thread's id (`/proc/thread-self` links to `<pid>/task/<tid>`).
pub fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU seconds of each watched process (family) at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot(pub BTreeMap<String, f64>);

impl CpuSnapshot {
    /// CPU seconds spent since `earlier`, per name.
    pub fn since(&self, earlier: &CpuSnapshot) -> BTreeMap<String, f64> {
        self.0.iter().map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0))).collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Resident set now, MiB (summed over a family).
    pub rss_mib: f64,
    /// The largest resident set seen: `VmHWM` for one process, the largest sampled sum
    /// for a family.
    pub peak_mib: f64,
}

/// Samples the watched processes' memory every `period` in the background, so the peak
/// of a family (which has no `VmHWM` of its own) is seen.
pub struct Sampler {
    watched: Vec<Watched>,
    peaks: Arc<Mutex<BTreeMap<String, f64>>>,
    task: tokio::task::JoinHandle<()>,
    ticks: f64,
}

impl Sampler {
    pub fn start(watched: Vec<Watched>, period: Duration) -> Self {
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let task = {
            let (watched, peaks) = (watched.clone(), peaks.clone());
            tokio::spawn(async move {
                loop {
                    for w in &watched {
                        let rss = rss_mib(w);
                        let mut peaks = peaks.lock().expect("not poisoned");
                        let peak = peaks.entry(w.name.clone()).or_insert(0.0);
                        *peak = f64::max(*peak, rss);
                    }
                    tokio::time::sleep(period).await;
                }
            })
        };
        Self { watched, peaks, task, ticks: ticks_per_second() }
    }

    pub fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot(
            self.watched
                .iter()
                .map(|w| {
                    let ticks: u64 = match w.who {
                        Who::Thread(tid) => stat_cpu_ticks(&format!("/proc/self/task/{tid}/stat")).unwrap_or(0),
                        _ => w.pids().into_iter().filter_map(cpu_ticks).sum(),
                    };
                    (w.name.clone(), ticks as f64 / self.ticks)
                })
                .collect(),
        )
    }

    pub fn memory(&self) -> BTreeMap<String, Memory> {
        let peaks = self.peaks.lock().expect("not poisoned");
        self.watched
            .iter()
            .map(|w| {
                let rss = rss_mib(w);
                let hwm = match w.who {
                    Who::Pid(pid) => memory_kib(pid).map_or(0.0, |(_, hwm)| hwm as f64 / 1024.0),
                    Who::Thread(_) | Who::Comm(_) | Who::Postgres { .. } => 0.0,
                };
                let peak = [rss, hwm, peaks.get(&w.name).copied().unwrap_or(0.0)].into_iter().fold(0.0, f64::max);
                (w.name.clone(), Memory { rss_mib: rss, peak_mib: peak })
            })
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One process: its RSS. A family: the sum of its processes' PSS (shared pages divided
/// among the processes sharing them, so PostgreSQL's shared buffers count once), or of
/// their RSS where `smaps_rollup` cannot be read.
fn rss_mib(w: &Watched) -> f64 {
    let kib: u64 = match w.who {
        Who::Pid(pid) => memory_kib(pid).map_or(0, |(rss, _)| rss),
        Who::Thread(_) => 0,
        Who::Comm(_) | Who::Postgres { .. } => {
            w.pids().into_iter().filter_map(|pid| pss_kib(pid).or_else(|| Some(memory_kib(pid)?.0))).sum()
        }
    };
    kib as f64 / 1024.0
}

fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let (rss, hwm) = memory_kib(me).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_ticks(me).is_some());
        let tid = thread_id().unwrap();
        assert!(stat_cpu_ticks(&format!("/proc/self/task/{tid}/stat")).is_some());
    }

    #[test]
    fn tells_the_bench_backends_from_the_servers_own() {
        let db = |title| backend_database(title);
        assert_eq!(db("postgres: 15/main: postgres notify_bench 127.0.0.1(54321) idle"), Some("notify_bench"));
        assert_eq!(db("postgres: postgres notify_test_1 [local] SELECT"), Some("notify_test_1"));
        assert_eq!(db("postgres: 15/main: checkpointer        "), None);
        assert_eq!(db("/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0"), None);
    }
}
