//! Layer snapshots keyed by chain id, and the overlay mounts built from them.
