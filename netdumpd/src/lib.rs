pub mod atomic_file;
pub mod dumpdir;
pub mod info;
pub mod receive_window;
pub mod registry;
pub mod session;
pub mod stats;
pub mod utc;
pub mod vmcore;

#[cfg(test)]
mod test_dir;

#[cfg(test)]
#[path = "../tests/common/core_reader.rs"]
mod core_reader;
