//! Group commit: calls of one kind that arrive while statements of their
//! kind are running wait, and go together in the next statement. An idle
//! gateway sends each call at once, in a statement of its own; a busy one
//! sends one statement (one round trip, one commit) for many calls instead
//! of one each, which is what lets keyed stops keep up with unkeyed ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// At most this many statements of one kind run at once. One: the next
/// group fills while a statement runs (with two, under load, groups stayed
/// at one or two calls, and the database's work per call with them).
const RUNNING: usize = 1;

/// What a grouped call came to.
#[derive(Debug)]
pub(super) enum Grouped<T, R> {
    Done(R),
    /// The group's statement was refused for what is in it (a constraint,
    /// say): the call, given back, is to be made alone, so that its own
    /// error is its own.
    Alone(T),
    /// The database could not be reached.
    Down(String),
}

/// A group's statement: the calls given back, with their answers.
type Ran<T, R> = (Vec<T>, Result<Vec<R>, sqlx::Error>);

type Run<T, R> = dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Ran<T, R>> + Send>> + Send + Sync;

struct Queue<T, R> {
    waiting: Vec<(T, oneshot::Sender<Grouped<T, R>>)>,
    running: usize,
}

/// Calls of one kind, grouped into statements by `run`, which answers the
/// calls it is given in their order.
pub(super) struct Group<T, R> {
    queue: Arc<Mutex<Queue<T, R>>>,
    run: Arc<Run<T, R>>,
    /// At most this many calls in one statement.
    most: usize,
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    pub(super) fn new<F, Fut>(most: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Ran<T, R>> + Send + 'static,
    {
        Self {
            queue: Arc::new(Mutex::new(Queue {
                waiting: Vec::new(),
                running: 0,
            })),
            run: Arc::new(move |items| Box::pin(run(items))),
            most: most.max(1),
        }
    }

    /// Makes the call in the next statement of its kind. The statement runs
    /// in a task of its own: a caller that goes away does not hold up the
    /// others in its group.
    pub(super) async fn call(&self, item: T) -> Grouped<T, R> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push((item, tx));
            let start = q.running < RUNNING;
            if start {
                q.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(drain(self.queue.clone(), self.run.clone(), self.most));
        }
        rx.await
            .unwrap_or_else(|_| Grouped::Down("the store's writer stopped".into()))
    }
}

/// Counts a draining task out of its queue however it ends (a statement
/// that panicked included: the calls behind it are not stranded).
struct Running<T, R>(Arc<Mutex<Queue<T, R>>>, bool);

impl<T, R> Drop for Running<T, R> {
    fn drop(&mut self) {
        if !self.1 {
            let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
            q.running -= 1;
        }
    }
}

/// Runs statements for what is waiting until nothing is.
async fn drain<T, R>(queue: Arc<Mutex<Queue<T, R>>>, run: Arc<Run<T, R>>, most: usize) {
    let mut running = Running(queue.clone(), false);
    loop {
        let group: Vec<_> = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                q.running -= 1;
                running.1 = true;
                return;
            }
            let n = q.waiting.len().min(most);
            q.waiting.drain(..n).collect()
        };
        let (items, answers): (Vec<T>, Vec<_>) = group.into_iter().unzip();
        let n = items.len();
        let (items, ran) = run(items).await;
        match ran {
            Ok(results) if results.len() == n => {
                for (answer, r) in answers.into_iter().zip(results) {
                    let _ = answer.send(Grouped::Done(r));
                }
            }
            Err(
                e @ (sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed),
            ) => {
                let why = e.to_string();
                for answer in answers {
                    let _ = answer.send(Grouped::Down(why.clone()));
                }
            }
            // Refused for what is in it, or an answer that does not fit.
            Ok(_) | Err(_) => {
                for (answer, item) in answers.into_iter().zip(items) {
                    let _ = answer.send(Grouped::Alone(item));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_that_come_while_a_statement_runs_go_together_in_the_next() {
        let sizes = Arc::new(StdMutex::new(Vec::new()));
        // The first statement holds until the test lets it go.
        let gate = Arc::new(Semaphore::new(0));
        let (s, g) = (sizes.clone(), gate.clone());
        let group = Arc::new(Group::new(4, move |items: Vec<u32>| {
            let (sizes, gate) = (s.clone(), g.clone());
            async move {
                let first = sizes.lock().unwrap().is_empty();
                sizes.lock().unwrap().push(items.len());
                if first {
                    gate.acquire().await.unwrap().forget();
                }
                let doubled = items.iter().map(|i| i * 2).collect();
                (items, Ok(doubled))
            }
        }));
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.call(0).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (1..=6)
            .map(|i| {
                let group = group.clone();
                tokio::spawn(async move { group.call(i).await })
            })
            .collect();
        // All six wait behind the first statement, then go four and two.
        while group.queue.lock().unwrap().waiting.len() < 6 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        assert!(matches!(first.await.unwrap(), Grouped::Done(0)));
        for (i, call) in (1..=6).zip(rest) {
            match call.await.unwrap() {
                Grouped::Done(r) => assert_eq!(r, i * 2, "each call gets its own answer"),
                other => panic!("call {i}: {other:?}"),
            }
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 4, 2]);
        assert_eq!(group.queue.lock().unwrap().running, 0);
    }

    #[tokio::test]
    async fn a_refused_group_gives_its_calls_back_and_an_unreachable_one_says_so() {
        let refused = Group::new(8, |items: Vec<&'static str>| async move {
            (items, Err::<Vec<()>, _>(sqlx::Error::RowNotFound))
        });
        assert!(matches!(refused.call("mine").await, Grouped::Alone("mine")));
        let down = Group::new(8, |items: Vec<u8>| async move {
            (items, Err::<Vec<()>, _>(sqlx::Error::PoolTimedOut))
        });
        assert!(matches!(down.call(1).await, Grouped::Down(why) if why.contains("timed out")));
        // An answer that does not fit its calls is no answer.
        let short = Group::new(
            8,
            |items: Vec<u8>| async move { (items, Ok(Vec::<u8>::new())) },
        );
        assert!(matches!(short.call(7).await, Grouped::Alone(7)));
    }
}
