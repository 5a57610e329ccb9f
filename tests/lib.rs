//! Test support: paths of guest components built from source by build.rs.
//!
//! Each constant is the absolute path of one guest's `.wasm` component;
//! `foreach_guest!` expands a macro once per constant. Also what both the
//! integration tests and the benchmark harness (`bench/`) use.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

pub mod postgres;

/// Another version of a component: the same code with a custom section
/// appended, so its bytes (and SHA-256) differ.
pub fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"wasm-sup-test-version";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}
