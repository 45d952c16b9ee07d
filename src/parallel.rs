//! Passes that read a shared state and change nothing in it (the ranking of
//! every user and item), split over the machine's cores.

/// Fewer keys than this are not worth a thread of their own.
const MIN_SHARE: usize = 64;

/// `work` on consecutive shares of `keys`, one share per thread on at most
/// `threads` threads (the caller's among them); the results in the order of
/// `keys`. A panic in one share is raised here.
pub fn in_shares<K: Sync, T: Send>(
    keys: &[K],
    threads: usize,
    work: impl Fn(&[K]) -> Vec<T> + Sync,
) -> Vec<T> {
    let share = keys.len().div_ceil(threads.max(1)).max(MIN_SHARE);
    if share >= keys.len() {
        return work(keys);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let (first, rest) = keys.split_at(share);
        let others: Vec<_> = rest
            .chunks(share)
            .map(|keys| scope.spawn(move || work(keys)))
            .collect();
        let mut results = work(first);
        for other in others {
            let done = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            results.extend(done);
        }
        results
    })
}

/// The threads a pass may take: one per core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_keep_the_order_of_the_keys_whatever_the_threads() {
        let keys: Vec<u64> = (0..1000).collect();
        let squares: Vec<u64> = keys.iter().map(|k| k * k).collect();
        for threads in [0, 1, 2, 3, 7, 64] {
            let shares = std::sync::atomic::AtomicUsize::new(0);
            let done = in_shares(&keys, threads, |share| {
                shares.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                share.iter().map(|k| k * k).collect()
            });
            assert_eq!(done, squares, "{threads} threads");
            let expected = keys
                .len()
                .div_ceil(keys.len().div_ceil(threads.max(1)).max(MIN_SHARE));
            assert_eq!(shares.into_inner(), expected, "{threads} threads");
        }
        assert!(in_shares(&[] as &[u64], 2, |share| share.to_vec()).is_empty());
    }

    #[test]
    #[should_panic(expected = "the last share")]
    fn a_panic_in_a_share_is_raised_by_the_caller() {
        let keys: Vec<u64> = (0..1000).collect();
        in_shares(&keys, 4, |share| {
            if share.contains(&999) {
                panic!("the last share");
            }
            share.to_vec()
        });
    }
}
