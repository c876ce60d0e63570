//! The three questions and their answer scales, in one place. The wording is configurable
//! (`[ratings.questions]` in the config file); the number of levels per scale is fixed, because the
//! reports interpret the levels (Q1 yes/no, Q2 and Q3 three ordered levels).
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An ordered answer scale: level i is labelled `labels[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub labels: Vec<String>,
}

/// One question as shown to raters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Stable id stored with every answer: `q1`, `q2`, `q3`.
    pub id: String,
    pub text: String,
    pub scale: Scale,
}

/// The three questions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionSet {
    /// Asked once per hashtag.
    pub q1: Question,
    /// Asked once per story.
    pub q2: Question,
    /// Asked once per story.
    pub q3: Question,
}

fn question(id: &str, text: &str, labels: &[&str]) -> Question {
    Question {
        id: id.into(),
        text: text.into(),
        scale: Scale {
            labels: labels.iter().map(|s| s.to_string()).collect(),
        },
    }
}

impl Default for QuestionSet {
    fn default() -> Self {
        QuestionSet {
            q1: question(
                "q1",
                "Is this hashtag relevant to the image?",
                &["no", "yes"],
            ),
            q2: question(
                "q2",
                "Does the story have a meaningful context?",
                &["no context", "some context", "clear context"],
            ),
            q3: question(
                "q3",
                "How close is the story's context to the image?",
                &["unrelated", "slightly", "strongly"],
            ),
        }
    }
}

impl QuestionSet {
    pub fn all(&self) -> [&Question; 3] {
        [&self.q1, &self.q2, &self.q3]
    }

    pub fn get(&self, id: &str) -> Option<&Question> {
        self.all().into_iter().find(|q| q.id == id)
    }

    /// Checks that ids are q1..q3 and each scale has the number of levels the reports expect.
    pub fn check(&self) -> Result<()> {
        for (q, id, levels) in [
            (&self.q1, "q1", 2),
            (&self.q2, "q2", 3),
            (&self.q3, "q3", 3),
        ] {
            if q.id != id || q.scale.labels.len() != levels {
                return Err(Error::Msg(format!(
                    "question {id} must have id {id:?} and {levels} answer labels"
                )));
            }
        }
        Ok(())
    }

    /// Validates an answer: a known question and a level inside its scale.
    pub fn validate(&self, question: &str, value: i32) -> Result<()> {
        let q = self
            .get(question)
            .ok_or_else(|| Error::InvalidAnswer(format!("unknown question {question:?}")))?;
        let n = q.scale.labels.len() as i32;
        if !(0..n).contains(&value) {
            return Err(Error::InvalidAnswer(format!(
                "{question}: {value} is not one of 0..{} ({})",
                n - 1,
                q.scale.labels.join(" / ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_the_expected_scales() {
        let q = QuestionSet::default();
        q.check().unwrap();
        q.validate("q1", 1).unwrap();
        q.validate("q3", 2).unwrap();
        assert!(q.validate("q2", 3).is_err());
        assert!(q.validate("q1", -1).is_err());
        assert!(q.validate("q4", 0).is_err());
    }
}
