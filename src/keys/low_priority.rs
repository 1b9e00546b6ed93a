//! One thread at a lower CPU priority for background store work.
//!
//! A usage flush on the embedded store is B-tree work proportional to the number of keys used
//! since the last flush: with 100k keys in use, about 60 ms of CPU every second. On the blocking
//! pool it took turns with the worker serving requests, and every flush showed up as a stall of
//! tens of milliseconds in the load benchmark's latencies (arm E). At nice 10 the scheduler gives
//! requests the CPU first and the flush the rest; a flush that falls behind merges more requests
//! per key, so it catches up.

use std::sync::mpsc;

/// How much lower than the gateway's own priority (Linux nice value added).
const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

pub struct LowPriorityThread {
    jobs: mpsc::Sender<Job>,
}

impl LowPriorityThread {
    /// Starts the thread; it ends when this handle is dropped and its queue is empty.
    pub fn spawn(name: &str) -> std::io::Result<LowPriorityThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                lower_priority_of_this_thread();
                for job in queue {
                    job();
                }
            })?;
        Ok(LowPriorityThread { jobs })
    }

    /// Runs `work` on the thread and waits for its result without blocking the runtime.
    /// `None` if the thread is gone (it panicked).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}

#[cfg(target_os = "linux")]
fn lower_priority_of_this_thread() {
    // On Linux the nice value belongs to the thread: `who == 0` is the calling thread only.
    // SAFETY: a plain system call with integer arguments; failure leaves the priority as it was.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS) };
}

#[cfg(not(target_os = "linux"))]
fn lower_priority_of_this_thread() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_at_a_lower_priority_and_returns_its_result() {
        let thread = LowPriorityThread::spawn("test-low-priority").unwrap();
        let (sum, nice) = thread
            .run(|| {
                // SAFETY: reads the calling thread's nice value.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                ((1..=10).sum::<i32>(), nice)
            })
            .await
            .unwrap();
        assert_eq!(sum, 55);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: as above, on the test's own thread.
            let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(nice, (ours + NICENESS).min(19), "the work ran niced");
        }
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_as_none() {
        let thread = LowPriorityThread::spawn("test-low-priority").unwrap();
        let result = thread.run(|| -> u8 { panic!("boom") }).await;
        assert_eq!(result, None);
    }
}
