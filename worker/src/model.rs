//! The model step behind a small trait, so the worker can run the real models and the
//! overhead benchmark can run a stand-in that costs nothing.
use hashtale_models::pipeline::ModelInput;
use hashtale_types::ImageResult;
use image::DynamicImage;

/// Turns a batch of decoded images into one answer per image, in order.
pub trait ModelStep: Send + Sync + 'static {
    /// Names the exact weights; stored with every result.
    fn version(&self) -> String;
    /// Brings a freshly decoded image to the form the model reads (its input size), on the
    /// decode task's thread, so the model thread only runs the model.
    fn prepare(&self, image: DynamicImage) -> DynamicImage {
        image
    }
    /// Runs the batch (CPU/GPU-bound: the worker calls it on a blocking thread).
    fn run_batch(&self, inputs: &[ModelInput]) -> Result<Vec<ImageResult>, String>;
}

/// The real models: encoder → batched beam search (hashtags) → stories.
impl ModelStep for hashtale_models::pipeline::Hashtale {
    fn version(&self) -> String {
        self.model_version()
    }

    fn prepare(&self, image: DynamicImage) -> DynamicImage {
        hashtale_models::pipeline::Hashtale::prepare(self, image)
    }

    fn run_batch(&self, inputs: &[ModelInput]) -> Result<Vec<ImageResult>, String> {
        hashtale_models::pipeline::Hashtale::run_batch(self, inputs)
            .map_err(|e| format!("model: {e}"))
    }
}

/// A zero-cost stand-in for the models, used ONLY by `hashtale bench pipeline` to measure
/// the pipeline's own overhead (queue, store, fetch, decode). Its results say so.
pub struct NoopModelForOverheadBench;

impl ModelStep for NoopModelForOverheadBench {
    fn version(&self) -> String {
        "noop-overhead-bench".into()
    }

    fn run_batch(&self, inputs: &[ModelInput]) -> Result<Vec<ImageResult>, String> {
        Ok(vec![ImageResult::default(); inputs.len()])
    }
}
