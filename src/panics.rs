//! Panics at task boundaries. Input and remote systems must never cause a panic
//! (DESIGN 6), but if a bug does, one request or one effect attempt fails, not the
//! daemon: the HTTP guard answers 500 with the request id, the dispatcher records a
//! retryable failure. Both count `orderbridge_panics_total{task}`.
//!
//! No I/O here; the callers log and count.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The metric every caught panic increments, labelled by `task` (`http`, `dispatcher`).
pub(crate) const PANICS_TOTAL: &str = "orderbridge_panics_total";

/// A future that turns a panic while it is polled into `Err(message)`.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

/// Runs `f`, catching a panic in any of its polls.
///
/// Unwind safety is asserted: after a panic the future is dropped and never polled
/// again; what it shared sits behind tokio locks (which do not poison) or in the
/// store, which is re-read before the next use.
pub(crate) fn catch_unwind<F: Future>(f: F) -> CatchUnwind<F> {
    CatchUnwind { inner: Box::pin(f) }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(message(payload.as_ref()))),
        }
    }
}

/// The text a panic was raised with (`panic!("…")`, `expect("…")`), for the log only:
/// it may name internals, so it never goes into an answer or a stored error.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_values_pass_through() {
        assert_eq!(catch_unwind(async { 7 }).await, Ok(7));
        let caught = catch_unwind(async {
            tokio::task::yield_now().await;
            panic!("broken after {} polls", 2)
        })
        .await;
        assert_eq!(caught, Err::<(), _>("broken after 2 polls".to_owned()));
        assert_eq!(
            catch_unwind(async { std::panic::panic_any(5u8) }).await,
            Err::<(), _>("a panic without a message".into())
        );
    }
}
