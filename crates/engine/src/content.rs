//! Content-addressed blobs: blobs/sha256/<hex>, written to ingest/, verified, renamed.
