//! Links `wharf-shim` as a position-dependent executable. A shim lives as long as its
//! container; in a PIE its relocated read-only data (vtables, string tables: a few hundred
//! KiB) becomes private copy-on-write memory in every shim, while without PIE those pages stay
//! clean file pages, shared through the page cache and given back when the shim is idle.
fn main() {
    println!("cargo:rustc-link-arg-bin=wharf-shim=-no-pie");
    // `wharf` stays position-independent (the daemon keeps ASLR), with its ~40k relative
    // relocations packed (DT_RELR, glibc >= 2.36): the loader then reads a few KiB instead of
    // a ~1 MiB table at every CLI start.
    println!("cargo:rustc-link-arg-bin=wharf=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
