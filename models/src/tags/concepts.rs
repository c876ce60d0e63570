//! Concept hashtags: what the encoder's own ImageNet head sees, named as people tag it.
//!
//! Each of the 1,000 ImageNet classes maps to a few hashtags (`assets/concepts/concepts.tsv`,
//! built from WordNet by `scripts/build_concepts.py`): its own everyday word and its basic-level
//! hypernym (tabby → `#tabby #cat`). A hashtag's score is the probability mass of the classes
//! that carry it (a photo that is 79% Egyptian cat, 9% tiger cat and 7% tabby is 95% `#cat`).
//!
//! Maps are class activation maps: the head is global-average-pool + linear, so a class's
//! weights dotted with each grid cell give that cell's share of the class logit. A hashtag's map
//! is the probability-weighted mean of its classes' maps.
use std::path::Path;

use candle_core::{Tensor, D};

use super::ScoredTag;
use crate::encoder::Encoded;
use crate::{Error, Result};

/// One ImageNet class and the hashtags it stands for, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptClass {
    pub wnid: String,
    pub name: String,
    /// (hashtag, Zipf frequency of the word): the frequency breaks score ties.
    pub tags: Vec<(String, f32)>,
}

/// The class → hashtag table, in class-index order.
#[derive(Debug, Clone)]
pub struct ConceptTable {
    pub classes: Vec<ConceptClass>,
}

impl ConceptTable {
    /// Parses `index<TAB>wnid<TAB>class<TAB>tag:zipf tag:zipf …` lines (`#` starts a comment).
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let mut classes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| Error::Parse {
                path: origin.to_path_buf(),
                line: i + 1,
                message,
            };
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() != 4 {
                return Err(bad(format!("expected 4 columns, found {}", cols.len())));
            }
            let index: usize = cols[0]
                .parse()
                .map_err(|_| bad(format!("bad class index `{}`", cols[0])))?;
            if index != classes.len() {
                return Err(bad(format!(
                    "class {index} out of order (expected {})",
                    classes.len()
                )));
            }
            let mut tags = Vec::new();
            for cell in cols[3].split_whitespace() {
                let (tag, zipf) = cell
                    .split_once(':')
                    .ok_or_else(|| bad(format!("expected tag:zipf, found `{cell}`")))?;
                let zipf: f32 = zipf
                    .parse()
                    .map_err(|_| bad(format!("bad frequency in `{cell}`")))?;
                if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_lowercase()) {
                    return Err(bad(format!("hashtag `{tag}` is not lowercase letters")));
                }
                tags.push((tag.to_string(), zipf));
            }
            if tags.is_empty() {
                return Err(bad("class has no hashtag".into()));
            }
            classes.push(ConceptClass {
                wnid: cols[1].to_string(),
                name: cols[2].to_string(),
                tags,
            });
        }
        if classes.is_empty() {
            return Err(Error::msg(format!("{}: no classes", origin.display())));
        }
        Ok(Self { classes })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// The hashtags of class `index`, best first.
    pub fn hashtags(&self, index: usize) -> Vec<&str> {
        self.classes[index]
            .tags
            .iter()
            .map(|(t, _)| t.as_str())
            .collect()
    }
}

/// Knobs of the concept tagger.
#[derive(Debug, Clone, Copy)]
pub struct ConceptOptions {
    /// Classes read per image, most probable first.
    pub top_classes: usize,
    /// Classes below this probability are ignored.
    pub min_class_prob: f32,
    /// Hashtags returned per image.
    pub max_tags: usize,
}

impl Default for ConceptOptions {
    fn default() -> Self {
        Self {
            top_classes: 20,
            min_class_prob: 0.001,
            max_tags: 10,
        }
    }
}

