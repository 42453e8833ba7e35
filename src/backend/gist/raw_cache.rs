//! Decoded gist files by raw URL. A raw URL names one revision of one file, so what
//! it served once stays true; keeping the last few spares fetching a whole pack
//! again for each ranged read of it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::RAW_CACHE_BYTES;

#[derive(Default)]
pub struct RawCache {
    entries: VecDeque<(String, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl RawCache {
    pub fn get(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.entries
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, b)| Arc::clone(b))
    }

    pub fn put(&mut self, url: &str, bytes: Arc<Vec<u8>>) {
        if bytes.len() > RAW_CACHE_BYTES / 4 || url.is_empty() || self.get(url).is_some() {
            return;
        }
        self.bytes += bytes.len();
        self.entries.push_back((url.to_owned(), bytes));
        while self.bytes > RAW_CACHE_BYTES {
            match self.entries.pop_front() {
                Some((_, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }
}
