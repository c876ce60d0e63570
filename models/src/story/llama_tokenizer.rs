//! The tokenizer of llama2.c checkpoints (`tokenizer.bin`, `tok512.bin`, …): a SentencePiece
//! BPE vocabulary exported as a flat binary file.
//!
//! Format: an `i32` (little endian) with the longest piece's length, then for every piece an
//! `f32` merge score, an `i32` byte length and the bytes. Pieces spelled `<0xNN>` stand for one
//! raw byte (SentencePiece's byte fallback); spaces are plain spaces (the exporter replaced `▁`).
//! Ids 0, 1 and 2 are `<unk>`, BOS and EOS.
use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// Beginning of a sequence.
pub const BOS: u32 = 1;
/// End of a sequence.
pub const EOS: u32 = 2;
/// Id of byte `b` under byte fallback: the three specials come first.
const BYTE_OFFSET: u32 = 3;

/// A llama2.c tokenizer.
#[derive(Debug, Clone)]
pub struct LlamaTokenizer {
    /// Each piece's bytes, raw-byte pieces already turned into their byte.
    pieces: Vec<Vec<u8>>,
    /// Each piece as stored (`<0xNN>` spelled out): what merges concatenate, as llama2.c does.
    stored: Vec<Vec<u8>>,
    scores: Vec<f32>,
    /// Piece text (as stored, `<0xNN>` spelled out) → id, for encoding.
    lookup: HashMap<Vec<u8>, u32>,
}

fn read_i32(b: &[u8], at: &mut usize) -> Option<i32> {
    let v = b.get(*at..*at + 4)?;
    *at += 4;
    Some(i32::from_le_bytes(v.try_into().ok()?))
}

fn read_f32(b: &[u8], at: &mut usize) -> Option<f32> {
    read_i32(b, at).map(|i| f32::from_bits(i as u32))
}