/// Turns an encoder's ImageNet head into ranked hashtags with class activation maps.
pub struct ConceptTagger {
    table: ConceptTable,
    /// (D, C): the classifier's weight, transposed for grid · W.
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl ConceptTagger {
    /// `weight` is the classifier's (C, D) weight and `bias` its (C) bias; C must match the
    /// table.
    pub fn new(table: ConceptTable, weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (c, _) = weight.dims2()?;
        if c != table.classes.len() {
            return Err(Error::msg(format!(
                "the concept table has {} classes, the classifier {c}",
                table.classes.len()
            )));
        }
        Ok(Self {
            table,
            weight_t: weight.t()?.contiguous()?,
            bias: bias.cloned(),
        })
    }

    pub fn table(&self) -> &ConceptTable {
        &self.table
    }

    /// Class probabilities (B, C) of an encoded batch.
    pub fn class_probs(&self, enc: &Encoded) -> Result<Tensor> {
        let mut logits = enc.pooled.matmul(&self.weight_t)?;
        if let Some(b) = &self.bias {
            logits = logits.broadcast_add(b)?;
        }
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
    }

    /// Ranked concept hashtags for each image of the batch.
    pub fn tag(&self, enc: &Encoded, opts: ConceptOptions) -> Result<Vec<Vec<ScoredTag>>> {
        let probs = self.class_probs(enc)?.to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(probs.len());
        for (i, p) in probs.iter().enumerate() {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let chosen: Vec<usize> = order
                .into_iter()
                .take(opts.top_classes)
                .take_while(|&c| p[c] >= opts.min_class_prob)
                .collect();
            if chosen.is_empty() {
                out.push(vec![]);
                continue;
            }
            // (L, k): the per-cell logit share of the chosen classes only.
            let ids: Vec<u32> = chosen.iter().map(|&c| c as u32).collect();
            let ids = Tensor::new(ids.as_slice(), self.weight_t.device())?;
            let weights = self.weight_t.index_select(&ids, 1)?;
            let cam = enc.grid.get(i)?.matmul(&weights)?.to_vec2::<f32>()?;
            out.push(self.tag_one(p, &chosen, &cam, opts));
        }
        Ok(out)
    }

    /// `probs`: C class probabilities; `chosen`: the classes read, best first; `cam`: L rows of
    /// their per-cell class scores, one column per chosen class.
    fn tag_one(
        &self,
        probs: &[f32],
        chosen: &[usize],
        cam: &[Vec<f32>],
        opts: ConceptOptions,
    ) -> Vec<ScoredTag> {
        // Per hashtag: (score, zipf, map accumulated as Σ p_c · cam_c).
        let mut acc: Vec<(String, f32, f32, Vec<f32>)> = Vec::new();
        for (column, &c) in chosen.iter().enumerate() {
            let p = probs[c];
            let map = class_map(cam, column);
            for (tag, zipf) in &self.table.classes[c].tags {
                let slot = match acc.iter().position(|a| &a.0 == tag) {
                    Some(i) => i,
                    None => {
                        acc.push((tag.clone(), 0.0, *zipf, vec![0.0; map.len()]));
                        acc.len() - 1
                    }
                };
                let entry = &mut acc[slot];
                entry.1 += p;
                for (m, v) in entry.3.iter_mut().zip(&map) {
                    *m += p * v;
                }
            }
        }
        acc.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then(b.2.total_cmp(&a.2))
                .then(a.0.cmp(&b.0))
        });
        acc.truncate(opts.max_tags);
        acc.into_iter()
            .map(|(tag, score, _, map)| {
                let total: f32 = map.iter().sum();
                ScoredTag {
                    tag,
                    score: score.min(1.0),
                    attention: map.iter().map(|v| v / total).collect(),
                }
            })
            .collect()
    }
}

