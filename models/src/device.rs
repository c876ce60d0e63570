//! Picks the compute device: CUDA when built with the `cuda` feature and a GPU is present.
use candle_core::Device;

/// The best device this build can use. Falls back to CPU when CUDA is absent.
pub fn best_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
        tracing::warn!("built with cuda but no GPU found; using the CPU");
    }
    Device::Cpu
}
