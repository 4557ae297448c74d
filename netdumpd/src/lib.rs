pub mod receive_window;
pub mod stats;