/// The byte a `<0xNN>` piece stands for.
fn byte_piece(p: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(p).ok()?;
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

impl LlamaTokenizer {
    /// Reads a tokenizer file; `vocab_size` is the model's (the file does not store it).
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, vocab_size)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    /// Parses the file's bytes (see the module docs).
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Self> {
        let bad = |what: &str| Error::msg(format!("not a llama2.c tokenizer: {what}"));
        let mut at = 0;
        let max_len = read_i32(bytes, &mut at).ok_or_else(|| bad("no header"))?;
        if max_len <= 0 || max_len > 1 << 16 {
            return Err(bad("implausible longest-piece length"));
        }
        let mut pieces = Vec::with_capacity(vocab_size);
        let mut scores = Vec::with_capacity(vocab_size);
        let mut lookup = HashMap::with_capacity(vocab_size);
        let mut stored = Vec::with_capacity(vocab_size);
        for id in 0..vocab_size {
            let score = read_f32(bytes, &mut at).ok_or_else(|| bad("file ends early"))?;
            let len = read_i32(bytes, &mut at).ok_or_else(|| bad("file ends early"))?;
            if len < 0 || len > max_len {
                return Err(bad(&format!("piece {id} has length {len}")));
            }
            let raw = bytes
                .get(at..at + len as usize)
                .ok_or_else(|| bad("file ends early"))?
                .to_vec();
            at += len as usize;
            lookup.entry(raw.clone()).or_insert(id as u32);
            pieces.push(match byte_piece(&raw) {
                Some(b) => vec![b],
                None => raw.clone(),
            });
            stored.push(raw);
            scores.push(score);
        }
        if vocab_size <= BYTE_OFFSET as usize {
            return Err(bad("fewer pieces than the special tokens"));
        }
        Ok(LlamaTokenizer {
            pieces,
            stored,
            scores,
            lookup,
        })
    }

    /// Writes the file format (for tests and for models of our own in this format).
    pub fn to_bytes(pieces: &[(Vec<u8>, f32)]) -> Vec<u8> {
        let max_len = pieces
            .iter()
            .map(|(p, _)| p.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut out = (max_len as i32).to_le_bytes().to_vec();
        for (p, s) in pieces {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&(p.len() as i32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Encodes text the way llama2.c does: a leading space piece (SentencePiece's dummy
    /// prefix), one piece per character or its bytes when the character has none, then the
    /// best-scoring merges of neighbours until none applies. BOS first when asked.
    pub fn encode(&self, text: &str, bos: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if bos {
            ids.push(BOS);
        }
        if text.is_empty() {
            return ids;
        }
        let mut toks: Vec<u32> = Vec::with_capacity(text.len() + 1);
        if let Some(&space) = self.lookup.get(b" ".as_slice()) {
            toks.push(space);
        }
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let s = c.encode_utf8(&mut buf).as_bytes();
            match self.lookup.get(s) {
                Some(&id) => toks.push(id),
                None => toks.extend(
                    s.iter()
                        .map(|&b| BYTE_OFFSET + b as u32)
                        .filter(|&id| (id as usize) < self.pieces.len()),
                ),
            }
        }
        let mut joined = Vec::new();
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in 0..toks.len().saturating_sub(1) {
                joined.clear();
                joined.extend_from_slice(self.stored(toks[i]));
                joined.extend_from_slice(self.stored(toks[i + 1]));
                if let Some(&id) = self.lookup.get(&joined) {
                    let score = self.scores[id as usize];
                    if best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            toks[i] = id;
            toks.remove(i + 1);
        }
        ids.extend(toks);
        ids
    }

    /// A piece as the file spells it: byte pieces stay `<0xNN>`, so, as in llama2.c, they never
    /// merge with a neighbour.
    fn stored(&self, id: u32) -> &[u8] {
        &self.stored[id as usize]
    }

    /// The bytes token `id` adds after token `prev`: the space after BOS is SentencePiece's
    /// dummy prefix and is dropped; specials add nothing.
    pub fn piece_bytes(&self, prev: u32, id: u32) -> &[u8] {
        if id < BYTE_OFFSET && id != 0 {
            return &[];
        }
        let p = match self.pieces.get(id as usize) {
            Some(p) => p.as_slice(),
            None => return &[],
        };
        if prev == BOS && p.first() == Some(&b' ') {
            &p[1..]
        } else {
            p
        }
    }

    /// Decodes ids (as encoded, BOS included or not) back to text; broken UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut prev = BOS;
        for &id in ids {
            bytes.extend_from_slice(self.piece_bytes(prev, id));
            prev = id;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The id of a piece spelled exactly `text`, if the vocabulary has one.
    pub fn piece_id(&self, text: &str) -> Option<u32> {
        self.lookup.get(text.as_bytes()).copied()
    }

    /// Every id whose piece contains one of these bytes (used to ban newlines and `#` from a
    /// story).
    pub fn ids_containing(&self, bytes: &[u8]) -> Vec<u32> {
        (0..self.pieces.len() as u32)
            .filter(|&id| {
                id >= BYTE_OFFSET && self.pieces[id as usize].iter().any(|b| bytes.contains(b))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: the specials, 256 byte pieces, letters, and a few merges.
    pub(crate) fn tiny() -> LlamaTokenizer {
        let mut pieces: Vec<(Vec<u8>, f32)> = vec![
            (b"<unk>".to_vec(), 0.0),
            (b"\n<s>\n".to_vec(), 0.0),
            (b"\n</s>\n".to_vec(), 0.0),
        ];
        for b in 0..=255u8 {
            pieces.push((format!("<0x{b:02X}>").into_bytes(), 0.0));
        }
        for c in [" ", "a", "b", "c", "d", "o", "g", "t"] {
            pieces.push((c.as_bytes().to_vec(), -10.0));
        }
        pieces.push((b"do".to_vec(), -1.0));
        pieces.push((b"dog".to_vec(), -0.5));
        pieces.push((b" dog".to_vec(), -0.1));
        pieces.push((b"ca".to_vec(), -2.0));
        let bytes = LlamaTokenizer::to_bytes(&pieces);
        LlamaTokenizer::from_bytes(&bytes, pieces.len()).unwrap()
    }

    #[test]
    fn merges_by_score_and_round_trips() {
        let t = tiny();
        let ids = t.encode("dog", true);
        assert_eq!(ids, vec![BOS, t.piece_id(" dog").unwrap()]);
        assert_eq!(t.decode(&ids), "dog");
        let ids = t.encode("cat dog", false);
        // The dummy-prefix space is not part of the text.
        assert_eq!(t.decode(&ids), "cat dog");
    }

    #[test]
    fn bytes_without_a_piece_fall_back_to_byte_tokens() {
        let t = tiny();
        // 'é' (C3 A9) and 'z' have no piece of their own.
        let ids = t.encode("é z", true);
        assert!(ids.contains(&(BYTE_OFFSET + 0xC3)));
        assert!(ids.contains(&(BYTE_OFFSET + 0xA9)));
        assert!(ids.contains(&(BYTE_OFFSET + b'z' as u32)));
        assert_eq!(t.decode(&ids), "é z");
    }

    #[test]
    fn truncated_files_are_refused() {
        let bytes = LlamaTokenizer::to_bytes(&[(b"<unk>".to_vec(), 0.0), (b"a".to_vec(), 0.0)]);
        assert!(LlamaTokenizer::from_bytes(&bytes, 10).is_err());
        assert!(LlamaTokenizer::from_bytes(&bytes[..3], 2).is_err());
    }
}
