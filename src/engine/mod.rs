//! The Set-DINO engine, written once over `Backend`: the ViT backbone (`vit`), the DINO head (`head`),
//! the step (`step`: teacher and student forwards, set mean, loss, backward, clipping, AdamW, EMA,
//! centering) and the schedules (`schedule`).
pub mod head;
pub mod schedule;
pub mod step;
pub mod vit;

pub use step::{Engine, LossOut, StepBatch};
