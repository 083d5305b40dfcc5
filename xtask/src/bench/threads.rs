//! Work on an OS thread of its own with a current-thread runtime: the load generator, the
//! Novu stand-in and the ceilings' HTTP server. Each then neither competes with the
//! bench's bookkeeping for a runtime worker nor hides in the process's CPU: a thread's
//! `utime + stime` is read from `/proc/self/task/<tid>/stat`.

use std::future::Future;

use anyhow::Context;
use tokio::sync::oneshot;

use super::resources;

/// A thread started by [`spawn`].
pub struct Thread<T> {
    /// Its id, for [`resources::Who::Thread`].
    pub tid: u32,
    done: oneshot::Receiver<(T, f64)>,
}

impl<T> Thread<T> {
    /// Waits for the job's outcome and the CPU seconds its thread spent.
    pub async fn join(self) -> (T, f64) {
        self.done.await.expect("a bench thread does not panic")
    }
}

/// Runs `job` on a new thread named `name`, on a current-thread runtime.
pub async fn spawn<T, F>(name: &str, job: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<Thread<T>>
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    let (started, tid) = oneshot::channel();
    let (finished, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime");
            let _ = started.send(resources::thread_id());
            let cpu = resources::thread_cpu_secs();
            let outcome = runtime.block_on(job());
            let _ = finished.send((outcome, resources::thread_cpu_secs() - cpu));
        })
        .with_context(|| format!("starting the {name} thread"))?;
    let tid = tid.await.context("the thread stopped at once")?.context("reading /proc/thread-self")?;
    Ok(Thread { tid, done })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_thread_reports_its_id_and_cpu() {
        // Spins until its own CPU clock has advanced, so a busy machine only makes it slower.
        let thread = spawn("busy", || async {
            let cpu = resources::thread_cpu_secs();
            while resources::thread_cpu_secs() - cpu < 0.03 {
                std::hint::black_box(());
            }
        })
        .await
        .unwrap();
        assert_ne!(thread.tid, std::process::id());
        let ((), cpu) = thread.join().await;
        assert!((0.03..1.0).contains(&cpu), "{cpu} s");
    }
}
