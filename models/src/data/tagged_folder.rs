//! Tagged image folder reader.
