//! The image decoder and its limits.
use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat};
use serde::{Deserialize, Serialize};

/// Why an image was refused. Every variant is final: retrying the same bytes cannot help.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an image (unrecognised magic bytes)")]
    NotAnImage,
    #[error("unsupported image format {0:?}")]
    Unsupported(ImageFormat),
    #[error("image larger than {max} bytes")]
    TooManyBytes { max: u64 },
    #[error("image of {width}×{height} pixels exceeds the limit of {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("image of {width}×{height} pixels exceeds the limit of {max} pixels per side")]
    SideTooLong { width: u32, height: u32, max: u32 },
    #[error("cannot decode {format:?}: {message}")]
    Corrupt {
        format: ImageFormat,
        message: String,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: Box<DecodeError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Caps that keep a hostile file from exhausting memory or time while decoding. The pipeline's
/// `[fetch]` section sets the same fields; these defaults are its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// Largest encoded file.
    pub max_bytes: u64,
    /// Largest width × height (decompression bombs are refused from their header).
    pub max_pixels: u64,
    /// Largest single side.
    pub max_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_side: 16_384,
        }
    }
}

/// Formats we decode, identified by magic bytes.
pub const ACCEPTED_FORMATS: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
];

/// Identifies an image by its magic bytes, refusing anything outside [`ACCEPTED_FORMATS`].
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    match image::guess_format(bytes) {
        Ok(f) if ACCEPTED_FORMATS.contains(&f) => Ok(f),
        Ok(f) => Err(DecodeError::Unsupported(f)),
        Err(_) => Err(DecodeError::NotAnImage),
    }
}

/// Decodes an image within `limits` and applies its EXIF orientation. The declared size is
/// checked before any pixel buffer exists. CPU-bound: async callers run it on a blocking thread.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, DecodeError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DecodeError::TooManyBytes {
            max: limits.max_bytes,
        });
    }
    let format = sniff(bytes)?;
    let corrupt = |e: image::ImageError| DecodeError::Corrupt {
        format,
        message: e.to_string(),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_side);
    caps.max_image_height = Some(limits.max_side);
    // Decoded RGBA plus the decoder's own buffers.
    caps.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(64 << 20));
    reader.limits(caps);
    let mut decoder = match reader.into_decoder() {
        Ok(d) => d,
        // The image crate reports an over-long side as a limit error before we can see it.
        Err(image::ImageError::Limits(_)) => {
            return Err(
                side_error(bytes, format, limits).unwrap_or_else(|| DecodeError::Corrupt {
                    format,
                    message: "over the decoder's limits".into(),
                }),
            )
        }
        Err(e) => return Err(corrupt(e)),
    };
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 || (width as u64) * (height as u64) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            max: limits.max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// The declared size, read without limits on sides (no pixels are decoded), for a clear message.
fn side_error(bytes: &[u8], format: ImageFormat, limits: &DecodeLimits) -> Option<DecodeError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    let (width, height) = reader.into_dimensions().ok()?;
    Some(DecodeError::SideTooLong {
        width,
        height,
        max: limits.max_side,
    })
}

/// Reads and decodes an image file within `limits`; errors name the file once.
pub fn load_image(path: &Path, limits: &DecodeLimits) -> Result<DynamicImage, DecodeError> {
    load_image_file(path, limits).map(|(_, img)| img)
}

/// Like [`load_image`], also returning the file's bytes (callers that name things by the
/// file's digest, as the pipeline names story streams).
pub fn load_image_file(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<(Vec<u8>, DynamicImage), DecodeError> {
    let name = || path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|source| DecodeError::Io {
            path: name(),
            source,
        })?
        .len();
    if len > limits.max_bytes {
        return Err(DecodeError::File {
            path: name(),
            source: Box::new(DecodeError::TooManyBytes {
                max: limits.max_bytes,
            }),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io {
        path: name(),
        source,
    })?;
    let img = decode_image(&bytes, limits).map_err(|e| DecodeError::File {
        path: name(),
        source: Box::new(e),
    })?;
    Ok((bytes, img))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::new_rgb8(w, h)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    /// A PNG whose header claims `w`×`h` pixels, with empty IDAT and IEND chunks and no pixel
    /// data (a decompression bomb's shape: tiny file, huge declared image).
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend_from_slice(&(ihdr.len() as u32).to_be_bytes());
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&ihdr);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        for empty in [&b"IDAT"[..], &b"IEND"[..]] {
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(empty);
            out.extend_from_slice(&crc32(empty).to_be_bytes());
        }
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn decodes_within_the_limits() {
        let img = decode_image(&png(8, 4), &DecodeLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (8, 4));
    }

    #[test]
    fn refuses_non_images_other_formats_and_truncated_files() {
        let limits = DecodeLimits::default();
        assert!(matches!(
            decode_image(b"hello, not a picture", &limits),
            Err(DecodeError::NotAnImage)
        ));
        let tiff = b"II*\0\x08\0\0\0\0\0";
        assert!(matches!(
            decode_image(tiff, &limits),
            Err(DecodeError::Unsupported(ImageFormat::Tiff))
        ));
        let full = png(16, 16);
        assert!(matches!(
            decode_image(&full[..full.len() / 2], &limits),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn refuses_bombs_from_the_header_with_the_pipeline_limits() {
        // 8000×8000 = 64 MP: over the 40 MP default, under the 16,384 px side cap. The CLI used
        // to accept it (12,000 px sides, 512 MiB) while the pipeline refused it.
        let err = decode_image(&png_header_only(8000, 8000), &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooManyPixels {
                    width: 8000,
                    height: 8000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let err = decode_image(&png_header_only(60_000, 10), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::SideTooLong { .. }), "{err}");
    }

    #[test]
    fn caps_bytes_pixels_and_sides() {
        let bytes = png(64, 8);
        let small = |f: fn(&mut DecodeLimits)| {
            let mut l = DecodeLimits::default();
            f(&mut l);
            decode_image(&bytes, &l).unwrap_err()
        };
        assert!(matches!(
            small(|l| l.max_bytes = 10),
            DecodeError::TooManyBytes { .. }
        ));
        assert!(matches!(
            small(|l| l.max_pixels = 100),
            DecodeError::TooManyPixels { .. }
        ));
        assert!(matches!(
            small(|l| l.max_side = 32),
            DecodeError::SideTooLong { .. }
        ));
    }

    #[test]
    fn applies_exif_orientation() {
        // A 32×16 JPEG tagged "rotate 90° clockwise" comes out 16×32.
        let mut jpeg = Vec::new();
        DynamicImage::new_rgb8(32, 16)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let tagged = with_orientation(&jpeg, 6);
        let img = decode_image(&tagged, &DecodeLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (16, 32));
    }

    /// Inserts an APP1 Exif segment holding only an Orientation tag after the SOI marker.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn file_errors_name_the_file_once() {
        let dir = std::env::temp_dir().join(format!("hashtale-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.jpg");
        std::fs::write(&path, b"not really").unwrap();
        let msg = load_image(&path, &DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert_eq!(msg.matches("broken.jpg").count(), 1, "{msg}");
        assert!(
            msg.ends_with("not an image (unrecognised magic bytes)"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
