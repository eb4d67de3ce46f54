//! How many streams of each model are generating right now.
//!
//! A real runner decodes all its busy slots in one batch, so each stream slows down as
//! more slots of the same model are busy, while the model's total throughput grows
//! sub-linearly (the model's `batch` curve). The generation engine asks this registry,
//! token by token, how many streams share the model at that moment; a stream counts
//! from the start of its prompt evaluation until its [`BusyStream`] guard is dropped
//! (its answer ended or its client went away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Generating streams per model (display name).
#[derive(Debug, Default)]
pub struct Batching {
    busy: Mutex<HashMap<String, usize>>,
}

/// One stream counted as generating while alive.
#[derive(Debug)]
pub struct BusyStream {
    batching: Arc<Batching>,
    model: String,
}

impl Batching {
    /// Counts a stream of `model` as generating until the guard is dropped.
    pub fn enter(self: &Arc<Self>, model: &str) -> BusyStream {
        *self.lock().entry(model.to_string()).or_default() += 1;
        BusyStream {
            batching: self.clone(),
            model: model.to_string(),
        }
    }

    /// Streams of `model` generating right now.
    pub fn busy(&self, model: &str) -> usize {
        self.lock().get(model).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for BusyStream {
    fn drop(&mut self) {
        let mut busy = self.batching.lock();
        if let Some(count) = busy.get_mut(&self.model) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.remove(&self.model);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_streams_per_model() {
        let batching = Arc::new(Batching::default());
        let a = batching.enter("a");
        let a2 = batching.enter("a");
        let _b = batching.enter("b");
        assert_eq!((batching.busy("a"), batching.busy("b")), (2, 1));
        drop(a);
        assert_eq!(batching.busy("a"), 1);
        drop(a2);
        assert_eq!(batching.busy("a"), 0);
    }
}
