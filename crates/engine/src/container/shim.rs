//! The engine side of the shim contract: spawn, attach, resize, wait, exec.
