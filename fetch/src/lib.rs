//! Images from outsiders, defensively.
//!
//! - [`decode`]: the one image decoder (magic-byte sniffing, an allowlist of formats, caps on
//!   bytes, pixels and sides checked before any pixel is allocated, EXIF orientation) with the
//!   one set of [`DecodeLimits`]. The CLI (`hashtale tag`, `classify`), dataset tools and the
//!   pipeline's worker all decode here, so a photo one accepts the others accept too.
//!
//! The network client (SSRF-safe fetching) still lives in `hashtale-core::fetch`; it moves here
//! with the layout split.
pub mod decode;

pub use decode::{
    decode_image, load_image, load_image_file, sniff, DecodeError, DecodeLimits, ACCEPTED_FORMATS,
};
