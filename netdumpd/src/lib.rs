pub mod atomic_file;
pub mod receive_window;
pub mod registry;
pub mod stats;
pub mod utc;
pub mod vmcore;

#[cfg(test)]
mod test_dir;

#[cfg(test)]
#[path = "../tests/common/core_reader.rs"]
mod core_reader;
