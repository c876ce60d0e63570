//! Turning decoded images into the encoder's input tensor.
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage, ImageDecoder, ImageReader};

use crate::{Error, Result};

/// Caps that keep a hostile file from exhausting memory while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_width: 12_000,
            max_height: 12_000,
            max_alloc_bytes: 512 << 20,
        }
    }
}

/// Decodes an image from bytes: the format is sniffed from the magic bytes (never trusted from a
/// name or header), pixel dimensions and allocations are capped, and EXIF orientation is applied.
pub fn decode_image(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Image(
            "not an image (unrecognised magic bytes)".into(),
        ));
    }
    let mut img_limits = image::Limits::default();
    img_limits.max_image_width = Some(limits.max_width);
    img_limits.max_image_height = Some(limits.max_height);
    img_limits.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = reader;
    reader.limits(img_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Image(format!("cannot decode image: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Image(format!("cannot decode image: {e}")))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Reads and decodes an image file with the default limits.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Keep the message flat: "image: PATH: cannot decode image: …", not "image: PATH: image: …".
    decode_image(&bytes, DecodeLimits::default()).map_err(|e| match e {
        Error::Image(m) => Error::Image(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Squashes each image to `size`×`size` RGB (no crop, so nothing at the edges is lost; the
/// Flickr8k training photos were squashed the same way) and stacks them as an NHWC f32 tensor
/// normalised as `(x - 127) / 128`, the EfficientNet-Lite convention.
pub fn images_to_tensor(images: &[DynamicImage], size: u32, device: &Device) -> Result<Tensor> {
    let s = size as usize;
    let mut data = Vec::with_capacity(images.len() * s * s * 3);
    for img in images {
        let rgb = if img.width() == size && img.height() == size {
            img.to_rgb8()
        } else {
            img.resize_exact(size, size, FilterType::Triangle).to_rgb8()
        };
        data.extend(rgb.as_raw().iter().map(|&v| (v as f32 - 127.0) / 128.0));
    }
    Ok(Tensor::from_vec(data, (images.len(), s, s, 3), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_images_and_truncated_files() {
        let err = decode_image(b"hello, not a picture", DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("not an image"), "{err}");

        let mut png = Vec::new();
        DynamicImage::new_rgb8(16, 16)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert!(decode_image(&png, DecodeLimits::default()).is_ok());
        assert!(decode_image(&png[..png.len() / 2], DecodeLimits::default()).is_err());
    }

    #[test]
    fn rejects_images_over_the_pixel_caps() {
        let mut png = Vec::new();
        DynamicImage::new_rgb8(64, 8)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let limits = DecodeLimits {
            max_width: 32,
            ..DecodeLimits::default()
        };
        assert!(decode_image(&png, limits).is_err());
    }

    #[test]
    fn tensor_is_nhwc_and_normalised() {
        let mut img = image::RgbImage::new(2, 2);
        img.put_pixel(0, 0, image::Rgb([255, 127, 0]));
        let t = images_to_tensor(&[DynamicImage::ImageRgb8(img)], 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 2, 2, 3]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&v[..3], &[1.0, 0.0, -127.0 / 128.0]);
    }
}
