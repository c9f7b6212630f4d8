//! The clock of the tasks that drive the sans-IO state machines: tokio's, so that tests may
//! pause and advance it.

use std::time::Instant as StdInstant;

use tokio::time::Instant;

/// Now, as the state machines take it.
pub(crate) fn now() -> StdInstant {
    Instant::now().into_std()
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