/// The activation map in column `c` of `cam` (L rows of per-cell class scores), normalised to
/// sum to 1: the positive part of
/// each cell's logit share (negative evidence is not "where the object is"); uniform when no
/// cell speaks for the class.
pub fn class_map(cam: &[Vec<f32>], c: usize) -> Vec<f32> {
    let raw: Vec<f32> = cam.iter().map(|row| row[c].max(0.0)).collect();
    let total: f32 = raw.iter().sum();
    if total > 0.0 && total.is_finite() {
        raw.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / cam.len() as f32; cam.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn table() -> ConceptTable {
        let text = "# comment\n0\tn1\ttabby\ttabby:2.79 cat:4.78\n1\tn2\tEgyptian cat\tegyptiancat:3.11 cat:4.78\n2\tn3\tespresso\tespresso:3.39 coffee:4.86\n";
        ConceptTable::parse(text, Path::new("t.tsv")).unwrap()
    }

    #[test]
    fn parses_and_rejects_bad_lines() {
        let t = table();
        assert_eq!(t.classes.len(), 3);
        assert_eq!(t.hashtags(2), vec!["espresso", "coffee"]);
        for bad in [
            "1\tn\tx\tcat:1\n",
            "0\tn\tx\n",
            "0\tn\tx\tCat:1\n",
            "0\tn\tx\tcat\n",
            "0\tn\tx\t\n",
        ] {
            let err = ConceptTable::parse(bad, Path::new("t.tsv")).unwrap_err();
            assert!(err.to_string().contains("t.tsv:1"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn shared_hypernyms_sum_their_classes_and_maps_sum_to_one() {
        let dev = Device::Cpu;
        // Two cells, two feature dims: class 0 reads dim 0, class 1 dim 1, class 2 neither.
        let weight = Tensor::new(&[[4f32, 0.0], [0.0, 4.0], [-1.0, -1.0]], &dev).unwrap();
        let tagger = ConceptTagger::new(table(), &weight, None).unwrap();
        // Cell 0 holds dim 0 (the tabby), cell 1 dim 1 (the Egyptian cat).
        let grid = Tensor::new(&[[[1f32, 0.0], [0.0, 1.0]]], &dev).unwrap();
        let pooled = grid.mean(1).unwrap();
        let enc = Encoded { grid, pooled };
        let tags = tagger
            .tag(&enc, ConceptOptions::default())
            .unwrap()
            .remove(0);
        assert_eq!(tags[0].tag, "cat", "{tags:?}");
        let p = tagger.class_probs(&enc).unwrap().to_vec2::<f32>().unwrap()[0].clone();
        assert!((tags[0].score - (p[0] + p[1])).abs() < 1e-5);
        let names: Vec<&str> = tags.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "cat").count(), 1);
        for t in &tags {
            assert_eq!(t.attention.len(), 2);
            let sum: f32 = t.attention.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{}: {sum}", t.tag);
        }
        let tabby = tags.iter().find(|t| t.tag == "tabby").unwrap();
        assert!(tabby.attention[0] > 0.99, "the tabby is in cell 0");
        let egypt = tags.iter().find(|t| t.tag == "egyptiancat").unwrap();
        assert!(egypt.attention[1] > 0.99, "the Egyptian cat is in cell 1");
        // Espresso's class has only negative evidence: a uniform map.
        let espresso = tags.iter().find(|t| t.tag == "espresso").unwrap();
        assert!((espresso.attention[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn equal_scores_prefer_the_more_common_word() {
        let dev = Device::Cpu;
        let weight = Tensor::new(&[[0f32], [0.0], [9.0]], &dev).unwrap();
        let tagger = ConceptTagger::new(table(), &weight, None).unwrap();
        let grid = Tensor::new(&[[[1f32]]], &dev).unwrap();
        let enc = Encoded {
            pooled: grid.mean(1).unwrap(),
            grid,
        };
        let tags = tagger
            .tag(&enc, ConceptOptions::default())
            .unwrap()
            .remove(0);
        assert_eq!(tags[0].tag, "coffee", "{tags:?}");
        assert_eq!(tags[1].tag, "espresso");
    }
}
