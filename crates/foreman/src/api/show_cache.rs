//! A small cache of `/api/show` answers, keyed by the request body: model details
//! change only when models are managed, and clients ask for them before every chat.
//! Entries live a minute; model management clears them all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

const TTL: Duration = Duration::from_secs(60);
/// Enough for every model of a GPU box, many times over.
const MAX_ENTRIES: usize = 256;

#[derive(Default)]
pub struct ShowCache {
    entries: Mutex<HashMap<Bytes, (Instant, Bytes)>>,
}

impl ShowCache {
    pub fn get(&self, request: &Bytes) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(request)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, body)| body.clone())
    }

    pub fn put(&self, request: Bytes, answer: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(request, (Instant::now(), answer));
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
