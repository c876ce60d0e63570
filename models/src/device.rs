//! Picks the compute device: CUDA when built with the `cuda` feature and a GPU is present.
use candle_core::Device;

/// The best device this build can use, the same one on every call: candle makes a new CUDA
/// context and stream per `Device::new_cuda`, and tensors of two such devices do not mix, so
/// every model of the process shares this one. Falls back to the CPU when CUDA is absent.
pub fn best_device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(pick).clone()
}

fn pick() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
        tracing::warn!("built with cuda but no GPU found; using the CPU");
    }
    Device::Cpu
}
