//! The crop store: a directory of memory-mapped shards of u16-unorm crops, a binary cell index, NTC
//! statistics and a manifest written last (design.md §6).
//!
//! Key decision: the data path never imports `backend` or `engine`; this module knows nothing of models.
pub mod export;
pub mod format;
pub mod import;
pub mod index;
pub mod merge;
pub mod npy;
pub mod ntc;
pub mod reader;
pub mod verify;
pub mod writer;

pub use format::{BatchStats, CellRecord, ChannelStats, Manifest};
pub use index::CellFilter;
pub use reader::Store;
pub use verify::verify;
pub use writer::{CellMeta, StoreWriter, WriterOptions};
