//! The OCI runtime spec of a container, built from its image and create options.
