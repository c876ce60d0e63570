//! Keyword copy: which pieces a story may copy from its hashtags at a step.
//!
//! A hashtag is spelt as pieces in two forms, `" dog"` and `" Dog"` (a story's words follow a
//! space; the first word follows the prefix line's newline and is rare enough to leave to the
//! model). At every step two sets of pieces get a boost from the model's copy gates:
//! - *starts*: the first piece of every form, at any step (the model decides when);
//! - *next*: the piece that continues a form whose first pieces end the story so far, so a
//!   hashtag of several pieces is spelt out once begun (`" co"` → `"ffee"`).
//!
//! The sets are data made from the keyword table and the vocabulary, never weights; the same
//! functions serve training, evaluation, the tensor step and the host engine.
use super::codec::Codec;

/// Per keyword id, its forms as piece sequences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyTable {
    forms: Vec<Vec<Vec<u32>>>,
}

impl CopyTable {
    /// From each keyword's forms (piece sequences; empty ones are dropped).
    pub fn new(forms: Vec<Vec<Vec<u32>>>) -> Self {
        let forms = forms
            .into_iter()
            .map(|f| f.into_iter().filter(|p| !p.is_empty()).collect())
            .collect();
        CopyTable { forms }
    }

    /// The forms of each word (in keyword id order) under `codec`: `" word"` and `" Word"`.
    /// Empty for a character alphabet, where a letter says nothing about the word. A form that
    /// begins with a bare space piece (`" "`, `"ed"`, `"ge"` for `" edge"`) is dropped: boosting
    /// the space before every word would help no hashtag.
    pub fn for_words<'a>(words: impl Iterator<Item = &'a str>, codec: &Codec) -> Self {
        let forms = words
            .map(|w| match codec {
                Codec::Chars(_) => Vec::new(),
                Codec::Subword(_) => {
                    let mut upper = w.to_string();
                    if let Some(first) = upper.get(..1) {
                        upper = first.to_uppercase() + &upper[1..];
                    }
                    let mut forms: Vec<Vec<u32>> = Vec::new();
                    for form in [format!(" {w}"), format!(" {upper}")] {
                        let pieces = codec.encode(&form);
                        let bare_space = pieces
                            .first()
                            .is_some_and(|&p| codec.decode(&[p]).trim().is_empty());
                        if !bare_space && !forms.contains(&pieces) {
                            forms.push(pieces);
                        }
                    }
                    forms
                }
            })
            .collect();
        Self::new(forms)
    }

    /// Keywords in the table.
    pub fn len(&self) -> usize {
        self.forms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Pieces in the longest form: a history longer than this less one never matters.
    pub fn longest(&self) -> usize {
        self.forms.iter().flatten().map(Vec::len).max().unwrap_or(0)
    }

    /// The largest piece id any form uses (to check it against a vocabulary).
    pub fn max_piece(&self) -> Option<u32> {
        self.forms.iter().flatten().flatten().copied().max()
    }

    fn forms_of<'a>(&'a self, keywords: &'a [u32]) -> impl Iterator<Item = &'a Vec<u32>> + 'a {
        keywords
            .iter()
            .filter_map(|&k| self.forms.get(k as usize))
            .flatten()
    }

    /// The first piece of every form of these keywords, each once. Ids outside the table are
    /// skipped (the keyword table's own check reports them).
    pub fn starts(&self, keywords: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for f in self.forms_of(keywords) {
            push_once(&mut out, f[0]);
        }
        out
    }

    /// The pieces that continue a form of these keywords after `history` (the story's pieces so
    /// far, the newest last): for every form and every m ≥ 1 shorter than it, its piece m when
    /// the last m pieces of `history` are its first m. Each once. Only the last
    /// `longest() - 1` pieces are read, so a whole story may be passed.
    pub fn next(&self, keywords: &[u32], history: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for f in self.forms_of(keywords) {
            for m in 1..f.len().min(history.len() + 1) {
                if history[history.len() - m..] == f[..m] {
                    push_once(&mut out, f[m]);
                }
            }
        }
        out
    }
}

/// The history [`CopyTable::next`] needs at position `pos` of a stream: the pieces up to and
/// including `pos` that belong to the same document (`docs`), at most `longest - 1` of them, and
/// none before `floor` (a lane's start).
pub fn history<'a>(
    ids: &'a [u32],
    docs: &[u32],
    floor: usize,
    pos: usize,
    longest: usize,
) -> &'a [u32] {
    let mut start = pos + 1;
    let d = docs[pos];
    while start > floor && pos + 1 - start < longest.saturating_sub(1) && docs[start - 1] == d {
        start -= 1;
    }
    &ids[start..=pos]
}

fn push_once(v: &mut Vec<u32>, id: u32) {
    if !v.contains(&id) {
        v.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_continuations() {
        // keyword 0: " coffee" = [5, 6] or " Coffee" = [7, 6]; keyword 1: one piece [9].
        let t = CopyTable::new(vec![vec![vec![5, 6], vec![7, 6]], vec![vec![9], vec![]]]);
        assert_eq!(t.starts(&[0, 1]), vec![5, 7, 9]);
        assert_eq!(t.starts(&[1, 7]), vec![9]);
        assert_eq!(t.next(&[0], &[1, 2, 5]), vec![6]);
        assert_eq!(t.next(&[0], &[7]), vec![6]);
        assert!(t.next(&[0], &[5, 6]).is_empty());
        assert!(t.next(&[1], &[9]).is_empty());
        assert!(t.next(&[0], &[]).is_empty());
        // A longer form continues at every matched depth.
        let t = CopyTable::new(vec![vec![vec![3, 4, 3, 8]]]);
        assert_eq!(t.next(&[0], &[3, 4, 3]), vec![4, 8]);
        assert_eq!(t.max_piece(), Some(8));
        assert_eq!(t.longest(), 4);
    }

    #[test]
    fn history_stops_at_the_document_the_lane_start_and_the_longest_form() {
        let ids = [1, 2, 3, 4, 5, 6];
        let docs = [0, 0, 1, 1, 1, 1];
        assert_eq!(history(&ids, &docs, 0, 3, 9), &[3, 4]);
        assert_eq!(history(&ids, &docs, 0, 5, 3), &[5, 6]);
        assert_eq!(history(&ids, &docs, 4, 5, 9), &[5, 6]);
        assert_eq!(history(&ids, &docs, 0, 1, 1), &[] as &[u32]);
    }
}
