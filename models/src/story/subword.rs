//! The subword vocabulary of a story LM: byte-level BPE trained with the `tokenizers` crate.
//!
//! Byte-level, so every text encodes (no unknown token) and decodes back exactly. The document
//! separator is always its own tokens: text is cut at separators and the pieces encoded one by
//! one, so a separator never merges into the words around it and a stream's document borders are
//! where the character model has them.
use std::collections::HashSet;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

use super::codec::DOC_SEP;
use crate::{Error, Result};

/// A trained byte-level BPE vocabulary.
#[derive(Clone)]
pub struct SubwordVocab {
    tokenizer: Tokenizer,
    /// Each id's text on its own (a lone byte of a multi-byte character decodes as U+FFFD).
    pieces: Vec<String>,
    sep: Vec<u32>,
}

impl std::fmt::Debug for SubwordVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubwordVocab({} pieces)", self.pieces.len())
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::msg(format!("tokenizer: {e}"))
}

impl SubwordVocab {
    /// Trains a vocabulary of (at most) `size` pieces on texts: the 256 byte symbols plus merges
    /// seen at least twice.
    pub fn train<S: AsRef<str> + Sync>(texts: &[S], size: usize) -> Result<Self> {
        let mut tokenizer = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::default()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(
            ByteLevel::default().add_prefix_space(false),
        )))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
        .build()
        .map_err(tok_err)?;
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(size)
            .min_frequency(2)
            .initial_alphabet(alphabet)
            .show_progress(false)
            .build();
        // Separators are cut out, as `encode` does, so no merge learns to span a document border.
        let pieces = texts
            .iter()
            .flat_map(|t| t.as_ref().split(DOC_SEP))
            .filter(|p| !p.is_empty());
        tokenizer.train(&mut trainer, pieces).map_err(tok_err)?;
        let tokenizer: Tokenizer = tokenizer.into();
        Self::from_tokenizer(tokenizer)
    }

    /// Reads a vocabulary saved by [`SubwordVocab::to_json`] (a `tokenizer.json`).
    pub fn from_json(json: &str) -> Result<Self> {
        let tokenizer: Tokenizer = json.parse().map_err(tok_err)?;
        Self::from_tokenizer(tokenizer)
    }

    /// The `tokenizers` JSON of this vocabulary.
    pub fn to_json(&self) -> Result<String> {
        self.tokenizer.to_string(false).map_err(tok_err)
    }

    fn from_tokenizer(tokenizer: Tokenizer) -> Result<Self> {
        let n = tokenizer.get_vocab_size(true);
        let pieces = (0..n as u32)
            .map(|id| tokenizer.decode(&[id], false).map_err(tok_err))
            .collect::<Result<Vec<_>>>()?;
        let mut v = SubwordVocab {
            tokenizer,
            pieces,
            sep: Vec::new(),
        };
        v.sep = v.encode_piece(DOC_SEP)?;
        if v.sep.is_empty() {
            return Err(Error::msg("tokenizer: the separator encodes to nothing"));
        }
        Ok(v)
    }

    fn encode_piece(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Number of pieces (the model's output size).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Encodes text; every separator becomes the same separator tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for (i, part) in text.split(DOC_SEP).enumerate() {
            if i > 0 {
                out.extend_from_slice(&self.sep);
            }
            if !part.is_empty() {
                // Byte-level BPE encodes any string; an error here is a bug in the tokenizer.
                out.extend(self.encode_piece(part).unwrap_or_default());
            }
        }
        out
    }

    /// Decodes ids back to text.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    /// The text of one piece on its own.
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", String::as_str)
    }

    /// Every id whose piece contains one of these characters.
    pub fn ids_containing(&self, chars: &[char]) -> Vec<u32> {
        (0..self.pieces.len() as u32)
            .filter(|&id| self.piece(id).contains(chars))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_round_trips_and_keeps_separators_apart() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("The dog ran to the beach number {i}.\n\nThe cat sat."))
            .collect();
        let v = SubwordVocab::train(&texts, 300).unwrap();
        assert!(v.len() > 256 && v.len() <= 300, "{}", v.len());
        let text = "The dog sat.\n\nThe cat ran to the beach. Zoë!";
        let ids = v.encode(text);
        assert_eq!(v.decode(&ids), text);
        // Common words became single pieces.
        assert!(ids.len() < text.len() / 2, "{} ids", ids.len());
        let sep = v.encode(DOC_SEP);
        assert!(ids.windows(sep.len()).any(|w| w == sep.as_slice()));
        let again = SubwordVocab::from_json(&v.to_json().unwrap()).unwrap();
        assert_eq!(again.encode(text), ids);
        assert!(!v.ids_containing(&['\n']).is_empty());
        // A word's copy forms: its pieces after a space, lower and capitalised, unless they
        // begin with a bare space piece.
        let codec = super::super::codec::Codec::Subword(Box::new(v.clone()));
        let table = super::super::copy::CopyTable::for_words(["dog", "zoë"].into_iter(), &codec);
        assert_eq!(table.len(), 2);
        let mut expected = Vec::new();
        for form in [" dog", " Dog"] {
            let first = v.encode(form)[0];
            if !v.piece(first).trim().is_empty() && !expected.contains(&first) {
                expected.push(first);
            }
        }
        assert!(!expected.is_empty());
        assert_eq!(table.starts(&[0]), expected);
        // A word of several pieces: once begun, its next piece is the one to copy.
        let beaches = v.encode(" beaches");
        assert!(
            beaches.len() >= 2 && !v.piece(beaches[0]).trim().is_empty(),
            "{beaches:?}"
        );
        let t = super::super::copy::CopyTable::for_words(["beaches"].into_iter(), &codec);
        assert!(t.starts(&[0]).contains(&beaches[0]));
        let next = t.next(&[0], &beaches[..1]);
        assert!(next.contains(&beaches[1]) && next.len() <= 2, "{next:?}");
        // A bare space never starts a form.
        let space = v.encode(" ")[0];
        assert!(!t.starts(&[0]).contains(&space) && !table.starts(&[0, 1]).contains(&space));
        let chars =
            super::super::codec::Codec::Chars(super::super::codec::Alphabet::new("dog ".chars()));
        let t = super::super::copy::CopyTable::for_words(["dog"].into_iter(), &chars);
        assert!(t.starts(&[0]).is_empty());
    }
}
