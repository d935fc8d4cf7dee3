//! Containers: records, the status state machine, and one file per lifecycle verb.

pub mod shim;
pub mod spec;
