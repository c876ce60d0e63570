//! The story engine as a long-lived thread: every caller's stories share one [`StoryPool`], so
//! the stories of several image batches in flight at once (the worker runs more than one) are
//! written in the same steps, as one wide matrix product instead of several narrow ones.
//!
//! A story's text depends on its prompt, keywords, options and stream only, so what a caller
//! gets does not depend on what else was in the pool (tested).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;

use super::codec::Codec;
use super::engine::{HostLm, StoryPool, StoryRequest};
use super::generate::GenerateOptions;
use crate::{Error, Result};

type Reply = mpsc::Sender<(usize, std::result::Result<String, String>)>;

struct Job {
    request: StoryRequest,
    opts: GenerateOptions,
    index: usize,
    reply: Reply,
}

/// A handle on the engine thread; the thread ends when the last handle is dropped and its
/// stories are written.
#[derive(Debug)]
pub struct StoryService {
    jobs: mpsc::Sender<Job>,
}

impl StoryService {
    /// Starts the engine thread with room for `slots` stories at once.
    pub fn start(lm: Arc<HostLm>, codec: Codec, slots: usize) -> Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let slots = slots.max(1);
        std::thread::Builder::new()
            .name("story-engine".into())
            .spawn(move || serve(&lm, &codec, slots, rx))
            .map_err(|e| Error::msg(format!("starting the story engine: {e}")))?;
        Ok(StoryService { jobs })
    }

    /// Writes one story per request (blocking until all are written), in request order.
    pub fn write(
        &self,
        requests: Vec<StoryRequest>,
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        let n = requests.len();
        let (reply, answers) = mpsc::channel();
        for (index, request) in requests.into_iter().enumerate() {
            let job = Job {
                request,
                opts: opts.clone(),
                index,
                reply: reply.clone(),
            };
            self.jobs
                .send(job)
                .map_err(|_| Error::msg("the story engine has stopped"))?;
        }
        drop(reply);
        let mut out = vec![String::new(); n];
        for _ in 0..n {
            let (i, text) = answers
                .recv()
                .map_err(|_| Error::msg("the story engine has stopped"))?;
            out[i] = text.map_err(Error::msg)?;
        }
        Ok(out)
    }
}

fn admit(pool: &mut StoryPool<'_, (usize, Reply)>, job: Job) {
    if job.opts.max_chars == 0 {
        let result = if job.request.prompt.is_empty() {
            Err("a story prompt is empty".to_string())
        } else {
            Ok(String::new())
        };
        let _ = job.reply.send((job.index, result));
        return;
    }
    let token = (job.index, job.reply.clone());
    if let Err(e) = pool.admit(job.request, &job.opts, token) {
        let _ = job.reply.send((job.index, Err(e.to_string())));
    }
}

fn serve(lm: &HostLm, codec: &Codec, slots: usize, jobs: mpsc::Receiver<Job>) {
    let mut pool = StoryPool::new(lm, codec, slots);
    let mut open = true;
    loop {
        if pool.is_empty() {
            if !open {
                return;
            }
            match jobs.recv() {
                Ok(job) => admit(&mut pool, job),
                Err(_) => return,
            }
        }
        while pool.has_room() && open {
            match jobs.try_recv() {
                Ok(job) => admit(&mut pool, job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // A failing step (or a bug that panics) fails the stories in the pool, not the engine:
        // later stories still get written.
        match catch_unwind(AssertUnwindSafe(|| pool.step())) {
            Ok(Ok(done)) => {
                for ((index, reply), text) in done {
                    let _ = reply.send((index, Ok(text)));
                }
            }
            Ok(Err(e)) => fail_all(&mut pool, &e.to_string()),
            Err(_) => fail_all(&mut pool, "the story engine panicked"),
        }
    }
}

fn fail_all(pool: &mut StoryPool<'_, (usize, Reply)>, why: &str) {
    for (index, reply) in pool.clear() {
        let _ = reply.send((index, Err(why.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::story::charlm::{CharLm, CharLmConfig};
    use crate::story::codec::Alphabet;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    fn service(slots: usize) -> (StoryService, Codec) {
        let alphabet = Alphabet::new("\n abcdefgh.".chars());
        let cfg = CharLmConfig {
            vocab: alphabet.len(),
            emb: 4,
            hidden: 8,
            layers: 2,
            dropout: 0.0,
            keywords: 0,
            keyword_dim: 0,
            copy: false,
        };
        let vm = VarMap::new();
        let lm = CharLm::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let codec = Codec::Chars(alphabet);
        let host = Arc::new(HostLm::from_lm(&lm).unwrap());
        (
            StoryService::start(host, codec.clone(), slots).unwrap(),
            codec,
        )
    }

    fn request(codec: &Codec, prompt: &str, stream: u64) -> StoryRequest {
        StoryRequest {
            prompt: codec.encode(prompt),
            keywords: vec![],
            stream,
        }
    }

    #[test]
    fn a_bad_request_fails_alone_and_the_engine_goes_on() {
        let (svc, codec) = service(2);
        let opts = GenerateOptions {
            max_chars: 20,
            ..Default::default()
        };
        let good = svc
            .write(
                vec![request(&codec, "\n\nab", 1), request(&codec, "\n\nc", 2)],
                &opts,
            )
            .unwrap();
        assert!(good.iter().all(|s| !s.is_empty()), "{good:?}");
        // An id outside the vocabulary is refused with a reason...
        let bad = StoryRequest {
            prompt: vec![0, 99],
            keywords: vec![],
            stream: 3,
        };
        let err = svc.write(vec![bad], &opts).unwrap_err().to_string();
        assert!(err.contains("outside a vocabulary"), "{err}");
        // ...and the same stories come out afterwards, whatever shared the pool before.
        let again = svc
            .write(
                vec![request(&codec, "\n\nab", 1), request(&codec, "\n\nc", 2)],
                &opts,
            )
            .unwrap();
        assert_eq!(again, good);
        // Zero characters: an empty story, without entering the pool.
        let none = GenerateOptions {
            max_chars: 0,
            ..opts
        };
        assert_eq!(
            svc.write(vec![request(&codec, "\n\na", 4)], &none).unwrap(),
            [""]
        );
    }
}
