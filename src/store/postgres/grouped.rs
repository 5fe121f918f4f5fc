//! Group commit: calls of one kind that arrive while a statement of their
//! kind is running wait, and go together in the next statement. An idle
//! gateway sends each call at once, in a statement of its own, from the
//! caller's task; a busy one sends one statement (one round trip, one
//! commit) for many calls instead of one each: at 64 connections, keyed
//! stops went from about 3,000 to about 10,000 a second on the benchmark
//! machine. What waits is bounded by the requests admitted, each waiting
//! for its own call.

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

    /// Makes the call in the next statement of its kind. With no statement
    /// of its kind running and none waiting, the call runs at once, in the
    /// caller's task (no hand-off); calls that come meanwhile wait, and go
    /// in a task of their own, so that a caller that goes away does not
    /// hold up the others in its group.
    pub(super) async fn call(&self, item: T) -> Grouped<T, R> {
        let (tx, rx) = oneshot::channel();
        let turn = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let idle = q.running < RUNNING;
            if idle {
                q.running += 1;
            }
            if idle && q.waiting.is_empty() {
                Ok(item)
            } else {
                q.waiting.push((item, tx));
                Err(idle)
            }
        };
        match turn {
            Ok(item) => {
                let _running = self.running();
                let (items, ran) = (self.run)(vec![item]).await;
                answers(items, ran)
                    .pop()
                    .unwrap_or(Grouped::Down("no answer".into()))
            }
            Err(idle) => {
                if idle {
                    tokio::spawn(drain(self.queue.clone(), self.run.clone(), self.most));
                }
                rx.await
                    .unwrap_or_else(|_| Grouped::Down("the store's writer stopped".into()))
            }
        }
    }

    /// The statement counted as running (by the caller, under the lock).
    fn running(&self) -> Running<T, R> {
        Running {
            queue: self.queue.clone(),
            run: self.run.clone(),
            most: self.most,
        }
    }
}

/// A statement counted as running, counted out however it ends (a caller
/// that went away, a statement that panicked): calls that came meanwhile
/// then go to a drain task, not stranded.
struct Running<T: Send + 'static, R: Send + 'static> {
    queue: Arc<Mutex<Queue<T, R>>>,
    run: Arc<Run<T, R>>,
    most: usize,
}

impl<T: Send + 'static, R: Send + 'static> Drop for Running<T, R> {
    fn drop(&mut self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.waiting.is_empty() {
            q.running -= 1;
            return;
        }
        drop(q);
        // Still counted: the drain takes the count over. (Outside a
        // runtime the count goes, and the next call starts a drain.)
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(drain(self.queue.clone(), self.run.clone(), self.most));
            }
            Err(_) => self.queue.lock().unwrap_or_else(|e| e.into_inner()).running -= 1,
        }
    }
}

/// Runs statements for what is waiting until nothing is (then its
/// `Running` lets the count go, or hands over what came in between). The
/// count, taken by whoever spawned the drain, is held by `Running` from the
/// first poll: a drain dropped unpolled (a runtime shutting down) leaves
/// it taken, and hands nothing on.
async fn drain<T: Send + 'static, R: Send + 'static>(
    queue: Arc<Mutex<Queue<T, R>>>,
    run: Arc<Run<T, R>>,
    most: usize,
) {
    let running = Running { queue, run, most };
    loop {
        let group: Vec<_> = {
            let mut q = running.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.waiting.len().min(running.most);
            if n == 0 {
                break;
            }
            q.waiting.drain(..n).collect()
        };
        let (items, calls): (Vec<T>, Vec<_>) = group.into_iter().unzip();
        let (items, ran) = (running.run)(items).await;
        for (call, answer) in calls.into_iter().zip(answers(items, ran)) {
            let _ = call.send(answer);
        }
    }
}

/// What each call of a statement came to, in their order.
fn answers<T, R>(items: Vec<T>, ran: Result<Vec<R>, sqlx::Error>) -> Vec<Grouped<T, R>> {
    match ran {
        Ok(results) if results.len() == items.len() => {
            results.into_iter().map(Grouped::Done).collect()
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
            items.iter().map(|_| Grouped::Down(why.clone())).collect()
        }
        // Refused for what is in it, or an answer that does not fit.
        Ok(_) | Err(_) => items.into_iter().map(Grouped::Alone).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::sync::Semaphore;

    use super::*;

    type Call = tokio::task::JoinHandle<Grouped<u32, u32>>;

    /// Call 0 (whose statement `run` records in `sizes`), then calls 1 to
    /// `n` once it runs; returns when those wait behind it.
    async fn first_then(
        group: &Arc<Group<u32, u32>>,
        sizes: &StdMutex<Vec<usize>>,
        n: u32,
    ) -> (Call, Vec<Call>) {
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.call(0).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest = (1..=n)
            .map(|i| {
                let group = group.clone();
                tokio::spawn(async move { group.call(i).await })
            })
            .collect();
        while group.queue.lock().unwrap().waiting.len() < n as usize {
            tokio::task::yield_now().await;
        }
        (first, rest)
    }

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
        // The first runs in its caller's task; all six wait behind it, then
        // go four and two.
        let (first, rest) = first_then(&group, &sizes, 6).await;
        gate.add_permits(1);
        assert!(matches!(first.await.unwrap(), Grouped::Done(0)));
        for (i, call) in (1..=6).zip(rest) {
            match call.await.unwrap() {
                Grouped::Done(r) => assert_eq!(r, i * 2, "each call gets its own answer"),
                other => panic!("call {i}: {other:?}"),
            }
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 4, 2]);
        // The drain counts itself out once it finds nothing left.
        let idle = async {
            while group.queue.lock().unwrap().running > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), idle)
            .await
            .expect("no statement left running");
        // Idle again: the next call runs in the caller's task, alone.
        assert!(matches!(group.call(9).await, Grouped::Done(18)));
        assert_eq!(*sizes.lock().unwrap(), [1, 4, 2, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_mid_statement_strands_no_one() {
        let sizes = Arc::new(StdMutex::new(Vec::new()));
        let s = sizes.clone();
        let group = Arc::new(Group::new(8, move |items: Vec<u32>| {
            let sizes = s.clone();
            async move {
                let first = sizes.lock().unwrap().is_empty();
                sizes.lock().unwrap().push(items.len());
                if first {
                    // Never ends: its caller is aborted.
                    std::future::pending::<()>().await;
                }
                let same = items.clone();
                (items, Ok(same))
            }
        }));
        let (first, rest) = first_then(&group, &sizes, 3).await;
        first.abort();
        for (i, call) in (1..=3).zip(rest) {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(5), call).await;
            match answer.expect("answered").unwrap() {
                Grouped::Done(r) => assert_eq!(r, i),
                other => panic!("call {i}: {other:?}"),
            }
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 3]);
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
