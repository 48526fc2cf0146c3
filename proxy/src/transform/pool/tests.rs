use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds, failing after 10 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn limits(permits: usize, per_client: usize) -> Limits {
    Limits {
        permits,
        max_waiting: 64,
        per_client,
        memory_bytes: 64 << 20,
    }
}

#[tokio::test]
async fn pool_bounds_concurrency_and_survives_panics() {
    let pool = Pool::with_limits(limits(2, 2));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let jobs = (0..8).map(|_| {
        let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
        async move {
            pool.run("a", move || {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                // Until two jobs have run at once (a serial pool never gets there: the
                // test then fails on the peak, after at most a few seconds).
                let t0 = Instant::now();
                while peak.load(SeqCst) < 2 && t0.elapsed() < Duration::from_secs(3) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, SeqCst);
                Ok(())
            })
            .await
        }
    });
    for r in futures::future::join_all(jobs).await {
        assert!(r.is_ok());
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "two at once, never more");
    let r: Result<(), _> = pool.run("a", || panic!("boom")).await;
    assert!(matches!(r, Err(TransformError::Internal(_))));
    assert_eq!(TransformError::TooLarge("x".into()).to_api().status, 413);
    assert_eq!(pool.load(), (0, 0), "every turn given back");
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_frees_its_places() {
    let pool = Pool::with_limits(Limits {
        max_waiting: 2,
        ..limits(1, 1)
    });
    let held = pool.turn("a").await.unwrap();
    // Two may wait; the third is refused with 503 + Retry-After.
    let w1 = tokio::spawn({
        let pool = pool.clone();
        async move { pool.turn("b").await.map(|_| ()) }
    });
    let w2 = tokio::spawn({
        let pool = pool.clone();
        async move { pool.turn("c").await.map(|_| ()) }
    });
    until("two waiting", || pool.load().1 == 2).await;
    let e = match pool.turn("d").await {
        Err(e) => e,
        Ok(_) => panic!("a third waiter was queued"),
    };
    let api = e.to_api();
    assert_eq!((api.status, api.retry_after), (503, Some(1)));
    drop(held);
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();
    assert_eq!(pool.load(), (0, 0));
    assert!(pool.turn("d").await.is_ok(), "room again");
}

/// One client's burst holds at most `per_client` workers, and a freed turn goes to the
/// longest-waiting request of a client under its cap, ahead of the burst's own queue.
#[tokio::test]
async fn one_client_never_holds_every_worker() {
    let pool = Pool::with_limits(limits(2, 1));
    let a1 = pool.turn("attacker").await.unwrap();
    // The attacker's second and third wait although a worker is free.
    let a2 = tokio::spawn({
        let pool = pool.clone();
        async move { pool.turn("attacker").await.map(drop) }
    });
    let a3 = tokio::spawn({
        let pool = pool.clone();
        async move { pool.turn("attacker").await.map(drop) }
    });
    until("the burst queued", || pool.load() == (1, 2)).await;
    // Another client gets the free worker at once, ahead of the queued burst.
    let other = pool.turn("user").await.unwrap();
    assert_eq!(pool.load(), (2, 2));
    drop(other);
    // Still one of the attacker's at a time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(pool.load(), (1, 2), "the burst stays at its cap");
    drop(a1);
    a2.await.unwrap().unwrap();
    a3.await.unwrap().unwrap();
    assert_eq!(pool.load(), (0, 0));
}

/// An abandoned wait leaves the queue; nothing is lost or leaked.
#[tokio::test]
async fn abandoned_waits_leave_no_turn_behind() {
    let pool = Pool::with_limits(limits(1, 1));
    let held = pool.turn("a").await.unwrap();
    let w = tokio::spawn({
        let pool = pool.clone();
        async move { pool.turn("b").await.map(drop) }
    });
    until("one waiting", || pool.load() == (1, 1)).await;
    w.abort();
    let _ = w.await;
    assert_eq!(pool.load(), (1, 0));
    drop(held);
    assert_eq!(pool.load(), (0, 0));
    assert!(pool.turn("c").await.is_ok());
}

/// Memory is reserved before the work: a second reservation waits until the first turn ends,
/// and one over the whole budget is refused at once.
#[tokio::test]
async fn memory_budget_makes_work_wait_and_refuses_the_impossible() {
    let pool = Pool::with_limits(limits(2, 2));
    let mut t1 = pool.turn("a").await.unwrap();
    t1.reserve(40 << 20).await.unwrap();
    assert_eq!(pool.memory_reserved(), 40 << 20);
    let mut t2 = pool.turn("b").await.unwrap();
    let e = t2.reserve(65 << 20).await.err().expect("over the budget");
    assert_eq!(e.to_api().status, 413);
    let second = tokio::spawn(async move { t2.reserve(40 << 20).await.map(|_| t2) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !second.is_finished(),
        "40 + 40 MiB is over 64 MiB: it waits"
    );
    drop(t1);
    let t2 = second.await.unwrap().unwrap();
    assert_eq!(pool.memory_reserved(), 40 << 20);
    drop(t2);
    assert_eq!(pool.memory_reserved(), 0);
}

/// A caller that stops waiting raises the work's token; the worker stays taken until the work
/// sees it and returns, and the cancelled counter moves. No timing: the work spins until told.
#[tokio::test]
async fn dropping_the_caller_cancels_the_work_and_frees_the_worker_after() {
    let pool = Pool::with_limits(limits(1, 1));
    let started = Arc::new(AtomicBool::new(false));
    let before = CANCELLED.load(Ordering::SeqCst);
    let task = tokio::spawn({
        let (pool, started) = (pool.clone(), started.clone());
        async move {
            pool.run("a", move || {
                started.store(true, Ordering::SeqCst);
                let t0 = Instant::now();
                loop {
                    check_cancel("spin")?;
                    if t0.elapsed() > Duration::from_secs(30) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .await
        }
    });
    until("the work started", || started.load(Ordering::SeqCst)).await;
    task.abort();
    let _ = task.await;
    until("the work stopped", || pool.load() == (0, 0)).await;
    assert!(CANCELLED.load(Ordering::SeqCst) > before);
    // Outside the pool there is no token, and a finished run leaves none behind.
    assert!(current_cancel().is_none());
    assert!(check_cancel("x").is_ok());
}

/// A client whose burst fills its half of the queue is refused more places, and another
/// client still gets a free worker at once: a full queue of one client's work never turns
/// away a request that could run now.
#[tokio::test]
async fn a_burst_cannot_fill_the_queue_against_others() {
    let pool = Pool::with_limits(Limits {
        max_waiting: 4,
        ..limits(2, 1)
    });
    let held = pool.turn("burst").await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.turn("burst").await.map(drop) })
        })
        .collect();
    until("two of the burst waiting", || pool.load() == (1, 2)).await;
    let e = pool
        .turn("burst")
        .await
        .err()
        .expect("past its half of the queue");
    assert_eq!(e.to_api().status, 503);
    // The free worker is another client's at once.
    let other = pool.turn("user").await.unwrap();
    assert_eq!(pool.load(), (2, 2));
    drop((held, other));
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(pool.load(), (0, 0));
}
