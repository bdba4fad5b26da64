//! The CPU backend's buffers and their pool: the CPU side of the step's fixed arena (issue 14). A
//! [`CpuBuf`] is a vector that goes back to its backend's pool when dropped, so a training step, whose
//! buffer lengths repeat from step to step, draws every activation, gradient and scratch buffer from
//! memory the previous step used: no allocation after the first steps, and an output its op writes whole
//! ([`Backend::uninit`](crate::backend::Backend::uninit)) is handed out without being cleared. Stale
//! contents are plain old values (never uninitialised memory), so this is safe Rust; that no op reads an
//! (=) output before writing it is checked by running whole steps with poisoned (NaN-filled) `uninit`
//! buffers against zeroed ones (`CpuBackend::poison_uninit`, tests/train.rs).
use super::Real;
use crate::backend::counters::OpCounters;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

/// Elements from which a buffer is cleared (or poisoned) on every thread (256 KiB of f32).
const PAR_MIN: usize = 1 << 16;

/// Freed buffers by length, most recently freed last, and what the backend did (`Backend::counts`: new
/// allocations, clearings, uploads; the CPU launches nothing and never waits for a device).
pub struct Pool<T> {
    free: Mutex<HashMap<usize, Vec<Vec<T>>>>,
    pub counters: OpCounters,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            free: Mutex::new(HashMap::new()),
            counters: OpCounters::default(),
        }
    }
}

/// 32-bit words in `n` elements of `T` (the counters count 32-bit words).
pub fn words<T>(n: usize) -> usize {
    n.saturating_mul(std::mem::size_of::<T>() / 4)
}

impl<T: Real> Pool<T> {
    /// A freed buffer of exactly `n` elements, holding whatever its last user left in it.
    fn take(&self, n: usize) -> Option<Vec<T>> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.get_mut(&n).and_then(Vec::pop)
    }
    fn put(&self, v: Vec<T>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.entry(v.len()).or_default().push(v);
    }
    /// Drops every freed buffer (`Backend::release_pooled`).
    pub fn clear(&self) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
    /// Elements held by freed buffers.
    pub fn pooled_elements(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.iter().map(|(n, list)| n * list.len()).sum()
    }
    /// A buffer of `n` elements set to `value`: a pooled one refilled, or a new one (each counted as a
    /// memset; the new one also as an allocation).
    pub fn filled(self: &Arc<Self>, n: usize, value: T) -> CpuBuf<T> {
        match self.take(n) {
            Some(mut v) => {
                self.counters.memset();
                fill(&mut v, value);
                self.wrap(v)
            }
            None => {
                self.counters.alloc_zeroed(words::<T>(n));
                match n < PAR_MIN {
                    true => self.wrap(vec![value; n]),
                    false => self.wrap(rayon::iter::repeat_n(value, n).collect()),
                }
            }
        }
    }
    /// A buffer of `n` elements for an output written whole before it is read: a pooled one as it is,
    /// or a new one set to `fresh`.
    pub fn unset(self: &Arc<Self>, n: usize, fresh: T) -> CpuBuf<T> {
        match self.take(n) {
            Some(v) => self.wrap(v),
            None => self.filled(n, fresh),
        }
    }
    pub fn wrap(self: &Arc<Self>, data: Vec<T>) -> CpuBuf<T> {
        CpuBuf {
            data,
            pool: Some(Arc::clone(self)),
        }
    }
}

/// Sets every element, on every thread for large buffers.
pub fn fill<T: Real>(v: &mut [T], value: T) {
    if v.len() < PAR_MIN {
        v.fill(value);
    } else {
        v.par_chunks_mut(PAR_MIN).for_each(|c| c.fill(value));
    }
}

/// A CPU backend buffer: a vector (reached through `Deref`) that returns to its pool when dropped.
#[derive(Debug)]
pub struct CpuBuf<T: Real> {
    data: Vec<T>,
    pool: Option<Arc<Pool<T>>>,
}

impl<T: Real> CpuBuf<T> {
    /// The vector, taken out of the pool's keeping.
    pub fn into_vec(mut self) -> Vec<T> {
        self.pool = None;
        std::mem::take(&mut self.data)
    }
}

/// A buffer of no pool (dropped like a vector): for tests and host-built inputs.
impl<T: Real> From<Vec<T>> for CpuBuf<T> {
    fn from(data: Vec<T>) -> Self {
        CpuBuf { data, pool: None }
    }
}

impl<T: Real> Clone for CpuBuf<T> {
    /// A copy in a new vector of no pool.
    fn clone(&self) -> Self {
        self.data.clone().into()
    }
}

impl<T: Real> Deref for CpuBuf<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.data
    }
}

impl<T: Real> DerefMut for CpuBuf<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.data
    }
}

impl<T: Real> PartialEq for CpuBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl<T: Real> Drop for CpuBuf<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.put(std::mem::take(&mut self.data));
        }
    }
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

/// Collects into a buffer of no pool, like `Vec`.
impl<T: Real> FromIterator<T> for CpuBuf<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<T>>().into()
    }
}
