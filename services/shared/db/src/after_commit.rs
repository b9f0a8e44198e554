//! Work that must happen only once a transaction has committed, such as
//! counting an outcome: a rolled-back (and later retried) transaction must
//! not count twice.

use std::cell::RefCell;

type Action = Box<dyn FnOnce() + Send>;

tokio::task_local! {
    static ACTIONS: RefCell<Vec<Action>>;
}

/// Runs `action` when the transaction that [`with_after_commit`] is
/// running commits; outside of one, at once.
pub fn after_commit(action: impl FnOnce() + Send + 'static) {
    let mut action = Some(action);
    let _ = ACTIONS.try_with(|actions| {
        if let Some(a) = action.take() {
            actions.borrow_mut().push(Box::new(a));
        }
    });
    if let Some(a) = action {
        a();
    }
}

/// Awaits `transaction` (a future that commits or rolls back) and then runs
/// the actions registered during it with [`after_commit`] if it returned
/// `Ok`; drops them otherwise.
///
/// # Errors
/// `transaction`'s error.
pub async fn with_after_commit<T, E>(
    transaction: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (result, actions) = ACTIONS
        .scope(RefCell::new(Vec::new()), async {
            let result = transaction.await;
            (result, ACTIONS.with(RefCell::take))
        })
        .await;
    if result.is_ok() {
        for action in actions {
            action();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn actions_run_only_after_success() {
        let n = Arc::new(AtomicU32::new(0));
        let counter = |n: &Arc<AtomicU32>| {
            let n = n.clone();
            move || {
                n.fetch_add(1, Ordering::SeqCst);
            }
        };
        let ok: Result<(), ()> = with_after_commit(async {
            after_commit(counter(&n));
            assert_eq!(n.load(Ordering::SeqCst), 0, "deferred until the end");
            Ok(())
        })
        .await;
        assert!(ok.is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let failed: Result<(), ()> = with_after_commit(async {
            after_commit(counter(&n));
            Err(())
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1, "dropped on failure");
        after_commit(counter(&n));
        assert_eq!(n.load(Ordering::SeqCst), 2, "outside a scope: at once");
    }
}
