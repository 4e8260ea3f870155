//! Group commit: concurrent small operations combined into one store operation.
//!
//! A write of one entity costs a transaction (PostgreSQL: locks, a read, the upsert, the history
//! insert, the change record, a commit) or a durable commit (redb: an fsync), whatever the number
//! of entities in it. Under load, the requests waiting for a lane are taken together: a lane
//! takes every job queued when it becomes free (up to a maximum) and runs them as one operation,
//! so the number of transactions per request falls as the load rises, while an idle store runs
//! each job at once, alone. Lanes are tasks of the runtime that first submits; a lane whose
//! runtime stopped is replaced on the next submit.

use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What a lane does with the jobs it took together.
pub type Run<J> = Arc<dyn Fn(Vec<J>) -> BoxFuture<'static, ()> + Send + Sync>;

/// A queue of jobs served by a fixed number of lanes, each running what it took as one group.
pub struct Combiner<J> {
    lanes: usize,
    max_group: usize,
    run: Run<J>,
    queue: Mutex<Option<mpsc::UnboundedSender<J>>>,
}

impl<J: Send + 'static> Combiner<J> {
    /// A combiner with `lanes` concurrent groups of at most `max_group` jobs each, run by `run`.
    pub fn new(lanes: usize, max_group: usize, run: Run<J>) -> Combiner<J> {
        Combiner {
            lanes: lanes.max(1),
            max_group: max_group.max(1),
            run,
            queue: Mutex::new(None),
        }
    }

    /// Queues a job; it runs in the next group a free lane takes. Must be called within a tokio
    /// runtime (lanes are started on the first call, and again after their runtime stopped).
    pub fn submit(&self, job: J) {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let job = match queue.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..self.lanes {
            tokio::spawn(lane(receiver.clone(), self.max_group, self.run.clone()));
        }
        // The receiver lives while a lane does, so the send cannot fail.
        let _ = sender.send(job);
        *queue = Some(sender);
    }
}

/// One lane: waits for jobs, takes every queued one (up to `max_group`) and runs them together;
/// ends when the combiner is dropped.
async fn lane<J: Send + 'static>(
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<J>>>,
    max_group: usize,
    run: Run<J>,
) {
    let mut group = Vec::with_capacity(max_group);
    loop {
        let taken = receiver.lock().await.recv_many(&mut group, max_group).await;
        if taken == 0 {
            return;
        }
        run(std::mem::take(&mut group)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    type Job = (u32, oneshot::Sender<(u32, usize)>);

    /// Answers each job with its number and the size of the group it ran in, after a pause that
    /// lets later jobs queue up.
    fn echo(groups: Arc<AtomicUsize>) -> Run<Job> {
        Arc::new(move |jobs: Vec<Job>| {
            let groups = groups.clone();
            Box::pin(async move {
                groups.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let n = jobs.len();
                for (x, reply) in jobs {
                    let _ = reply.send((x, n));
                }
            })
        })
    }

    #[tokio::test]
    async fn a_job_alone_runs_at_once_in_a_group_of_one() {
        let groups = Arc::new(AtomicUsize::new(0));
        let combiner = Combiner::new(2, 100, echo(groups.clone()));
        let (tx, rx) = oneshot::channel();
        combiner.submit((7, tx));
        assert_eq!(rx.await.unwrap(), (7, 1));
        assert_eq!(groups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn jobs_queued_behind_busy_lanes_run_together_and_each_gets_its_answer() {
        let groups = Arc::new(AtomicUsize::new(0));
        let combiner = Combiner::new(1, 100, echo(groups.clone()));
        let mut answers = Vec::new();
        for x in 0..50 {
            let (tx, rx) = oneshot::channel();
            combiner.submit((x, tx));
            answers.push(rx);
        }
        let mut sizes = Vec::new();
        for (x, rx) in answers.into_iter().enumerate() {
            let (got, size) = rx.await.unwrap();
            assert_eq!(got, x as u32, "each job gets its own answer");
            sizes.push(size);
        }
        // The lane takes the first job (alone, or with all the others); the rest run as one group.
        assert!(groups.load(Ordering::SeqCst) <= 2, "{sizes:?}");
        assert!(
            sizes.iter().filter(|&&s| s >= 49).count() >= 49,
            "{sizes:?}"
        );
    }

    #[tokio::test]
    async fn groups_are_capped() {
        let groups = Arc::new(AtomicUsize::new(0));
        let combiner = Combiner::new(1, 10, echo(groups.clone()));
        let mut answers = Vec::new();
        for x in 0..35 {
            let (tx, rx) = oneshot::channel();
            combiner.submit((x, tx));
            answers.push(rx);
        }
        for rx in answers {
            assert!(rx.await.unwrap().1 <= 10);
        }
        assert!(groups.load(Ordering::SeqCst) >= 4);
    }

    #[test]
    fn lanes_are_restarted_when_their_runtime_stopped() {
        let groups = Arc::new(AtomicUsize::new(0));
        let combiner = Combiner::new(1, 10, echo(groups.clone()));
        for round in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (tx, rx) = oneshot::channel();
                combiner.submit((round, tx));
                assert_eq!(rx.await.unwrap(), (round, 1));
            });
            drop(rt);
        }
        assert_eq!(groups.load(Ordering::SeqCst), 2);
    }
}
