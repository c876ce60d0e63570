//! Image encoders.
