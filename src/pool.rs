//! The one bounded parallel map: a few worker threads over a list of jobs (packs to read,
//! index objects to load, restored files to verify).
//!
//! Every command that does independent jobs in parallel uses [`run`] (or [`map`]), so they
//! behave alike:
//!
//! - **Bounded.** At most `workers` threads (never more than there are jobs), each taking the
//!   next job when it is done with one; a result waits in a channel of `workers` places, and
//!   results finished ahead of an earlier job wait beside it until that one is in (so results
//!   should be small: reports and findings, not the data read).
//! - **Results in job order**, handed to the caller's `sink` on the calling thread while the
//!   workers go on: what a result is merged into needs no lock, and the outcome does not depend
//!   on thread timing.
//! - **First error stops.** After the first error (of a job, a worker's set-up or the sink) no
//!   job is started; the jobs in flight finish and the error is returned.
//! - **Interruptible.** Each worker polls [`crate::interrupt::check`] before each job: SIGINT or
//!   SIGTERM stops the map within one job per worker, with [`Error::Interrupted`].
//!
//! The backup pipeline's stages (a reader, a chunker, compressors, a writer, each a different
//! job) are another shape and have their own threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Worker threads for `asked` (from an option: 0 means "choose"): `asked`, or one per core and
/// at least `min`.
pub fn workers(asked: usize, min: usize) -> usize {
    if asked > 0 {
        asked
    } else {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(min)
    }
}

/// Runs `work` on every job with up to `workers` threads and hands each result to `sink`, in
/// job order, on the calling thread. Each worker first makes its own state with `init` (a
/// directory handle, a buffer) and passes it to every job it runs. See the module
/// documentation for the bounds, the order, and how an error or a signal stops it.
pub fn run<I, S, R>(
    workers: usize,
    jobs: I,
    init: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&mut S, I::Item) -> Result<R> + Sync,
    mut sink: impl FnMut(R) -> Result<()>,
) -> Result<()>
where
    I: IntoIterator,
    I::IntoIter: Send,
    I::Item: Send,
    R: Send,
{
    let jobs = jobs.into_iter();
    let most = jobs.size_hint().1.unwrap_or(usize::MAX).max(1);
    let workers = workers.clamp(1, most);
    let jobs = Mutex::new(jobs.enumerate());
    let stop = AtomicBool::new(false);
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Result<R>)>(workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (jobs, stop, init, work) = (&jobs, &stop, &init, &work);
            scope.spawn(move || {
                let mut state = match init() {
                    Ok(s) => s,
                    Err(e) => {
                        // The receiver outlives every worker: a failed send cannot happen.
                        let _ = tx.send((0, Err(e)));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = crate::interrupt::check() {
                        let _ = tx.send((0, Err(e)));
                        return;
                    }
                    let Some((i, job)) = jobs.lock().next() else {
                        return;
                    };
                    let result = work(&mut state, job);
                    let failed = result.is_err();
                    if tx.send((i, result)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut first: Option<Error> = None;
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        // Drained to the end, also after an error: a worker never waits on a full channel.
        for (i, result) in rx {
            if first.is_some() {
                continue;
            }
            match result {
                Ok(r) => {
                    waiting.insert(i, r);
                    while let Some(r) = waiting.remove(&next) {
                        next += 1;
                        if let Err(e) = sink(r) {
                            first = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => first = Some(e),
            }
            if first.is_some() {
                stop.store(true, Ordering::Relaxed);
                waiting.clear();
            }
        }
        first.map_or(Ok(()), Err)
    })
}

/// [`run`] without state per worker: every result, in job order.
pub fn map<I, R>(
    workers: usize,
    jobs: I,
    work: impl Fn(I::Item) -> Result<R> + Sync,
) -> Result<Vec<R>>
where
    I: IntoIterator,
    I::IntoIter: Send,
    I::Item: Send,
    R: Send,
{
    let mut out = Vec::new();
    run(
        workers,
        jobs,
        || Ok(()),
        |(), job| work(job),
        |r| {
            out.push(r);
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn results_come_in_job_order_whatever_the_timing() {
        let got = map(4, 0..200u64, |i| {
            // Later jobs finish first.
            std::thread::sleep(std::time::Duration::from_micros((200 - i) * 20));
            Ok(i * 2)
        })
        .expect("map");
        assert_eq!(got, (0..200).map(|i| i * 2).collect::<Vec<_>>());
        assert!(map(3, Vec::<u8>::new(), |_| Ok(()))
            .expect("none")
            .is_empty());
    }

    #[test]
    fn the_first_error_stops_further_jobs_and_is_returned() {
        let started = AtomicUsize::new(0);
        let err = map(2, 0..10_000, |i| {
            started.fetch_add(1, Ordering::Relaxed);
            if i == 10 {
                return Err(Error::Invalid(format!("job {i} failed")));
            }
            Ok(i)
        })
        .expect_err("an error");
        assert_eq!(err.to_string(), "job 10 failed");
        assert!(started.load(Ordering::Relaxed) < 10_000, "every job ran");
        // An error of the sink stops it too.
        let mut seen = 0;
        let err = run(
            2,
            0..10_000,
            || Ok(()),
            |(), i| Ok(i),
            |i| {
                seen += 1;
                if i == 5 {
                    return Err(Error::Invalid("enough".into()));
                }
                Ok(())
            },
        )
        .expect_err("sink error");
        assert_eq!(err.to_string(), "enough");
        assert_eq!(seen, 6);
    }

    #[test]
    fn each_worker_makes_its_state_once_and_a_failed_set_up_is_an_error() {
        let made = AtomicUsize::new(0);
        let mut sum = 0;
        run(
            3,
            1..=100,
            || {
                made.fetch_add(1, Ordering::Relaxed);
                Ok(0usize)
            },
            |runs, i| {
                *runs += 1;
                Ok(i)
            },
            |i| {
                sum += i;
                Ok(())
            },
        )
        .expect("run");
        assert_eq!(sum, 5050);
        assert!(made.load(Ordering::Relaxed) <= 3);
        // Never more workers than jobs.
        made.store(0, Ordering::Relaxed);
        let two = run(
            8,
            [1, 2],
            || {
                made.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            |(), i| Ok(i),
            |_| Ok(()),
        );
        assert!(two.is_ok());
        assert!(made.load(Ordering::Relaxed) <= 2);
        let err = run(
            2,
            0..5,
            || Err::<(), _>(Error::Invalid("no state".into())),
            |(), i| Ok(i),
            |_| Ok(()),
        )
        .expect_err("set-up fails");
        assert_eq!(err.to_string(), "no state");
    }
}
