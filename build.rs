//! Links `wharf-shim` as a position-dependent executable. A shim lives as long as its
//! container; in a PIE its relocated read-only data (vtables, string tables: a few hundred
//! KiB) becomes private copy-on-write memory in every shim, while without PIE those pages stay
//! clean file pages, shared through the page cache and given back when the shim is idle.
fn main() {
    println!("cargo:rustc-link-arg-bin=wharf-shim=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
