//! The OCI runtime, driven from the shim.
