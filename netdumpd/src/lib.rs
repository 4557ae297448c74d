pub mod receive_window;
pub mod stats;
pub mod vmcore;

#[cfg(test)]
#[path = "../tests/common/core_reader.rs"]
mod core_reader;
