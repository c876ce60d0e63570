//! image_prep
