//! HARRISON layout reader.
