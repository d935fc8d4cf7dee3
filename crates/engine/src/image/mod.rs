//! Images: records, references, unpack, import, load and save.
