//! `ManualClock`: a settable clock for tests, so time passes without wall-clock
//! sleeps (give `clock()` to `TestApp::builder().clock(…)`).

use std::sync::{Arc, Mutex};

use orderbridge::clock::Clock;

/// A settable clock for tests (no wall-clock sleeps to make time pass).
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<chrono::DateTime<chrono::Utc>>>);

impl ManualClock {
    pub fn new(start: chrono::DateTime<chrono::Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }
    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Clock::from_fn(move || *at.lock().unwrap())
    }
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}
