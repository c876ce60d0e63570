//! Turning images into the encoder's input tensor (decoding itself is `hashtale-fetch`'s).
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage};

use crate::{Error, Result};

/// Reads and decodes an image file with the default limits of the one decoder
/// (`hashtale-fetch`): training folders and tests. The CLI and the pipeline pass their
/// configured limits to `hashtale_fetch::load_image` themselves.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    hashtale_fetch::load_image(path, &hashtale_fetch::DecodeLimits::default())
        .map_err(|e| Error::Image(e.to_string()))
}

/// Squashes each image to `size`×`size` RGB (no crop, so nothing at the edges is lost; the
/// Flickr8k training photos were squashed the same way) and stacks them as an NHWC f32 tensor
/// normalised as `(x - 127) / 128`, the EfficientNet-Lite convention.
pub fn images_to_tensor<I: std::borrow::Borrow<DynamicImage>>(
    images: &[I],
    size: u32,
    device: &Device,
) -> Result<Tensor> {
    let s = size as usize;
    let mut data = Vec::with_capacity(images.len() * s * s * 3);
    for img in images {
        let img = img.borrow();
        let owned;
        let rgb = match img {
            DynamicImage::ImageRgb8(rgb) if img.width() == size && img.height() == size => rgb,
            _ => {
                owned = squash(img, size);
                &owned
            }
        };
        data.extend(rgb.as_raw().iter().map(|&v| (v as f32 - 127.0) / 128.0));
    }
    Ok(Tensor::from_vec(data, (images.len(), s, s, 3), device)?)
}

fn squash(img: &DynamicImage, size: u32) -> image::RgbImage {
    if img.width() == size && img.height() == size {
        img.to_rgb8()
    } else {
        img.resize_exact(size, size, FilterType::Triangle).to_rgb8()
    }
}

/// The encoder's input for an image, as [`images_to_tensor`] makes it: `size`×`size` RGB. An
/// image already in that form passes through untouched.
pub fn to_input(img: DynamicImage, size: u32) -> DynamicImage {
    match img {
        DynamicImage::ImageRgb8(_) if img.width() == size && img.height() == size => img,
        _ => DynamicImage::ImageRgb8(squash(&img, size)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_is_nhwc_and_normalised() {
        let mut img = image::RgbImage::new(2, 2);
        img.put_pixel(0, 0, image::Rgb([255, 127, 0]));
        let t = images_to_tensor(&[DynamicImage::ImageRgb8(img)], 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 2, 2, 3]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&v[..3], &[1.0, 0.0, -127.0 / 128.0]);
    }

    #[test]
    fn prepared_input_gives_the_same_tensor() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(37, 23, |x, y| {
            image::Rgba([(x * 7) as u8, (y * 11) as u8, (x + y) as u8, 255])
        }));
        let direct = images_to_tensor(std::slice::from_ref(&img), 8, &Device::Cpu).unwrap();
        let prepared = to_input(img, 8);
        assert_eq!((prepared.width(), prepared.height()), (8, 8));
        let again = images_to_tensor(&[prepared], 8, &Device::Cpu).unwrap();
        let d = (direct - again).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }
}
