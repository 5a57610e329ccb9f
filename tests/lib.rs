//! Test support: paths of guest components built from source by build.rs.
//!
//! Each constant is the absolute path of one guest's `.wasm` component;
//! `foreach_guest!` expands a macro once per constant.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
