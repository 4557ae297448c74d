//! The work that follows a registration or a dump (register and finished hooks,
//! analysis, retention) runs on a fixed pool of threads fed by a bounded queue, so that
//! however many sessions a flood starts and ends, the server runs at most
//! `max_hook_processes` of them at once and holds at most `max_queued_jobs` more.
//! Retention, which scans the whole dump directory, runs once each time the queue
//! drains rather than once per dump.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken by a worker and not finished yet.
    running: usize,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Run once the queue is empty and no job is running (retention).
    after_drain: Option<Box<dyn Fn() + Send + Sync>>,
    drain_due: AtomicBool,
}

/// A fixed pool of worker threads with a bounded queue.
pub struct JobPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    capacity: usize,
}

/// The queue is full: the job was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl JobPool {
    /// Starts `workers` threads (at least one) taking jobs from a queue of `capacity`.
    /// `after_drain`, when given, runs on a worker once the queue has drained after
    /// jobs that asked for it ([`submit`](Self::submit) with `then_drain`).
    pub fn new(workers: usize, capacity: usize, after_drain: Option<Box<dyn Fn() + Send + Sync>>) -> JobPool {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            after_drain,
            drain_due: AtomicBool::new(false),
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("netdumpd-job-{i}"))
                    .spawn(move || work(&shared))
                    .expect("cannot start a worker thread")
            })
            .collect();
        JobPool { shared, workers, capacity }
    }

    /// Queues `job`; with `then_drain`, the pool's after-drain work runs once the
    /// queue is empty again.
    pub fn submit(&self, then_drain: bool, job: impl FnOnce() + Send + 'static) -> Result<(), QueueFull> {
        let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.jobs.len() >= self.capacity {
            return Err(QueueFull);
        }
        let shared = self.shared.clone();
        q.jobs.push_back(Box::new(move || {
            job();
            if then_drain {
                shared.drain_due.store(true, Ordering::SeqCst);
            }
        }));
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Jobs waiting or running.
    pub fn pending(&self) -> usize {
        let q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.jobs.len() + q.running
    }

    /// Lets the queued jobs finish, then stops the workers.
    pub fn finish(&mut self) {
        self.close_and_join();
    }

    fn close_and_join(&mut self) {
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).closing = true;
        self.shared.ready.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for JobPool {
    fn drop(&mut self) {
        self.close_and_join();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    q.running += 1;
                    break job;
                }
                if q.running == 0
                    && shared.drain_due.swap(false, Ordering::SeqCst)
                    && let Some(after) = &shared.after_drain
                {
                    q.running += 1;
                    drop(q);
                    after();
                    q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    q.running -= 1;
                    continue;
                }
                if q.closing {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        job();
        let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.running -= 1;
        drop(q);
        // Another worker may be waiting for the queue to drain.
        shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn at_most_the_workers_run_at_once_and_a_full_queue_refuses() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let pool = JobPool::new(2, 3, None);
        let mut taken = 0;
        for _ in 0..10 {
            let (running, peak, gate) = (running.clone(), peak.clone(), gate.clone());
            let ok = pool.submit(false, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                running.fetch_sub(1, Ordering::SeqCst);
            });
            taken += usize::from(ok.is_ok());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Two running, three queued; the rest refused.
        assert_eq!(taken, 5);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut pool = pool;
        pool.finish();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_after_drain_work_runs_once_per_drain_not_once_per_job() {
        let drains = Arc::new(AtomicUsize::new(0));
        let d = drains.clone();
        let pool = JobPool::new(
            1,
            100,
            Some(Box::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        for _ in 0..20 {
            let gate = gate.clone();
            pool.submit(true, move || drop(gate.lock().unwrap())).unwrap();
        }
        drop(held);
        while pool.pending() > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut pool = pool;
        pool.finish();
        assert_eq!(drains.load(Ordering::SeqCst), 1);
    }
}
